/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Next hop: bpf_fib_lookup after the rewrite, MACs set, redirect through
 * the tx_ports devmap. A rewritten packet is never passed to the stack:
 * when the next hop cannot be used it is dropped with a reason, and an
 * unresolved neighbour is reported to the control plane. */
#ifndef EDGEPROXY_FIB_H
#define EDGEPROXY_FIB_H

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "txerr.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

/* Where to send a packet. */
struct nexthop {
	__u8 macs[12]; /* destination then source MAC */
	__u16 tx_slot; /* the egress device's slot in tx_ports */
	__u16 mtu;     /* the egress device's MTU; on frag-needed, the route's */
} __attribute__((aligned(8))); /* set_macs reads 8 bytes: the verifier wants
				 * stack accesses aligned */

/* Writes both MACs with four moves (clang copies byte arrays a byte at a
 * time). Unaligned accesses are fine: the program is not loaded with
 * BPF_F_STRICT_ALIGNMENT. */
static __always_inline void set_macs(struct ethhdr *eth, const __u8 *dmac, const __u8 *smac)
{
	*(__u32 *)eth = *(const __u32 *)dmac;
	*(__u16 *)((__u8 *)eth + 4) = *(const __u16 *)(dmac + 4);
	*(__u32 *)((__u8 *)eth + 6) = *(const __u32 *)smac;
	*(__u16 *)((__u8 *)eth + 10) = *(const __u16 *)(smac + 4);
}

static __always_inline void neigh_report(struct bpf_fib_lookup *fib, __u8 family, __u64 now)
{
	struct neigh_key k = {};

	k.family = family;
	k.ifindex = fib->ifindex;
	if (family == 4)
		k.addr.w[0] = fib->ipv4_dst;
	else
		__builtin_memcpy(&k.addr, fib->ipv6_dst, sizeof(k.addr));
	bpf_map_update_elem(&neigh_miss, &k, &now, BPF_ANY);
}

/* Records the egress device of nh (its MAC and MTU) in tx_devs, in one
 * 8-byte store: a reader on another CPU sees the old or the new record. */
static __always_inline void tx_dev_set(const struct nexthop *nh)
{
	struct tx_dev d __attribute__((aligned(8)));

	__builtin_memcpy(d.mac, nh->macs + ETH_ALEN, ETH_ALEN);
	d.mtu = nh->mtu;
	*(volatile __u64 *)&tx_devs[nh->tx_slot & (MAX_TX_PORTS - 1)] = *(__u64 *)&d;
}

/* Looks up the next hop for a packet p that is rewritten to come from
 * peer->daddr:dport and go to peer->saddr:sport. Returns -1 with nh
 * filled, or a drop reason; with REASON_DROP_FRAG_NEEDED, nh->mtu is set.
 * The lookup checks p against the route's MTU; the egress device's MTU is
 * kept in nh for the flow to check later packets against. Not inlined: flows cache the result, so this
 * runs about once a second per flow, and its frame stays off the main
 * program's stack. It reads the settings itself, so that the established
 * path, which uses the cached next hop, does not look them up. */
static __noinline int fib_resolve(struct xdp_md *ctx, const struct pkt *p,
				  const struct flow_key *peer, struct nexthop *nh)
{
	struct config *cfg = settings_get();
	struct bpf_fib_lookup fib = {};
	__u32 *slot, *mtu;
	long rc;

	if (!cfg) /* cannot happen: an array always has its entries */
		return REASON_DROP_FIB;

	fib.l4_protocol = p->m->key.proto;
	fib.sport = peer->dport;
	fib.dport = peer->sport;
	fib.tot_len = p->l3_len;
	/* The lookup runs against fib_ifindex (the loopback device by
	 * default, see the control plane): the kernel insists that
	 * forwarding is enabled on the device it is given, and only
	 * loopback can have it without making the host a router. */
	fib.ifindex = cfg->fib_ifindex ? cfg->fib_ifindex : ctx->ingress_ifindex;
	if (p->m->key.family == 4) {
		fib.family = AF_INET;
		fib.tos = p->m->tos;
		fib.ipv4_src = peer->daddr.w[0];
		fib.ipv4_dst = peer->saddr.w[0];
	} else {
		fib.family = AF_INET6;
		fib.flowinfo = bpf_htonl((__u32)p->m->tos << 20);
		__builtin_memcpy(fib.ipv6_src, &peer->daddr, sizeof(fib.ipv6_src));
		__builtin_memcpy(fib.ipv6_dst, &peer->saddr, sizeof(fib.ipv6_dst));
	}

	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	switch (rc) {
	case BPF_FIB_LKUP_RET_SUCCESS:
		slot = bpf_map_lookup_elem(&tx_slots, &fib.ifindex);
		if (!slot || *slot == 0)
			return REASON_DROP_NO_TX_PORT;
		nh->tx_slot = *slot;
		/* With a zero length the helper reports the device's MTU.
		 * Its 32-bit result goes where the source address was (no
		 * longer needed): the call chain's stack is at its limit. */
		mtu = &fib.ipv4_src;
		*mtu = 0;
		if (bpf_check_mtu(ctx, fib.ifindex, mtu, 0, 0) < 0 || *mtu == 0 || *mtu > 0xffff)
			*mtu = 0xffff;
		nh->mtu = *mtu;
		__builtin_memcpy(nh->macs, fib.dmac, ETH_ALEN);
		__builtin_memcpy(nh->macs + ETH_ALEN, fib.smac, ETH_ALEN);
		tx_dev_set(nh);
		return -1;
	case BPF_FIB_LKUP_RET_NO_NEIGH:
		neigh_report(&fib, p->m->key.family, bpf_ktime_get_coarse_ns());
		return REASON_DROP_NO_NEIGH;
	case BPF_FIB_LKUP_RET_FRAG_NEEDED:
		nh->mtu = fib.mtu_result;
		return REASON_DROP_FRAG_NEEDED;
	default:
		return REASON_DROP_FIB;
	}
}

/* Sets the MACs and redirects to the device in slot of tx_ports, counted
 * under (vid, reason) and, when f is given, in the flow half's own
 * counters. Returns the XDP action. */
static __always_inline int nexthop_redirect(struct ethhdr *eth, __u32 slot, const __u8 *dmac,
					    const __u8 *smac, __u32 vid, __u32 reason, __u64 bytes,
					    struct flow_val *f)
{
	long act;

	set_macs(eth, dmac, smac);
	act = bpf_redirect_map(&tx_ports, slot, 0);
	if (act != XDP_REDIRECT) {
		count(vid, REASON_DROP_NO_TX_PORT, bytes);
		return XDP_DROP;
	}
	count(vid, reason, bytes);
	tx_note(slot, vid, reason, bytes);
	if (f) {
		f->packets++;
		f->bytes += bytes;
	}
	return XDP_REDIRECT;
}

#endif
