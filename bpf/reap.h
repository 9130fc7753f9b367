/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Reaping in the kernel (bpf/README.md, "Reaping in the kernel"). The
 * control plane runs the syscall program reap (BPF_PROG_RUN) on one
 * table at a time. It walks the table with bpf_for_each_map_elem and
 * judges each connection by the rules of its virtual (timeouts in the
 * virtuals map, flags): an expired pair is deleted here, a live pair
 * missing a half gets it back, and the rest is counted by virtual, state
 * and member. What the control plane must act on, and only that, goes
 * through the reap_events ring: a pair reaped whose virtual resets on
 * timeout (the RSTs are sent from user space) or logs its flows (the
 * close record). No flow is copied out otherwise.
 *
 * How often: the flow tables are walked as often as the shortest idle
 * timeout needs; the pairs that close (FIN, RST: a short close timeout)
 * are noted in reap_watch by the program (ct_close) and by the walk, and
 * the watch (table REAP_WATCH) is run every 500 ms (l4/reap.go). The
 * half-open table is walked as often as the shortest handshake timeout
 * needs.
 *
 * A pair is judged once, on its client half. An entry without FIN or RST
 * seen within its idle timeout is live whatever its other half says, so
 * the walk looks the other half up only for entries idle longer, closing
 * pairs and the half-open table: the walk's cost is one visit per entry. A pair missing
 * a half is repaired (or reaped) once its present half has been idle that
 * long, or by an exact walk, which looks every other half up (every
 * reapExactEvery-th walk, l4/reap.go, the first walk after a start, and
 * the control plane's explicit passes). The program repairs on a packet
 * only the halves marked SEEN_REPAIR where it may have left a pair short
 * itself (ct_repair); an exact walk is the net for the rest (a half
 * deleted with bpftool, or by an older build's upgrade copy).
 *
 * A run writes at most budget reports; when a pair needing one finds the
 * budget spent, the run stops before deleting it and the control plane
 * drains the ring and runs the table again from where it stopped (skip).
 * The walk restarts from the table's first bucket each run and passes
 * over skip entries cheaply. The entries deleted by the earlier runs are
 * taken off skip, as if they all stood before the stop: so no entry is
 * passed over, and a few live ones are judged (and counted) twice. */
#ifndef EDGEPROXY_REAP_H
#define EDGEPROXY_REAP_H

#include "common.h"
#include "maps.h"

/* The states of a pair, in the order of the Go side's names (l4/reap.go). */
enum reap_state {
	REAP_HANDSHAKE = 0,
	REAP_ESTABLISHED,
	REAP_FIN_WAIT,
	REAP_CLOSING,
	REAP_RESET,
	REAP_UDP,
	REAP_STATES,
};

enum reap_table {
	REAP_TCP4 = 0,
	REAP_UDP4,
	REAP_FLOWS6,
	REAP_HALF_OPEN,
	REAP_WATCH, /* the closing pairs noted in reap_watch */
};

/* One run's orders and results, the only entry of reap_ctl. */
struct reap_run {
	__u64 now;         /* in: the pass's clock (bpf_ktime_get_coarse_ns) */
	__u64 next_ns;     /* in/out: earliest deadline of the pairs left, 0: none */
	__u64 walk_ns;     /* in: when the flow tables are walked next: a
			    * watched pair whose deadline is later leaves the
			    * watch */
	__u32 table;       /* in: enum reap_table */
	__u32 skip;        /* in: entries visited by earlier runs of this pass */
	__u32 budget;      /* in: reports this run may write */
	__u32 def_idle_s;  /* in: timeouts of a virtual id without settings */
	__u32 def_handshake_s;
	__u32 def_close_s;
	__u32 def_flags;   /* enum svc_flags */
	__u32 visited;     /* out: entries walked, skipped ones included */
	__u32 more;        /* out: 1: stopped on the budget, run again */
	__u32 reaped;      /* out: pairs deleted */
	__u32 reported;    /* out: reports written */
	__u32 lost;        /* out: reports the ring had no room for */
	__u32 repaired;    /* out: missing halves re-inserted */
	__u32 exact;       /* in: 1: look every other half up (repairs the
			    * halves gone missing under a live one) */
	__u32 grace_s;     /* in: added to every timeout: a passive node
			    * (an HA standby) keeps the flows its peer
			    * mirrors past the peer's own expiry */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct reap_run);
} reap_ctl SEC(".maps");

/* Pairs by virtual id and state: live (left in the table) and reaped,
 * added up over a pass; the control plane zeroes them between passes. */
struct reap_count {
	__u32 live[REAP_STATES];
	__u32 reaped[REAP_STATES];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VIRTUALS);
	__type(key, __u32);
	__type(value, struct reap_count);
} reap_counts SEC(".maps");

