package l7

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
)

// connState is what the proxy knows about one client connection. It is
// created when the connection is accepted, reaches handlers through
// http.Server.ConnContext, and ends when the connection closes, taking
// its pinned upstream connections with it.
type connState struct {
	id      uint64
	p       *Proxy
	virtual string
	remote  netip.AddrPort
	tls     bool
	sni     string
	alpn    string
	// tlsVersion and cipher are what the handshake agreed.
	tlsVersion, cipher uint16
	guard              *h1guard
	// client is the accepted connection, closed when a pinned member is
	// drained.
	client net.Conn

	requests atomic.Int64 // HTTP/1 requests served, for the guard

	mu        sync.Mutex
	counted   bool // in the active connections gauge
	closed    bool
	pinWanted map[string]bool
	pins      map[string]*pin
}

type connKey struct{}

func withConnState(ctx context.Context, c net.Conn) context.Context {
	if cs := connStateOf(c); cs != nil {
		return context.WithValue(ctx, connKey{}, cs)
	}
	return ctx
}

func connStateOf(c net.Conn) *connState {
	switch c := c.(type) {
	case *guardConn:
		return c.cs
	case *h2Conn:
		return c.cs
	case *clientConn:
		return c.cs
	case *tls.Conn:
		if cc, ok := c.NetConn().(*clientConn); ok {
			return cc.cs
		}
	}
	return nil
}

func connStateFrom(ctx context.Context) *connState {
	cs, _ := ctx.Value(connKey{}).(*connState)
	return cs
}

// clientConn is the accepted TCP connection; closing it ends the
// connection's state exactly once, however the server lets go of it
// (close, hijack then close, TLS close).
type clientConn struct {
	net.Conn
	cs      *connState
	release func() // the listener's admission count
	once    sync.Once
}

func (c *clientConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.cs.close()
		if c.release != nil {
			c.release()
		}
	})
	return err
}

// count adds the connection to the active gauge once it is handed to the
// HTTP server.
func (cs *connState) count() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if !cs.closed && !cs.counted {
		cs.counted = true
		cs.p.metrics.active.WithLabelValues(cs.virtual).Inc()
		cs.p.metrics.connections.WithLabelValues(cs.virtual).Inc()
	}
}

// close releases everything bound to the client connection: its pinned
// upstream connections are closed, never pooled.
func (cs *connState) close() {
	cs.mu.Lock()
	cs.closed = true
	pins := cs.pins
	cs.pins = nil
	counted := cs.counted
	cs.counted = false
	cs.mu.Unlock()
	for _, p := range pins {
		p.close()
		cs.p.metrics.pinned.WithLabelValues(cs.virtual).Dec()
	}
	if counted {
		cs.p.metrics.active.WithLabelValues(cs.virtual).Dec()
	}
}

// wantPin records that requests of this connection to the site's
// upstream must from now on go over a pinned connection.
func (cs *connState) wantPin(key string) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.pinWanted == nil {
		cs.pinWanted = map[string]bool{}
	}
	cs.pinWanted[key] = true
}

func (cs *connState) pinned(key string) bool {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.pinWanted[key] || cs.pins[key] != nil
}

// pin returns the connection's pinned upstream for the site, choosing a
// member (not one of tried) and building it on first use.
func (cs *connState) pin(s *site, r *http.Request, tried map[*siteMember]bool) (*pin, error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		return nil, fmt.Errorf("pin upstream: %w", net.ErrClosed)
	}
	if p := cs.pins[s.pinKey]; p != nil {
		return p, nil
	}
	sm, err := s.choosePin(r, tried)
	if err != nil {
		return nil, err
	}
	m := sm.m
	p := &pin{sm: sm, member: m, conns: map[net.Conn]struct{}{}}
	d := s.dialer(m)
	d.onConn, d.onClose = p.add, p.remove
	p.addr = d.addr
	p.rt = newTransport(d, true)
	if cs.client != nil {
		p.untrack = cs.p.conns.add(m.key, &pinnedClient{cs.client})
	}
	if cs.pins == nil {
		cs.pins = map[string]*pin{}
	}
	cs.pins[s.pinKey] = p
	if cs.pinWanted == nil {
		cs.pinWanted = map[string]bool{}
	}
	cs.pinWanted[s.pinKey] = true
	m.active.Add(1)
	cs.p.metrics.pinned.WithLabelValues(cs.virtual).Inc()
	cs.p.metrics.pinnedTotal.WithLabelValues(cs.virtual).Inc()
	return p, nil
}

// unpin drops a pinned upstream that could not connect, so the next
// attempt picks another member. Nothing was sent: no request is replayed,
// and whatever authentication the client had on that member ended with
// the connection that carried it.
func (cs *connState) unpin(key string, p *pin) {
	cs.mu.Lock()
	found := cs.pins[key] == p
	if found {
		delete(cs.pins, key)
	}
	cs.mu.Unlock()
	if found {
		p.close()
		cs.p.metrics.pinned.WithLabelValues(cs.virtual).Dec()
	}
}

// pin is one client connection's own upstream: a transport to one member
// that keeps one idle connection, used by nobody else.
type pin struct {
	sm     *siteMember
	member *memberState
	addr   string
	rt     *memberTransport

	untrack func() // leaves the member's connections

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// pinnedClient closes the client connection of a pin: a client
// authenticated on a member's connection cannot move to another member.
type pinnedClient struct{ c net.Conn }

func (p *pinnedClient) Close() error { return p.c.Close() }

func (p *pin) add(c net.Conn) {
	p.mu.Lock()
	closed := p.closed
	if !closed {
		p.conns[c] = struct{}{}
	}
	p.mu.Unlock()
	if closed {
		c.Close()
	}
}

func (p *pin) remove(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *pin) close() {
	p.mu.Lock()
	p.closed = true
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	p.rt.CloseIdleConnections()
	if p.untrack != nil {
		p.untrack()
	}
	for _, c := range conns {
		c.Close()
	}
	p.member.active.Add(-1)
	p.member.pins.Add(-1)
}

// connAuthSchemes are the authentication schemes that authenticate the
// connection rather than the request.
var connAuthSchemes = []string{"ntlm", "negotiate", "nego2", "kerberos"}

// isConnAuth reports whether an Authorization or WWW-Authenticate value
// uses a connection-based scheme.
func isConnAuth(v string) bool {
	v = strings.TrimSpace(v)
	// The scheme ends at any whitespace or comma: "NTLM\t<token>" is
	// NTLM too, for a member that reads it so.
	scheme := v
	if i := strings.IndexAny(v, " \t,"); i >= 0 {
		scheme = v[:i]
	}
	for _, s := range connAuthSchemes {
		if strings.EqualFold(scheme, s) {
			return true
		}
	}
	return false
}

func hasConnAuth(h http.Header, name string) bool {
	for _, v := range h.Values(name) {
		// A WWW-Authenticate line may list several challenges.
		for part := range strings.SplitSeq(v, ",") {
			if isConnAuth(part) {
				return true
			}
		}
	}
	return false
}
