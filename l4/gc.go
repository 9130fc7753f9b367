package l4

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// Flow states, as listed by Flows and counted in edgeproxy_flows.
const (
	StateHandshake   = "handshake"   // SYN seen, handshake not complete
	StateEstablished = "established" // both sides talked
	StateFinWait     = "fin_wait"    // one side sent FIN
	StateClosing     = "closing"     // both sides sent FIN
	StateReset       = "reset"       // a side sent RST
	StateUDP         = "udp"         // UDP: no states
)

const (
	dirClient = uint8(bpf.FastL4FlowDirDIR_CLIENT)
	dirServer = uint8(bpf.FastL4FlowDirDIR_SERVER)

	seenSYN    = uint8(bpf.FastL4FlowSeenSEEN_SYN)
	seenSYNACK = uint8(bpf.FastL4FlowSeenSEEN_SYNACK)
	seenACK    = uint8(bpf.FastL4FlowSeenSEEN_ACK)
	seenAny    = uint8(bpf.FastL4FlowSeenSEEN_ANY)
	// seenRepair is not a packet's: the program's mark on a half whose
	// other half may be missing (bpf/common.h), local to this node.
	seenRepair = uint8(bpf.FastL4FlowSeenSEEN_REPAIR)

	closeFinClient = uint32(bpf.FastL4FlowCloseCLOSE_FIN_CLIENT)
	closeFinServer = uint32(bpf.FastL4FlowCloseCLOSE_FIN_SERVER)
	closeRST       = uint32(bpf.FastL4FlowCloseCLOSE_RST)

	svcLooseClose     = uint32(bpf.FastL4SvcFlagsSVC_LOOSE_CLOSE)
	svcResetOnTimeout = uint32(bpf.FastL4SvcFlagsSVC_RESET_ON_TIMEOUT)
)

// half is one entry of the flow table.
type half struct {
	key bpf.FastL4FlowKey
	val bpf.FastL4FlowVal
}

// pair is a connection: its client half c and server half s (either may
// be missing).
type pair struct {
	c, s *half
}

// monoNow is the clock of bpf_ktime_get_coarse_ns.
func monoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC_COARSE, &ts)
	return uint64(ts.Nano())
}

// state tells a pair's state and the timeout that applies to it.
func (p *pair) state(k knobs) (string, time.Duration) {
	var seenC, seenS uint8
	var closing uint32
	proto := uint8(0)
	if p.c != nil {
		seenC, closing, proto = p.c.val.Seen, p.c.val.Closing, p.c.key.Proto
	}
	if p.s != nil {
		seenS, closing, proto = p.s.val.Seen, closing|p.s.val.Closing, p.s.key.Proto
	}
	switch {
	case proto == unix.IPPROTO_UDP:
		return StateUDP, k.idle
	case closing&closeRST != 0:
		return StateReset, k.closing
	case closing&closeFinClient != 0 && closing&closeFinServer != 0:
		return StateClosing, k.closing
	case closing != 0:
		if k.flags&svcLooseClose != 0 {
			return StateFinWait, k.closing
		}
		return StateFinWait, k.idle
	case seenC&seenACK != 0 && seenS&(seenSYNACK|seenACK|seenAny) != 0:
		return StateEstablished, k.idle
	default:
		return StateHandshake, k.handshake
	}
}

func (p *pair) last() uint64 {
	var l uint64
	if p.c != nil {
		l = p.c.val.LastNs
	}
	if p.s != nil && p.s.val.LastNs > l {
		l = p.s.val.LastNs
	}
	return l
}

func (p *pair) any() *half {
	if p.c != nil {
		return p.c
	}
	return p.s
}

// clientKey and serverKey of the pair, from whichever half is there.
func (p *pair) keys() (c, s bpf.FastL4FlowKey) {
	if p.c != nil {
		return p.c.key, p.c.val.Peer
	}
	return p.s.val.Peer, p.s.key
}

// defaultKnobs are F5's FastL4 defaults, for flows of a virtual id that
// is not known (removed before a restart).
var defaultKnobs = knobs{
	idle:      DefaultIdleTimeout,
	handshake: DefaultHandshakeTimeout,
	closing:   DefaultCloseTimeout,
	flags:     svcResetOnTimeout,
}

// reapedFlow is a pair the reaper removed.
type reapedFlow struct {
	p     *pair
	state string
	k     knobs
	half  bool // a half-open pair
}