/* Live pairs by member address (the source of the server half's key);
 * emptied by the control plane between passes. */
struct reap_member {
	struct addr addr;
	__u32 family;
};

#ifndef REAP_MEMBERS
#define REAP_MEMBERS 4096
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, REAP_MEMBERS);
	__type(key, struct reap_member);
	__type(value, __u32);
} reap_members SEC(".maps");

/* A reaped pair the control plane must act on: both keys and both halves
 * as they were (has_c, has_s: which halves were there). */
struct reap_event {
	struct flow_key ckey;
	struct flow_key skey;
	struct flow_val c;
	struct flow_val s;
	__u8 has_c;
	__u8 has_s;
	__u8 half;  /* a half-open pair */
	__u8 state; /* enum reap_state */
	__u32 pad;
};

/* Never used: puts struct reap_event into the object's BTF, where
 * bpf2go -type finds it (a ring buffer carries no value type). */
struct reap_event *reap_event_type;

#ifndef REAP_EVENTS_SIZE
#define REAP_EVENTS_SIZE (1 << 22) /* bytes: about 11,900 reports per run */
#endif

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, REAP_EVENTS_SIZE);
} reap_events SEC(".maps");

/* The timeouts and flags that apply to a virtual id. */
struct reap_knobs {
	__u64 idle, handshake, closing; /* ns */
	__u32 flags;
};

static __always_inline void reap_knobs_of(const struct reap_run *ctl, __u32 vid, struct reap_knobs *k)
{
	struct vinfo *vi = bpf_map_lookup_elem(&virtuals, &vid);

	__u64 grace = ctl->grace_s * 1000000000ULL;

	if (vi && vi->idle_s) {
		k->idle = vi->idle_s * 1000000000ULL;
		k->handshake = vi->handshake_s * 1000000000ULL;
		k->closing = vi->close_s * 1000000000ULL;
		k->flags = vi->flags;
	} else {
		k->idle = ctl->def_idle_s * 1000000000ULL;
		k->handshake = ctl->def_handshake_s * 1000000000ULL;
		k->closing = ctl->def_close_s * 1000000000ULL;
		k->flags = ctl->def_flags;
	}
	k->idle += grace;
	k->handshake += grace;
	k->closing += grace;
}

/* The state of the pair (c, s: either may be NULL) and its timeout: the
 * rules of l4/gc.go's pair.state. */
static __always_inline __u32 reap_state(const struct flow_val *c, const struct flow_val *s, __u8 proto,
					const struct reap_knobs *k, __u64 *timeout)
{
	__u8 seen_c = c ? c->seen : 0, seen_s = s ? s->seen : 0;
	__u32 closing = (c ? c->closing : 0) | (s ? s->closing : 0);

	if (proto == IPPROTO_UDP) {
		*timeout = k->idle;
		return REAP_UDP;
	}
	if (closing & CLOSE_RST) {
		*timeout = k->closing;
		return REAP_RESET;
	}
	if ((closing & CLOSE_FIN_CLIENT) && (closing & CLOSE_FIN_SERVER)) {
		*timeout = k->closing;
		return REAP_CLOSING;
	}
	if (closing) {
		*timeout = (k->flags & SVC_LOOSE_CLOSE) ? k->closing : k->idle;
		return REAP_FIN_WAIT;
	}
	if ((seen_c & SEEN_ACK) && (seen_s & (SEEN_SYNACK | SEEN_ACK | SEEN_ANY))) {
		*timeout = k->idle;
		return REAP_ESTABLISHED;
	}
	*timeout = k->handshake;
	return REAP_HANDSHAKE;
}

