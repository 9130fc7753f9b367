/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Second chance between nodes that announce the same VIP behind a router
 * with ECMP. When the router's next-hop set changes, hash-threshold ECMP
 * moves connections between nodes; the node receiving one holds neither
 * a fastl4 flow nor a socket for it. The nodes tell each other which
 * connections they own (client tuple -> the owner's MAC on the shared
 * external segment), and the control plane writes the others' into
 * owners. A TCP segment that is not a SYN, arrives on the external NIC
 * with no local flow, and whose tuple a peer owns is sent to that peer
 * (XDP_TX, MACs rewritten), if it was addressed to this node's MAC. A SYN always opens its connection here, and
 * removes the tuple's entry: the client started over. A frame whose
 * source MAC is a peer's was forwarded once already and is never
 * forwarded again.
 *
 * The maps are pinned, as the program is: a restarted control plane
 * adopts the running program, which reads these. It empties them when
 * it starts and fills them from its peers. */
#ifndef EDGEPROXY_PEERS_H
#define EDGEPROXY_PEERS_H

#include "common.h"
#include "maps.h"
#include "guard.h"

#ifndef MAX_OWNERS
#define MAX_OWNERS 131072 /* peers' connections (LRU: the least recently
			   * written go first) */
#endif
#ifndef MAX_PEERS
#define MAX_PEERS 64
#endif

/* The node that owns a connection: its MAC on the external segment. */
struct owner {
	__u8 mac[6];
	__u16 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_OWNERS);
	__type(key, struct flow_key); /* client -> VIP */
	__type(value, struct owner);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} owners SEC(".maps");

/* The peers' MACs (in the low 6 bytes, network order), for the loop
 * guard. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PEERS);
	__type(key, __u64);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} peer_macs SEC(".maps");

/* What second chance did, per CPU. */
enum peer_stat {
	PEER_FORWARDED = 0, /* sent to the owner */
	PEER_SYN_LOCAL,     /* a SYN for a peer's tuple, opened here */
	PEER_FROM_PEER,     /* already forwarded by a peer: not forwarded again */
	PEER_STAT_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PEER_STAT_MAX);
	__type(key, __u32);
	__type(value, struct stat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} peer_stats SEC(".maps");

/* Whether second chance is on: the number of peers. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} peer_count SEC(".maps");

/* Segments held (dropped) because neither a local socket nor a peer
 * knows their connection yet, per CPU. Not pinned, so that it needs no
 * layout change: it counts since the program was loaded. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct stat);
} peer_held SEC(".maps");

/* second_chance's answer for a packet this node serves as before. */
#define PEER_NONE -1

#ifndef BPF_TCP_LISTEN
#define BPF_TCP_LISTEN 10
#endif

static __always_inline void peer_stat_add(__u32 k, __u64 bytes)
{
	struct stat *s = bpf_map_lookup_elem(&peer_stats, &k);

	if (s) {
		s->packets++;
		s->bytes += bytes;
	}
}

/* What the kernel knows of the connection of m, a TCP segment to the L7
 * proxy: 1 for a request sock, an established or closing socket, or an
 * ACK carrying a valid syncookie to a listener (a handshake completed by
 * cookie during a SYN flood); 0 for a listener alone; -1 for nothing (no
 * service listens there). The tuple lives in the per-CPU scratch, off
 * the stack. */
