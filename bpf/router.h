/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Router behaviour: a forwarded packet leaves with its TTL (hop limit)
 * one lower (nat_rewrite); one whose TTL runs out, or that is larger than the egress
 * MTU, is answered by the program itself with ICMP time exceeded or
 * fragmentation needed / packet too big (XDP_TX back out of the NIC it
 * came in on), as the kernel's forwarding path would. The stack cannot
 * do it for us: the VIP is a local address, so it would take the packet
 * as its own instead of forwarding it. IPv4 packets too big without DF
 * are dropped: fastl4 virtuals carry no fragments. */
#ifndef EDGEPROXY_ROUTER_H
#define EDGEPROXY_ROUTER_H

#include "common.h"
#include "csum.h"
#include "maps.h"
#include "parse.h"

#define IP_DF 0x4000
#define ICMP_FRAG_NEEDED 4
#define ICMP_EXC_TTL 0

enum icmp_reply_kind {
	ICMP_REPLY_TIME_EXCEEDED = 0,
	ICMP_REPLY_TOO_BIG = 1,
};

/* The message quotes the IP header and the first 8 bytes after it: the
 * ports and, for TCP, the sequence number the sender checks. */
#define REPLY4_QUOTE (sizeof(struct iphdr) + 8)
#define REPLY6_QUOTE (sizeof(struct ipv6hdr) + 8)
#define REPLY4_LEN (sizeof(struct iphdr) + 8 + REPLY4_QUOTE)
#define REPLY6_LEN (sizeof(struct ipv6hdr) + 8 + REPLY6_QUOTE)

/* Cuts the frame to len bytes. */
static __always_inline int frame_cut(struct xdp_md *ctx, __u32 len)
{
	__u64 cur = bpf_xdp_get_buff_len(ctx);

	if (cur < len)
		return -1;
	if (cur > len && bpf_xdp_adjust_tail(ctx, -(int)(cur - len)))
		return -1;
	return 0;
}

static __always_inline int icmp_reply4(struct xdp_md *ctx, __u32 kind, __u32 mtu)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + ETH_HLEN;
	struct icmphdr *icmp;
	__u8 macs[12];
	__be32 src, dst;

	if ((void *)(iph + 1) + 8 > end || iph->ihl != 5)
		return -1;
	if (kind == ICMP_REPLY_TOO_BIG && !(iph->frag_off & bpf_htons(IP_DF)))
		return -1;
	__builtin_memcpy(macs, eth->h_source, ETH_ALEN);
	__builtin_memcpy(macs + ETH_ALEN, eth->h_dest, ETH_ALEN);
	src = iph->daddr;
	dst = iph->saddr;
	/* Room for the new IP and ICMP headers in front of the old IP
	 * header, which becomes the quote. */
	if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(struct iphdr) + 8)))
		return -1;
	if (frame_cut(ctx, ETH_HLEN + REPLY4_LEN))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + ETH_HLEN + REPLY4_LEN > end)
		return -1;
	eth = data;
	iph = data + ETH_HLEN;
	icmp = (void *)(iph + 1);
	__builtin_memcpy(eth, macs, sizeof(macs));
	eth->h_proto = bpf_htons(ETH_P_IP);
	*(__u8 *)iph = 0x45;
	iph->tos = 0xc0; /* internetwork control, as the kernel sends */
	iph->tot_len = bpf_htons(REPLY4_LEN);
	iph->id = 0;
	iph->frag_off = 0;
	iph->ttl = 64;
	iph->protocol = IPPROTO_ICMP;
	iph->check = 0;
	iph->saddr = src;
	iph->daddr = dst;
	iph->check = ~csum_fold64(csum_words((void *)iph, sizeof(*iph) / 2));
	icmp->type = kind == ICMP_REPLY_TOO_BIG ? ICMP_DEST_UNREACH : ICMP_TIME_EXCEEDED;
	icmp->code = kind == ICMP_REPLY_TOO_BIG ? ICMP_FRAG_NEEDED : ICMP_EXC_TTL;
	icmp->checksum = 0;
	icmp->rest = kind == ICMP_REPLY_TOO_BIG ? bpf_htonl(mtu & 0xffff) : 0;
	icmp->checksum = ~csum_fold64(csum_words((void *)icmp, (8 + REPLY4_QUOTE) / 2));
	return 0;
}

