/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ICMP errors about tracked flows (fragmentation needed / packet too big,
 * unreachable, time exceeded) are translated for the other side: the
 * embedded packet is rewritten to what that side sent and the outer
 * header to come from the address that side talks to. The message is cut
 * to the embedded IP header plus 8 bytes (all that RFC 792 promises and
 * all that TCP and UDP need), so that its checksums are rebuilt over a
 * fixed size. */
#ifndef EDGEPROXY_ICMP_H
#define EDGEPROXY_ICMP_H

#include "common.h"
#include "csum.h"
#include "fib.h"
#include "guard.h"
#include "maps.h"
#include "parse.h"
#include "ct.h"

#define ICMP4_LEN (8 + sizeof(struct iphdr) + 8)
#define ICMP6_LEN (8 + sizeof(struct ipv6hdr) + 8)
#define ICMP4_FRAME (ETH_HLEN + sizeof(struct iphdr) + ICMP4_LEN)
#define ICMP6_FRAME (ETH_HLEN + sizeof(struct ipv6hdr) + ICMP6_LEN)

static __always_inline int icmp_is_error(__u8 family, __u8 type)
{
	if (family == 4)
		return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED;
	return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG ||
	       type == ICMPV6_TIME_EXCEED;
}

/* Reads the embedded packet's tuple, reversed: the key of the flow half
 * whose packets answer it. Returns 0 when it is TCP or UDP. */
static __always_inline int icmp_inner_key(struct pkt *p, void *data_end, struct flow_key *k)
{
	void *inner = p->l4 + 8;
	__be16 *ports;

	k->family = p->m->key.family;
	if (p->m->key.family == 4) {
		struct iphdr *iph = inner;

		if ((void *)(iph + 1) > data_end || iph->ihl != 5)
			return -1;
		k->proto = iph->protocol;
		k->saddr.w[0] = iph->daddr;
		k->daddr.w[0] = iph->saddr;
		ports = (void *)(iph + 1);
	} else {
		struct ipv6hdr *ip6 = inner;

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		k->proto = ip6->nexthdr;
		__builtin_memcpy(&k->saddr, &ip6->daddr, sizeof(k->saddr));
		__builtin_memcpy(&k->daddr, &ip6->saddr, sizeof(k->daddr));
		ports = (void *)(ip6 + 1);
	}
	if (k->proto != IPPROTO_TCP && k->proto != IPPROTO_UDP)
		return -1;
	if ((void *)(ports + 4) > data_end)
		return -1;
	k->sport = ports[1];
	k->dport = ports[0];
	return 0;
}

#define SUM_MAX 2048 /* ICMP messages checked up to this length */

/* Per CPU scratch of the ICMP path, off the stack (its call chain is at
 * the 512-byte limit): the quoted tuple, and a copy of the message for
 * its checksum. */
struct icmp_scratch {
	struct flow_key key;
	__u8 b[SUM_MAX + 4];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct icmp_scratch);
} icmp_scratch SEC(".maps");

static __always_inline struct icmp_scratch *icmp_scratch_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&icmp_scratch, &zero);
}

/* Sums len bytes of the frame from off (up to SUM_MAX) in 16-bit words
 * as they lie in memory, an odd last byte padded with zero; -1 when it
 * cannot. The bytes are copied into a buffer zero-padded to 4 bytes, then
 * summed 512 bytes per bpf_csum_diff call: no loop over packet bytes for
 * the verifier to walk. */
static __always_inline __s64 frame_sum(struct xdp_md *ctx, __u32 off, __u32 len)
{
	struct icmp_scratch *sb = icmp_scratch_get();
	__u64 s = 0;
	__u32 size;

	if (!sb || len == 0 || len > SUM_MAX)
		return -1;
	*(__u32 *)&sb->b[(len & ~3U) & (SUM_MAX - 1)] = 0;
	if (bpf_xdp_load_bytes(ctx, off, sb->b, len))
		return -1;
	size = (len + 3) & ~3U;
	for (__u32 at = 0; at < SUM_MAX; at += 512) {
		__u32 n = size - at;

		if (at >= size)
			break;
		if (n > 512)
			n = 512;
		s += (__u32)bpf_csum_diff(NULL, 0, (void *)&sb->b[at], n & 0x3fc ? n & 0x3fc : 4, 0);
	}
	return s;
}

