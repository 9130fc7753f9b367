/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Address and port rewriting, SNAT allocation, member selection and MSS
 * clamping. */
#ifndef EDGEPROXY_NAT_H
#define EDGEPROXY_NAT_H

#include "common.h"
#include "csum.h"
#include "maps.h"
#include "parse.h"
#include "events.h"

#ifndef EEXIST
#define EEXIST 17
#endif

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MSS 2
#define TCPOLEN_MSS 4

/* The IPv6 part of nat_rewrite: addresses and hop limit; returns the
 * checksum delta of the addresses. Out of line: the frame of the
 * established path (which holds both families') stays small enough for
 * the calls below it. */
static __noinline __u64 nat_rewrite6(const struct pkt *p, const struct flow_key *peer)
{
	struct ipv6hdr *ip6 = pkt_l3(p, sizeof(*ip6));
	__u64 d;

	if (!ip6)
		return 0;
	d = csum_delta_addr(&p->m->key.saddr, &peer->daddr, 6) +
	    csum_delta_addr(&p->m->key.daddr, &peer->saddr, 6);
	ip6->hop_limit--;
	__builtin_memcpy(&ip6->saddr, &peer->daddr, sizeof(ip6->saddr));
	__builtin_memcpy(&ip6->daddr, &peer->saddr, sizeof(ip6->daddr));
	return d;
}

/* Rewrites a packet of the flow half f: the new source is
 * peer.daddr:dport, the new destination peer.saddr:sport (IPv4 reads the
 * short peer4, in the entry's first cache line), and the TTL (hop limit)
 * one lower (the caller made sure it is above 1). Fixes the IPv4 header
 * checksum and the TCP/UDP checksum (pseudo header included). A zero UDP
 * checksum over IPv4 means "none" and stays zero. */
static __always_inline void nat_rewrite(struct pkt *p, const struct flow_val *f)
{
	__u8 fam = p->m->key.family;
	__be16 sport, dport;
	__u64 d;

	if (fam == 4) {
		struct iphdr *iph = pkt_l3(p, sizeof(*iph));
		__be32 src = f->peer4.daddr, dst = f->peer4.saddr;

		if (!iph)
			return;
		sport = f->peer4.dport;
		dport = f->peer4.sport;
		d = csum_delta32(p->m->key.saddr.w[0], src) + csum_delta32(p->m->key.daddr.w[0], dst);
		/* TTL and protocol form one checksum word, which, read as
		 * the sums here read it (little-endian), goes down by one:
		 * its delta ~w + (w - 1) is 0xfffe whatever w. It joins the
		 * addresses' for the header only: the TTL is not in the
		 * pseudo header. */
		iph->ttl--;
		iph->check = csum_apply(iph->check, d + 0xfffe);
		iph->saddr = src;
		iph->daddr = dst;
	} else {
		d = nat_rewrite6(p, &f->peer);
		sport = f->peer.dport;
		dport = f->peer.sport;
	}

	d += csum_delta16(p->m->key.sport, sport) + csum_delta16(p->m->key.dport, dport);
	if (p->m->key.proto == IPPROTO_TCP) {
		struct tcphdr *th = pkt_l4(p, sizeof(*th));

		if (!th)
			return;
		th->check = csum_apply(th->check, d);
		th->source = sport;
		th->dest = dport;
	} else {
		struct udphdr *uh = pkt_l4(p, sizeof(*uh));

		if (!uh)
			return;
		if (uh->check || fam == 6) {
			__u16 c = csum_apply(uh->check, d);

			/* 0 would read as "no checksum": send its other form. */
			uh->check = c ? c : 0xffff;
		}
		uh->source = sport;
		uh->dest = dport;
	}
}

#define TCPOPT_WSCALE 3
#define TCPOLEN_WSCALE 3

/* Finds the option kind, len bytes long, of the TCP header at l4_off:
 * returns the offset of its value from the start of the TCP header, or 0
 * when the header has none (or the option would reach past the data
 * offset into the payload). A global function, so that its loop is
 * checked once. The options are scanned in a copy on the stack: walking
 * them with packet pointers makes every NOP-or-option choice a new
 * verifier state (2^40 paths); indexes into a stack buffer only need
 * their bounds, so iterations fold together. */
