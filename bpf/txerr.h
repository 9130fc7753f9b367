/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Frames redirected to an egress NIC that the devmap or the driver
 * refused. XDP_REDIRECT only queues a frame: the device's ndo_xdp_xmit
 * runs after the program has returned (and counted the frame as
 * forwarded), when the NAPI poll flushes the devmap, and may refuse it
 * (the device is down, its ring is full, a veth whose peer takes no XDP
 * frames). Two tracing programs count those frames per egress slot of
 * tx_ports, in tx_errors, which the control plane reports as
 * edgeproxy_xdp_tx_errors_total next to the forwarded counts:
 * - xdp_redirect_err: refused when queued (device down, frame too big);
 * - xdp_devmap_xmit: refused by the driver when flushed.
 * Tracepoints are global: a frame counts only when its NIC is in this
 * fast path's network namespace (netns_cookie, written at load) and is
 * one of its egress NICs (tx_slots). */
#ifndef EDGEPROXY_TXERR_H
#define EDGEPROXY_TXERR_H

#include "common.h"
#include "maps.h"

/* The network namespace of the fast path (SO_NETNS_COOKIE). */
const volatile __u64 netns_cookie = 0;

/* Frames refused, by tx_ports slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_TX_PORTS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tx_errors SEC(".maps");

/* The kernel's types, as far as they are read here: the offsets are
 * relocated against the running kernel's BTF (CO-RE). */
struct net___txerr {
	__u64 net_cookie;
} __attribute__((preserve_access_index));

struct net_device___txerr {
	int ifindex;
	struct {
		struct net___txerr *net;
	} nd_net;
} __attribute__((preserve_access_index));

/* The tx_ports slot of dev when it is one of this fast path's NICs,
 * else 0. */
static __always_inline __u32 txerr_slot(const struct net_device___txerr *dev)
{
	__u32 ifindex, *slot;

	if (!dev || !dev->nd_net.net || dev->nd_net.net->net_cookie != netns_cookie)
		return 0;
	ifindex = dev->ifindex;
	slot = bpf_map_lookup_elem(&tx_slots, &ifindex);
	return slot ? *slot : 0;
}

static __always_inline void txerr_count(__u32 slot, int frames)
{
	__u64 *n;

	if (frames <= 0 || !slot)
		return;
	n = bpf_map_lookup_elem(&tx_errors, &slot);
	if (n)
		*n += frames;
}

/* xdp_devmap_xmit(from_dev, to_dev, sent, drops, err): a devmap flush
 * (ctx: the tracepoint's arguments). */
SEC("tp_btf/xdp_devmap_xmit")
int edgeproxy_tx_refused(__u64 *ctx)
{
	txerr_count(txerr_slot((void *)ctx[1]), (int)ctx[3]);
	return 0;
}

/* xdp_redirect_err(dev, xdp, tgt, err, map_type, map_id, index): a
 * redirect refused when queued; dev is the ingress NIC, index the
 * tx_ports slot. */
SEC("tp_btf/xdp_redirect_err")
int edgeproxy_redirect_refused(__u64 *ctx)
{
	if ((__u32)ctx[4] != BPF_MAP_TYPE_DEVMAP || !txerr_slot((void *)ctx[0]))
		return 0;
	txerr_count((__u32)ctx[6], 1);
	return 0;
}

#endif
