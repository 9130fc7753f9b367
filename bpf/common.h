/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Types, limits and the reason codes shared by the fast path and its
 * control plane (the Go side gets them through bpf2go -type). */
#ifndef EDGEPROXY_COMMON_H
#define EDGEPROXY_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmpv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* linux/icmp.h drags in libc headers: the few ICMP definitions used. */
#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11

struct icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest;
};

/* The layout of the pinned maps (the key and value types of every map
 * pinned by name). Raise it with every change to one of them: a control
 * plane meeting pins of a lower version migrates them (l4/migrate.go), one
 * meeting a higher version refuses to start and touches nothing.
 * l4's TestLayoutVersion fails until the new layout is recorded under its
 * version. */
#define LAYOUT_VERSION 4

/* The version this build declares: the test builds of FLOW_VAL_TEST_PAD
 * (struct flow_val) and REASON_TEST_FIRST (enum reason, so the size of
 * stats) are one above. */
#if defined(FLOW_VAL_TEST_PAD) || defined(REASON_TEST_FIRST)
#define LAYOUT_VERSION_BUILT (LAYOUT_VERSION + 1)
#else
#define LAYOUT_VERSION_BUILT LAYOUT_VERSION
#endif

/* Limits. Each can be overridden at build time with -D. The control plane
 * reads the map sizes from the object, so it follows any override. */
#ifndef MAX_VIRTUALS
#define MAX_VIRTUALS 64 /* fastl4 virtuals, id 0 is "no virtual" */
#endif
#ifndef MAX_POOLS
#define MAX_POOLS 64 /* pools; each has a v4 and a v6 Maglev slot */
#endif
#ifndef MAX_SNAT
#define MAX_SNAT 16 /* SNAT addresses per virtual */
#endif
#ifndef MAX_FLOWS
#define MAX_FLOWS 262144 /* connections (fastpath.max_flows), two entries each; Go resizes */
#endif
#ifndef MAGLEV_SIZE
#define MAGLEV_SIZE 65537 /* Maglev table size (prime); Go resizes */
#endif
#ifndef MAX_TX_PORTS
#define MAX_TX_PORTS 8 /* egress devices (tx_ports slots, slot 0 unused) */
#endif
#ifndef SNAT_PROBES
#define SNAT_PROBES 96 /* SNAT (address, port) candidates tried per new flow:
			 * random probes, so at 90 % of the range used all
			 * fail with probability 0.9^96 (4e-5) */
#endif
#ifndef MAX_HALF_OPEN
#define MAX_HALF_OPEN MAX_FLOWS /* entries, two per connection: MAX_FLOWS/2 half-open connections; Go resizes */
#endif
#ifndef IPV6_MAX_EXT
#define IPV6_MAX_EXT 6 /* IPv6 extension headers skipped before giving up */
#endif
#ifndef TS_GRANULARITY_NS
#define TS_GRANULARITY_NS 100000000ULL /* last-seen is written at most every 100ms */
#endif
#ifndef FIB_CACHE_NS
#define FIB_CACHE_NS 1000000000ULL /* a flow reuses its next hop for 1s */
#endif

/* Why a packet got its verdict (or an event on the way), counted per CPU
 * and per virtual in the stats map. The names are part of the metrics:
 * edgeproxy_xdp_packets_total{reason="..."}. Keep REASON_MAX last. */
