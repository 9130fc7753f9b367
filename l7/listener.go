package l7

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// listener is one listening socket of an https/http virtual. It survives
// reloads: the virtual (sites, certificates) and, when its settings
// change, the HTTP server are swapped under it.
type listener struct {
	p    *Proxy
	addr netip.AddrPort
	mode Mode
	ln   net.Listener
	tls  *tls.Config // GetConfigForClient: the current virtual's
	// setKeepAlive: set keep-alive on each accepted connection, which a
	// socket from Options.ListenConfig may not inherit.
	setKeepAlive bool

	vh  atomic.Pointer[vhost]
	srv atomic.Pointer[server]

	adm      admission
	refusals rateLog
	done     chan struct{}
	wg       sync.WaitGroup // the accept loop and handshakes
	mu       sync.Mutex
	old      []*server // replaced servers still draining

	// cut ends the handshakes in progress: close calls cutHandshakes once
	// its context (the drain timeout) ends.
	cut           context.Context
	cutHandshakes context.CancelFunc
}

// server is an http.Server fed by a listener.
type server struct {
	hs     *http.Server
	cl     *chanListener
	params serverParams
}

func (p *Proxy) newListener(vh *vhost) (*listener, error) {
	listen := p.opts.ListenConfig
	if listen == nil && p.opts.FreeBind {
		listen = freeBindListen
	} else if listen == nil {
		listen = defaultListen
	}
	ln, err := listen("tcp", vh.listen.String())
	if err != nil {
		return nil, err
	}
	l := &listener{p: p, addr: vh.listen, mode: vh.mode, ln: ln, done: make(chan struct{}),
		setKeepAlive: p.opts.ListenConfig != nil}
	l.cut, l.cutHandshakes = context.WithCancel(context.Background())
	l.refusals.interval = refuseLogInterval
	l.tls = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			return l.vh.Load().configForClient(hello), nil
		},
	}
	l.vh.Store(vh)
	l.srv.Store(l.newServer(vh.params))
	return l, nil
}

// defaultListen opens a listening socket that carries the client leg's
// keep-alive settings: Linux copies them to every accepted socket, so an
// accept makes no setsockopt calls for them (Go's
// ListenConfig.KeepAliveConfig makes four per connection).
func defaultListen(network, addr string) (net.Listener, error) {
	return listenWith(network, addr, false)
}

// freeBindListen is defaultListen with IP_FREEBIND: the socket binds to
// an address the host does not hold (yet), so a standby node listens on
// the VIPs before keepalived moves them to it.
func freeBindListen(network, addr string) (net.Listener, error) {
	return listenWith(network, addr, true)
}

func listenWith(network, addr string, freeBind bool) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1, Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = listenSockopts(int(fd), freeBind) }); err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), network, addr)
}

// listenSockopts sets the listening socket's options: keep-alive as
// keepAlive says, which accepted sockets inherit, and IP_FREEBIND (it
// applies to IPv6 sockets too: IPV6_FREEBIND is the same flag on newer
// kernels).
func listenSockopts(fd int, freeBind bool) error {
	opts := []struct {
		name       string
		level, opt int
		value      int
	}{
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepAlive.Idle / time.Second)},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepAlive.Interval / time.Second)},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepAlive.Count},
	}
	if freeBind {
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_FREEBIND, 1); err != nil {
			return fmt.Errorf("set IP_FREEBIND: %w", err)
		}
	}
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.value); err != nil {
			return fmt.Errorf("set %s: %w", o.name, err)
		}
	}
	return nil
}

func (l *listener) newServer(sp serverParams) *server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	if l.mode == ModeHTTPS {
		// HTTP/2 connections arrive as h2Conn, the plaintext of a TLS
		// connection the listener terminated: the server's unencrypted
		// mode serves them (see h2Conn for why).
		protos.SetUnencryptedHTTP2(true)
	}
	s := &server{cl: newChanListener(l.ln.Addr()), params: sp}
	s.hs = &http.Server{
		Handler:           l,
		ReadHeaderTimeout: sp.headerTimeout,
		IdleTimeout:       sp.idle,
		MaxHeaderBytes:    sp.maxHeader,
		ConnContext:       withConnState,
		ErrorLog:          slog.NewLogLogger(l.p.log.Handler(), slog.LevelDebug),
		Protocols:         &protos,
		// OPTIONS * reaches the handler too: every request head the
		// framing guard counts is one request the handler sees.
		DisableGeneralOptionsHandler: true,
	}
	return s
}

