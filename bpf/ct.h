/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection tracking: opening a pair, following TCP flags, sequence and
 * acknowledgement numbers (for resets sent by the control plane on
 * timeout), and repairing a pair whose other half went missing. Timeouts
 * are applied by the control plane's GC from these fields. */
#ifndef EDGEPROXY_CT_H
#define EDGEPROXY_CT_H

#include "common.h"
#include "maps.h"
#include "nat.h"
#include "parse.h"
#include "guard.h"

/* Re-inserts the other half of f when it is missing. Runs on every
 * packet of a half marked SEEN_REPAIR (where the program may have left a
 * pair short), and clears the mark when a packet due for its
 * once-per-TS_GRANULARITY_NS work (due) finds the other half: the mark
 * is set with last_ns at now, so it outlives the moment a racing CPU
 * could still take the other half back. Unmarked halves are never looked
 * up here: the established path pays one lookup per packet, and a half
 * deleted behind the program's back (bpftool) is repaired by the
 * reaper's exact walk (reap.h). p is a packet of f's direction, so
 * p->key is f's own key. */
static __always_inline void ct_repair(struct flow_val *f, const struct pkt_meta *p, __u64 now, int due)
{
	struct scratch *sc;
	struct flow_val *v;

	if (f->half_open)
		return;
	v = flow_lookup(&f->peer);
	if (v) {
		/* The mark goes once the other half is found pointing back;
		 * another pair's half under the key leaves it. */
		if (due && flow_key_eq(&v->peer, &p->key))
			f->seen &= ~SEEN_REPAIR;
		return;
	}
	sc = scratch_get();
	if (!sc)
		return;
	v = &sc->val;
	__builtin_memset(v, 0, sizeof(*v));
	flow_set_keys(v, &f->peer, &p->key);
	v->created_ns = f->created_ns;
	v->last_ns = now;
	v->vid = f->vid;
	v->closing = f->closing;
	v->mss = f->mss;
	v->dir = f->dir == DIR_CLIENT ? DIR_SERVER : DIR_CLIENT;
	/* Only an established connection gets this far without its pair. */
	v->seen = SEEN_ANY | SEEN_ACK;
	if (flow_update(&f->peer, v, BPF_NOEXIST) == 0)
		count(f->vid, REASON_EVENT_REPAIRED, 0);
}

/* The other half of f, from the table f is in (half_open or the flow
 * tables). */
static __always_inline struct flow_val *ct_other(const struct flow_val *f)
{
	if (f->half_open)
		return bpf_map_lookup_elem(&half_open, &f->peer);
	return flow_lookup(&f->peer);
}

/* Notes the closing pair of f in reap_watch for the reaper; a full watch
 * leaves it to the next walk, counted. A call of its own: the program's
 * frame is at the stack limit. */
static __noinline void ct_watch(const struct flow_val *f)
{
	__u32 one = 1;

	if (bpf_map_update_elem(&reap_watch, &f->peer, &one, BPF_ANY))
		count(f->vid, REASON_EVENT_REAP_WATCH_FULL, 0);
}

/* Marks FIN or RST in both halves. */
static __always_inline void ct_close(struct flow_val *f, __u32 bit)
{
	struct flow_val *o;

	if (f->closing & bit)
		return;
	__sync_fetch_and_or(&f->closing, bit);
	o = ct_other(f);
	if (o)
		__sync_fetch_and_or(&o->closing, bit);
	if (!f->half_open)
		ct_watch(f);
}

/* The window scale of a SYN of f's direction (tcp_wscale, sent); on the
 * second SYN of the handshake, when both sides sent one, both halves are
 * marked WSCALE_BOTH: from then on their windows are scaled. */
static __always_inline void ct_wscale(struct flow_val *f, __u8 sent, __u8 synack)
{
	struct flow_val *o;

	if (f->wscale != sent)
		f->wscale = sent;
	if (!synack || !sent)
		return;
	o = ct_other(f);
	if (o && (o->wscale & WSCALE_SENT)) {
		o->wscale |= WSCALE_BOTH;
		f->wscale = sent | WSCALE_BOTH;
	}
}

/* Keeps in f->ts_last the newest TSval of f's side (a closing segment at
 * l4_off). */
