/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maps of the fast path. All are pinned by name under the control plane's
 * pin path, so a restart or an upgrade of the control plane keeps them. */
#ifndef EDGEPROXY_MAPS_H
#define EDGEPROXY_MAPS_H

#include "common.h"

/* Both halves of every connection, keyed by the tuple each side sends:
 * IPv4 TCP in flows4_tcp, IPv4 UDP in flows4_udp (short keys without the
 * protocol hash faster), IPv6 in flows6. Plain hashes (not LRU): a full
 * table refuses new flows instead of evicting established ones; the
 * control plane reaps expired entries. Only established flows get here:
 * new ones wait in half_open until both sides have talked (flood.h), so
 * a flood of spoofed SYNs or datagrams cannot fill these tables. A
 * deleted entry can be handed to another flow at once (preallocated
 * maps, and since 6.1 the others too) while a packet on another CPU
 * still holds a pointer to it: see flow_is. flows4_tcp is preallocated; the
 * others allocate as they fill, so that a mostly IPv4 TCP host does not
 * reserve memory for all three. Use the flow_* accessors below. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * MAX_FLOWS);
	__type(key, struct flow_key4);
	__type(value, struct flow_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows4_tcp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct flow_key4);
	__type(value, struct flow_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows4_udp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} flows6 SEC(".maps");

/* Half-open flows, both halves keyed like the flow tables (full keys:
 * one table for both families and protocols), until they are promoted
 * into the flow tables (flood.h). An LRU: a flood of new flows evicts
 * the least recently used half-open flows, never an established one. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MAX_HALF_OPEN);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} half_open SEC(".maps");

/* Closing connections for the reaper (reap.h): ct_close notes the key of
 * a half of every pair whose FIN or RST it marks, so that the reaper
 * checks these pairs, whose close timeout is short, every run, and walks
 * the whole flow tables only as often as the idle timeouts need. A full
 * table loses the note: the pair then waits for the next walk. */
#ifndef REAP_WATCH_MAX
#define REAP_WATCH_MAX 65536
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, REAP_WATCH_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct flow_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} reap_watch SEC(".maps");

/* fastl4 virtuals by VIP, port and protocol. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIRTUALS * 4);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} services SEC(".maps");

/* One Maglev table: slot -> member address. */
struct maglev_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAGLEV_SIZE);
	__type(key, __u32);
	__type(value, struct addr);
};

/* Maglev tables by pool slot (pool index * 2 + 0 for IPv4, + 1 for IPv6).
 * The control plane fills a new inner map and swaps it in: a lookup sees
 * either the old or the new table, never a mix. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, MAX_POOLS * 2);
	__type(key, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__array(values, struct maglev_table); /* must be the last member */
} maglev SEC(".maps");

/* SNAT addresses: virtual id * MAX_SNAT * 2 + generation * MAX_SNAT + i.
 * Two generations per virtual so a change is written aside and switched
 * by one update of the service. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VIRTUALS * MAX_SNAT * 2);
	__type(key, __u32);
	__type(value, struct addr);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} snat_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} settings SEC(".maps");

/* Counters: virtual id * REASON_MAX + reason. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_VIRTUALS * REASON_MAX);
	__type(key, __u32);
	__type(value, struct stat);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

/* Egress devices a flow may be redirected to, by slot (slot -> ifindex;
 * slot 0 is never used, so that 0 can mean "no next hop cached"). An
 * array: redirecting by slot is an index, cheaper than the hash walk of
 * a map keyed by ifindex. tx_slots gives the slot of an ifindex, looked
 * up only when a next hop is resolved; flows cache the slot. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, MAX_TX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tx_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_TX_PORTS);
	__type(key, __u32);   /* ifindex */
	__type(value, __u32); /* slot in tx_ports */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} tx_slots SEC(".maps");

/* Next hops without a resolved neighbour (value: when last missed). The
 * control plane resolves them and deletes the entry. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct neigh_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} neigh_miss SEC(".maps");

/* Names and knobs of the virtuals by id, written by the control plane so
 * the pinned state describes itself (flows listing, GC after a restart). */
struct vinfo {
	char name[64];
	__u32 idle_s;
	__u32 handshake_s;
	__u32 close_s;
	__u32 flags; /* enum svc_flags */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VIRTUALS);
	__type(key, __u32);
	__type(value, struct vinfo);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} virtuals SEC(".maps");

/* Pool names by pool index, so pool slots survive a control plane restart. */
struct pinfo {
	char name[64];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_POOLS);
	__type(key, __u32);
	__type(value, struct pinfo);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pools SEC(".maps");

/* What the pinned maps are, written by the control plane once they are
 * loaded or migrated, and read by the next one to decide whether it reuses
 * them, migrates them or refuses (l4/layout.go). The program never reads
 * it. Its layout never changes: members may only be appended. */
