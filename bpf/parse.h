/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Header parsing with a cursor: every header is pulled through
 * cursor_pull, which checks it lies inside the packet before the caller
 * may touch it. */
#ifndef EDGEPROXY_PARSE_H
#define EDGEPROXY_PARSE_H

#include "common.h"

#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define IP6_MF 0x0001
#define IP6_OFFSET 0xfff8

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

struct cursor {
	void *pos;
	void *end;
};

/* Returns the current position and advances by len, or NULL when fewer
 * than len bytes are left. */
static __always_inline void *cursor_pull(struct cursor *c, __u32 len)
{
	void *p = c->pos;

	if (p + len > c->end)
		return NULL;
	c->pos = p + len;
	return p;
}

enum frag_kind {
	FRAG_NONE = 0,
	FRAG_FIRST, /* offset 0, more fragments follow: has the L4 header */
	FRAG_LATER, /* offset > 0: no L4 header */
};

/* What parsing found, as scalars only: the handler is a global function,
 * verified once for all parse outcomes, and such a function may only take
 * pointers to plain data. */
struct pkt_meta {
	struct flow_key key;
	__u32 l3_len;   /* IP datagram length per the header */
	__u32 l4_len;   /* L4 bytes per the IP header */
	__u32 l4_off;   /* L4 header offset from the start of the frame */
	__u32 bytes;    /* frame length, for the counters */
	__u8 frag;      /* enum frag_kind */
	__u8 tcp_flags;
	__u8 tos;       /* IPv4 TOS / IPv6 traffic class, for the FIB */
	__u8 ttl;       /* IPv4 TTL / IPv6 hop limit */
};

/* A packet in the handler: the parse result and pointers re-derived from
 * it and checked again (eth and l3 cover the fixed headers, l4 the fixed
 * TCP (20), UDP (8) or ICMP (8) header). */
struct pkt {
	const struct pkt_meta *m;
	__u32 l3_len; /* m->l3_len, or the length after a rewrite that changed it */
	void *end;
	struct ethhdr *eth;
	void *l3;
	void *l4;
};

static __always_inline int parse_ipv4(struct cursor *c, struct pkt_meta *p)
{
	struct iphdr *iph = cursor_pull(c, sizeof(*iph));
	__u32 hlen, tot;
	__u16 frag;

	if (!iph)
		return REASON_PASS_MALFORMED;
	if (iph->version != 4 || iph->ihl < 5)
		return REASON_PASS_MALFORMED;
	hlen = iph->ihl * 4;
	/* Options: skip them; the rewrite touches fixed fields only. */
	if (hlen > sizeof(*iph) && !cursor_pull(c, hlen - sizeof(*iph)))
		return REASON_PASS_MALFORMED;
	tot = bpf_ntohs(iph->tot_len);
	/* Ethernet may pad short frames: trust tot_len, bounded by the frame. */
	if (tot < hlen || (void *)iph + tot > c->end)
		return REASON_PASS_MALFORMED;

	frag = bpf_ntohs(iph->frag_off);
	if (frag & IP_OFFSET)
		p->frag = FRAG_LATER;
	else if (frag & IP_MF)
		p->frag = FRAG_FIRST;

	p->l3_len = tot;
	p->l4_len = tot - hlen;
	p->tos = iph->tos;
	p->ttl = iph->ttl;
	p->key.family = 4;
	p->key.proto = iph->protocol;
	p->key.saddr.w[0] = iph->saddr;
	p->key.daddr.w[0] = iph->daddr;
	return -1;
}

/* Skips IPv6 extension headers (bounded by IPV6_MAX_EXT) and records a
 * fragment header. */
static __always_inline int parse_ipv6(struct cursor *c, struct pkt_meta *p)
{
	struct ipv6hdr *ip6 = cursor_pull(c, sizeof(*ip6));
	__u32 plen, ext = 0;
	__u8 nexthdr;

	if (!ip6)
		return REASON_PASS_MALFORMED;
	if (ip6->version != 6)
		return REASON_PASS_MALFORMED;
	plen = bpf_ntohs(ip6->payload_len);
	if ((void *)(ip6 + 1) + plen > c->end)
		return REASON_PASS_MALFORMED;
	nexthdr = ip6->nexthdr;

	for (int i = 0; i < IPV6_MAX_EXT; i++) {
		__u8 *h;
		__u32 len;

		switch (nexthdr) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_DSTOPTS:
		case IPPROTO_ROUTING:
			h = cursor_pull(c, 8);
			if (!h)
				return REASON_PASS_MALFORMED;
			/* A routing header with segments left means this is
			 * not the final destination: not ours to rewrite. */
			if (nexthdr == IPPROTO_ROUTING && h[3] != 0)
				return REASON_PASS_IPV6_ROUTING;
			len = ((__u32)h[1] + 1) * 8;
			break;
		case IPPROTO_AH:
			/* Authenticated: a rewrite would break it. */
			return REASON_PASS_PROTO;
		case IPPROTO_FRAGMENT: {
			__u16 off;

			h = cursor_pull(c, 8);
			if (!h)
				return REASON_PASS_MALFORMED;
			off = bpf_ntohs(*(__be16 *)(h + 2));
			if (off & IP6_OFFSET)
				p->frag = FRAG_LATER;
			else if (off & IP6_MF)
				p->frag = FRAG_FIRST;
			len = 8;
			break;
		}
		default:
			goto done;
		}
		nexthdr = h[0];
		/* The first 8 bytes were pulled above; pull the rest. The
		 * length fits in 11 bits, which keeps the verifier's view of
		 * the cursor bounded across iterations. */
		if (len > 8 && !cursor_pull(c, (len - 8) & 0x7ff))
			return REASON_PASS_MALFORMED;
		ext += len;
	}
	/* Too many extension headers: let the stack decide. */
	return REASON_PASS_MALFORMED;

