//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* edgeproxy fast path: FastL4 virtuals in XDP, attached to the external
 * and the internal NIC.
 *
 * Client -> VIP:port of a fastl4 virtual: the flow is looked up by the
 * client tuple; on a miss a SYN (or any packet with loose_init, or any UDP
 * datagram) opens one: Maglev picks the member, SNAT allocates the source,
 * both halves are inserted into the half-open table, and move into the
 * flow tables once both sides have talked (flood.h, bpf/README.md). The
 * packet is rewritten to SNAT -> member:port and redirected to the egress
 * NIC found by bpf_fib_lookup. Replies are found by their own tuple
 * (member -> SNAT) and rewritten back.
 *
 * Everything else is XDP_PASS and untouched: ARP, host traffic, the L7
 * proxy's listeners and its connections to the members (their ports come
 * from the host's ephemeral range, which the control plane keeps apart
 * from the SNAT range), VLAN-tagged frames (the two NICs are untagged).
 *
 * A rewritten packet is never passed to the stack: when its next hop is
 * not resolved or not reachable it is dropped and counted, and the next
 * hop is reported to the control plane (neigh_miss).
 *
 * ICMP errors about a flow (fragmentation needed, packet too big,
 * unreachable, time exceeded) are translated for the other side, when
 * they pass the checks of icmp_check (checksum, MTU, quoted sequence).
 *
 * Against a hostile Internet (guard.h, router.h, ct_rst): a flow's
 * packets are taken only on the NIC of their side and addressed to its
 * MAC, new flows only from sources that can come from outside; the TTL is
 * decremented, and a packet whose TTL runs out or that does not fit the
 * egress MTU (checked on every packet, the cached next hop included) is
 * answered by the program with the ICMP error a router sends; RSTs are
 * held to the receiver's window (RFC 5961).
 *
 * Second chance (peers.h): a TCP segment of a connection another node
 * behind the same ECMP route owns is sent to that node.
 *
 * Fragments: fastl4 virtuals do not carry IP fragments. A first fragment
 * that matches a fastl4 virtual or flow is dropped and counted
 * (drop_fragment); later fragments carry no ports and are passed, and the
 * stack discards them when reassembly times out. TCP avoids fragments
 * (DF and path MTU discovery; mss_override where ICMP is filtered). */

#include "common.h"
#include "csum.h"
#include "parse.h"
#include "maps.h"
#include "nat.h"
#include "guard.h"
#include "ct.h"
#include "events.h"
#include "fib.h"
#include "router.h"
#include "icmp.h"
#include "partial.h"
#include "txerr.h"
#include "reap.h"
#include "peers.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The frame's length, for the byte counters. A 64-bit difference of the
 * two packet pointers (allowed to privileged programs): cheaper than the
 * bpf_xdp_get_buff_len helper. The empty asm keeps clang from narrowing
 * the subtraction to 32 bits, which the verifier refuses on pointers. */
static __always_inline __u32 frame_len(struct xdp_md *ctx)
{
	long len = (long)ctx->data_end - (long)ctx->data;

	asm volatile("" : "+r"(len));
	return len;
}

/* flow_hit's answer when the packet opens a new flow instead. */
#define FLOW_MISS -1

/* Whether the next hop cached in f is missing or due for a refresh: the
 * flow re-resolves it on its first packet in each period of about a
 * second (2^30 ns) of the coarse clock, told by last_ns, which the
 * refresh sets; so the cache needs no timestamp of its own. */
#define FIB_CACHE_SHIFT 30

static __always_inline int fib_stale(const struct flow_val *f, const struct tx_dev *dev, __u64 now)
{
	return !f->tx_slot || !dev->mtu || ((now ^ f->last_ns) >> FIB_CACHE_SHIFT);
}

/* flow_nexthop's answer for a packet too big for the route: this less
 * the route's MTU. */
#define NEXTHOP_TOO_BIG -2

/* Resolves the next hop of the flow half f for its packet p and caches it
 * in f. Returns -1, a drop reason, or NEXTHOP_TOO_BIG less the MTU. Out
 * of line: it runs about once a second per flow, and its frame stays off
 * the established path's. */
static __noinline int flow_nexthop(struct xdp_md *ctx, const struct pkt *p, struct flow_val *f,
				   __u64 now)
{
	struct nexthop nh;
	int r;

	r = fib_resolve(ctx, p, &f->peer, &nh);
	if (r == REASON_DROP_FRAG_NEEDED)
		return NEXTHOP_TOO_BIG - (int)nh.mtu;
	if (r >= 0)
		return r;
	f->tx_slot = nh.tx_slot;
	__builtin_memcpy(f->dmac, nh.macs, sizeof(f->dmac));
	f->last_ns = now;
	/* A next hop cached in an entry reused meanwhile is not the new
	 * flow's: drop the cache, its owner resolves its own. */
	if (!flow_is(f, &p->m->key)) {
		f->tx_slot = 0;
		return REASON_DROP_FLOW_REUSED;
	}
	return -1;
}

