/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Flow events: what the program reports about flows to the control plane
 * through the flow_events ring buffer. The connection log writes them
 * (l4/flowlog.go), and the record carries what a peer needs to install
 * the flow too (both tuples, the virtual, the times, the counters).
 *
 * Only virtuals whose flags carry SVC_LOG (the connection log),
 * SVC_MIRROR (flow mirroring to the HA peer) or SVC_ANNOUNCE (ownership
 * for the scale-out peers, peers.h) report: the program reads the
 * virtual's flags once per new flow, on promotion, never on the
 * established path. A full ring drops the event, never the packet, and
 * counts it (event_log_ring_full). Close events come from the control
 * plane, which removes the flows (the GC and flows kill), in the same
 * record, and from the program for the closing flows it deletes itself
 * (a new SYN on the tuple). An open record carries the halves' TCP
 * tracking too, so that flow mirroring encodes it for the HA peer
 * without reading the flow tables back. */
#ifndef EDGEPROXY_EVENTS_H
#define EDGEPROXY_EVENTS_H

#include "common.h"
#include "maps.h"

#ifndef FLOW_EVENTS_SIZE
#define FLOW_EVENTS_SIZE (1 << 20) /* bytes (a power of two pages): about
				    * 7,000 events waiting for the reader */
#endif
#ifndef FLOW_EVENTS_WAKEUP
#define FLOW_EVENTS_WAKEUP (FLOW_EVENTS_SIZE / 8) /* bytes waiting that wake
						   * the reader up */
#endif

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, FLOW_EVENTS_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flow_events SEC(".maps");

/* Reports an event of kind about the pair c (client half, whose key is
 * ck: an entry holds its own key only folded, flow_self4) and s (server
 * half, NULL when missing), when its virtual logs or mirrors. */
static __always_inline void flow_event(const struct flow_key *ck, const struct flow_val *c,
				       const struct flow_val *s, __u8 kind, __u8 end, __u64 now)
{
	struct flow_event *e;
	struct vinfo *vi;
	__u32 vid = c->vid;

	vi = bpf_map_lookup_elem(&virtuals, &vid);
	if (!vi || !(vi->flags & (SVC_LOG | SVC_MIRROR | SVC_ANNOUNCE)))
		return;
	e = bpf_ringbuf_reserve(&flow_events, sizeof(*e), 0);
	if (!e) {
		count(vid, REASON_EVENT_LOG_RING_FULL, 0);
		return;
	}
	e->ts_ns = now;
	e->created_ns = c->created_ns;
	e->client = *ck;
	e->server = c->peer;
	e->bytes[DIR_CLIENT] = c->bytes;
	e->packets[DIR_CLIENT] = c->packets;
	e->bytes[DIR_SERVER] = s ? s->bytes : 0;
	e->packets[DIR_SERVER] = s ? s->packets : 0;
	e->vid = vid;
	e->kind = kind;
	e->end = end;
	e->pad = 0;
	e->pad2 = 0;
	e->mss = c->mss;
	e->closing = c->closing | (s ? s->closing : 0);
	e->ack[DIR_CLIENT] = c->ack;
	e->seq_next[DIR_CLIENT] = c->seq_next;
	e->win[DIR_CLIENT] = c->win;
	e->syn_win[DIR_CLIENT] = c->syn_win;
	e->seen[DIR_CLIENT] = c->seen;
	e->wscale[DIR_CLIENT] = c->wscale;
	e->ack[DIR_SERVER] = s ? s->ack : 0;
	e->seq_next[DIR_SERVER] = s ? s->seq_next : 0;
	e->win[DIR_SERVER] = s ? s->win : 0;
	e->syn_win[DIR_SERVER] = s ? s->syn_win : 0;
	e->seen[DIR_SERVER] = s ? s->seen : 0;
	e->wscale[DIR_SERVER] = s ? s->wscale : 0;
	/* Waking the reader up for every event costs more than the rest of
	 * the new flow (an interrupt of its own): it is woken once the ring
	 * fills up, and otherwise polls the ring a few times a second; but
	 * at once for a virtual whose flows the peers must learn before the
	 * router may move them (peers.h). */
	bpf_ringbuf_submit(e, (vi->flags & SVC_ANNOUNCE) ||
					      bpf_ringbuf_query(&flow_events, BPF_RB_AVAIL_DATA) >= FLOW_EVENTS_WAKEUP
				      ? BPF_RB_FORCE_WAKEUP
				      : BPF_RB_NO_WAKEUP);
}

/* The pair c (client half) and s (server half) became established. */
static __always_inline void flow_event_open(const struct flow_val *c, const struct flow_val *s, __u64 now)
{
	flow_event(&s->peer, c, s, FLOW_EVENT_OPEN, FLOW_END_NONE, now);
}

/* The closing pair of the client half c, whose key is ck, is deleted by
 * the program: a new SYN from the client's tuple starts a new connection
 * (fastl4.c). */
static __always_inline void flow_event_restart(const struct flow_key *ck, const struct flow_val *c)
{
	flow_event(ck, c, flow_lookup(&c->peer), FLOW_EVENT_CLOSE,
		   (c->closing & CLOSE_RST) ? FLOW_END_RST : FLOW_END_FIN, coarse_now());
}

#endif
