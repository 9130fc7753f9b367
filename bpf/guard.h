/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Ingress validation (BCP 38 at the edge). Clients arrive on the external
 * NIC and members on the internal one: a flow half's packets must arrive
 * on the NIC of its side (the settings' ifindex and MAC, by the half's
 * direction), two compares on values in cache. A packet of a flow on
 * the other NIC is dropped; a frame not addressed to the NIC's MAC (a
 * broadcast, multicast or another host's frame seen in promiscuous mode)
 * is left to the stack untranslated. The first packet of a new flow must
 * come in on the external NIC, and its source must not be a martian:
 * bogons, the host's own, VIP and SNAT addresses and the internal
 * subnets, all in two small LPM tries the control plane writes, looked up
 * on new flows only. */
#ifndef EDGEPROXY_GUARD_H
#define EDGEPROXY_GUARD_H

#include "common.h"
#include "csum.h"

#ifndef MAX_MARTIANS
#define MAX_MARTIANS 1024 /* martian prefixes per family */
#endif

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_MARTIANS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct martian4);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} martians4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_MARTIANS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct martian6);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} martians6 SEC(".maps");

/* The frame's destination MAC is mac: two loads and compares. The frame
 * is read through a plain pointer: through the packed struct ethhdr,
 * clang would load byte by byte. */
static __always_inline int mac_is(const struct ethhdr *eth, const __u8 *mac)
{
	const void *d = eth;

	return *(const __u32 *)d == *(const __u32 *)mac &&
	       *(const __u16 *)(d + 4) == *(const __u16 *)(mac + 4);
}

/* The verdict of a reason guard_* returned. */
static __always_inline int guard_verdict(int reason)
{
	return reason == REASON_PASS_FOREIGN_MAC || reason == REASON_PASS_MALFORMED ? XDP_PASS : XDP_DROP;
}

/* The NIC a flow half of direction dir arrives on: ifindex, and its MAC
 * at mac. */
static __always_inline __u32 flow_ingress(const struct config *cfg, __u8 dir, const __u8 **mac)
{
	if (dir == DIR_CLIENT) {
		*mac = cfg->ext_mac;
		return cfg->ext_ifindex;
	}
	*mac = cfg->int_mac;
	return cfg->int_ifindex;
}

/* Whether a packet of the flow half f arrived on the NIC of f's side,
 * addressed to its MAC. */
static __always_inline int guard_flow_ok(struct xdp_md *ctx, const struct ethhdr *eth,
					 const struct config *cfg, const struct flow_val *f)
{
	const __u8 *mac;
	__u32 ifindex = flow_ingress(cfg, f->dir, &mac);

	return ctx->ingress_ifindex == ifindex && mac_is(eth, mac);
}

/* Checks a packet of the flow half f against the NIC it must arrive on.
 * Returns -1 when it did, else the reason. */
static __always_inline int guard_flow(struct xdp_md *ctx, const struct ethhdr *eth,
				      const struct config *cfg, const struct flow_val *f)
{
	const __u8 *mac;

	if (guard_flow_ok(ctx, eth, cfg, f))
		return -1;
	return ctx->ingress_ifindex != flow_ingress(cfg, f->dir, &mac) ? REASON_DROP_INGRESS
								       : REASON_PASS_FOREIGN_MAC;
}

/* Why guard_flow_ok refused a packet: the reason, counted. Returns the
 * verdict. Out of line: the established path only tests. */
static __noinline int guard_flow_refuse(struct xdp_md *ctx, const struct config *cfg,
					const struct flow_val *f, __u64 bytes)
{
	int r = ctx->ingress_ifindex != (f->dir == DIR_CLIENT ? cfg->ext_ifindex : cfg->int_ifindex)
			? REASON_DROP_INGRESS
			: REASON_PASS_FOREIGN_MAC;

	count(f->vid, r, bytes);
	return guard_verdict(r);
}

static __always_inline int martian_source(const struct flow_key *k)
{
	if (k->family == 4) {
		struct martian4 mk = { .prefixlen = 32, .addr = k->saddr.w[0] };

		return bpf_map_lookup_elem(&martians4, &mk) != NULL;
	}
	struct martian6 mk = { .prefixlen = 128, .addr = k->saddr };

	return bpf_map_lookup_elem(&martians6, &mk) != NULL;
}

/* Whether the frame's IPv4 header has a right checksum. Only for new
 * flows: the established path leaves a damaged header as damaged (the
 * rewrite updates the checksum incrementally), for the receiver to drop.
 * The header is copied out (zero-padded): no loop over packet bytes. */
static __always_inline int ipv4_header_ok(struct xdp_md *ctx, __u32 hlen)
{
	__u16 w[30] = {};

	if (hlen < sizeof(struct iphdr) || hlen > sizeof(w) ||
	    bpf_xdp_load_bytes(ctx, ETH_HLEN, w, hlen & 0x3f))
		return 0;
	return csum_fold64(csum_words(w, 30)) == 0xffff;
}

/* Checks the first packet of a new flow (a client's, to a VIP). Returns
 * -1 when it may open the flow, else the reason. A global function: its
 * frame (the trie keys) stays off the new flow path's stack. */
__noinline int guard_new(struct xdp_md *ctx, const struct pkt_meta *m, const struct config *cfg)
{
	void *data = (void *)(long)ctx->data;
	struct ethhdr *eth = data;

	if (!m || !cfg)
		return REASON_PASS_MALFORMED;
	if (data + sizeof(*eth) > (void *)(long)ctx->data_end)
		return REASON_PASS_MALFORMED;
	if (cfg->ext_ifindex) {
		if (ctx->ingress_ifindex != cfg->ext_ifindex)
			return REASON_DROP_INGRESS;
		if (!mac_is(eth, cfg->ext_mac))
			return REASON_PASS_FOREIGN_MAC;
	}
	if (martian_source(&m->key))
		return REASON_DROP_MARTIAN;
	/* The header's length is the datagram's less the payload's. */
	if (m->key.family == 4 && !ipv4_header_ok(ctx, m->l3_len - m->l4_len))
		return REASON_DROP_BAD_HEADER;
	return -1;
}

#endif