#ifndef ICMP_FLOW_GAP_MS
#define ICMP_FLOW_GAP_MS 1000 /* one ICMP error translated per flow direction
			       * and second, as the kernel limits its own */
#endif
#define ICMP_MIN_MTU4 552  /* a frag-needed MTU below: ignored */
#define ICMP_MIN_MTU6 1280 /* IPv6 minimum link MTU */

/* Checks an ICMP error about the flow half f (the one whose packets come
 * from the error's side; the caller checks it is addressed to the quoted
 * packet's source): it arrived on f's NIC, its checksum is right,
 * a frag-needed / packet-too-big carries a usable MTU, and for TCP the
 * quoted sequence number lies in the window f's side offers (ct_in_window:
 * a blind attacker must guess it, as for a RST). Returns -1 when it may be
 * translated, else the reason. */
static __noinline int icmp_check(struct xdp_md *ctx, const struct pkt *p,
				 const struct flow_val *f, __u8 proto)
{
	const struct pkt_meta *m = p->m;
	__u8 *ih = p->l4;
	struct config *cfg = settings_get();
	__s64 sum;
	__u32 seq;
	int r;

	if (!cfg)
		return REASON_DROP_ICMP_INVALID;
	r = guard_flow(ctx, p->eth, cfg, f);
	if (r >= 0)
		return r;
	if ((void *)(ih + 8) > p->end)
		return REASON_DROP_ICMP_INVALID;
	sum = frame_sum(ctx, m->l4_off, m->l4_len);
	if (sum < 0)
		return REASON_DROP_ICMP_INVALID;
	if (m->key.family == 6)
		sum += csum_words((void *)&m->key.saddr, 8) + csum_words((void *)&m->key.daddr, 8) +
		       bpf_htons(m->l4_len) + bpf_htons(IPPROTO_ICMPV6);
	if (csum_fold64(sum) != 0xffff)
		return REASON_DROP_ICMP_INVALID;
	if (m->key.family == 4 && ih[0] == ICMP_DEST_UNREACH && ih[1] == 4 &&
	    bpf_ntohs(*(__be16 *)(ih + 6)) < ICMP_MIN_MTU4)
		return REASON_DROP_ICMP_INVALID;
	if (m->key.family == 6 && ih[0] == ICMPV6_PKT_TOOBIG && bpf_ntohl(*(__be32 *)(ih + 4)) < ICMP_MIN_MTU6)
		return REASON_DROP_ICMP_INVALID;
	if (proto == IPPROTO_TCP && (f->seen & (SEEN_SYNACK | SEEN_ACK))) {
		/* The quoted TCP header follows the quoted IP header, which
		 * icmp_inner_key checked holds 8 bytes of it. */
		__u8 *th = p->l4 + 8 + (m->key.family == 4 ? sizeof(struct iphdr) : sizeof(struct ipv6hdr));

		if ((void *)(th + 8) > p->end)
			return REASON_DROP_ICMP_INVALID;
		seq = bpf_ntohl(*(__be32 *)(th + 4));
		if (!ct_in_window(f, seq))
			return REASON_DROP_ICMP_INVALID;
	}
	return -1;
}

/* Rewrites an IPv4 ICMP error (at fixed offsets, ICMP4_FRAME bytes from
 * data) for the other side of the flow whose other half is peer: outer
 * header from the address the receiver talks to, one hop on; the quoted
 * packet as the receiver sent it. Returns 0, or -1 when it cannot. */
