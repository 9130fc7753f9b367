/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Partial TCP and UDP checksums. A sender in this kernel whose device
 * offloads checksums (a veth whose peer has tx checksumming on, a bridge
 * over such ports) hands over a frame whose checksum field holds only the
 * folded pseudo-header sum, for the NIC to complete. A frame the program
 * redirects leaves without that note, so nothing would complete it and
 * the receiver drops it as corrupt: the program completes it itself. A
 * complete checksum equal to that value (1 in 65,536) is computed again,
 * to the same value. Frames from a real NIC always arrive complete. */
#ifndef EDGEPROXY_PARTIAL_H
#define EDGEPROXY_PARTIAL_H

#include "common.h"
#include "csum.h"
#include "parse.h"
#include "icmp.h"

/* The pseudo header's sum: addresses, protocol, L4 length. */
static __always_inline __u64 pseudo_sum(const struct addr *s, const struct addr *d, __u8 family,
					__u8 proto, __u32 len)
{
	__u64 sum = (__u64)s->w[0] + d->w[0] + bpf_htons(proto) + bpf_htons((__u16)len);

	if (family == 6)
		sum += (__u64)s->w[1] + s->w[2] + s->w[3] + d->w[1] + d->w[2] + d->w[3];
	return sum;
}

/* Whether the packet's TCP or UDP checksum is partial (before any
 * rewrite: the pseudo header is the one it arrived with). */
static __always_inline int l4_csum_partial(const struct pkt *p)
{
	const struct pkt_meta *m = p->m;
	__u16 check;

	if (m->key.proto == IPPROTO_TCP) {
		struct tcphdr *th = pkt_l4(p, sizeof(*th));

		if (!th)
			return 0;
		check = th->check;
	} else {
		struct udphdr *uh = pkt_l4(p, sizeof(*uh));

		if (!uh || !uh->check) /* IPv4 UDP without checksum */
			return 0;
		check = uh->check;
	}
	return check == csum_fold64(pseudo_sum(&m->key.saddr, &m->key.daddr, m->key.family,
					       m->key.proto, m->l4_len));
}

/* Computes the TCP or UDP checksum of the rewritten packet from scratch,
 * its addresses read back from the header. A segment longer than SUM_MAX
 * keeps the field as it is. Its own frame, off the forwarding path's
 * stack. */
static __noinline void l4_csum_complete(struct xdp_md *ctx, const struct pkt *p)
{
	const struct pkt_meta *m = p->m;
	struct addr s = {}, d = {};
	__u16 *check;
	__s64 sum;

	if (m->key.family == 4) {
		struct iphdr *iph = pkt_l3(p, sizeof(*iph));

		if (!iph)
			return;
		s.w[0] = iph->saddr;
		d.w[0] = iph->daddr;
	} else {
		struct ipv6hdr *ip6 = pkt_l3(p, sizeof(*ip6));

		if (!ip6)
			return;
		__builtin_memcpy(&s, &ip6->saddr, sizeof(s));
		__builtin_memcpy(&d, &ip6->daddr, sizeof(d));
	}
	if (m->key.proto == IPPROTO_TCP) {
		struct tcphdr *th = pkt_l4(p, sizeof(*th));

		if (!th)
			return;
		check = &th->check;
	} else {
		struct udphdr *uh = pkt_l4(p, sizeof(*uh));

		if (!uh)
			return;
		check = &uh->check;
	}
	if (m->l4_len > SUM_MAX)
		return;
	*check = 0;
	sum = frame_sum(ctx, m->l4_off, m->l4_len);
	if (sum < 0)
		return;
	*check = ~csum_fold64(sum + pseudo_sum(&s, &d, m->key.family, m->key.proto, m->l4_len));
	/* 0 would read as "no checksum" in UDP: send its other form. */
	if (m->key.proto == IPPROTO_UDP && !*check)
		*check = 0xffff;
}

#endif
