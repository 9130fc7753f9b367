package l7

import (
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
)

// Connection admission: caps on open connections and handshakes in
// progress, per source and per virtual, checked as each connection is
// accepted. A connection past a cap is closed at once; the listener keeps
// accepting.

// Refusal reasons (metric label and log field).
const (
	refuseMaxConns      = "max_conns"
	refusePerSource     = "max_conns_per_source"
	refuseHandshakes    = "max_handshakes_per_source"
	refuseFDLimit       = "fd_limit"
	refuseLogInterval   = 10 * time.Second
	fdReserve           = 1024 // descriptors kept for health checks, the admin endpoint, logs
	fdPerClientConn     = 2    // the client's and an upstream one
	minDerivedMaxConns  = 64
	ipv6SourcePrefixLen = 64
)

// connLimits are a virtual's caps, as plain numbers.
type connLimits struct {
	maxConns      int // 0: none beyond the process's
	perSource     int
	handshakesSrc int
}

func connLimitsOf(c config.ConnLimits) connLimits {
	c = c.Effective()
	return connLimits{maxConns: c.MaxConns, perSource: c.MaxConnsPerSource, handshakesSrc: c.MaxHandshakesPerSource}
}

// fdConnBudget is how many client connections the process can hold: the
// open-file limit (the Go runtime raises the soft limit to the hard one
// at start) less a reserve, shared with the upstream side.
func fdConnBudget() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 1 << 20
	}
	return max((int(rl.Cur)-fdReserve)/fdPerClientConn, minDerivedMaxConns)
}

// sourceKey is the address a per-source cap counts by: an IPv4 address,
// or the /64 of an IPv6 one (one subscriber's network).
func sourceKey(a netip.Addr) netip.Addr {
	a = a.Unmap()
	if a.Is6() {
		if p, err := a.Prefix(ipv6SourcePrefixLen); err == nil {
			return p.Addr()
		}
	}
	return a
}

type sourceCount struct{ conns, handshakes int }

// admission counts one listener's connections.
type admission struct {
	mu      sync.Mutex
	conns   int
	sources map[netip.Addr]*sourceCount
}

// admit counts a new connection from src, in its handshake when tls, or
// returns the cap it is past.
func (a *admission) admit(src netip.Addr, lim connLimits, tls bool) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	sc := a.sources[src]
	switch {
	case lim.maxConns > 0 && a.conns >= lim.maxConns:
		return refuseMaxConns
	case sc != nil && sc.conns >= lim.perSource:
		return refusePerSource
	case tls && sc != nil && sc.handshakes >= lim.handshakesSrc:
		return refuseHandshakes
	}
	if sc == nil {
		if a.sources == nil {
			a.sources = map[netip.Addr]*sourceCount{}
		}
		sc = &sourceCount{}
		a.sources[src] = sc
	}
	a.conns++
	sc.conns++
	if tls {
		sc.handshakes++
	}
	return ""
}

// handshakeDone ends a connection's handshake.
func (a *admission) handshakeDone(src netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if sc := a.sources[src]; sc != nil && sc.handshakes > 0 {
		sc.handshakes--
	}
}

// release ends a connection.
func (a *admission) release(src netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.conns--
	if sc := a.sources[src]; sc != nil {
		sc.conns--
		if sc.conns <= 0 {
			delete(a.sources, src)
		}
	}
}

// rateLog logs an event at most once per interval, with the number of
// events since the last line.
type rateLog struct {
	mu       sync.Mutex
	interval time.Duration
	last     map[string]time.Time
	count    map[string]int
}

// note counts an event of kind and reports whether to log it now, with
// how many occurred since the last line (this one included).
func (r *rateLog) note(kind string, now time.Time) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last, r.count = map[string]time.Time{}, map[string]int{}
	}
	r.count[kind]++
	if t, ok := r.last[kind]; ok && now.Sub(t) < r.interval {
		return 0, false
	}
	n := r.count[kind]
	r.count[kind] = 0
	r.last[kind] = now
	return n, true
}

// refuse closes a connection past a cap, counts it and logs the refusals
// at most once per interval.
func (l *listener) refuse(c interface{ Close() error }, vh *vhost, src netip.AddrPort, reason string) {
	c.Close()
	l.p.metrics.refused.WithLabelValues(vh.name, reason).Inc()
	if n, ok := l.refusals.note(reason, time.Now()); ok {
		l.p.log.Warn("connections refused: limit reached", "virtual", vh.name, "limit", reason,
			"refused", n, "last_client", src.Addr().String(), "every", refuseLogInterval)
	}
}

// logAccept logs a failing accept at most once per interval.
func (l *listener) logAccept(err error, retry time.Duration) {
	if n, ok := l.refusals.note("accept", time.Now()); ok {
		l.p.log.Warn("accept failed", "listen", l.addr.String(), "error", err, "failures", n, "retry_in", retry)
	}
}
