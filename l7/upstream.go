package l7

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	memberid "github.com/edgeproxy/edgeproxy/internal/member"
)

// Upstream constants that are not per-site settings.
const (
	// passiveFailTime is how long a member that refused a connection is
	// skipped by load balancing (unless every member is).
	passiveFailTime = 10 * time.Second
	// pinnedIdleTimeout closes an idle pinned upstream connection, before
	// IIS closes it at 120 s.
	pinnedIdleTimeout = 100 * time.Second
	// maxPinsPerMember caps the pinned (NTLM/Negotiate) upstream
	// connections one member holds for the proxy; past it such clients
	// get 503 rather than exhausting the member's or the proxy's
	// descriptors.
	maxPinsPerMember = 4096
	// maxDialAttempts bounds how many members a request that could not
	// connect tries (pooled requests only; pinned ones never move).
	maxDialAttempts = 3
	// upstreamHeaderFloor is the least response header size accepted
	// from members (Negotiate challenges are large).
	upstreamHeaderFloor = 64 << 10
	// ioBufferSize is the copy and socket buffer size.
	ioBufferSize = 32 << 10
)

type (
	x509UnknownAuthority = x509.UnknownAuthorityError
	x509Hostname         = x509.HostnameError
	x509CertInvalid      = x509.CertificateInvalidError
)

// keepAlive is the TCP keepalive of both legs.
var keepAlive = net.KeepAliveConfig{Enable: true, Idle: 30 * time.Second, Interval: 10 * time.Second, Count: 4}

// memberKey names a member across reloads.
type memberKey = memberid.ID

// memberState is a pool member's health and load. It outlives
// configuration generations so that health and counters survive reloads.
type memberState struct {
	key  memberKey
	name string // as configured: a name or an address

	down       atomic.Bool  // set by the health monitor
	failedTill atomic.Int64 // unix nanos; passive failure detection
	active     atomic.Int64 // requests in flight plus pinned connections
	pins       atomic.Int64 // pinned connections
	disabled   atomic.Bool  // from the configuration
	// cut is set by CloseMember and cleared when the configuration
	// enables the member: no new upstream connection, so that a request
	// cut by it is not sent again to the member.
	cut atomic.Bool
}

func (m *memberState) healthy(now time.Time, passive bool) bool {
	if m.down.Load() || m.disabled.Load() {
		return false
	}
	return !passive || m.failedTill.Load() < now.UnixNano()
}

func (m *memberState) markFailed() {
	m.failedTill.Store(time.Now().Add(passiveFailTime).UnixNano())
}

// upstreamError is a failure on the way to or from a member. Its message
// names the member's address and a short cause, never more (no internal
// names, no certificate details): it goes to the log, and to trusted
// proxies in the Edgeproxy-Error header.
type upstreamError struct {
	op     string // dial | tls | read | write | response
	member string // addr:port
	cause  string
	err    error
}

func (e *upstreamError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.op, e.member, e.cause)
}

func (e *upstreamError) Unwrap() error { return e.err }

// timeout reports whether the error is a timeout (504 rather than 502).
func (e *upstreamError) timeout() bool { return isTimeout(e.err) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// shortCause describes err in a few words.
func shortCause(err error) string {
	var (
		uae  x509UnknownAuthority
		hn   x509Hostname
		cert x509CertInvalid
		ae   tls.AlertError
	)
	switch {
	case isTimeout(err):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to host"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.As(err, &uae):
		return "certificate not trusted"
	case errors.As(err, &hn):
		return "certificate name mismatch"
	case errors.As(err, &cert):
		return "certificate invalid"
	case errors.As(err, &ae):
		return "tls alert " + ae.Error()
	case strings.Contains(err.Error(), "tls:"):
		return "tls handshake failed"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	}
	return "connection failed"
}

// upConn is an upstream connection: TCP keepalive, a write deadline
// before every write (the write stall timeout), and a read deadline
// extended on progress while a response body is being read.
type upConn struct {
	net.Conn
	stall time.Duration
	// onClose runs once when the connection closes.
	onClose   func()
	untrack   func() // leaves the member's connections
	closeOnce sync.Once
}

func (c *upConn) Write(b []byte) (int, error) {
	if c.stall > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.stall))
	}
	return c.Conn.Write(b)
}

func (c *upConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		if c.untrack != nil {
			c.untrack()
		}
		if c.onClose != nil {
			c.onClose()
		}
	})
	return err
}

// extendRead pushes the read deadline one stall period ahead (or clears
// it with stop).
func (c *upConn) extendRead(stop bool) {
	if stop || c.stall <= 0 {
		c.Conn.SetReadDeadline(time.Time{})
		return
	}
	c.Conn.SetReadDeadline(time.Now().Add(c.stall))
}

// tlsUpConn is a TLS upstream connection. It is not a *tls.Conn so that
// httptrace's GotConn yields it and the body reader can reach the upConn
// underneath.
type tlsUpConn struct {
	*tls.Conn
	up *upConn
}