__noinline int tcp_option(struct xdp_md *ctx, __u32 l4_off, __u32 kind, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct tcphdr *th;
	__u8 opt[64] = {};
	__u32 optlen, off = 0;

	l4_off &= 0x3fff;
	th = data + l4_off;
	if ((void *)(th + 1) > data_end || th->doff < 5)
		return 0;
	optlen = (__u32)th->doff * 4 - sizeof(*th);
	if (optlen == 0 || optlen > 40)
		return 0;
	if (bpf_xdp_load_bytes(ctx, l4_off + sizeof(*th), opt, optlen))
		return 0;

	/* Each option takes at least one byte: 40 steps cover 40 bytes. */
	for (int i = 0; i < 40; i++) {
		__u8 k, l;

		if (off >= optlen)
			return 0;
		k = opt[off & 63];
		if (k == TCPOPT_EOL)
			return 0;
		if (k == TCPOPT_NOP) {
			off++;
			continue;
		}
		l = opt[(off + 1) & 63];
		if (l < 2)
			return 0;
		if (k == kind) {
			/* The value must lie inside the header, not past
			 * the data offset in the payload. */
			if (l != len || off + len > optlen)
				return 0;
			return sizeof(*th) + off + 2;
		}
		off += l;
	}
	return 0;
}

/* Lowers the MSS option of a SYN or SYN-ACK whose TCP header is at l4_off
 * to mss. Returns 1 when the option was rewritten. */
static __always_inline int mss_clamp(struct xdp_md *ctx, __u32 l4_off, __u32 mss)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 at = tcp_option(ctx, l4_off, TCPOPT_MSS, TCPOLEN_MSS);
	struct tcphdr *th;
	__be16 old, new;
	__u8 *o;

	if (at == 0)
		return 0;
	th = data + (l4_off & 0x3fff);
	o = (__u8 *)th + (at & 63);
	if ((void *)(th + 1) > data_end || (void *)(o + 2) > data_end)
		return 0;
	__builtin_memcpy(&old, o, 2);
	if (bpf_ntohs(old) <= mss)
		return 0;
	new = bpf_htons(mss);
	/* The value sits at an odd offset when an odd number of NOPs precede
	 * it: its bytes then straddle two checksum words, which adds up as
	 * the byte-swapped word. */
	if (at & 1)
		th->check = csum_apply(th->check,
				       csum_delta16(__builtin_bswap16(old), __builtin_bswap16(new)));
	else
		th->check = csum_apply(th->check, csum_delta16(old, new));
	__builtin_memcpy(o, &new, 2);
	return 1;
}

/* The window scale option of the SYN whose TCP header is at l4_off, as
 * flow_val.wscale keeps it: WSCALE_SENT and the shift (at most 14, RFC
 * 7323), or 0 when it has none. */
static __always_inline __u8 tcp_wscale(struct xdp_md *ctx, __u32 l4_off)
{
	__u32 at = tcp_option(ctx, l4_off, TCPOPT_WSCALE, TCPOLEN_WSCALE);
	void *data = (void *)(long)ctx->data;
	__u8 *o = data + (l4_off & 0x3fff) + (at & 63);
	__u8 shift;

	if (at == 0 || (void *)(o + 1) > (void *)(long)ctx->data_end)
		return 0;
	shift = *o;
	return WSCALE_SENT | (shift > 14 ? 14 : shift);
}

#define TCPOPT_TIMESTAMP 8
#define TCPOLEN_TIMESTAMP 10

/* The TSval of the TCP header at l4_off (RFC 7323), in host order, into
 * *tsval: returns 1 when the header carries the option, else 0. */