done:
	if (ext > plen)
		return REASON_PASS_MALFORMED;
	p->l3_len = plen + sizeof(*ip6);
	p->l4_len = plen - ext;
	p->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	p->ttl = ip6->hop_limit;
	p->key.family = 6;
	p->key.proto = nexthdr;
	__builtin_memcpy(&p->key.saddr, &ip6->saddr, sizeof(p->key.saddr));
	__builtin_memcpy(&p->key.daddr, &ip6->daddr, sizeof(p->key.daddr));
	return -1;
}

/* Reports whether the IPv4 options of len bytes at off carry a loose or
 * strict source route. A global function, checked once, that walks a
 * copy on the stack (see mss_clamp); only packets with options get here. */
__noinline int ipv4_source_routed(struct xdp_md *ctx, __u32 off, __u32 len)
{
	__u8 opt[64] = {};
	__u32 at = 0;

	if (len == 0 || len > 40 || bpf_xdp_load_bytes(ctx, off & 0xff, opt, len))
		return 0;
	for (int i = 0; i < 40; i++) {
		__u8 kind, olen;

		if (at >= len)
			return 0;
		kind = opt[at & 63];
		if (kind == IPOPT_END)
			return 0;
		if (kind == IPOPT_NOOP) {
			at++;
			continue;
		}
		if (kind == IPOPT_LSRR || kind == IPOPT_SSRR)
			return 1;
		if (at + 1 >= len)
			return 0;
		olen = opt[(at + 1) & 63];
		if (olen < 2)
			return 0;
		at += olen;
	}
	return 0;
}

/* Parses Ethernet, IP and the L4 header into p. Returns -1 when the packet
 * is IPv4/IPv6 with a usable L4 header (or a later fragment), else the
 * pass reason. The IP header always follows a plain Ethernet header. */
static __always_inline int parse_packet(struct xdp_md *ctx, struct pkt_meta *p)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	struct ethhdr *eth = cursor_pull(&c, sizeof(*eth));
	int r;

	if (!eth)
		return REASON_PASS_MALFORMED;
	switch (eth->h_proto) {
	case bpf_htons(ETH_P_IP):
		r = parse_ipv4(&c, p);
		/* The header's length is the datagram's less the payload's. */
		if (r < 0 && p->l3_len - p->l4_len > sizeof(struct iphdr) &&
		    ipv4_source_routed(ctx, ETH_HLEN + sizeof(struct iphdr),
				       p->l3_len - p->l4_len - sizeof(struct iphdr)))
			return REASON_DROP_BAD_HEADER;
		break;
	case bpf_htons(ETH_P_IPV6):
		r = parse_ipv6(&c, p);
		break;
	case bpf_htons(ETH_P_8021Q):
	case bpf_htons(ETH_P_8021AD):
		/* The two NICs carry untagged traffic; a tagged frame goes
		 * to the stack (and its VLAN devices) untouched. */
		return REASON_PASS_VLAN;
	default:
		return REASON_PASS_NOT_IP;
	}
	if (r >= 0)
		return r;
	if (p->frag == FRAG_LATER)
		return -1;

	p->l4_off = c.pos - (void *)(long)ctx->data;
	switch (p->key.proto) {
	case IPPROTO_TCP: {
		struct tcphdr *th = cursor_pull(&c, sizeof(*th));

		if (!th || th->doff < 5 || (__u32)th->doff * 4 > p->l4_len)
			return REASON_PASS_MALFORMED;
		p->key.sport = th->source;
		p->key.dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
		return -1;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = cursor_pull(&c, sizeof(*uh));

		if (!uh || p->l4_len < sizeof(*uh))
			return REASON_PASS_MALFORMED;
		if (p->frag == FRAG_NONE && bpf_ntohs(uh->len) != p->l4_len)
			return REASON_DROP_BAD_HEADER;
		if (p->key.family == 6 && uh->check == 0)
			return REASON_DROP_BAD_HEADER;
		p->key.sport = uh->source;
		p->key.dport = uh->dest;
		return -1;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		/* Both have type, code, checksum and 4 more bytes. */
		void *ih = cursor_pull(&c, 8);

		if (!ih || p->l4_len < 8)
			return REASON_PASS_MALFORMED;
		if ((p->key.proto == IPPROTO_ICMP) != (p->key.family == 4))
			return REASON_PASS_PROTO;
		return -1;
	}
	default:
		return REASON_PASS_PROTO;
	}
}