static __always_inline int peer_local_sock(struct xdp_md *ctx, const struct pkt_meta *m)
{
	struct bpf_sock_tuple *t;
	struct scratch *sc = scratch_get();
	struct bpf_sock *sk;
	struct tcphdr *th;
	struct pkt p;
	__u32 len, iph_len;
	void *iph;
	int local;

	if (!sc || pkt_load(ctx, m, &p) < 0)
		return 1; /* cannot happen: serve as before */
	t = &sc->tuple;
	__builtin_memset(t, 0, sizeof(*t));
	if (m->key.family == 4) {
		t->ipv4.saddr = m->key.saddr.w[0];
		t->ipv4.daddr = m->key.daddr.w[0];
		t->ipv4.sport = m->key.sport;
		t->ipv4.dport = m->key.dport;
		len = sizeof(t->ipv4);
		iph_len = sizeof(struct iphdr);
	} else {
		__builtin_memcpy(t->ipv6.saddr, m->key.saddr.w, 16);
		__builtin_memcpy(t->ipv6.daddr, m->key.daddr.w, 16);
		t->ipv6.sport = m->key.sport;
		t->ipv6.dport = m->key.dport;
		len = sizeof(t->ipv6);
		iph_len = sizeof(struct ipv6hdr);
	}
	sk = bpf_skc_lookup_tcp(ctx, t, len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return -1;
	local = sk->state != BPF_TCP_LISTEN;
	th = pkt_l4(&p, sizeof(*th));
	if (!local && iph_len == sizeof(struct iphdr)) {
		iph = pkt_l3(&p, sizeof(struct iphdr));
		local = !iph || !th || bpf_tcp_check_syncookie(sk, iph, sizeof(struct iphdr), th, sizeof(*th)) == 0;
	} else if (!local) {
		iph = pkt_l3(&p, sizeof(struct ipv6hdr));
		local = !iph || !th || bpf_tcp_check_syncookie(sk, iph, sizeof(struct ipv6hdr), th, sizeof(*th)) == 0;
	}
	bpf_sk_release(sk);
	return local;
}

/* A segment to a port the L7 proxy listens on that no local socket and
 * no peer knows: with the cluster on, the router may have moved a
 * connection younger than its announcement's trip. Dropped, the client
 * retransmits (200 ms at least), by when the owner is known; passed, the
 * kernel would reset it. */
static __always_inline int peer_hold(struct xdp_md *ctx, const struct pkt_meta *m,
				     const struct config *cfg)
{
	struct ethhdr *eth = (void *)(long)ctx->data;
	__u32 zero = 0;
	struct stat *s;

	if ((m->tcp_flags & TCP_FLAG_SYN) || (void *)(eth + 1) > (void *)(long)ctx->data_end ||
	    !mac_is(eth, cfg->ext_mac) || peer_local_sock(ctx, m) != 0)
		return PEER_NONE;
	s = bpf_map_lookup_elem(&peer_held, &zero);
	if (s) {
		s->packets++;
		s->bytes += m->bytes;
	}
	return XDP_DROP;
}

/* A TCP packet to a VIP without a local flow: XDP_TX to the peer that
 * owns its tuple, or PEER_NONE. With hold (the L7 proxy's VIPs), a
 * segment of a connection nobody knows is held (peer_hold). A global
 * function, verified once. */
__noinline int second_chance(struct xdp_md *ctx, const struct pkt_meta *m, int hold)
{
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = (void *)(long)ctx->data;
	struct config *cfg = settings_get();
	struct owner *o;
	__u32 zero = 0, *on;
	__u64 src = 0;

	if (!m || !cfg || m->key.proto != IPPROTO_TCP || ctx->ingress_ifindex != cfg->ext_ifindex)
		return PEER_NONE;
	on = bpf_map_lookup_elem(&peer_count, &zero);
	if (!on || !*on)
		return PEER_NONE;
	o = bpf_map_lookup_elem(&owners, &m->key);
	if (!o)
		return hold ? peer_hold(ctx, m, cfg) : PEER_NONE;
	if (m->tcp_flags & TCP_FLAG_SYN) {
		bpf_map_delete_elem(&owners, &m->key);
		peer_stat_add(PEER_SYN_LOCAL, m->bytes);
		return PEER_NONE;
	}
	if ((void *)(eth + 1) > end)
		return PEER_NONE;
	/* A frame the switch flooded (addressed to another node) is that
	 * node's to serve or forward. */
	if (!mac_is(eth, cfg->ext_mac))
		return PEER_NONE;
	__builtin_memcpy(&src, eth->h_source, ETH_ALEN);
	if (bpf_map_lookup_elem(&peer_macs, &src)) {
		peer_stat_add(PEER_FROM_PEER, m->bytes);
		return PEER_NONE;
	}
	__builtin_memcpy(eth->h_dest, o->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, cfg->ext_mac, ETH_ALEN);
	peer_stat_add(PEER_FORWARDED, m->bytes);
	return XDP_TX;
}

#endif