static __always_inline int tcp_tsval(struct xdp_md *ctx, __u32 l4_off, __u32 *tsval)
{
	__u32 at = tcp_option(ctx, l4_off, TCPOPT_TIMESTAMP, TCPOLEN_TIMESTAMP);
	__be32 v;

	if (at == 0 || bpf_xdp_load_bytes(ctx, (l4_off & 0x3fff) + (at & 63), &v, sizeof(v)))
		return 0;
	*tsval = bpf_ntohl(v);
	return 1;
}

/* Fills in *syn from the packet of m when it is a bare SYN (no ACK, no
 * RST): its sequence number and TSval. A global function: checked once,
 * with a frame of its own. */
__noinline int syn_read(struct xdp_md *ctx, const struct pkt_meta *m, struct syn_info *syn)
{
	__u32 l4_off;
	__be32 seq;

	if (!m || !syn)
		return 0;
	__builtin_memset(syn, 0, sizeof(*syn));
	if (m->key.proto != IPPROTO_TCP ||
	    (m->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) != TCP_FLAG_SYN)
		return 0;
	l4_off = m->l4_off & 0x3fff;
	if (bpf_xdp_load_bytes(ctx, l4_off + 4, &seq, sizeof(seq)))
		return 0;
	syn->seq = bpf_ntohl(seq);
	syn->has_ts = tcp_tsval(ctx, l4_off, &syn->tsval);
	syn->ok = 1;
	return 1;
}

static __always_inline __u32 mix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x7feb352d;
	h ^= h >> 15;
	h *= 0x846ca68b;
	h ^= h >> 16;
	return h;
}

/* Hash of a client tuple, seeded so that clients cannot aim at ports. */
static __always_inline __u32 flow_hash(const struct flow_key *k, __u32 seed)
{
	__u32 h = seed;

	h = mix32(h ^ k->saddr.w[0]);
	h = mix32(h ^ k->saddr.w[1]);
	h = mix32(h ^ k->saddr.w[2]);
	h = mix32(h ^ k->saddr.w[3]);
	h = mix32(h ^ k->daddr.w[0] ^ k->daddr.w[3]);
	h = mix32(h ^ (((__u32)k->sport << 16) | k->dport) ^ k->proto);
	return h;
}

/* Picks the member from the pool's Maglev table. NULL: no member up. */
static __always_inline struct addr *maglev_pick(const struct svc_val *svc,
						const struct config *cfg, __u32 h)
{
	__u32 slot = svc->pool_slot;
	void *table = bpf_map_lookup_elem(&maglev, &slot);
	struct addr *m;
	__u32 idx;

	if (!table || cfg->maglev_size == 0)
		return NULL;
	idx = h % cfg->maglev_size;
	m = bpf_map_lookup_elem(table, &idx);
	if (!m || (m->w[0] | m->w[1] | m->w[2] | m->w[3]) == 0)
		return NULL;
	return m;
}

#ifndef SNAT_RECLAIM_SAMPLE
#define SNAT_RECLAIM_SAMPLE 8 /* half-open holders sampled before reclaiming */
#endif

/* The state of snat_alloc's probes, shared with the bpf_loop callback. */
struct snat_probes {
	struct flow_key *skey;
	struct flow_val *sval;
	__u64 oldest_ns;   /* oldest half-open holder seen */
	__u32 oldest_ai;
	__u32 oldest_port; /* 0: none seen */
	__u32 held;        /* candidates held by half-open flows */
	__u32 base, n, min, range, h, hp, cport;
	int result; /* -1: allocated, else a drop reason */
	__u32 reuse; /* 1: skey is a closed pair's, to take (snat_take) */
	const struct syn_info *syn; /* the new flow's SYN: syn->ok, it may reuse */
};

