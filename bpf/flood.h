/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Half-open flows: a new flow waits in the half_open LRU until both sides
 * have talked, and only then moves into the flow tables (promotion). A
 * flood of spoofed SYNs or datagrams thus only ever evicts other half-open
 * flows, never an established one, and never fills the flow tables. Why
 * this and not SYN cookies: bpf/README.md.
 *
 * With full NAT the member-side half (and its SNAT port) is needed from
 * the first packet on, since the member answers to the SNAT address: both
 * halves live in half_open, each pointing at the other, exactly as they
 * will in the flow tables. A half whose other half was evicted, or whose
 * SNAT port was reclaimed for another flow (snat_alloc), is lost: its
 * packets are dropped and counted (drop_half_open_lost), and a new SYN
 * from the client opens the flow afresh.
 *
 * When a flow is promoted:
 * - TCP opened by a SYN: on the client's ACK (without SYN or RST) of the
 *   member's SYN-ACK, the end of the three-way handshake: its
 *   acknowledgement number must be the member's ISN + 1, recorded when
 *   the SYN-ACK passed. A spoofed source never sees the SYN-ACK, so it
 *   never gets here; its blind ACKs are dropped (drop_handshake).
 * - UDP, and TCP picked up mid-stream (loose_init): on the member's
 *   first packet back.
 */
#ifndef EDGEPROXY_FLOOD_H
#define EDGEPROXY_FLOOD_H

#include "common.h"
#include "maps.h"
#include "parse.h"
#include "events.h"

/* half_open_promote's answer when the flow is not ready yet. */
#define PROMOTE_NOT_YET -2

/* Whether the packet m, of the half-open flow's dir direction, may be
 * the one that completes it (a cheap test before the lookups of
 * half_open_promote). */
static __always_inline int half_open_may_promote(const struct pkt_meta *m, __u8 dir)
{
	if (m->key.proto != IPPROTO_TCP)
		return dir == DIR_SERVER;
	return !(m->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_RST));
}

/* Whether the half-open pair (mine is the half of the packet, found under
 * m's key) is complete with this packet, whose acknowledgement number is
 * ack: -1 when it is, PROMOTE_NOT_YET, or a drop reason. A connection
 * opened by a SYN completes on the client's ACK of the member's SYN-ACK,
 * which must have passed here (the server half's seq_next is the
 * member's ISN + 1, ct_track); any other client packet, before or after
 * the SYN-ACK, acknowledges a SYN-ACK its source never saw (a blind
 * spoofer) and is dropped. */
static __always_inline int half_open_ready(const struct pkt_meta *m, const struct flow_val *mine,
					   const struct flow_val *other, __u32 ack)
{
	const struct flow_val *c = mine->dir == DIR_CLIENT ? mine : other;
	const struct flow_val *s = mine->dir == DIR_CLIENT ? other : mine;

	if (m->key.proto == IPPROTO_TCP && (c->seen & SEEN_SYN)) {
		if (mine->dir != DIR_CLIENT)
			return PROMOTE_NOT_YET;
		if (!(m->tcp_flags & TCP_FLAG_ACK) || !(s->seen & SEEN_SYNACK) || ack != s->seq_next)
			return REASON_DROP_HANDSHAKE;
		return -1;
	}
	return mine->dir == DIR_SERVER ? -1 : PROMOTE_NOT_YET;
}

/* Moves the pair of the half-open entry found under m's key into the flow
 * tables when this packet (acknowledgement number ack) completes it
 * (half_open_ready). Returns -1 when the pair is in
 * the flow tables, PROMOTE_NOT_YET, or a drop reason. Both halves are
 * copied out and checked to still point at each other after the copy
 * (flow_is), so a half reused meanwhile is never promoted. A global
 * function: checked once by the verifier, with a stack frame of its own. */
__noinline int half_open_promote(const struct pkt_meta *m, __u32 ack)
{
	struct scratch *sc = scratch_get();
	struct flow_val *f, *o, *mine, *other;
	long err;
	int r;

	if (!m || !sc)
		return REASON_DROP_TABLE_FULL;
	mine = &sc->val;
	other = &sc->val2;
	f = bpf_map_lookup_elem(&half_open, &m->key);
	if (!f)
		return REASON_DROP_HALF_OPEN_LOST;
	*mine = *f;
	o = bpf_map_lookup_elem(&half_open, &mine->peer);
	if (!o)
		return REASON_DROP_HALF_OPEN_LOST;
	*other = *o;
	if (!flow_is(f, &m->key) || !flow_is(o, &mine->peer) || !flow_key_eq(&other->peer, &m->key))
		return REASON_DROP_HALF_OPEN_LOST;
	r = half_open_ready(m, mine, other, ack);
	if (r != -1)
		return r;

	mine->half_open = 0;
	other->half_open = 0;
	/* A RST before the handshake completed ended an earlier attempt:
	 * the client's RST of a stale ACK from the member's TIME_WAIT
	 * (snat_reusable), after which its SYN came back. The connection
	 * is open, not closed (its port is not reusable). */
	mine->closing = 0;
	other->closing = 0;
	err = flow_update(&mine->peer, other, BPF_NOEXIST);
	if (err == -EEXIST) {
		/* Another CPU is promoting the same pair, or an established
		 * flow took the SNAT tuple (its half-open owner was lost). */
		o = flow_lookup(&mine->peer);
		if (!o || !flow_key_eq(&o->peer, &m->key))
			return REASON_DROP_HALF_OPEN_LOST;
		/* The other CPU takes its half back if its insert of this
		 * one fails: this one, should it get in, checks its other
		 * half on each packet until one a granularity later finds
		 * it (ct_repair). */
		mine->seen |= SEEN_REPAIR;
		mine->last_ns = coarse_now();
	} else if (err) {
		return REASON_DROP_TABLE_FULL;
	}
	err = flow_update(&m->key, mine, BPF_NOEXIST);
	if (err && err != -EEXIST) {
		/* Only the half this call inserted is taken back. */
		if (!(mine->seen & SEEN_REPAIR))
			flow_delete(&mine->peer);
		return REASON_DROP_TABLE_FULL;
	}
	bpf_map_delete_elem(&half_open, &mine->peer);
	bpf_map_delete_elem(&half_open, &m->key);
	count(mine->vid, REASON_EVENT_PROMOTED, 0);
	if (mine->dir == DIR_CLIENT)
		flow_event_open(mine, other, coarse_now());
	else
		flow_event_open(other, mine, coarse_now());
	return -1;
}

/* Whether the half-open entry f (found under m's key) still has its other
 * half. Without it, the SNAT tuple may belong to another flow by now. */
static __always_inline int half_open_paired(const struct pkt_meta *m, const struct flow_val *f)
{
	struct flow_key peer = f->peer;
	struct flow_val *o = bpf_map_lookup_elem(&half_open, &peer);

	return o && flow_key_eq(&o->peer, &m->key) && flow_is(f, &m->key);
}

#endif