static __always_inline void ct_ts_last(struct xdp_md *ctx, struct flow_val *f, __u32 l4_off)
{
	__u32 ts;

	if (tcp_tsval(ctx, l4_off, &ts) && (f->ts_last == 0 || (__s32)(ts - f->ts_last) > 0))
		f->ts_last = ts;
}

/* Follows one packet of f's direction. Fields are written only when they
 * change, to keep the entry's cache line clean on the common path. */
static __always_inline void ct_track(struct xdp_md *ctx, struct flow_val *f, const struct pkt *p,
				     __u64 now)
{
	struct tcphdr *th;
	__u32 seq, ack, win;
	__u8 fl, bits;
	int due;

	due = (__s64)(now - f->last_ns) >= (__s64)TS_GRANULARITY_NS;
	if (due)
		f->last_ns = now;
	if (f->seen & SEEN_REPAIR)
		ct_repair(f, p->m, now, due);
	if (p->m->key.proto != IPPROTO_TCP) {
		if (!(f->seen & SEEN_ANY))
			f->seen |= SEEN_ANY;
		return;
	}

	th = pkt_l4(p, sizeof(*th));
	if (!th)
		return;
	fl = p->m->tcp_flags;
	bits = SEEN_ANY;
	if (fl & TCP_FLAG_SYN)
		bits |= (fl & TCP_FLAG_ACK) ? SEEN_SYNACK : SEEN_SYN;
	else if (fl & TCP_FLAG_ACK)
		bits |= SEEN_ACK;
	if (fl & TCP_FLAG_FIN)
		bits |= SEEN_FIN;
	if (fl & TCP_FLAG_RST)
		bits |= SEEN_RST;
	if ((f->seen & bits) != bits)
		f->seen |= bits;

	/* The receive window this side offers, the largest yet: what RSTs
	 * and ICMP errors towards it are held to (ct_window). Kept as sent,
	 * in the first cache line; the SYN's, never scaled (RFC 7323), in
	 * the second. */
	win = bpf_ntohs(th->window);
	if (!(fl & (TCP_FLAG_SYN | TCP_FLAG_RST)) && win > f->win)
		f->win = win;

	/* What a reset sent on timeout needs (see the control plane): the
	 * last ack of each side (the other side's next sequence number, the
	 * only one a reset is accepted at) and the ISN of each SYN (a reset
	 * to a side still in SYN-SENT must acknowledge it). */
	if (fl & TCP_FLAG_SYN) {
		seq = bpf_ntohl(th->seq) + 1;
		if (f->seq_next != seq)
			f->seq_next = seq;
		f->syn_win = win;
		ct_wscale(f, tcp_wscale(ctx, p->m->l4_off), fl & TCP_FLAG_ACK);
	} else if (fl & TCP_FLAG_FIN) {
		/* After the FIN: what the other side's ACK of it carries
		 * (snat_reusable), and the acknowledgement a reset needs. */
		seq = bpf_ntohl(th->seq) + p->m->l4_len - (__u32)th->doff * 4 + 1;
		if (f->seq_next != seq)
			f->seq_next = seq;
	}
	if (fl & TCP_FLAG_ACK) {
		ack = bpf_ntohl(th->ack_seq);
		/* Sequence space wraps: compare as a signed difference. */
		if ((__s32)(ack - f->ack) > 0 || f->ack == 0)
			f->ack = ack;
	}

	/* The client's timestamps once the connection closes: what the
	 * member's TIME_WAIT holds a reuse of the SNAT port to
	 * (snat_reusable). Only closing segments pay for the option scan. */
	if (f->dir == DIR_CLIENT && (f->closing || (fl & TCP_FLAG_FIN)) && th->doff > 5)
		ct_ts_last(ctx, f, p->m->l4_off);

	/* A RST closes the flow in ct_rst, when it is exact. */
	if (!(fl & TCP_FLAG_RST) && (fl & TCP_FLAG_FIN))
		ct_close(f, f->dir == DIR_CLIENT ? CLOSE_FIN_CLIENT : CLOSE_FIN_SERVER);
}

/* The largest receive window the side of the half r advertised, in
 * bytes: its SYN's, or a later one scaled by its shift when both sides
 * sent one. */
static __always_inline __u32 ct_window(const struct flow_val *r)
{
	__u32 w = r->win;

	if (r->wscale & WSCALE_BOTH)
		w <<= r->wscale & WSCALE_SHIFT;
	return w > r->syn_win ? w : r->syn_win;
}