struct pin_meta {
	__u32 layout_version; /* LAYOUT_VERSION of the build that wrote the maps */
	__u32 pad;
	__u64 layout_hash;    /* of the key and value types of every pinned map */
	char build[48];       /* the program's tag and the control plane's build */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pin_meta);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meta SEC(".maps");

/* The names of enum reason by value ("pass_not_ip" for REASON_PASS_NOT_IP),
 * written by the control plane with meta: the next build places the pinned
 * counters (stats, indexed by reason) by name, whatever its own numbering.
 * The program never reads it. Its layout never changes. */
#define REASON_NAMES_MAX 256

struct reason_name {
	char name[32];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, REASON_NAMES_MAX);
	__type(key, __u32);
	__type(value, struct reason_name);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} meta_reasons SEC(".maps");

/* The layout version of this build, for the control plane to read from
 * the object before it loads anything. */
const volatile __u32 layout_version = LAYOUT_VERSION_BUILT;

/* What the SYN of a new flow offers a SNAT port held by a closed flow
 * (snat_reusable). */
struct syn_info {
	__u32 seq;   /* host order */
	__u32 tsval; /* host order, when has_ts */
	__u8 has_ts;
	__u8 ok;     /* 1: a bare SYN whose header was read */
	__u8 pad[2];
};

/* Per CPU scratch space for values too large for the 512-byte stack.
 * The enum members are never used: they put the enums shared with the
 * control plane into the object's BTF, where bpf2go -type finds them. */
struct scratch {
	struct flow_val val;
	struct flow_val val2; /* the other half, when both are built */
	struct syn_info syn;  /* a new flow's SYN (syn_read) */
	struct flow_key skey; /* a new flow's server side key (ct_open) */
	struct svc_key svc;   /* fastl4_miss's lookup of the virtual: off the
			       * stack, whose frames along fastl4_miss ->
			       * ct_open -> snat_take add up to the 512 bytes */
	struct bpf_sock_tuple tuple; /* second chance's socket lookup */
	enum reason reason;
	enum flow_dir dir;
	enum flow_seen seen;
	enum flow_close closing;
	enum svc_flags svc_flags;
	enum flow_event_kind event_kind;
	enum flow_end flow_end;
	struct flow_event event;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

static __always_inline struct scratch *scratch_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&scratch, &zero);
}

/* CLOCK_MONOTONIC_COARSE in nanoseconds, what bpf_ktime_get_coarse_ns
 * returns, for the per-packet timestamps. That clock moves once a tick,
 * together with jiffies; the helper is a real call, dearer than the rest
 * of the timestamping, while the verifier turns bpf_jiffies64 into a
 * single load. So the last reading is kept with the jiffies it was taken
 * at, in a global variable (a plain load, no map lookup), and the helper
 * is called only when jiffies moved: once a tick per CPU at most. CPUs
 * racing on the update write readings a tick apart at most. A reading
 * lags the clock by a tick or two (jiffies may move just before the clock
 * does), well inside TS_GRANULARITY_NS and FIB_CACHE_NS; since readings
 * may go back by that much, compare them as signed differences. */
__u64 clock_jiffies;
__u64 clock_ns;

static __always_inline __u64 coarse_now(void)
{
	__u64 j = bpf_jiffies64();
	__u64 ns;

	if (j == clock_jiffies)
		return clock_ns;
	ns = bpf_ktime_get_coarse_ns();
	clock_ns = ns;
	clock_jiffies = j;
	return ns;
}

static __always_inline void flow_key4_of(const struct flow_key *k, struct flow_key4 *k4)
{
	k4->saddr = k->saddr.w[0];
	k4->daddr = k->daddr.w[0];
	k4->sport = k->sport;
	k4->dport = k->dport;
}

/* The inverse of flow_key4_of: the full key of an IPv4 table's entry. */
static __always_inline void flow_key_of4(const struct flow_key4 *k4, __u8 proto, struct flow_key *k)
{
	k->saddr.w[0] = k4->saddr;
	k->daddr.w[0] = k4->daddr;
	k->sport = k4->sport;
	k->dport = k4->dport;
	k->proto = proto;
	k->family = 4;
}

/* Every flow is TCP or UDP: the parser hands nothing else to the flow
 * lookups (ICMP goes to icmp_translate, which looks up the TCP or UDP
 * tuple it quotes), and services are TCP or UDP. So an IPv4 key that is
 * not UDP is TCP. */
static __always_inline struct flow_val *flow_lookup(const struct flow_key *k)
{
	struct flow_key4 k4;

	if (k->family != 4)
		return bpf_map_lookup_elem(&flows6, k);
	flow_key4_of(k, &k4);
	if (k->proto == IPPROTO_UDP)
		return bpf_map_lookup_elem(&flows4_udp, &k4);
	return bpf_map_lookup_elem(&flows4_tcp, &k4);
}