static __always_inline int icmp_reply6(struct xdp_md *ctx, __u32 kind, __u32 mtu)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	struct icmp6hdr *icmp;
	struct addr src, dst;
	__u8 macs[12];
	__u64 s;

	if ((void *)(ip6 + 1) + 8 > end)
		return -1;
	__builtin_memcpy(macs, eth->h_source, ETH_ALEN);
	__builtin_memcpy(macs + ETH_ALEN, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(&src, &ip6->daddr, sizeof(src));
	__builtin_memcpy(&dst, &ip6->saddr, sizeof(dst));
	if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(struct ipv6hdr) + 8)))
		return -1;
	if (frame_cut(ctx, ETH_HLEN + REPLY6_LEN))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + ETH_HLEN + REPLY6_LEN > end)
		return -1;
	eth = data;
	ip6 = data + ETH_HLEN;
	icmp = (void *)(ip6 + 1);
	__builtin_memcpy(eth, macs, sizeof(macs));
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	*(__be32 *)ip6 = bpf_htonl(0x60000000);
	ip6->payload_len = bpf_htons(8 + REPLY6_QUOTE);
	ip6->nexthdr = IPPROTO_ICMPV6;
	ip6->hop_limit = 64;
	__builtin_memcpy(&ip6->saddr, &src, sizeof(src));
	__builtin_memcpy(&ip6->daddr, &dst, sizeof(dst));
	icmp->icmp6_type = kind == ICMP_REPLY_TOO_BIG ? ICMPV6_PKT_TOOBIG : ICMPV6_TIME_EXCEED;
	icmp->icmp6_code = 0;
	icmp->icmp6_cksum = 0;
	icmp->icmp6_dataun.un_data32[0] = kind == ICMP_REPLY_TOO_BIG ? bpf_htonl(mtu) : 0;
	s = csum_words((void *)&ip6->saddr, 16) + bpf_htons(8 + REPLY6_QUOTE) +
	    bpf_htons(IPPROTO_ICMPV6) + csum_words((void *)icmp, (8 + REPLY6_QUOTE) / 2);
	icmp->icmp6_cksum = ~csum_fold64(s);
	return 0;
}

#ifndef ICMP_REPLY_RATE
#define ICMP_REPLY_RATE 1000 /* ICMP errors sent per second and CPU, */
#endif
#ifndef ICMP_REPLY_BURST
#define ICMP_REPLY_BURST 100 /* in bursts of up to this many: like the
			      * kernel's icmp_msgs_per_sec, so that spoofed
			      * sources cannot turn the program into a
			      * reflector */
#endif
#define ICMP_REPLY_NS (1000000000ULL / ICMP_REPLY_RATE)

/* The sending budget of a CPU: nanoseconds of credit, one message's
 * worth spent per message. */
struct icmp_budget {
	__u64 last_ns;
	__u64 credit_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct icmp_budget);
} icmp_budget SEC(".maps");

/* Takes one message from this CPU's budget; 0 when it is spent. */
static __always_inline int icmp_budget_take(void)
{
	__u32 zero = 0;
	struct icmp_budget *b = bpf_map_lookup_elem(&icmp_budget, &zero);
	__u64 now = bpf_ktime_get_coarse_ns(), credit;

	if (!b)
		return 0;
	credit = b->credit_ns + (now - b->last_ns);
	if (now < b->last_ns || credit > ICMP_REPLY_BURST * ICMP_REPLY_NS)
		credit = ICMP_REPLY_BURST * ICMP_REPLY_NS;
	b->last_ns = now;
	if (credit < ICMP_REPLY_NS) {
		b->credit_ns = credit;
		return 0;
	}
	b->credit_ns = credit - ICMP_REPLY_NS;
	return 1;
}

/* Answers the packet m (of virtual vid) with an ICMP error: time
 * exceeded, or too big with the egress mtu. Returns XDP_TX, or XDP_DROP
 * when no message is due (an IPv4 packet without DF, a header with
 * options), none could be built or this CPU's budget is spent. Counted
 * either way. A global function: a rare path, checked once. */
__noinline int icmp_reply(struct xdp_md *ctx, const struct pkt_meta *m, __u32 vid, __u32 kind,
			  __u32 mtu)
{
	__u32 bytes;
	int r;

	if (!m)
		return XDP_DROP;
	bytes = m->bytes;
	if (m->frag == FRAG_LATER || !icmp_budget_take())
		r = -1;
	else if (m->key.family == 4)
		r = icmp_reply4(ctx, kind, mtu);
	else
		r = icmp_reply6(ctx, kind, mtu);
	if (r < 0) {
		count(vid, kind == ICMP_REPLY_TOO_BIG ? REASON_DROP_FRAG_NEEDED : REASON_DROP_TTL, bytes);
		return XDP_DROP;
	}
	count(vid, kind == ICMP_REPLY_TOO_BIG ? REASON_TX_TOO_BIG : REASON_TX_TIME_EXCEEDED, bytes);
	return XDP_TX;
}

#endif