/* Whether the control plane must hear of the reaped pair: the RSTs of a
 * virtual that resets on timeout (l4/gc.go, resetFlow), the close
 * record of one that logs, the removal a mirrored one sends to the HA
 * peer (l4/mirror.go), or the end of ownership one announces to the
 * scale-out peers (peers.h). */
static __always_inline int reap_must_report(__u32 st, __u8 proto, __u32 flags, int half)
{
	if ((flags & (SVC_LOG | SVC_MIRROR | SVC_ANNOUNCE)) && !half)
		return 1;
	return proto == IPPROTO_TCP && (flags & SVC_RESET_ON_TIMEOUT) &&
	       (st == REAP_ESTABLISHED || st == REAP_FIN_WAIT || st == REAP_HANDSHAKE);
}

static __always_inline int reap_report(struct reap_run *ctl, const struct flow_key *ck, const struct flow_val *c,
				       const struct flow_key *sk, const struct flow_val *s, __u32 st, int half)
{
	struct reap_event *e = bpf_ringbuf_reserve(&reap_events, sizeof(*e), 0);

	if (!e) {
		ctl->lost++;
		return -1;
	}
	e->ckey = *ck;
	e->skey = *sk;
	if (c)
		__builtin_memcpy(&e->c, c, sizeof(e->c));
	else
		__builtin_memset(&e->c, 0, sizeof(e->c));
	if (s)
		__builtin_memcpy(&e->s, s, sizeof(e->s));
	else
		__builtin_memset(&e->s, 0, sizeof(e->s));
	e->has_c = !!c;
	e->has_s = !!s;
	e->half = half;
	e->state = st;
	e->pad = 0;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	ctl->reported++;
	return 0;
}

static __always_inline void reap_count_member(const struct addr *a, __u8 family)
{
	struct reap_member m = {};
	__u32 one = 1, *n;

	m.addr = *a;
	m.family = family;
	n = bpf_map_lookup_elem(&reap_members, &m);
	if (n)
		(*n)++;
	else
		bpf_map_update_elem(&reap_members, &m, &one, BPF_NOEXIST);
}

/* The missing half of the live pair whose present half is h (own key
 * self): l4/gc.go's repair, as ct_repair does on a packet of a marked
 * half. h keeps its SEEN_REPAIR mark, if any: only its own direction's
 * CPU writes its seen, and its next packet finds the other half and
 * clears it. */
static __always_inline void reap_repair(const struct flow_key *self, const struct flow_val *h,
					struct reap_run *ctl)
{
	struct flow_val v = {};

	flow_set_keys(&v, &h->peer, self);
	v.created_ns = h->created_ns;
	v.last_ns = h->last_ns;
	v.vid = h->vid;
	v.closing = h->closing;
	v.mss = h->mss;
	v.dir = h->dir == DIR_CLIENT ? DIR_SERVER : DIR_CLIENT;
	v.seen = SEEN_ANY | SEEN_ACK;
	if (flow_update(&h->peer, &v, BPF_NOEXIST) == 0)
		ctl->repaired++;
}

static __always_inline struct reap_run *reap_ctl_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&reap_ctl, &zero);
}

static __always_inline void reap_delete(const struct flow_key *k, int half)
{
	if (half)
		bpf_map_delete_elem(&half_open, k);
	else
		flow_delete(k);
}

static __always_inline void reap_deadline(struct reap_run *ctl, __u64 deadline)
{
	if (!ctl->next_ns || deadline < ctl->next_ns)
		ctl->next_ns = deadline;
}

enum reap_verdict {
	REAP_LIVE = 0,
	REAP_GONE,
	REAP_STOP, /* the report budget is spent: stop the walk here */
};

/* Judges the pair: c under ck and s under sk, one of them may be NULL.
 * An expired pair is reported when it must be, then deleted; a live
 * one's deadline is written to *deadline and its state to *state. */
