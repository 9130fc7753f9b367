/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Ingress validation (BCP 38 at the edge). Clients arrive on the external
 * NIC and members on the internal one: each flow half remembers the NIC
 * (ifindex and MAC) its packets arrive on, so the established path checks
 * them with two compares on values it reads anyway. A packet of a flow on
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

/* Records the NIC a new flow half of direction dir arrives on. */
static __always_inline void flow_set_ingress(struct flow_val *v, const struct config *cfg, __u8 dir)
{
	if (dir == DIR_CLIENT) {
		v->in_ifindex = cfg->ext_ifindex;
		__builtin_memcpy(v->in_mac, cfg->ext_mac, sizeof(v->in_mac));
	} else {
		v->in_ifindex = cfg->int_ifindex;
		__builtin_memcpy(v->in_mac, cfg->int_mac, sizeof(v->in_mac));
	}
}

/* The verdict of a reason guard_* returned. */
static __always_inline int guard_verdict(int reason)
{
	return reason == REASON_PASS_FOREIGN_MAC || reason == REASON_PASS_MALFORMED ? XDP_PASS : XDP_DROP;
}

/* Whether a packet of the flow half f arrived on f's NIC, addressed to
 * its MAC. */
static __always_inline int guard_flow_ok(struct xdp_md *ctx, const struct ethhdr *eth,
					 const struct flow_val *f)
{
	return ctx->ingress_ifindex == f->in_ifindex && mac_is(eth, f->in_mac);
}

/* Why guard_flow_ok refused a packet: the reason, counted. Returns the
 * verdict. Out of line: the established path only tests. */
static __noinline int guard_flow_refuse(struct xdp_md *ctx, const struct flow_val *f, __u64 bytes)
{
	int r = ctx->ingress_ifindex != f->in_ifindex ? REASON_DROP_INGRESS : REASON_PASS_FOREIGN_MAC;

	count(f->vid, r, bytes);
	return guard_verdict(r);
}

/* Checks a packet of the flow half f against the NIC it must arrive on.
 * Returns -1 when it did, else the reason. */
static __always_inline int guard_flow(struct xdp_md *ctx, const struct ethhdr *eth,
				      const struct flow_val *f)
{
	if (guard_flow_ok(ctx, eth, f))
		return -1;
	return ctx->ingress_ifindex != f->in_ifindex ? REASON_DROP_INGRESS : REASON_PASS_FOREIGN_MAC;
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