enum reason {
#ifdef REASON_TEST_FIRST
	REASON_TEST_ADDED,         /* test build: a reason added first renumbers the others */
#endif
	REASON_PASS_NOT_IP,        /* ARP, LLDP, anything not IPv4/IPv6 */
	REASON_PASS_VLAN,          /* VLAN-tagged frame: left to the stack */
	REASON_PASS_MALFORMED,     /* truncated or invalid headers */
	REASON_PASS_NO_SERVICE,    /* not a fastl4 VIP:port and no flow */
	REASON_PASS_PROTO,         /* neither TCP, UDP nor a handled ICMP error */
	REASON_PASS_FRAGMENT,      /* non-first fragment (carries no ports) */
	REASON_PASS_ICMP,          /* ICMP not about a tracked flow */
	REASON_PASS_IPV6_ROUTING,  /* IPv6 routing header with segments left */
	REASON_FWD_NEW,            /* first packet of a new flow, forwarded */
	REASON_FWD_CLIENT,         /* client to member, forwarded */
	REASON_FWD_SERVER,         /* member to client, forwarded */
	REASON_FWD_ICMP,           /* ICMP error translated and forwarded */
	REASON_DROP_FRAGMENT,      /* first fragment to a fastl4 virtual */
	REASON_DROP_NO_FLOW,       /* TCP non-SYN without a flow (loose_init off), or a
				    * member's to a SNAT port no flow owns */
	REASON_DROP_NO_MEMBER,     /* the pool has no member up */
	REASON_DROP_SNAT_EXHAUSTED, /* no free SNAT (address, port) */
	REASON_DROP_TABLE_FULL,    /* flow table full */
	REASON_DROP_NO_NEIGH,      /* next hop not resolved yet */
	REASON_DROP_FIB,           /* no route (blackhole, unreachable, ...) */
	REASON_DROP_FRAG_NEEDED,   /* larger than the egress MTU */
	REASON_DROP_NO_TX_PORT,    /* egress device not in the tx_ports devmap */
	REASON_DROP_ICMP,          /* ICMP error for a flow, not translatable */
	REASON_EVENT_REPAIRED,     /* event: a missing half of a pair re-inserted */
	REASON_EVENT_RESTARTED,    /* event: SYN on a closing flow re-balanced */
	REASON_EVENT_MSS_CLAMPED,  /* event: MSS option lowered */
	/* Floods (bpf/README.md): half-open flows, SNAT, entry reuse. */
	REASON_DROP_HALF_OPEN_LOST, /* half-open flow lost its other half (evicted) */
	REASON_DROP_FLOW_REUSED,    /* the entry went to another flow meanwhile */
	REASON_EVENT_HALF_OPEN,     /* event: a half-open flow opened */
	REASON_EVENT_PROMOTED,      /* event: a half-open flow became established */
	REASON_EVENT_SNAT_RECLAIMED, /* event: SNAT port taken from the oldest half-open flow */
	/* Ingress validation, router behaviour, TCP sanity. */
	REASON_DROP_INGRESS,       /* a flow's packet on the NIC its side does not use */
	REASON_PASS_FOREIGN_MAC,   /* not addressed to the NIC's MAC: not translated */
	REASON_DROP_MARTIAN,       /* a source that cannot come from outside (BCP 38) */
	REASON_DROP_BAD_HEADER,    /* IPv4 source route, IPv6 UDP without checksum,
				    * UDP length other than the IP payload's */
	REASON_TX_TIME_EXCEEDED,   /* TTL or hop limit ran out: ICMP sent back */
	REASON_TX_TOO_BIG,         /* over the egress MTU: frag-needed or
				    * packet-too-big sent back */
	REASON_DROP_TTL,           /* TTL or hop limit ran out, no ICMP built */
	REASON_DROP_RST_WINDOW,    /* RST outside the receiver's window */
	REASON_DROP_ICMP_INVALID,  /* ICMP error with a bad checksum, a foreign
				    * sequence number or an MTU below the minimum */
	REASON_DROP_ICMP_RATE,     /* ICMP error about a flow within ICMP_FLOW_GAP_MS
				    * of the last one translated */
	REASON_DROP_HANDSHAKE,     /* a client packet of a half-open flow that is not the
				    * ACK of the member's SYN-ACK (blind or early) */
	REASON_DROP_TX_REFUSED,    /* redirected, then refused by the egress devmap or
				    * driver: moved here from its fwd_* count (txerr.h) */
	REASON_EVENT_LOG_RING_FULL, /* event: a flow event dropped, its ring was full */
	REASON_EVENT_SNAT_REUSED,  /* event: SNAT port taken from a closed flow whose
				    * member accepts the new SYN (snat_reusable) */
	REASON_EVENT_REAP_WATCH_FULL, /* event: a closing pair not noted in reap_watch
				       * (full): the next walk of the flow tables finds it */
	REASON_MAX,
};

/* An address; IPv4 uses w[0] and leaves the rest zero. */
struct addr {
	__be32 w[4];
};

/* One direction of a connection as seen on the wire. */
struct flow_key {
	struct addr saddr;
	struct addr daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 family; /* 4 or 6 */
	__u16 pad;
};

/* The key of an IPv4 flow: addresses and ports in 12 bytes, the
 * protocol given by the table (TCP and UDP flows are kept apart), so that
 * the established path's lookup hashes one 12-byte block (jhash) and
 * compares 12 bytes, instead of 10 words for the full key. */
struct flow_key4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
};

enum flow_dir {
	DIR_CLIENT = 0, /* key is client -> VIP */
	DIR_SERVER = 1, /* key is member -> SNAT address */
};