/* Forwards a packet of an open flow: checks it came in on the flow's NIC
 * with TTL to spare and fits the egress MTU, tracks it, rewrites it,
 * sends it. The next hop is resolved before anything is changed, so that
 * a packet too big is quoted as it arrived. Inlined into flow_hit (the
 * established path) and half_open_hit (a half-open flow's packets, the
 * first one included). For an IPv4 flow it reads and writes only the
 * first cache line of f (bpf/README.md, "Compact flows"). */
static __always_inline int flow_forward(struct xdp_md *ctx, const struct pkt_meta *m,
					struct flow_val *f, __u32 reason)
{
	__u64 now = coarse_now();
	struct config *cfg = settings_get();
	struct pkt pk, *p = &pk;
	struct tx_dev *dev;
	__u64 bytes, last;
	int r, partial;

	if (!cfg || pkt_load(ctx, m, p) < 0)
		return XDP_PASS;
	bytes = m->bytes;
	if (!guard_flow_ok(ctx, p->eth, cfg, f))
		return guard_flow_refuse(ctx, cfg, f, bytes);
	if (m->ttl <= 1)
		return icmp_reply(ctx, m, f->vid, ICMP_REPLY_TIME_EXCEEDED, 0);

	dev = &tx_devs[f->tx_slot & (MAX_TX_PORTS - 1)];
	if (fib_stale(f, dev, now)) {
		last = f->last_ns;
		r = flow_nexthop(ctx, p, f, now);
		if (r <= NEXTHOP_TOO_BIG)
			return icmp_reply(ctx, m, f->vid, ICMP_REPLY_TOO_BIG, NEXTHOP_TOO_BIG - r);
		if (r >= 0) {
			count(r == REASON_DROP_FLOW_REUSED ? 0 : f->vid, r, bytes);
			return XDP_DROP;
		}
		/* flow_nexthop set last_ns to now; when ct_track is due to run
		 * its once-per-granularity work (last-seen; for a half marked
		 * SEEN_REPAIR, clearing the mark once its pair is whole), give it
		 * back its turn: it sets last_ns to now. */
		if ((__s64)(now - last) >= (__s64)TS_GRANULARITY_NS)
			f->last_ns = last;
		dev = &tx_devs[f->tx_slot & (MAX_TX_PORTS - 1)];
	}
	if (m->l3_len > dev->mtu)
		return icmp_reply(ctx, m, f->vid, ICMP_REPLY_TOO_BIG, dev->mtu);

	if (m->tcp_flags & TCP_FLAG_RST) { /* TCP only: 0 for anything else */
		r = ct_rst(f, p);
		if (r >= 0) {
			count(f->vid, r, bytes);
			return XDP_DROP;
		}
	}
	ct_track(ctx, f, p, now);
	partial = l4_csum_partial(p);
	if (p->m->key.proto == IPPROTO_TCP && (p->m->tcp_flags & TCP_FLAG_SYN) && f->mss &&
	    mss_clamp(ctx, p->m->l4_off, f->mss))
		count(f->vid, REASON_EVENT_MSS_CLAMPED, 0);
	nat_rewrite(p, f);
	if (partial)
		l4_csum_complete(ctx, p);
	/* The checks and the rewrite read f: was it still this flow's
	 * (flow_is)? */
	if (!flow_is(f, &m->key)) {
		count(0, REASON_DROP_FLOW_REUSED, bytes);
		return XDP_DROP;
	}
	return nexthop_redirect(p->eth, f->tx_slot, f->dmac, dev->mac, f->vid, reason, bytes, f);
}

#include "flood.h"

/* The acknowledgement number of m's packet when it is TCP, else 0. */
static __always_inline __u32 tcp_ack(struct xdp_md *ctx, const struct pkt_meta *m)
{
	struct tcphdr *th;
	struct pkt p;

	if (m->key.proto != IPPROTO_TCP || pkt_load(ctx, m, &p) < 0)
		return 0;
	th = pkt_l4(&p, sizeof(*th));
	return th ? bpf_ntohl(th->ack_seq) : 0;
}

/* A packet of a half-open flow (flood.h), or FLOW_MISS when m's key has
 * none. Forwarded as any flow's; the packet that completes the flow
 * promotes it first and goes out through the flow tables. A global
 * function, verified once. */