/* is4 is a constant where the caller knows the family (in a loop, say):
 * once inlined the test folds away instead of doubling the paths the
 * verifier walks. */
static __always_inline long flow_update_fam(const struct flow_key *k, const struct flow_val *v,
					    __u64 flags, int is4)
{
	struct flow_key4 k4;

	if (!is4)
		return bpf_map_update_elem(&flows6, k, v, flags);
	flow_key4_of(k, &k4);
	if (k->proto == IPPROTO_UDP)
		return bpf_map_update_elem(&flows4_udp, &k4, v, flags);
	return bpf_map_update_elem(&flows4_tcp, &k4, v, flags);
}

static __always_inline long flow_update(const struct flow_key *k, const struct flow_val *v, __u64 flags)
{
	return flow_update_fam(k, v, flags, k->family == 4);
}

static __always_inline long flow_delete(const struct flow_key *k)
{
	struct flow_key4 k4;

	if (k->family != 4)
		return bpf_map_delete_elem(&flows6, k);
	flow_key4_of(k, &k4);
	if (k->proto == IPPROTO_UDP)
		return bpf_map_delete_elem(&flows4_udp, &k4);
	return bpf_map_delete_elem(&flows4_tcp, &k4);
}

static __always_inline int flow_key_eq(const struct flow_key *x, const struct flow_key *y)
{
	const __u32 *a = (const __u32 *)x, *b = (const __u32 *)y;

	for (int i = 0; i < sizeof(*x) / 4; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

/* What a flow_val keeps of its own key (self4): the IPv4 key as it is; an
 * IPv6 key folded to 12 bytes (each address's words XORed, the protocol
 * into the destination's; the ports as they are). */
static __always_inline void flow_self4(const struct flow_key *k, struct flow_key4 *o)
{
	if (k->family == 4) {
		flow_key4_of(k, o);
		return;
	}
	o->saddr = k->saddr.w[0] ^ k->saddr.w[1] ^ k->saddr.w[2] ^ k->saddr.w[3];
	o->daddr = k->daddr.w[0] ^ k->daddr.w[1] ^ k->daddr.w[2] ^ k->daddr.w[3] ^ k->proto;
	o->sport = k->sport;
	o->dport = k->dport;
}

/* Sets the keys of a new value: its own and its peer's, in the forms the
 * established path reads. */
static __always_inline void flow_set_keys(struct flow_val *v, const struct flow_key *self,
					  const struct flow_key *peer)
{
	flow_self4(self, &v->self4);
	v->peer = *peer;
	flow_key4_of(peer, &v->peer4);
}

/* Whether the entry f still belongs to the key k it was found under. A
 * map value is not locked: once deleted (the GC, an eviction, another
 * CPU) it can be reused for another flow while this packet holds f (the
 * map is RCU-protected against freeing, not against reuse). So a packet
 * checks after it has read what it needs, and a write that must not land
 * in another flow (the next-hop cache) is checked after it is made, and
 * undone when the entry changed hands. The barrier keeps the compiler
 * from reading self4 earlier than where the check stands. IPv4 compares
 * the whole key; IPv6 its fold (flow_self4): an entry reused by another
 * flow whose addresses fold alike and whose ports are the same passes. */
static __always_inline int flow_is(const struct flow_val *f, const struct flow_key *k)
{
	const volatile __u32 *a = (const volatile __u32 *)&f->self4;
	__u32 s, d;

	asm volatile("" ::: "memory");
	if (k->family == 4) {
		s = k->saddr.w[0];
		d = k->daddr.w[0];
	} else {
		s = k->saddr.w[0] ^ k->saddr.w[1] ^ k->saddr.w[2] ^ k->saddr.w[3];
		d = k->daddr.w[0] ^ k->daddr.w[1] ^ k->daddr.w[2] ^ k->daddr.w[3] ^ k->proto;
	}
	/* The ports, one word in both. */
	return a[0] == s && a[1] == d && a[2] == *(const __u32 *)&k->sport;
}

/* The egress devices by tx_ports slot: MAC and MTU, written when a next
 * hop is resolved (fib_resolve), read by every forwarded packet (a global
 * variable: a plain load). A slot whose MTU is 0 is not known yet. */
struct tx_dev {
	__u8 mac[6];
	__u16 mtu;
};

_Static_assert((MAX_TX_PORTS & (MAX_TX_PORTS - 1)) == 0, "MAX_TX_PORTS: a power of two");

struct tx_dev tx_devs[MAX_TX_PORTS];

static __always_inline void count(__u32 vid, __u32 reason, __u64 bytes)
{
	__u32 k = vid * REASON_MAX + reason;
	struct stat *s = bpf_map_lookup_elem(&stats, &k);

	if (s) {
		s->packets++;
		s->bytes += bytes;
	}
}

static __always_inline struct config *settings_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&settings, &zero);
}

#endif