// resetFlow sends a RST to each side of a connection that timed out,
// built from the sequence and acknowledgement numbers last seen.
func (f *FastPath) resetFlow(r reapedFlow) {
	p := r.p
	if p.any().key.Proto != unix.IPPROTO_TCP {
		return
	}
	switch r.state {
	case StateEstablished, StateFinWait, StateHandshake:
	default:
		return // closed by the endpoints themselves
	}
	ck, sk := p.keys()
	if p.c != nil && (p.c.val.Ack != 0 || p.c.val.Seen&seenSYN != 0) {
		// To the client, from the VIP: seq is what the client expects
		// next (the ack it last sent).
		err := f.resets.send(
			addrPort(ck.Daddr, ck.Dport, ck.Family), addrPort(ck.Saddr, ck.Sport, ck.Family),
			p.c.val.Ack, p.c.val.SeqNext)
		f.stats.reset(r.k.name, err)
		if err != nil {
			f.limiter.log(f.log, "reset", slog.LevelWarn, "send reset to client", "err", err)
		}
	}
	if p.s != nil && p.s.val.Ack != 0 && r.state != StateHandshake {
		// To the member, from the SNAT address.
		err := f.resets.send(
			addrPort(sk.Daddr, sk.Dport, sk.Family), addrPort(sk.Saddr, sk.Sport, sk.Family),
			p.s.val.Ack, p.s.val.SeqNext)
		f.stats.reset(r.k.name, err)
		if err != nil {
			f.limiter.log(f.log, "reset", slog.LevelWarn, "send reset to member", "err", err)
		}
	}
}

func addrPort(a bpf.FastL4Addr, port uint16, fam uint8) netip.AddrPort {
	return netip.AddrPortFrom(addrFromBPF(a, fam), ntohs(port))
}

// warnDrops logs, at most once per LogInterval, new flows refused because
// the flow table is full or SNAT ports ran out.
func (f *FastPath) warnDrops() {
	if !f.acquire() {
		return
	}
	defer f.life.RUnlock()
	c, err := f.readCounters()
	if err != nil {
		return
	}
	for _, w := range []struct {
		reason bpf.FastL4Reason
		key    string
		msg    string
	}{
		{bpf.FastL4ReasonREASON_DROP_TABLE_FULL, "table_full", "flow table full: new flows refused (raise fastpath.max_flows or shorten idle timeouts)"},
		{bpf.FastL4ReasonREASON_DROP_SNAT_EXHAUSTED, "snat_exhausted", "SNAT ports exhausted: new flows refused (widen fastpath.snat_ports or add SNAT addresses)"},
		{bpf.FastL4ReasonREASON_DROP_NO_MEMBER, "no_member", "no pool member up: new flows refused"},
	} {
		var total uint64
		for vid := range maxVirtuals {
			total += c[vid*reasonMax+int(w.reason)].Packets
		}
		if n := f.limiter.delta(w.key, total); n > 0 {
			f.limiter.log(f.log, w.key, slog.LevelWarn, w.msg, "packets", n)
		}
	}
	f.flood.update(f, c)
}

// logLimiter logs each kind of record at most once per interval.
type logLimiter struct {
	interval time.Duration
	mu       sync.Mutex
	last     map[string]time.Time
	seen     map[string]uint64 // counter value last reported
	pending  map[string]uint64
}

func newLogLimiter(d time.Duration) *logLimiter {
	return &logLimiter{interval: d, last: map[string]time.Time{}, seen: map[string]uint64{}, pending: map[string]uint64{}}
}

// delta returns how much a counter grew since it was last reported, once
// per interval (0 in between, accumulating).
func (l *logLimiter) delta(key string, total uint64) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, ok := l.seen[key]
	l.seen[key] = total
	if !ok {
		prev = total // the first read is the baseline
	}
	if total > prev {
		l.pending[key] += total - prev
	}
	if l.pending[key] == 0 || time.Since(l.last[key]) < l.interval {
		return 0
	}
	n := l.pending[key]
	l.pending[key] = 0
	return n
}

func (l *logLimiter) log(log *slog.Logger, key string, level slog.Level, msg string, args ...any) {
	l.mu.Lock()
	if t, ok := l.last[key]; ok && time.Since(t) < l.interval {
		l.mu.Unlock()
		return
	}
	l.last[key] = time.Now()
	l.mu.Unlock()
	log.Log(context.Background(), level, msg, args...)
}