/* Whether the sequence number seq, sent towards the side of the half r,
 * lies in the window r offers: from the last number r acknowledged, as
 * many bytes as the largest window r advertised (ct_window). A side not
 * yet heard from offers none: only its exact number fits. */
static __always_inline int ct_in_window(const struct flow_val *r, __u32 seq)
{
	return seq - r->ack < ct_window(r) || seq == r->ack;
}

/* RFC 5961 §3 for a RST of f's direction, before it is tracked: one at
 * exactly the sequence number the receiver expects (the last it
 * acknowledged) closes the flow; one further inside the receiver's window
 * (ct_in_window) is forwarded without closing it (the receiver answers
 * with a challenge ACK, and the sender's exact RST follows); any other is
 * dropped. A receiver that has only sent its SYN takes a RST that
 * acknowledges it (RFC 793). Returns -1 to forward the RST, else the
 * drop reason. */
static __always_inline int ct_rst(struct flow_val *f, const struct pkt *p)
{
	struct tcphdr *th = pkt_l4(p, sizeof(*th));
	struct flow_val *o = ct_other(f);
	__u32 seq;

	if (!th)
		return REASON_DROP_RST_WINDOW;
	if (!o) /* nothing to judge it by: the receiver does */
		return -1;
	seq = bpf_ntohl(th->seq);
	if (!(o->seen & (SEEN_SYNACK | SEEN_ACK))) {
		if ((p->m->tcp_flags & TCP_FLAG_ACK) && bpf_ntohl(th->ack_seq) == o->seq_next) {
			ct_close(f, CLOSE_RST);
			return -1;
		}
		return REASON_DROP_RST_WINDOW;
	}
	if (seq == o->ack) {
		ct_close(f, CLOSE_RST);
		return -1;
	}
	if (ct_in_window(o, seq))
		return -1;
	return REASON_DROP_RST_WINDOW;
}

/* Deletes both halves of a pair (a SYN on a closing connection). */
static __always_inline void ct_delete(struct flow_val *f, const struct flow_key *key)
{
	struct flow_key peer = f->peer;

	flow_delete(&peer);
	flow_delete(key);
}

/* Opens a flow for the client packet p to the virtual svc: picks the
 * member, allocates SNAT, which inserts the server half into half_open
 * (see flood.h for the promotion), and leaves the client half in the
 * scratch space (sc->val) for half_open_first, which forwards p and
 * inserts it. Returns -1 when the client half is ready, else a drop
 * reason. A global function: checked once by the verifier, with a stack
 * frame of its own. */
__noinline int ct_open(const struct pkt_meta *p, const struct syn_info *syn,
		       const struct svc_val *svc, const struct config *cfg, __u64 now)
{
	struct flow_key *skey;
	struct scratch *sc;
	struct flow_val *v;
	struct addr *m;
	__u32 h;
	int r;

	if (!p || !syn || !svc || !cfg)
		return REASON_DROP_TABLE_FULL;
	h = flow_hash(&p->key, cfg->hash_seed);
	m = maglev_pick(svc, cfg, h);
	if (!m)
		return REASON_DROP_NO_MEMBER;

	sc = scratch_get();
	if (!sc)
		return REASON_DROP_TABLE_FULL;
	/* In the scratch space, as the halves are: the frames of the
	 * calls below stay within the stack. */
	skey = &sc->skey;
	__builtin_memset(skey, 0, sizeof(*skey));
	skey->saddr = *m;
	skey->sport = svc->member_port;
	skey->proto = p->key.proto;
	skey->family = p->key.family;
	v = &sc->val;
	__builtin_memset(v, 0, sizeof(*v));
	/* Its own key comes with the SNAT allocation (snat_alloc). */
	flow_set_keys(v, &p->key, &p->key);
	v->created_ns = now;
	v->last_ns = now;
	v->vid = svc->vid;
	v->mss = svc->mss;
	v->dir = DIR_SERVER;
	v->half_open = 1;
	r = snat_alloc(p, syn, svc, cfg, h, skey, v);
	if (r >= 0)
		return r;

	flow_set_keys(v, &p->key, skey);
	v->dir = DIR_CLIENT;
	return -1;
}

#endif