/* seen: what this direction has sent (written by the CPU of that direction) */
enum flow_seen {
	SEEN_SYN = 1 << 0,    /* SYN without ACK */
	SEEN_SYNACK = 1 << 1, /* SYN with ACK */
	SEEN_ACK = 1 << 2,    /* ACK without SYN: handshake done on this side */
	SEEN_FIN = 1 << 3,
	SEEN_RST = 1 << 4,
	SEEN_ANY = 1 << 5, /* any packet (UDP, loose_init) */
	/* Not a packet: the other half may be missing, look it up on this
	 * direction's packets (ct_repair). Set only in a value before it is
	 * inserted, where a pair may be left short (half_open_promote), and
	 * cleared by ct_repair, so this direction's CPU stays the only
	 * writer of a live entry's seen. Older builds ignore it. */
	SEEN_REPAIR = 1 << 6,
};

/* closing: shared by both halves, set atomically by either direction */
enum flow_close {
	CLOSE_FIN_CLIENT = 1 << 0,
	CLOSE_FIN_SERVER = 1 << 1,
	CLOSE_RST = 1 << 2,
};

/* The value stored under each of the two keys of a connection. The other
 * half is found at peer; the rewrite of a packet of this direction is
 * source = peer.daddr:peer.dport, destination = peer.saddr:peer.sport.
 *
 * Two cache lines (bpf/README.md, "Compact flows"). The first holds all
 * that the established path reads and writes for an IPv4 flow: its own
 * key and its peer's in the short IPv4 form, the tracking it updates, its
 * counters and the cached next hop. The second holds the peer's full key
 * (read for IPv6 flows, and about once a second for IPv4: next hop,
 * repair) and what only new flows, RSTs, ICMP errors and the control
 * plane read. 128 bytes: with the 16-byte IPv4 key and the kernel's
 * 48-byte element header, an element of a preallocated IPv4 table is 192
 * bytes, so every value starts on a cache line. */
struct flow_val {
	/* Line 1: the established path. */
	struct flow_key4 self4; /* the entry's own key, see flow_is (IPv6: a
				 * fold of it, flow_self4) */
	struct flow_key4 peer4; /* IPv4: peer, short */
	__u64 last_ns;    /* last packet of this direction, TS_GRANULARITY_NS;
			   * bpf_ktime_get_coarse_ns (CLOCK_MONOTONIC_COARSE) */
	__u64 bytes;      /* forwarded in this direction (frames) */
	__u32 packets;    /* forwarded in this direction */
	__u32 ack;        /* host order: last ack this side sent */
	__u32 closing;    /* enum flow_close, atomic */
	__u8 dmac[6];     /* cached next hop's MAC; its device is tx_slot, whose
			   * MAC and MTU are in tx_devs */
	__u16 win;        /* largest window this side advertised after its SYN,
			   * unscaled (ct_window) */
	__u8 vid;         /* virtual id */
	__u8 tx_slot;     /* cached egress device: its slot in tx_ports, 0: none */
	__u8 dir;         /* enum flow_dir */
	__u8 seen;        /* enum flow_seen */
	/* Line 2: the rest. */
	struct flow_key peer;
	__u64 created_ns; /* bpf_ktime_get_coarse_ns */
	__u32 seq_next;   /* host order: this side's ISN + 1 (from its SYN); once
			   * it sent a FIN, the number after the FIN */
	__u16 syn_win;    /* the window of this side's SYN (never scaled) */
	__u16 icmp_ms;    /* when an ICMP error about this direction was last
			   * translated (units of 2^20 ns, wrapping), 0: never */
	__u16 mss;        /* mss_override of the virtual, 0: off */
	__u8 wscale;      /* window scale of this side's SYN: WSCALE_* */
	__u8 half_open;   /* 1: an entry of the half_open table */
	__u32 ts_last;    /* the newest TCP timestamp (TSval) this side sent once
			   * the connection began to close, 0: none; a client
			   * half's is what its SNAT port's reuse is held to
			   * (snat_reusable) */
#ifdef FLOW_VAL_TEST_PAD
	/* Only in the second build the upgrade test compiles
	 * (TestPrivilegedUpgradeKeepsFlows): a member the committed build
	 * lacks, so that the two flow value layouts differ. */
	__u64 test_pad;
#endif
};

#ifndef FLOW_VAL_TEST_PAD
_Static_assert(sizeof(struct flow_val) == 128, "flow_val: two cache lines");
#endif
_Static_assert(__builtin_offsetof(struct flow_val, peer) == 64, "flow_val: hot fields in the first line");
_Static_assert(MAX_VIRTUALS <= 256, "flow_val.vid is a byte");

/* flow_val.wscale: the shift this side sent in its SYN, whether it sent
 * one, and whether both did (only then does the shift apply, RFC 7323). */