/* Whether the new flow's SYN may take the SNAT port of the closed flow
 * whose server half (member -> SNAT) is s: whether the member takes the
 * SYN for a new connection, as Linux's TIME_WAIT does
 * (tcp_timewait_state_process), where the old connection may still be:
 * - closed by a RST: the member holds nothing;
 * - closed by FIN both ways, each FIN acknowledged (the side that closed
 *   last is no longer in LAST_ACK, where a SYN draws a challenge ACK):
 *   the member's TIME_WAIT (when it closed first) accepts a SYN whose
 *   sequence number is after the last it received (rcv_nxt: the last
 *   ack it sent, s->ack), or, when the old connection carried
 *   timestamps, whose TSval is newer than the last the client sent (the
 *   client half's ts_last, at least the member's ts_recent); an older
 *   TSval is refused either way (PAWS, whose window in TIME_WAIT is 0).
 * Any other closing state (a FIN one way, or not yet acknowledged) keeps
 * the port. */
static __always_inline int snat_reusable(struct snat_probes *st, const struct flow_val *s)
{
	__u32 both = CLOSE_FIN_CLIENT | CLOSE_FIN_SERVER;
	struct flow_val *c;
	__u32 ts_last;

	const struct syn_info *syn = st->syn;

	if (!syn->ok)
		return 0;
	if (s->closing & CLOSE_RST)
		return 1;
	if ((s->closing & both) != both)
		return 0;
	c = flow_lookup(&s->peer);
	if (!c || (__s32)(s->ack - c->seq_next) < 0 || (__s32)(c->ack - s->seq_next) < 0)
		return 0;
	ts_last = c->ts_last;
	if (ts_last && syn->has_ts) {
		if ((__s32)(ts_last - syn->tsval) > 0)
			return 0;
		if ((__s32)(syn->tsval - ts_last) > 0)
			return 1;
	}
	return (__s32)(syn->seq - s->ack) > 0;
}

/* Gives the SNAT tuple skey of a closed pair (snat_reusable) to the new
 * flow whose server half is sval: removes the pair, whose close record is
 * the one a new SYN on a closing connection emits (flow_event_restart),
 * and inserts sval into half_open. Returns -1 on success, else a drop
 * reason. A global function: its frame is not added to the probes'. */
__noinline int snat_take(struct flow_key *skey, struct flow_val *sval)
{
	struct flow_val *s, *c;

	if (!skey || !sval)
		return REASON_DROP_SNAT_EXHAUSTED;
	s = flow_lookup(skey);
	if (s) {
		c = flow_lookup(&s->peer);
		if (c && flow_key_eq(&c->peer, skey)) {
			flow_event_restart(&s->peer, c);
			flow_delete(&s->peer);
		}
		flow_delete(skey);
	}
	flow_self4(skey, &sval->self4);
	if (bpf_map_update_elem(&half_open, skey, sval, BPF_NOEXIST))
		return REASON_DROP_SNAT_EXHAUSTED;
	count(sval->vid, REASON_EVENT_SNAT_REUSED, 0);
	return -1;
}

/* One probe: returns 1 to stop (allocated or failed), 0 for the next. */
static long snat_probe(__u32 i, void *data)
{
	struct snat_probes *st = data;
	struct flow_key *skey = st->skey;
	struct flow_val *o;
	struct addr *a;
	__u32 ai, port;
	long err;

	if (st->n == 0 || st->range == 0)
		return 1;
	ai = st->base + (st->h + i) % st->n;
	a = bpf_map_lookup_elem(&snat_addrs, &ai);
	if (!a) {
		st->result = REASON_DROP_SNAT_EXHAUSTED;
		return 1;
	}
	/* The first round (one probe per address) tries the client port,
	 * later ones random ports. */
	if (st->cport && i < st->n)
		port = st->cport;
	else
		port = st->min + mix32(st->hp + i) % st->range;
	skey->daddr = *a;
	skey->dport = bpf_htons(port);
	/* Half-open holders first: during a flood they hold most ports. */
	o = bpf_map_lookup_elem(&half_open, skey);
	if (o) {
		__u64 c = o->created_ns;

		if (!st->oldest_port || (__s64)(c - st->oldest_ns) < 0) {
			st->oldest_ns = c;
			st->oldest_ai = ai;
			st->oldest_port = port;
		}
		/* Enough of a sample: reclaim rather than probe on. */
		return ++st->held >= SNAT_RECLAIM_SAMPLE;
	}
	o = flow_lookup(skey);
	if (o) {
		/* Held by an established flow: taken (snat_take) only when
		 * closed and the member would accept the new SYN. */
		if (!o->closing || !snat_reusable(st, o))
			return 0;
		st->reuse = 1;
		return 1;
	}
	flow_self4(skey, &st->sval->self4);
	err = bpf_map_update_elem(&half_open, skey, st->sval, BPF_NOEXIST);
	if (err == 0) {
		st->result = -1;
		return 1;
	}
	if (err != -EEXIST) {
		st->result = REASON_DROP_TABLE_FULL;
		return 1;
	}
	return 0;
}