func (c *tlsUpConn) extendRead(stop bool) { c.up.extendRead(stop) }

// readExtender is what a response body reader needs from the connection.
type readExtender interface{ extendRead(stop bool) }

// dialer builds the dial functions of one member for one site.
type dialer struct {
	addr    string // member addr:port
	tls     *tls.Config
	limits  siteLimits
	dial    func(ctx context.Context, network, addr string) (net.Conn, error)
	onConn  func(net.Conn) // pinned connections register themselves
	onClose func(net.Conn)
	conns   *memberConns // where the connections are tracked, under id
	id      memberKey
	state   *memberState
}

// errMemberCut: the member's connections were closed by CloseMember.
var errMemberCut = errors.New("member's connections closed by a drain")

func (d *dialer) dialTCP(ctx context.Context) (*upConn, error) {
	if d.state != nil && d.state.cut.Load() {
		// Not a dial failure: the request may have been sent already.
		return nil, &upstreamError{op: "response", member: d.addr, cause: "member drained", err: errMemberCut}
	}
	var (
		c   net.Conn
		err error
	)
	if d.dial != nil {
		ctx, cancel := context.WithTimeout(ctx, d.limits.dial)
		c, err = d.dial(ctx, "tcp", d.addr)
		cancel()
		if tc, ok := c.(*net.TCPConn); ok && err == nil {
			tc.SetKeepAliveConfig(keepAlive)
		}
	} else {
		nd := net.Dialer{Timeout: d.limits.dial, KeepAliveConfig: keepAlive}
		c, err = nd.DialContext(ctx, "tcp", d.addr)
	}
	if err != nil {
		return nil, &upstreamError{op: "dial", member: d.addr, cause: shortCause(err), err: err}
	}
	u := &upConn{Conn: c, stall: d.limits.stall}
	if d.conns != nil {
		u.untrack = d.conns.add(d.id, u)
	}
	return u, nil
}

func (d *dialer) register(c net.Conn, u *upConn) {
	if d.onConn != nil {
		d.onConn(c)
	}
	if d.onClose != nil {
		u.onClose = func() { d.onClose(c) }
	}
}

// dialPlain connects to a member spoken to in plain HTTP.
func (d *dialer) dialPlain(ctx context.Context, _, _ string) (net.Conn, error) {
	u, err := d.dialTCP(ctx)
	if err != nil {
		return nil, err
	}
	d.register(u, u)
	return u, nil
}

// dialTLS connects to a member over TLS: the member's certificate is
// verified against the site's CA for the name in the URL, which is the
// client's Host (or the configured server_name), sent as SNI as well.
func (d *dialer) dialTLS(ctx context.Context, _, hostport string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.limits.dial)
	defer cancel()
	u, err := d.dialTCP(ctx)
	if err != nil {
		return nil, err
	}
	cfg := d.tls.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(hostport)
		if err != nil {
			host = hostport
		}
		cfg.ServerName = host
	}
	tc := tls.Client(u, cfg)
	if err := handshakeAside(ctx, tc); err != nil {
		u.Close()
		return nil, &upstreamError{op: "tls", member: d.addr, cause: shortCause(err), err: err}
	}
	c := &tlsUpConn{Conn: tc, up: u}
	d.register(c, u)
	return c, nil
}

// handshakeAside runs a client handshake in a goroutine of its own and
// waits for it. The handshake's deep calls (certificate verification,
// key exchange) grow a goroutine's stack to 16 KiB or more, and a stack
// keeps its size while it is in use: done here, they do not grow the
// stack of the request's goroutine, which may then wait a long time for
// the member's answer (a long poll).
func handshakeAside(ctx context.Context, tc *tls.Conn) error {
	done := make(chan error, 1)
	go func() { done <- tc.HandshakeContext(ctx) }()
	return <-done
}

// bodyReader wraps an upstream response body: the connection's read
// deadline moves one stall period ahead on every read, and is cleared at
// the end, so a member that stops sending in the middle of a body is cut
// off while one that takes its time before answering (a long poll) is
// bounded by the response timeout only.
type bodyReader struct {
	io.ReadCloser
	conn   readExtender
	done   atomic.Bool
	rec    *reqRecord
	active *memberState // its request in flight ends with the body; may be nil
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.conn != nil && !b.done.Load() {
		b.conn.extendRead(false)
	}
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.finish()
		if err != io.EOF && b.rec != nil && isTimeout(err) {
			b.rec.setCause(causeUpstreamStall)
		}
	}
	return n, err
}

func (b *bodyReader) Close() error {
	b.finish()
	return b.ReadCloser.Close()
}

func (b *bodyReader) finish() {
	if !b.done.CompareAndSwap(false, true) {
		return
	}
	// The transport clears the read deadline when the body ends: the
	// connection may already carry another request.
	if b.active != nil {
		b.active.active.Add(-1)
	}
}