enum flow_wscale {
	WSCALE_SHIFT = 0x0f,
	WSCALE_SENT = 1 << 6,
	WSCALE_BOTH = 1 << 7,
};

/* Flow events (events.h). */
enum flow_event_kind {
	FLOW_EVENT_OPEN = 1,  /* the flow became established (promoted) */
	FLOW_EVENT_CLOSE = 2, /* the flow was removed (control plane) */
	FLOW_EVENT_STATE = 3, /* the flow's TCP state changed */
};

/* Why a flow ended, in a close event. */
enum flow_end {
	FLOW_END_NONE = 0,
	FLOW_END_FIN = 1,       /* both sides closed, close timer ran out */
	FLOW_END_RST = 2,       /* a side reset the connection */
	FLOW_END_IDLE = 3,      /* idle timeout */
	FLOW_END_HANDSHAKE = 4, /* the handshake did not complete in time */
	FLOW_END_KILLED = 5,    /* flows kill */
	FLOW_END_DRAINED = 6,   /* the member's drain timeout ran out */
};

/* One event. The tuples are the keys of the two halves: client is what
 * the client sends (client -> VIP), server what the member sends
 * (member -> SNAT). Counters are by direction (enum flow_dir): [0] from
 * the client, [1] from the member. */
struct flow_event {
	__u64 ts_ns;      /* when, bpf_ktime_get_coarse_ns's clock */
	__u64 created_ns; /* the flow's first packet */
	struct flow_key client;
	struct flow_key server;
	__u64 bytes[2];
	__u64 packets[2];
	__u32 vid;
	__u8 kind; /* enum flow_event_kind */
	__u8 end;  /* enum flow_end, close events */
	__u16 pad;
	/* The tracking of each half at an open event (zero in close events),
	 * by direction, for flow mirroring to install the flow on the HA
	 * peer without reading the tables back. */
	__u32 ack[2];
	__u32 seq_next[2];
	__u16 win[2];
	__u16 syn_win[2];
	__u8 seen[2];
	__u8 wscale[2];
	__u16 mss;
	__u16 pad2;
	__u32 closing;
};

/* A fastl4 virtual: VIP, port and protocol. */
struct svc_key {
	struct addr vip;
	__be16 port;
	__u8 proto;
	__u8 family;
};

enum svc_flags {
	SVC_LOOSE_INIT = 1 << 0,  /* any TCP packet may open a flow */
	SVC_LOOSE_CLOSE = 1 << 1, /* first FIN starts the close timer */
	SVC_RESET_ON_TIMEOUT = 1 << 2,
	SVC_LOG = 1 << 3, /* report its flows in flow_events (events.h) */
	SVC_MIRROR = 1 << 4, /* report its new flows too, for the HA peer */
	SVC_ANNOUNCE = 1 << 5, /* report them at once, for the peers (peers.h) */
};

struct svc_val {
	__u32 vid;         /* virtual id, index of counters and names */
	__u32 pool_slot;   /* index in the maglev outer map */
	__u32 snat_base;   /* first index in snat_addrs */
	__u16 snat_count;  /* SNAT addresses from snat_base */
	__be16 member_port;
	__u16 flags;       /* enum svc_flags */
	__u16 mss;         /* 0: off */
	__u32 idle_s;      /* timeouts, seconds */
	__u32 handshake_s;
	__u32 close_s;
};

/* Global settings, one entry. */
struct config {
	__u32 maglev_size; /* entries used in each Maglev table */
	__u32 hash_seed;
	__u16 snat_port_min; /* host order, inclusive */
	__u16 snat_port_max;
	__u32 fib_ifindex; /* device given to bpf_fib_lookup, 0: ingress */
	__u32 ext_ifindex; /* the NICs: clients arrive on ext, members on int */
	__u32 int_ifindex; /* (a host with one NIC: the same one twice) */
	__u8 ext_mac[6];
	__u8 int_mac[6];
};

/* Sources that cannot arrive from outside (martians): the bogon ranges,
 * the host's own, VIP and SNAT addresses and the internal subnets,
 * written by the control plane. Keys of the martians4/6 LPM tries. */
struct martian4 {
	__u32 prefixlen;
	__be32 addr;
};

struct martian6 {
	__u32 prefixlen;
	struct addr addr;
};

/* Per CPU counter. */
struct stat {
	__u64 packets;
	__u64 bytes;
};

/* Key of an unresolved next hop, for the control plane to resolve. */
struct neigh_key {
	struct addr addr;
	__u32 ifindex;
	__u32 family;
};

#endif