// start runs the accept loop and the current server.
func (l *listener) start() {
	s := l.srv.Load()
	go s.hs.Serve(s.cl)
	l.wg.Add(1)
	go l.acceptLoop()
}

// ServeHTTP hands the request to the current virtual.
func (l *listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.vh.Load().ServeHTTP(w, r)
}

// update installs a new compiled virtual; when the server settings
// changed, a new server takes the new connections and the old one
// drains.
func (l *listener) update(vh *vhost) {
	l.vh.Store(vh)
	cur := l.srv.Load()
	if cur.params == vh.params {
		return
	}
	ns := l.newServer(vh.params)
	go ns.hs.Serve(ns.cl)
	l.srv.Store(ns)
	l.mu.Lock()
	l.old = append(l.old, cur)
	l.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), vh.drain)
		defer cancel()
		if err := cur.hs.Shutdown(ctx); err != nil {
			cur.hs.Close()
		}
		l.mu.Lock()
		for i, o := range l.old {
			if o == cur {
				l.old = append(l.old[:i], l.old[i+1:]...)
				break
			}
		}
		l.mu.Unlock()
	}()
}

// acceptLoop accepts for as long as the listener is open: a connection
// past a cap is closed at once, never waited for.
func (l *listener) acceptLoop() {
	defer l.wg.Done()
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and friends: the descriptor reserve should keep
			// them away; wait a little and try again.
			backoff = min(max(2*backoff, 5*time.Millisecond), 100*time.Millisecond)
			l.logAccept(err, backoff)
			select {
			case <-time.After(backoff):
			case <-l.done:
				return
			}
			continue
		}
		backoff = 0
		vh := l.vh.Load()
		remote := remoteOf(c)
		src := sourceKey(remote.Addr())
		if l.p.open.Add(1) > l.p.maxOpen {
			l.p.open.Add(-1)
			l.refuse(c, vh, remote, refuseFDLimit)
			continue
		}
		if reason := l.adm.admit(src, vh.limits, l.mode == ModeHTTPS); reason != "" {
			l.p.open.Add(-1)
			l.refuse(c, vh, remote, reason)
			continue
		}
		on, local := l.p.opts.OnConn, netip.AddrPort{}
		if on != nil {
			local = localOf(c)
			on(true, remote, local)
		}
		release := func() {
			l.adm.release(src)
			l.p.open.Add(-1)
			if on != nil {
				on(false, remote, local)
			}
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.setup(c, vh, remote, release)
		}()
	}
}

func remoteOf(c net.Conn) netip.AddrPort { return addrPortOf(c.RemoteAddr()) }

func localOf(c net.Conn) netip.AddrPort { return addrPortOf(c.LocalAddr()) }