static __always_inline int reap_judge(struct reap_run *ctl, const struct flow_key *ck, struct flow_val *c,
				      const struct flow_key *sk, struct flow_val *s, int half,
				      __u64 *deadline, __u32 *state)
{
	struct flow_val *h = c ? c : s;
	struct reap_count *cnt;
	struct reap_knobs k;
	__u64 timeout, last;
	__u32 st, vid;

	if (!h)
		return REAP_GONE;
	vid = h->vid;
	reap_knobs_of(ctl, vid, &k);
	st = reap_state(c, s, ck->proto, &k, &timeout);
	last = c ? c->last_ns : 0;
	if (s && s->last_ns > last)
		last = s->last_ns;
	*state = st;
	*deadline = last + timeout;
	if (ctl->now <= last || ctl->now - last <= timeout)
		return REAP_LIVE;
	if (reap_must_report(st, ck->proto, k.flags, half)) {
		if (ctl->reported >= ctl->budget) {
			ctl->more = 1;
			return REAP_STOP;
		}
		reap_report(ctl, ck, c, sk, s, st, half);
	}
	if (s)
		reap_delete(sk, half);
	if (c)
		reap_delete(ck, half);
	ctl->reaped++;
	cnt = bpf_map_lookup_elem(&reap_counts, &vid);
	if (cnt && st < REAP_STATES)
		cnt->reaped[st]++;
	return REAP_GONE;
}

static __always_inline void reap_count_live(__u32 vid, __u32 st)
{
	struct reap_count *cnt = bpf_map_lookup_elem(&reap_counts, &vid);

	if (cnt && st < REAP_STATES)
		cnt->live[st]++;
}

/* Visits one entry of a walk: v under self (its full key), its other
 * half at peer_key in map. Returns 1 to stop the walk. */
static __always_inline long reap_visit(void *map, const void *peer_key, const struct flow_key *self,
				       struct flow_val *v, __u32 *idx, int half)
{
	struct reap_run *ctl = reap_ctl_get();
	struct flow_val *o, *c, *s;
	struct flow_key ck, sk;
	struct reap_knobs k;
	__u64 deadline;
	__u32 st;
	int r;

	if (!ctl)
		return 1;
	if ((*idx)++ < ctl->skip)
		return 0;
	if (!half && !v->closing && !ctl->exact) {
		/* Seen within the idle timeout: live whatever the other
		 * half says (an open pair's timeout is the idle one). */
		reap_knobs_of(ctl, v->vid, &k);
		if (ctl->now <= v->last_ns || ctl->now - v->last_ns <= k.idle) {
			if (v->dir == DIR_SERVER)
				return 0; /* counted on its client half */
			reap_count_live(v->vid, self->proto == IPPROTO_UDP ? REAP_UDP : REAP_ESTABLISHED);
			/* The member is the source of the server half's key:
			 * in line 1 for IPv4 (peer4). */
			if (self->family == 4) {
				struct addr a = {};

				a.w[0] = v->peer4.saddr;
				reap_count_member(&a, 4);
			} else {
				reap_count_member(&v->peer.saddr, v->peer.family);
			}
			reap_deadline(ctl, v->last_ns + k.idle);
			return 0;
		}
	}
	o = bpf_map_lookup_elem(map, peer_key);
	/* Under the peer key, another pair's half (this pair broken, the key
	 * taken since): v is judged alone, the other pair left whole. */
	if (o && !flow_key_eq(&o->peer, self))
		o = NULL;
	if (v->dir == DIR_SERVER) {
		if (o)
			return 0; /* judged on its client half */
		c = NULL;
		s = v;
		ck = v->peer;
		sk = *self;
	} else {
		c = v;
		s = o;
		ck = *self;
		sk = v->peer;
	}
	r = reap_judge(ctl, &ck, c, &sk, s, half, &deadline, &st);
	if (r == REAP_STOP) {
		(*idx)--; /* this entry again, first */
		return 1;
	}
	if (r == REAP_GONE)
		return 0;
	reap_count_live(v->vid, st);
	reap_count_member(&sk.saddr, sk.family);
	if (!half && v->closing) {
		__u32 one = 1;

		/* Closing: the watch judges it until the next walk. */
		if (bpf_map_update_elem(&reap_watch, self, &one, BPF_ANY))
			reap_deadline(ctl, deadline);
	} else {
		reap_deadline(ctl, deadline);
	}
	/* A half-open pair missing a half was evicted: lost, not repaired
	 * (flood.h). */
	if (!o && !half)
		reap_repair(self, v, ctl);
	return 0;
}