static __always_inline int icmp_rewrite4(void *data, void *data_end, const struct flow_key *peer)
{
	struct iphdr *oh = data + ETH_HLEN;
	struct icmphdr *icmp = (void *)(oh + 1);
	struct iphdr *in = (void *)(icmp + 1);
	__be16 *ports = (void *)(in + 1);

	if ((void *)(ports + 4) > data_end)
		return -1;
	/* Outer: from the address the receiver talks to, one hop on. */
	if (oh->ttl <= 1)
		return -1;
	oh->ttl--;
	oh->saddr = peer->daddr.w[0];
	oh->daddr = peer->saddr.w[0];
	oh->tot_len = bpf_htons(sizeof(*oh) + ICMP4_LEN);
	oh->check = 0;
	oh->check = ~csum_fold64(csum_words((void *)oh, sizeof(*oh) / 2));
	/* Embedded: what the receiver sent. */
	if (in->protocol == IPPROTO_UDP && ports[3]) {
		__u64 d = csum_delta32(in->saddr, peer->saddr.w[0]) +
			  csum_delta32(in->daddr, peer->daddr.w[0]) +
			  csum_delta16(ports[0], peer->sport) +
			  csum_delta16(ports[1], peer->dport);
		__u16 c = csum_apply(ports[3], d);

		ports[3] = c ? c : 0xffff;
	}
	in->saddr = peer->saddr.w[0];
	in->daddr = peer->daddr.w[0];
	in->check = 0;
	in->check = ~csum_fold64(csum_words((void *)in, sizeof(*in) / 2));
	ports[0] = peer->sport;
	ports[1] = peer->dport;
	icmp->checksum = 0;
	icmp->checksum = ~csum_fold64(csum_words((void *)icmp, ICMP4_LEN / 2));
	return 0;
}

/* icmp_rewrite4 for IPv6 (ICMP6_FRAME bytes). */
static __always_inline int icmp_rewrite6(void *data, void *data_end, const struct flow_key *peer)
{
	struct ipv6hdr *oh = data + ETH_HLEN;
	struct icmp6hdr *icmp = (void *)(oh + 1);
	struct ipv6hdr *in = (void *)(icmp + 1);
	__be16 *ports = (void *)(in + 1);
	__u64 s;

	if ((void *)(ports + 4) > data_end)
		return -1;
	if (oh->hop_limit <= 1)
		return -1;
	oh->hop_limit--;
	__builtin_memcpy(&oh->saddr, &peer->daddr, 16);
	__builtin_memcpy(&oh->daddr, &peer->saddr, 16);
	oh->payload_len = bpf_htons(ICMP6_LEN);
	if (in->nexthdr == IPPROTO_UDP) {
		__u64 d = csum_delta_addr((struct addr *)&in->saddr, &peer->saddr, 6) +
			  csum_delta_addr((struct addr *)&in->daddr, &peer->daddr, 6) +
			  csum_delta16(ports[0], peer->sport) +
			  csum_delta16(ports[1], peer->dport);
		__u16 c = csum_apply(ports[3], d);

		ports[3] = c ? c : 0xffff;
	}
	__builtin_memcpy(&in->saddr, &peer->saddr, 16);
	__builtin_memcpy(&in->daddr, &peer->daddr, 16);
	ports[0] = peer->sport;
	ports[1] = peer->dport;
	icmp->icmp6_cksum = 0;
	/* Pseudo header: addresses, length, next header. */
	s = csum_words((void *)&oh->saddr, 16) + bpf_htons(ICMP6_LEN) +
	    bpf_htons(IPPROTO_ICMPV6) + csum_words((void *)icmp, ICMP6_LEN / 2);
	icmp->icmp6_cksum = ~csum_fold64(s);
	return 0;
}

/* A global function: a rare path, checked once, with a stack frame of
 * its own. */