/* The common cases in a few instructions: TCP over IPv4 without options
 * and not fragmented, or over IPv6 without extension headers. These fill
 * p as parse_packet would and return 1; they return 0, with p untouched,
 * for anything else, which parse_packet then handles. */
static __always_inline int parse_ipv4_tcp(struct xdp_md *ctx, struct pkt_meta *p)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + ETH_HLEN;
	struct tcphdr *th = (void *)(iph + 1);
	__u32 tot;

	if ((void *)(th + 1) > end)
		return 0;
	/* The EtherType read through a plain pointer: through the packed
	 * struct ethhdr, clang loads it a byte at a time. */
	if (*(__be16 *)(data + 12) != bpf_htons(ETH_P_IP) || *(__u8 *)iph != 0x45 ||
	    iph->protocol != IPPROTO_TCP || (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return 0;
	tot = bpf_ntohs(iph->tot_len);
	if ((void *)iph + tot > end || th->doff < 5 || (__u32)th->doff * 4 + sizeof(*iph) > tot)
		return 0;
	p->l3_len = tot;
	p->l4_len = tot - sizeof(*iph);
	p->l4_off = ETH_HLEN + sizeof(*iph);
	p->tos = iph->tos;
	p->ttl = iph->ttl;
	p->key.family = 4;
	p->key.proto = IPPROTO_TCP;
	p->key.saddr.w[0] = iph->saddr;
	p->key.daddr.w[0] = iph->daddr;
	p->key.sport = th->source;
	p->key.dport = th->dest;
	p->tcp_flags = ((__u8 *)th)[13];
	return 1;
}

static __always_inline int parse_ipv6_tcp(struct xdp_md *ctx, struct pkt_meta *p)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	struct tcphdr *th = (void *)(ip6 + 1);
	__u32 plen;

	if ((void *)(th + 1) > end)
		return 0;
	if (*(__be16 *)(data + 12) != bpf_htons(ETH_P_IPV6) || ip6->version != 6 ||
	    ip6->nexthdr != IPPROTO_TCP)
		return 0;
	plen = bpf_ntohs(ip6->payload_len);
	if ((void *)th + plen > end || th->doff < 5 || (__u32)th->doff * 4 > plen)
		return 0;
	p->l3_len = plen + sizeof(*ip6);
	p->l4_len = plen;
	p->l4_off = ETH_HLEN + sizeof(*ip6);
	p->tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);
	p->ttl = ip6->hop_limit;
	p->key.family = 6;
	p->key.proto = IPPROTO_TCP;
	__builtin_memcpy(&p->key.saddr, &ip6->saddr, sizeof(p->key.saddr));
	__builtin_memcpy(&p->key.daddr, &ip6->daddr, sizeof(p->key.daddr));
	p->key.sport = th->source;
	p->key.dport = th->dest;
	p->tcp_flags = ((__u8 *)th)[13];
	return 1;
}

/* Rebuilds the packet view from the parse result: pointers derived again
 * from ctx and checked. Returns 0, or -1 if the frame no longer holds the
 * headers the parser saw (it cannot happen; the check is for the
 * verifier). */
static __always_inline int pkt_load(struct xdp_md *ctx, const struct pkt_meta *m, struct pkt *p)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	/* The parser never goes beyond 14 + 60 (IPv4) or 14 + 40 + 6 * 2048
	 * (IPv6) bytes; the mask states a bound the verifier can use. */
	__u32 off = m->l4_off & 0x3fff;

	p->m = m;
	p->l3_len = m->l3_len;
	p->end = end;
	p->eth = data;
	p->l3 = data + ETH_HLEN;
	p->l4 = data + off;
	if (m->frag == FRAG_LATER)
		return -1;
	if (p->l3 + sizeof(struct iphdr) > end || p->l4 + 8 > end)
		return -1;
	return 0;
}

/* The verifier does not connect p->m->key.family or p->m->key.proto
 * (scalars on the stack) with the range proved for p->l3 and p->l4, so
 * code that picks the header layout from those fields proves the size
 * again. These return NULL only if the parser is wrong. */
static __always_inline void *pkt_l3(const struct pkt *p, __u32 size)
{
	void *h = p->l3;

	if (h + size > p->end)
		return NULL;
	return h;
}

static __always_inline void *pkt_l4(const struct pkt *p, __u32 size)
{
	void *h = p->l4;

	if (h + size > p->end)
		return NULL;
	return h;
}

#endif
