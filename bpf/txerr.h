/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Frames redirected to an egress NIC that the devmap or the driver
 * refused. XDP_REDIRECT only queues a frame: the device's ndo_xdp_xmit
 * runs after the program has returned (and counted the frame as
 * forwarded), when the NAPI poll flushes the devmap, and may refuse it
 * (the device is down, its ring is full, a veth whose peer takes no XDP
 * frames). Two tracing programs count those frames per egress slot of
 * tx_ports, in tx_errors, which the control plane reports as
 * edgeproxy_xdp_tx_errors_total:
 * - xdp_redirect_err: refused when queued (device down, frame too big);
 * - xdp_devmap_xmit: refused by the driver when flushed.
 * Tracepoints are global: a frame counts only when its NIC is in this
 * fast path's network namespace (netns_cookie, written at load) and is
 * one of its egress NICs (tx_slots).
 *
 * They also move each refused frame out of the fwd_* count of its virtual
 * into drop_tx_refused, so that what is counted as forwarded left. To
 * know whose frames were refused, the program notes every frame it
 * redirects (tx_note) in a per-CPU ring of the egress slot, in the order
 * the kernel queues them; the tracepoints run on the CPU that queued the
 * frames, and read the ring:
 * - xdp_redirect_err fires right after the program returned, before the
 *   CPU runs it again: the refused frame is the slot's last noted.
 * - xdp_devmap_xmit fires when the CPU's queue of the device (at most
 *   DEV_MAP_BULK_SIZE, 16, frames) is flushed: at the end of the NAPI
 *   poll, or when a 17th frame is queued, which the program noted before
 *   the flush. The queue holds the frames noted since the last flush, in
 *   order, and ndo_xdp_xmit sends a prefix of them: the refused ones are
 *   the last drops of the flushed batch.
 * This is exact as long as only this program redirects to its egress
 * NICs (the kernel's queue is per device, not per program). Should the
 * ring lose track (frames noted that were never queued: a test run, XDP
 * in generic mode), a flush takes the last frames noted. */
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

#define TX_RING 32 /* a flushed batch (16) and the frame noted before it */

/* A frame redirected to an egress slot, as counted. */
struct tx_frame {
	__u16 vid;
	__u16 reason;
	__u32 bytes;
};

/* Frames redirected to one egress slot, on one CPU: noted counts the
 * frames the program redirected, flushed those the tracepoints accounted
 * for; the last TX_RING are in f, by count modulo TX_RING. */
struct tx_ring {
	__u32 noted;
	__u32 flushed;
	struct tx_frame f[TX_RING];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_TX_PORTS);
	__type(key, __u32);
	__type(value, struct tx_ring);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tx_rings SEC(".maps");

/* Notes a frame redirected to slot, counted under (vid, reason). */
static __always_inline void tx_note(__u32 slot, __u32 vid, __u32 reason, __u64 bytes)
{
	struct tx_ring *r = bpf_map_lookup_elem(&tx_rings, &slot);
	struct tx_frame *e;

	if (!r)
		return;
	e = &r->f[r->noted & (TX_RING - 1)];
	e->vid = vid;
	e->reason = reason;
	e->bytes = bytes;
	r->noted++;
}

/* Moves the noted frame e from its forwarded count to drop_tx_refused, on
 * this CPU (where it was counted). */
static __always_inline void tx_refund(const struct tx_frame *e)
{
	__u32 vid = e->vid, k;
	struct stat *s;

	if (vid >= MAX_VIRTUALS || e->reason >= REASON_MAX)
		return;
	k = vid * REASON_MAX + e->reason;
	s = bpf_map_lookup_elem(&stats, &k);
	if (s && s->packets) {
		s->packets--;
		s->bytes -= e->bytes;
	}
	count(vid, REASON_DROP_TX_REFUSED, e->bytes);
}

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
	__u32 slot = txerr_slot((void *)ctx[1]);
	int sent = (int)ctx[2], drops = (int)ctx[3];
	struct tx_ring *r;
	__u32 start, cnt;

	txerr_count(slot, drops);
	r = slot ? bpf_map_lookup_elem(&tx_rings, &slot) : NULL;
	if (!r || sent < 0 || drops < 0 || sent + drops > 16)
		return 0;
	cnt = sent + drops;
	/* The batch starts after the last one accounted for, unless the
	 * ring lost track: then it is the last frames noted. */
	start = r->flushed;
	if (r->noted - start < cnt || r->noted - start > cnt + 1)
		start = r->noted - cnt;
	for (int i = 0; i < 16; i++) {
		if (i >= drops)
			break;
		tx_refund(&r->f[(start + sent + i) & (TX_RING - 1)]);
	}
	r->flushed = start + cnt;
	return 0;
}

/* xdp_redirect_err(dev, xdp, tgt, err, map_type, map_id, index): a
 * redirect refused when queued; dev is the ingress NIC, index the
 * tx_ports slot. */
SEC("tp_btf/xdp_redirect_err")
int edgeproxy_redirect_refused(__u64 *ctx)
{
	__u32 slot = (__u32)ctx[6];
	struct tx_ring *r;

	if ((__u32)ctx[4] != BPF_MAP_TYPE_DEVMAP || !txerr_slot((void *)ctx[0]))
		return 0;
	txerr_count(slot, 1);
	/* Never queued: the last frame noted, no longer to be flushed. */
	r = bpf_map_lookup_elem(&tx_rings, &slot);
	if (!r || r->noted == r->flushed)
		return 0;
	r->noted--;
	tx_refund(&r->f[r->noted & (TX_RING - 1)]);
	return 0;
}

#endif