/* Allocates the SNAT (address, port) of a new flow by inserting its server
 * side half into half_open: the insert with BPF_NOEXIST is the
 * allocation, and a candidate is skipped when an established flow holds
 * it, so two flows never share a server side tuple (promotion inserts
 * with BPF_NOEXIST too). The client port is kept when it is in the SNAT
 * range and free; then random (address, port) pairs are probed from a
 * hash of the client tuple: independent probes stay successful close to
 * exhaustion, where a run of consecutive ports clusters (at 90 % used,
 * 32 consecutive ports are all taken for about 3 % of new flows, 96
 * random ones for 0.004 %). Candidates held by half-open flows (a flood
 * holds them) are sampled: after SNAT_RECLAIM_SAMPLE of them, or when the
 * probes run out without a free one, the oldest half-open holder is
 * reclaimed: its client half is deleted and the port reused. A flood
 * thus recycles its own stale entries at a bounded cost per packet, and
 * a handshake in progress, one of the youngest, is almost never the
 * oldest of the sample. The probes
 * run in bpf_loop: the verifier checks one probe, not each of them.
 * skey comes with saddr, sport, proto and family set; on success its
 * daddr and dport hold the allocation. Returns -1 on success, else a
 * drop reason. */
static __always_inline int snat_alloc(const struct pkt_meta *p, const struct syn_info *syn,
				      const struct svc_val *svc, const struct config *cfg,
				      __u32 h, struct flow_key *skey, struct flow_val *sval)
{
	__u16 cport = bpf_ntohs(p->key.sport);
	struct snat_probes st = {
		.skey = skey,
		.sval = sval,
		.syn = syn,
		.base = svc->snat_base,
		.n = svc->snat_count,
		.min = cfg->snat_port_min,
		.h = h,
		.hp = mix32(h ^ 0x9e3779b9),
		.result = REASON_DROP_SNAT_EXHAUSTED,
	};
	struct flow_val *o, *v;
	struct addr *a;

	if (st.n == 0 || st.n > MAX_SNAT || cfg->snat_port_max < st.min)
		return REASON_DROP_SNAT_EXHAUSTED;
	st.range = cfg->snat_port_max - st.min + 1;
	if (cport >= st.min && cport <= cfg->snat_port_max)
		st.cport = cport;
	bpf_loop(SNAT_PROBES, snat_probe, &st, 0);
	if (st.reuse)
		return snat_take(skey, sval);
	if (st.result != REASON_DROP_SNAT_EXHAUSTED || !st.oldest_port)
		return st.result;

	a = bpf_map_lookup_elem(&snat_addrs, &st.oldest_ai);
	if (!a)
		return REASON_DROP_SNAT_EXHAUSTED;
	skey->daddr = *a;
	skey->dport = bpf_htons(st.oldest_port);
	flow_self4(skey, &sval->self4);
	o = bpf_map_lookup_elem(&half_open, skey);
	if (o) {
		/* The victim's client half, if it is still the victim's. */
		v = bpf_map_lookup_elem(&half_open, &o->peer);
		if (v && flow_key_eq(&v->peer, skey))
			bpf_map_delete_elem(&half_open, &o->peer);
	}
	if (bpf_map_update_elem(&half_open, skey, sval, BPF_ANY))
		return REASON_DROP_TABLE_FULL;
	count(svc->vid, REASON_EVENT_SNAT_RECLAIMED, 0);
	return -1;
}

#endif