/* The callbacks, one per table: the key's form and the peer key's differ. */
static __always_inline long reap_visit4(void *map, const struct flow_key4 *key, struct flow_val *v, __u32 *idx,
					__u8 proto)
{
	struct flow_key self = {};
	struct flow_key4 pk = v->peer4;

	flow_key_of4(key, proto, &self);
	return reap_visit(map, &pk, &self, v, idx, 0);
}

static long reap_tcp4(void *map, struct flow_key4 *key, struct flow_val *v, __u32 *idx)
{
	return reap_visit4(&flows4_tcp, key, v, idx, IPPROTO_TCP);
}

static long reap_udp4(void *map, struct flow_key4 *key, struct flow_val *v, __u32 *idx)
{
	return reap_visit4(&flows4_udp, key, v, idx, IPPROTO_UDP);
}

static long reap_full6(void *map, struct flow_key *key, struct flow_val *v, __u32 *idx)
{
	struct flow_key self = *key, pk = v->peer;

	return reap_visit(&flows6, &pk, &self, v, idx, 0);
}

static long reap_half(void *map, struct flow_key *key, struct flow_val *v, __u32 *idx)
{
	struct flow_key self = *key, pk = v->peer;

	return reap_visit(&half_open, &pk, &self, v, idx, 1);
}

/* A watched pair: k is the key of either half. */
static long reap_watched(void *map, struct flow_key *key, __u32 *val, __u32 *idx)
{
	struct reap_run *ctl = reap_ctl_get();
	struct flow_key k = *key, pk;
	struct flow_val *h, *o;
	__u64 deadline;
	__u32 st;
	int r;

	if (!ctl)
		return 1;
	if ((*idx)++ < ctl->skip)
		return 0;
	h = flow_lookup(&k);
	if (!h) {
		bpf_map_delete_elem(&reap_watch, &k);
		return 0;
	}
	pk = h->peer;
	o = flow_lookup(&pk);
	if (o && !flow_key_eq(&o->peer, &k))
		o = NULL; /* another pair's: h is judged alone */
	if (h->dir == DIR_CLIENT)
		r = reap_judge(ctl, &k, h, &pk, o, 0, &deadline, &st);
	else
		r = reap_judge(ctl, &pk, o, &k, h, 0, &deadline, &st);
	if (r == REAP_STOP) {
		(*idx)--;
		return 1;
	}
	if (r == REAP_GONE || deadline > ctl->walk_ns)
		bpf_map_delete_elem(&reap_watch, &k);
	return 0;
}

SEC("syscall")
int reap(void *ctx)
{
	struct reap_run *ctl = reap_ctl_get();
	__u32 idx = 0;

	if (!ctl)
		return 0;
	ctl->more = 0;
	switch (ctl->table) {
	case REAP_TCP4:
		bpf_for_each_map_elem(&flows4_tcp, reap_tcp4, &idx, 0);
		break;
	case REAP_UDP4:
		bpf_for_each_map_elem(&flows4_udp, reap_udp4, &idx, 0);
		break;
	case REAP_FLOWS6:
		bpf_for_each_map_elem(&flows6, reap_full6, &idx, 0);
		break;
	case REAP_HALF_OPEN:
		bpf_for_each_map_elem(&half_open, reap_half, &idx, 0);
		break;
	case REAP_WATCH:
		bpf_for_each_map_elem(&reap_watch, reap_watched, &idx, 0);
		break;
	}
	ctl->visited = idx;
	return 0;
}

#endif