__noinline int half_open_hit(struct xdp_md *ctx, const struct pkt_meta *m)
{
	struct config *cfg = settings_get();
	struct ethhdr *eth;
	struct flow_val *f;
	__u32 reason, vid;
	int r;

	if (!m || !cfg)
		return XDP_PASS;
	f = bpf_map_lookup_elem(&half_open, &m->key);
	if (!f)
		return FLOW_MISS;
	vid = f->vid;
	if (m->frag != FRAG_NONE) {
		count(vid, REASON_DROP_FRAGMENT, m->bytes);
		return XDP_DROP;
	}
	/* Checked as flow_forward checks it, before the packet can promote
	 * the flow: from the half's NIC, to its MAC, with TTL to spare. */
	eth = (void *)(long)ctx->data;
	if ((void *)(eth + 1) > (void *)(long)ctx->data_end)
		return XDP_PASS;
	if (!guard_flow_ok(ctx, eth, cfg, f))
		return guard_flow_refuse(ctx, cfg, f, m->bytes);
	reason = f->dir == DIR_SERVER ? REASON_FWD_SERVER : REASON_FWD_CLIENT;
	if (m->ttl > 1 && half_open_may_promote(m, f->dir)) {
		r = half_open_promote(m, tcp_ack(ctx, m));
		if (r == -1) {
			f = flow_lookup(&m->key);
			if (!f) {
				count(vid, REASON_DROP_HALF_OPEN_LOST, m->bytes);
				return XDP_DROP;
			}
			return flow_forward(ctx, m, f, reason);
		}
		if (r != PROMOTE_NOT_YET) {
			count(vid, r, m->bytes);
			return XDP_DROP;
		}
	}
	if (!half_open_paired(m, f)) {
		/* Its other half is gone: a client's new SYN (or datagram)
		 * opens the flow afresh, anything else is lost. */
		if (f->dir == DIR_CLIENT &&
		    (m->key.proto == IPPROTO_UDP ||
		     (m->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == TCP_FLAG_SYN)) {
			bpf_map_delete_elem(&half_open, &m->key);
			return FLOW_MISS;
		}
		count(vid, REASON_DROP_HALF_OPEN_LOST, m->bytes);
		return XDP_DROP;
	}
	return flow_forward(ctx, m, f, reason);
}

/* The packet that opens a flow, whose client half ct_open left in the
 * scratch space: forwarded from there (counted as fwd_new), then the
 * half, with what forwarding recorded in it (the SYN's tracking, the next
 * hop), goes into half_open. This saves looking up the entry just
 * inserted; the packet leaves only after the program returns, so nothing
 * answers it before the half is in place. Another CPU opening the same
 * flow at the same moment wins: this packet is dropped (counted as
 * drop_half_open_lost), and the client's retransmission finds that
 * flow. A global function, verified once. */
__noinline int half_open_first(struct xdp_md *ctx, const struct pkt_meta *m)
{
	struct scratch *sc = scratch_get();
	struct flow_val *f;
	long err;
	int r;

	if (!m || !sc)
		return XDP_PASS;
	f = &sc->val;
	r = flow_forward(ctx, m, f, REASON_FWD_NEW);
	err = bpf_map_update_elem(&half_open, &m->key, f, BPF_NOEXIST);
	if (err) {
		bpf_map_delete_elem(&half_open, &f->peer);
		count(f->vid, err == -EEXIST ? REASON_DROP_HALF_OPEN_LOST : REASON_DROP_TABLE_FULL, m->bytes);
		return XDP_DROP;
	}
	count(f->vid, REASON_EVENT_HALF_OPEN, 0);
	return r;
}

/* A packet of an open flow. Inlined into the program: as a global
 * function the verifier would check it once, for any parse outcome, but
 * the call, and reading the parse result back through a pointer, cost
 * about 4 ns a packet on the established path; inlined, the verifier
 * walks it once per parse outcome that reaches it (a few percent more
 * instructions processed). */
static __always_inline int flow_hit(struct xdp_md *ctx, const struct pkt_meta *m, struct flow_val *f)
{
	if (!m || !f)
		return XDP_PASS;
	if (m->frag != FRAG_NONE) {
		count(f->vid, REASON_DROP_FRAGMENT, m->bytes);
		return XDP_DROP;
	}
	if (f->dir == DIR_SERVER)
		return flow_forward(ctx, m, f, REASON_FWD_SERVER);
	/* A new SYN on a closing connection starts a new one, which may go
	 * to another member. */
	if (f->closing && m->key.proto == IPPROTO_TCP &&
	    (m->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == TCP_FLAG_SYN) {
		count(f->vid, REASON_EVENT_RESTARTED, 0);
		flow_event_restart(&m->key, f);
		ct_delete(f, &m->key);
		return FLOW_MISS;
	}
	return flow_forward(ctx, m, f, REASON_FWD_CLIENT);
}

/* A TCP or UDP packet without a flow: a new flow, or one to pass. A
 * global function: the verifier checks it once, from a state that does
 * not depend on which headers the parser met, instead of once per parse
 * outcome. */
__noinline int fastl4_miss(struct xdp_md *ctx, const struct pkt_meta *m)
{
	struct scratch *sc;
	struct config *cfg;
	struct svc_val *svc;
	__u64 bytes;
	int r;

	if (!m)
		return XDP_PASS;
	bytes = m->bytes;
	cfg = settings_get();
	sc = scratch_get();
	if (!cfg || !sc) /* cannot happen: an array always has its entries */
		return XDP_PASS;
	sc->svc.vip = m->key.daddr;
	sc->svc.port = m->key.dport;
	sc->svc.proto = m->key.proto;
	sc->svc.family = m->key.family;
	svc = bpf_map_lookup_elem(&services, &sc->svc);
	if (!svc) {
		/* A member's answer to a half-open flow comes to a SNAT
		 * port; the host's own connections use other ports. */
		__u16 port = bpf_ntohs(m->key.dport);

		if (port >= cfg->snat_port_min && port <= cfg->snat_port_max) {
			r = half_open_hit(ctx, m);
			if (r != FLOW_MISS)
				return r;
			/* A member's segment to a SNAT port that no flow owns
			 * (the flow lives on the node that was active, or
			 * expired): the stack would reset the member's side.
			 * Dropped, the connection waits for the client's next
			 * segment, which loose_init turns into the flow again. */
			if (m->key.proto == IPPROTO_TCP && !(m->tcp_flags & TCP_FLAG_SYN) &&
			    ctx->ingress_ifindex == cfg->int_ifindex) {
				count(0, REASON_DROP_NO_FLOW, bytes);
				return XDP_DROP;
			}
		}
		/* The L7 proxy's VIPs: a connection a peer owns. */
		r = second_chance(ctx, m, 1);
		if (r != PEER_NONE)
			return r;
		count(0, REASON_PASS_NO_SERVICE, bytes);
		return XDP_PASS;
	}
	if (m->frag != FRAG_NONE) {
		count(svc->vid, REASON_DROP_FRAGMENT, bytes);
		return XDP_DROP;
	}
	r = half_open_hit(ctx, m);
	if (r != FLOW_MISS)
		return r;
	r = second_chance(ctx, m, 0);
	if (r != PEER_NONE)
		return r;
	r = guard_new(ctx, m, cfg);
	if (r >= 0) {
		count(svc->vid, r, bytes);
		return guard_verdict(r);
	}
	if (m->ttl <= 1)
		return icmp_reply(ctx, m, svc->vid, ICMP_REPLY_TIME_EXCEEDED, 0);
	if (m->key.proto == IPPROTO_TCP) {
		__u8 fl = m->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST | TCP_FLAG_FIN);

		/* A connection opens with a bare SYN; loose_init also picks
		 * up connections in the middle, but never on a RST or FIN. */
		if (fl != TCP_FLAG_SYN &&
		    (!(svc->flags & SVC_LOOSE_INIT) || (fl & (TCP_FLAG_RST | TCP_FLAG_FIN | TCP_FLAG_SYN)))) {
			count(svc->vid, REASON_DROP_NO_FLOW, bytes);
			return XDP_DROP;
		}
	}
	/* A SYN's sequence number and timestamp: whether it may take the
	 * SNAT port of a closed flow (snat_reusable). */
	syn_read(ctx, m, &sc->syn);
	r = ct_open(m, &sc->syn, svc, cfg, bpf_ktime_get_coarse_ns());
	if (r >= 0) {
		count(svc->vid, r, bytes);
		return XDP_DROP;
	}
	return half_open_first(ctx, m);
}

SEC("xdp")
int edgeproxy_fastl4(struct xdp_md *ctx)
{
	struct pkt_meta m = {};
	struct flow_val *f;
	int r;

	m.bytes = frame_len(ctx);
	if (!parse_ipv4_tcp(ctx, &m) && !parse_ipv6_tcp(ctx, &m)) {
		r = parse_packet(ctx, &m);
		if (r >= 0) {
			count(0, r, m.bytes);
			return r == REASON_DROP_BAD_HEADER ? XDP_DROP : XDP_PASS;
		}
		if (m.frag == FRAG_LATER) {
			count(0, REASON_PASS_FRAGMENT, m.bytes);
			return XDP_PASS;
		}
		/* Called from here rather than from fastl4_miss: each call
		 * level adds its frame to the 512 bytes the whole call chain
		 * may use. */
		if (m.key.proto == IPPROTO_ICMP || m.key.proto == IPPROTO_ICMPV6)
			return icmp_translate(ctx, &m, settings_get(), m.bytes);
	}
	/* The established path: one lookup, one call. */
	f = flow_lookup(&m.key);
	if (f) {
		r = flow_hit(ctx, &m, f);
		if (r != FLOW_MISS)
			return r;
	}
	return fastl4_miss(ctx, &m);
}