__noinline int icmp_translate(struct xdp_md *ctx, const struct pkt_meta *m,
			      const struct config *cfg, __u64 bytes)
{
	struct pkt pk, *p = &pk;
	struct flow_key *peer;
	__u8 *ih;
	struct icmp_scratch *sc;
	struct flow_key *k;
	struct flow_val *f;
	struct nexthop nh;
	void *data, *data_end;
	__u32 want, vid = 0, now_ms;
	__u64 cur;
	int r;

	if (!m || !cfg || pkt_load(ctx, m, p) < 0)
		return XDP_PASS;
	ih = p->l4;
	if (!icmp_is_error(p->m->key.family, ih[0]) || p->m->frag != FRAG_NONE) {
		count(0, REASON_PASS_ICMP, bytes);
		return XDP_PASS;
	}
	sc = icmp_scratch_get();
	if (!sc)
		return XDP_PASS;
	k = &sc->key;
	__builtin_memset(k, 0, sizeof(*k));
	if (icmp_inner_key(p, (void *)(long)ctx->data_end, k) < 0) {
		count(0, REASON_PASS_ICMP, bytes);
		return XDP_PASS;
	}
	f = flow_lookup(k);
	if (!f) {
		count(0, REASON_PASS_ICMP, bytes);
		return XDP_PASS;
	}
	/* The entry stays readable after adjust_tail (map values are not
	 * packet data), but it is not pinned to this flow: deleted, it can
	 * be reused by another flow meanwhile, so it is checked once the
	 * rewrite has read it (flow_is). */
	peer = &f->peer;
	vid = f->vid;
	r = icmp_check(ctx, p, f, k->proto);
	/* The error must be addressed to the quoted packet's source. */
	if (r < 0 && (k->daddr.w[0] != m->key.daddr.w[0] || k->daddr.w[1] != m->key.daddr.w[1] ||
		      k->daddr.w[2] != m->key.daddr.w[2] || k->daddr.w[3] != m->key.daddr.w[3]))
		r = REASON_DROP_ICMP_INVALID;
	if (r >= 0) {
		count(vid, r, bytes);
		return guard_verdict(r);
	}
	/* Milliseconds (2^20 ns) that wrap every 65 s; 0 is kept for
	 * "never". */
	now_ms = (__u16)(bpf_ktime_get_coarse_ns() >> 20) | 1;
	if (f->icmp_ms && (__u16)(now_ms - f->icmp_ms) < ICMP_FLOW_GAP_MS) {
		count(vid, REASON_DROP_ICMP_RATE, bytes);
		return XDP_DROP;
	}
	f->icmp_ms = now_ms;

	/* Only a plain outer header is handled (the message is rebuilt at
	 * fixed offsets). */
	if (p->m->key.family == 4 && ((struct iphdr *)p->l3)->ihl != 5)
		goto drop;
	if (p->m->key.family == 6 && p->l4 != p->l3 + sizeof(struct ipv6hdr))
		goto drop;

	want = p->m->key.family == 4 ? ICMP4_FRAME : ICMP6_FRAME;
	/* The length comes from a helper, not from data_end - data: clang
	 * narrows that difference to 32-bit pointer arithmetic, which the
	 * verifier refuses. */
	cur = bpf_xdp_get_buff_len(ctx);
	if (cur < want)
		goto drop;
	if (cur > want && bpf_xdp_adjust_tail(ctx, -(int)(cur - want)))
		goto drop;
	/* adjust_tail invalidated every packet pointer: start over at fixed
	 * offsets, checked against the new end. */
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;

	if (p->m->key.family == 4 ? icmp_rewrite4(data, data_end, peer) : icmp_rewrite6(data, data_end, peer))
		goto drop;
	if (!flow_is(f, k)) {
		count(0, REASON_DROP_FLOW_REUSED, bytes);
		return XDP_DROP;
	}
	/* The next hop of the rewritten outer header. */
	p->l3_len = want - ETH_HLEN;
	r = fib_resolve(ctx, p, peer, &nh);
	if (r >= 0) {
		count(vid, r, bytes);
		return XDP_DROP;
	}
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + ETH_HLEN > data_end)
		goto drop;
	return nexthop_redirect(data, nh.tx_slot, nh.macs, tx_devs[nh.tx_slot & (MAX_TX_PORTS - 1)].mac, vid,
				REASON_FWD_ICMP, bytes, NULL);

drop:
	count(vid, REASON_DROP_ICMP, bytes);
	return XDP_DROP;
}

#endif