// addrPortOf is a TCP address as a netip.AddrPort (IPv4-mapped ones
// unmapped); the zero value for what is not one.
func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	if ta, ok := a.(*net.TCPAddr); ok {
		ap = ta.AddrPort() // without formatting and parsing it
	} else if a != nil {
		ap, _ = netip.ParseAddrPort(a.String())
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// setup completes a new connection (TLS handshake within its own
// deadline) and hands it to the current server. HTTP/1 connections are
// handed over as a plaintext guardConn, so that request framing can be
// checked; HTTP/2 ones as an h2Conn.
// release runs once when the connection closes.
func (l *listener) setup(c net.Conn, vh *vhost, remote netip.AddrPort, release func()) {
	if tc, ok := c.(*net.TCPConn); ok && l.setKeepAlive {
		tc.SetKeepAliveConfig(keepAlive)
	}
	cs := &connState{id: l.p.connID.Add(1), p: l.p, virtual: vh.name, remote: remote}
	cc := &clientConn{Conn: c, cs: cs, release: release}
	cs.client = cc
	var out net.Conn
	if l.mode == ModeHTTPS {
		tc, ok := l.handshake(cc, vh)
		if !ok {
			return
		}
		st := tc.ConnectionState()
		cs.tls, cs.sni, cs.alpn = true, st.ServerName, st.NegotiatedProtocol
		cs.tlsVersion, cs.cipher = st.Version, st.CipherSuite
		if cs.alpn == "h2" {
			out = newH2Conn(tc, cs, vh.params.maxHeader)
		} else {
			cs.guard = newH1Guard(vh.params.maxHeader)
			out = &guardConn{Conn: tc, g: cs.guard, cs: cs}
		}
	} else {
		cs.guard = newH1Guard(vh.params.maxHeader)
		out = &guardConn{Conn: cc, g: cs.guard, cs: cs}
	}
	// Counted before the server has it: its first answer may reach the
	// client before this goroutine runs again. A connection not delivered
	// is closed, which counts it out.
	cs.count()
	for {
		s := l.srv.Load()
		if s.cl.deliver(out) {
			return
		}
		select {
		case <-l.done:
			out.Close()
			return
		default:
		}
		if l.srv.Load() == s {
			// The server is closing and no other took its place.
			out.Close()
			return
		}
	}
}

// handshake runs the TLS handshake within the virtual's handshake
// timeout (never longer than its header timeout); on failure the
// connection is closed. The socket's deadline bounds it and a drain that
// ends cuts it (l.cut): no context with its own timer per handshake.
func (l *listener) handshake(cc *clientConn, vh *vhost) (*tls.Conn, bool) {
	src := sourceKey(cc.cs.remote.Addr())
	defer l.adm.handshakeDone(src)
	cc.SetDeadline(time.Now().Add(min(vh.handshakeTimeout, vh.params.headerTimeout)))
	tc := tls.Server(cc, l.tls)
	stop := context.AfterFunc(l.cut, func() { cc.Close() })
	err := tc.Handshake()
	if !stop() && err != nil {
		err = fmt.Errorf("tls handshake: cut by the drain: %w", context.Cause(l.cut))
	}
	if err != nil {
		reason := handshakeReason(err)
		l.p.metrics.tlsErrors.WithLabelValues(reason).Inc()
		l.p.log.Debug("tls handshake failed", "virtual", vh.name, "client", cc.cs.remote.String(),
			"reason", reason, "error", err)
		var rhe tls.RecordHeaderError
		if errors.As(err, &rhe) && rhe.Conn != nil && looksLikeHTTP(rhe.RecordHeader[:]) {
			io.WriteString(cc.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		}
		cc.Close()
		return nil, false
	}
	cc.SetDeadline(time.Time{})
	return tc, true
}

func looksLikeHTTP(h []byte) bool {
	switch string(h) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// handshakeReason classifies a failed handshake for the metric's label.
func handshakeReason(err error) string {
	var (
		rhe tls.RecordHeaderError
		ae  tls.AlertError
	)
	msg := err.Error()
	switch {
	case isTimeout(err):
		return "timeout"
	case errors.As(err, &rhe):
		return "not_tls"
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return "client_closed"
	case strings.Contains(msg, "unsupported versions"), strings.Contains(msg, "protocol version"):
		return "protocol_version"
	case strings.Contains(msg, "no cipher suite"), strings.Contains(msg, "no ECDHE curve"), strings.Contains(msg, "no mutually supported"):
		return "no_shared_cipher"
	case strings.Contains(msg, "application protocol"):
		return "alpn"
	case errors.As(err, &ae):
		return "client_alert"
	}
	return "other"
}

// close stops accepting, then drains the servers until ctx ends and
// closes what is left.
func (l *listener) close(ctx context.Context) error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	l.ln.Close()
	l.mu.Lock()
	servers := append([]*server{l.srv.Load()}, l.old...)
	l.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(servers))
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.hs.Shutdown(ctx); err != nil {
				s.hs.Close()
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	// A client still in its TLS handshake (one the routers moved to
	// another node, say) is cut when ctx ends, not at its handshake
	// timeout.
	stop := context.AfterFunc(ctx, l.cutHandshakes)
	defer stop()
	l.wg.Wait()
	l.cutHandshakes()
	return errors.Join(errs...)
}

// chanListener is the net.Listener an http.Server serves: connections are
// accepted and set up by the listener's loop and delivered here.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (c *chanListener) deliver(conn net.Conn) bool {
	select {
	case c.ch <- conn:
		return true
	case <-c.done:
		return false
	}
}

func (c *chanListener) Accept() (net.Conn, error) {
	select {
	case conn := <-c.ch:
		return conn, nil
	case <-c.done:
		return nil, net.ErrClosed
	}
}

func (c *chanListener) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

func (c *chanListener) Addr() net.Addr { return c.addr }
