package l7

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"crypto/tls"
)

// affinityCookie is the cookie Lync Server 2010 load balancers keep
// clients on one front end with.
const affinityCookie = "MS-WSMAN"

// siteLimits are a site's effective limits as durations.
type siteLimits struct {
	headerTimeout time.Duration
	response      time.Duration
	idle          time.Duration
	stall         time.Duration
	dial          time.Duration
	poolIdle      time.Duration
	maxHeader     int
	maxBody       int64 // <0: unlimited
}

func limitsOf(l Limits) siteLimits {
	return siteLimits{
		headerTimeout: l.HeaderTimeout,
		response:      l.ResponseTimeout,
		idle:          l.IdleTimeout,
		stall:         l.StallTimeout,
		dial:          l.DialTimeout,
		poolIdle:      l.PoolIdleTimeout,
		maxHeader:     l.MaxHeaderBytes,
		maxBody:       l.MaxBodyBytes,
	}
}

// site is a built Site: the hosts it answers for and how it
// reaches its pool.
type site struct {
	vh          *vhost
	name        string // the first host, for logs and metrics
	hosts       []string
	poolName    string
	port        uint16
	redirect    bool
	scheme      string      // upstream: "https" or "http"
	tls         *tls.Config // upstream TLS; nil for http
	deny        []denyRule
	strictPaths bool // refuse targets not in canonical form
	windowsAuth bool
	affinity    bool
	leastConn   bool
	limits      siteLimits
	pinKey      string
	methods     []string // forwarded methods; nil: all but refusedMethods
	upgrade     []string // allowed Upgrade tokens, lower-case
	hideMember  bool     // remove the member's Server, X-Powered-By...

	upHosts map[string]string // upstream host:port by the site's own hosts
	members []*siteMember
	rr      atomic.Uint64
	proxy   *httputil.ReverseProxy
	buffers *bufferPool // the proxy's BufferPool
}

// siteMember is one member as a site reaches it: its pooled transport.
type siteMember struct {
	m      *memberState
	addr   string // addr:port
	rt     *memberTransport
	cookie string // MS-WSMAN value
}

func (s *site) dialer(m *memberState) *dialer {
	return &dialer{
		addr:   netip.AddrPortFrom(m.key.Addr, s.port).String(),
		tls:    s.tls,
		limits: s.limits,
		dial:   s.vh.p.opts.Dial,
		conns:  &s.vh.p.conns,
		id:     m.key,
		state:  m,
	}
}

// affinityValue is the opaque MS-WSMAN cookie value of a member.
func affinityValue(pool string, addr netip.Addr) string {
	h := sha256.Sum256([]byte("edgeproxy-affinity|" + pool + "|" + addr.String()))
	return hex.EncodeToString(h[:12])
}

// choose picks a member: the affinity cookie's member when it is healthy,
// else by round robin or least connections over the healthy members not
// yet tried, ignoring passive failures only when every member has one.
// hit reports that the affinity cookie chose the member.
func (s *site) choose(r *http.Request, tried map[*siteMember]bool) (sm *siteMember, hit bool) {
	now := time.Now()
	if s.affinity && r != nil {
		if c, err := r.Cookie(affinityCookie); err == nil {
			for _, sm := range s.members {
				if sm.cookie == c.Value && !tried[sm] && sm.m.healthy(now, true) {
					return sm, true
				}
			}
		}
	}
	n := len(s.members)
	if n == 0 {
		return nil, false
	}
	for _, passive := range [...]bool{true, false} {
		var best *siteMember
		start := int(s.rr.Add(1) % uint64(n))
		for i := range n {
			c := s.members[(start+i)%n]
			if tried[c] || !c.m.healthy(now, passive) {
				continue
			}
			if !s.leastConn {
				return c, false
			}
			if best == nil || c.m.active.Load() < best.m.active.Load() {
				best = c
			}
		}
		if best != nil {
			return best, false
		}
	}
	return nil, false
}

// choosePin picks a member for a new pinned connection and takes one of
// its pinned slots (given back by pin.close): a member holding
// maxPinsPerMember pinned connections takes no more.
func (s *site) choosePin(r *http.Request, tried map[*siteMember]bool) (*siteMember, error) {
	skip := maps.Clone(tried)
	if skip == nil {
		skip = map[*siteMember]bool{}
	}
	limit := s.vh.p.maxPins.Load()
	full := false
	for range len(s.members) {
		sm, _ := s.choose(r, skip)
		if sm == nil {
			break
		}
		if sm.m.pins.Add(1) <= limit {
			return sm, nil
		}
		sm.m.pins.Add(-1)
		full = true
		skip[sm] = true
	}
	return nil, &noMemberError{pool: s.poolName, pinsFull: full}
}

// RoundTrip sends the request to a member: over the client connection's
// pinned upstream once the connection authenticates with NTLM/Negotiate
// or was challenged to, else over the member's pooled transport, trying
// another member when one cannot be reached.
func (s *site) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	return s.roundTrip(req, recordFrom(ctx), connStateFrom(ctx), traceInformer(ctx))
}

// roundTrip is RoundTrip with the request's record, client connection
// (nil: none) and receiver of informational responses (nil: none) given.
func (s *site) roundTrip(req *http.Request, rec *reqRecord, cs *connState, info informer) (*http.Response, error) {
	if cs == nil {
		if hasConnAuth(req.Header, "Authorization") {
			// Never share an upstream connection for these.
			return nil, errNoConnState
		}
	} else if hasConnAuth(req.Header, "Authorization") || cs.pinned(s.pinKey) {
		// Pinned from the first NTLM/Negotiate credentials, or once a
		// challenge was answered (modifyResponse); anonymous requests,
		// Windows-auth site or not, share the pool.
		return s.roundTripPinned(req, cs, rec, info)
	}

	return s.retry(req, rec, info, func(tried map[*siteMember]bool) (try, error) {
		sm, hit := s.choose(req, tried)
		if sm == nil {
			return try{}, &noMemberError{pool: s.poolName}
		}
		rec.setMember(sm.addr, false)
		if s.affinity && !hit {
			rec.setCookie(sm.cookie)
		}
		sm.m.active.Add(1)
		return try{sm: sm, addr: sm.addr, rt: sm.rt, active: sm.m}, nil
	})
}

// roundTripPinned sends the request over the client connection's own
// upstream. A member that cannot be reached is replaced by another
// (nothing was sent); a request that went out is never sent again,
// whatever happens to it.
func (s *site) roundTripPinned(req *http.Request, cs *connState, rec *reqRecord, info informer) (*http.Response, error) {
	return s.retry(req, rec, info, func(tried map[*siteMember]bool) (try, error) {
		p, err := cs.pin(s, req, tried)
		if err != nil {
			return try{}, err
		}
		rec.setMember(p.addr, true)
		if s.affinity {
			if c, err := req.Cookie(affinityCookie); err != nil || c.Value != p.sm.cookie {
				rec.setCookie(p.sm.cookie)
			}
		}
		return try{sm: p.sm, addr: p.addr, rt: p.rt, pin: p, cs: cs}, nil
	})
}

// try is one attempt at a member.
type try struct {
	sm   *siteMember
	addr string // member address:port, for errors
	rt   *memberTransport
	// active is the member whose count of requests in flight the attempt
	// holds until its response body is finished or it failed; nil for a
	// pinned connection (counted as long as it lives).
	active *memberState
	pin    *pin // the pinned connection, on cs
	cs     *connState
}

// unreachable is called when the member could not be reached (dial or
// TLS): it is marked failed, and a pinned connection to it is dropped.
func (t *try) unreachable(s *site) {
	if t.pin == nil {
		t.sm.m.markFailed()
		return
	}
	t.pin.member.markFailed()
	t.cs.unpin(s.pinKey, t.pin)
}

// retry sends the request to the members next picks (never one already
// tried) until one answers. Only a member that could not be reached is
// replaced, at most maxDialAttempts times, and only while nothing of the
// client's body was read; any other failure is the answer.
func (s *site) retry(req *http.Request, rec *reqRecord, info informer,
	next func(tried map[*siteMember]bool) (try, error)) (*http.Response, error) {
	var (
		tried   map[*siteMember]bool
		lastErr error
	)
	for attempt := range maxDialAttempts {
		t, err := next(tried)
		if err != nil {
			if lastErr != nil {
				return nil, lastErr
			}
			return nil, err
		}
		rec.setAttempts(attempt + 1)
		rec.startTry()
		res, err := t.rt.roundTrip(req, rec, info)
		if err == nil {
			s.wrapBody(res, rec, t.active)
			return res, nil
		}
		if t.active != nil {
			t.active.active.Add(-1)
		}
		ue := asUpstreamError(err)
		if ue == nil || (ue.op != "dial" && ue.op != "tls") || req.Context().Err() != nil {
			return nil, wrapUpstream(err, t.addr)
		}
		t.unreachable(s)
		lastErr = err
		if rec.bodyRead() > 0 {
			break
		}
		if tried == nil {
			tried = map[*siteMember]bool{}
		}
		tried[t.sm] = true
	}
	return nil, lastErr
}

// wrapBody puts the stall-timed reader around a response body, and
// gives back active's request in flight (when not nil) once the body is
// finished.
func (s *site) wrapBody(res *http.Response, rec *reqRecord, active *memberState) {
	rec.gotHeaders()
	if res.StatusCode == http.StatusSwitchingProtocols {
		// The body is the upgraded connection itself.
		if active != nil {
			active.active.Add(-1)
		}
		return
	}
	conn := rec.upConn()
	if res.Body == http.NoBody {
		// The connection is already back in the idle list (HEAD, 204,
		// 304): a stall deadline set on it now would cut its next request.
		conn = nil
	}
	res.Body = &bodyReader{ReadCloser: res.Body, conn: conn, rec: rec, active: active}
}

func asUpstreamError(err error) *upstreamError {
	var ue *upstreamError
	if errors.As(err, &ue) {
		return ue
	}
	return nil
}

// wrapUpstream names the member in errors that do not already.
func wrapUpstream(err error, member string) error {
	if asUpstreamError(err) != nil {
		return err
	}
	var nm *noMemberError
	if errors.As(err, &nm) || errors.Is(err, net.ErrClosed) {
		return err
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return &upstreamError{op: "response", member: member, cause: shortCause(err), err: err}
}

// errNoConnState: a request arrived without the state of its client
// connection, so it cannot be pinned.
var errNoConnState = errors.New("client connection state missing")

// noMemberError: the pool has no member to send to.
type noMemberError struct {
	pool     string
	pinsFull bool // members are up but hold their limit of pinned connections
}

func (e *noMemberError) Error() string {
	if e.pinsFull {
		return "pool " + e.pool + ": every member holds its limit of pinned connections"
	}
	return "pool " + e.pool + ": no healthy member"
}
func (e *noMemberError) Unwrap() error { return ErrNoMember }

// rewrite builds the upstream request: the member's port and scheme, the
// client's Host kept (and used for SNI and certificate verification by
// the dialer), the query as the client sent it, and X-Forwarded-* set.
// Inbound forwarding headers are kept only from trusted proxies.
func (s *site) rewrite(pr *httputil.ProxyRequest) {
	in, out := pr.In, pr.Out
	out.URL.RawQuery = in.URL.RawQuery
	s.target(in, out)
	f := s.forwardingOf(in)
	f.apply(out.Header)
}

// target points out at the member: its scheme and port, the client's Host
// kept.
func (s *site) target(in, out *http.Request) {
	out.URL.Scheme = s.scheme
	out.URL.Host = s.upstreamHost(in.Host)
	out.Host = in.Host
}

// upstreamHost is the upstream URL's host:port for a client's Host: the
// site's own names are made once, at build.
func (s *site) upstreamHost(host string) string {
	if v, ok := s.upHosts[host]; ok {
		return v
	}
	return net.JoinHostPort(hostOnly(host), strconv.Itoa(int(s.port)))
}

// forwarding is what the upstream request says of the client.
type forwarding struct {
	trusted          bool
	xff, proto, host string
	fwd              []string // Forwarded, from trusted proxies
}

// forwardingOf reads the X-Forwarded-* of the client request in: the
// client's own values, with the inbound ones kept only from trusted
// proxies.
func (s *site) forwardingOf(in *http.Request) forwarding {
	client := remoteAddr(in)
	f := forwarding{trusted: s.vh.trusted(client.Addr()), xff: client.Addr().String(), proto: "http", host: in.Host}
	if s.vh.https {
		f.proto = "https"
	}
	if !f.trusted {
		return f
	}
	if prior := in.Header.Values("X-Forwarded-For"); len(prior) > 0 {
		f.xff = strings.Join(prior, ", ") + ", " + f.xff
	}
	if v := in.Header.Get("X-Forwarded-Proto"); v != "" {
		f.proto = v
	}
	if v := in.Header.Get("X-Forwarded-Host"); v != "" {
		f.host = v
	}
	f.fwd = in.Header.Values("Forwarded")
	return f
}

// apply writes f into the upstream request's headers.
func (f *forwarding) apply(out http.Header) {
	delete(out, "Forwarded")
	if len(f.fwd) > 0 {
		out["Forwarded"] = f.fwd
	}
	dropForwarding(out, f.trusted)
	v := &[3]string{f.xff, f.proto, f.host} // one allocation
	out["X-Forwarded-For"] = v[0:1:1]
	out["X-Forwarded-Proto"] = v[1:2:2]
	out["X-Forwarded-Host"] = v[2:3:3]
}

// modifyResponse notes NTLM/Negotiate challenges (the connection is
// pinned from the next request on), and adds the affinity cookie and the
// proxy's HSTS policy. WWW-Authenticate headers are left as they are.
func (s *site) modifyResponse(res *http.Response) error {
	ctx := res.Request.Context()
	s.adjustResponse(res, recordFrom(ctx), connStateFrom(ctx))
	return nil
}

// adjustResponse is modifyResponse with the request's record and client
// connection (nil: none) given.
func (s *site) adjustResponse(res *http.Response, rec *reqRecord, cs *connState) {
	if cs != nil && !rec.isPinned() &&
		hasConnAuth(res.Header, "Www-Authenticate") {
		cs.wantPin(s.pinKey)
	}
	if s.vh.hsts != "" {
		res.Header.Del("Strict-Transport-Security")
	}
	if s.hideMember {
		hideMember(res.Header)
	}
	if c := rec.cookie(); c != "" {
		ck := &http.Cookie{Name: affinityCookie, Value: c, Path: "/", HttpOnly: true, Secure: s.vh.https}
		res.Header.Add("Set-Cookie", ck.String())
	}
}

// errorHandler answers a request the upstream side failed: 502 (or 504 on
// a timeout), 503 when the pool has no healthy member; the client's own
// faults get their 4xx (clientFault). The Edgeproxy-Error header naming
// the member goes to trusted proxies only; the log always has it.
func (s *site) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	s.fail(w, r, recordFrom(r.Context()), err)
}

// fail is errorHandler with the request's record given.
func (s *site) fail(w http.ResponseWriter, r *http.Request, rec *reqRecord, err error) {
	if s.clientFault(w, r, rec, err) {
		return
	}
	var (
		nm   *noMemberError
		code int
		diag string
	)
	switch {
	case r.Context().Err() != nil:
		rec.setCause(causeClientClosed)
		rec.setStatus(499)
		return
	case errors.As(err, &nm):
		rec.setCause(causeNoMember)
		code, diag = http.StatusServiceUnavailable, nm.Error()
	default:
		ue := asUpstreamError(err)
		if ue == nil {
			ue = &upstreamError{op: "response", member: rec.getMember(), cause: shortCause(err), err: err}
		}
		code, diag = http.StatusBadGateway, ue.Error()
		rec.setCause(causeUpstreamError)
		if ue.timeout() {
			code = http.StatusGatewayTimeout
			rec.setCause(causeUpstreamTimeout)
		}
	}
	if diag != "" && s.vh.trusted(remoteAddr(r).Addr()) {
		w.Header().Set("Edgeproxy-Error", diag)
	}
	if r.ContentLength != 0 && r.Body != nil {
		// The client's body may be unread: do not wait for the rest.
		w.Header().Set("Connection", "close")
	}
	attrs := []slog.Attr{slog.String("virtual", s.vh.name), slog.String("site", s.name),
		slog.String("member", rec.getMember()), slog.Int("status", code), slog.String("error", err.Error())}
	if inner := errors.Unwrap(err); inner != nil {
		attrs = append(attrs, slog.String("detail", inner.Error()))
	}
	s.vh.p.log.LogAttrs(r.Context(), slog.LevelWarn, "upstream request failed", attrs...)
	plainError(w, code)
}

// clientFault answers a request whose body the client got wrong: 413
// over the body limit, 408 when it stalled, 400 when it is malformed (a
// bad chunk). Logged at info: no member is at fault.
func (s *site) clientFault(w http.ResponseWriter, r *http.Request, rec *reqRecord, err error) bool {
	var (
		mbe  *http.MaxBytesError
		code int
	)
	switch c := rec.getCause(); {
	case errors.As(err, &mbe):
		rec.setCause(causeBodyLimit)
		code = http.StatusRequestEntityTooLarge
	case c == causeClientStall:
		code = http.StatusRequestTimeout
	case c == causeClientBody && r.Context().Err() == nil:
		code = http.StatusBadRequest
	default:
		return false
	}
	w.Header().Set("Connection", "close")
	s.vh.p.log.LogAttrs(r.Context(), slog.LevelInfo, "request body refused",
		slog.String("virtual", s.vh.name), slog.String("site", s.name),
		slog.String("client", remoteAddr(r).String()), slog.Int("status", code), slog.String("error", err.Error()))
	plainError(w, code)
	return true
}

// plainError writes a short text error.
func plainError(w http.ResponseWriter, code int) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write([]byte(strconv.Itoa(code) + " " + http.StatusText(code) + "\n"))
}

// hostOnly strips the port, brackets and a trailing dot from a Host
// header value and lower-cases it.
func hostOnly(h string) string {
	// Only a value with a colon can carry a port: the common Host without
	// one skips the split and the error it would build.
	if strings.IndexByte(h, ':') >= 0 {
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

func remoteAddr(r *http.Request) netip.AddrPort {
	if cs := connStateFrom(r.Context()); cs != nil && cs.remote.IsValid() {
		return cs.remote
	}
	ap, _ := netip.ParseAddrPort(r.RemoteAddr)
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// hostTable maps host names to sites: exact names, then "*.parent".
type hostTable struct {
	exact map[string]*site
	wild  map[string]*site
}

func (t *hostTable) lookup(host string) *site {
	host = hostOnly(host)
	if s := t.exact[host]; s != nil {
		return s
	}
	if i := strings.IndexByte(host, '.'); i > 0 {
		return t.wild[host[i+1:]]
	}
	return nil
}

// closeIdle closes the idle pooled connections of every member.
func (s *site) closeIdle() {
	for _, sm := range s.members {
		sm.rt.CloseIdleConnections()
	}
}

// sync.Pool of copy buffers for the reverse proxies and the relay.
type bufferPool struct{ p sync.Pool }

// get returns a buffer of ioBufferSize bytes; put gives it back.
func (b *bufferPool) get() *[]byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return v
	}
	buf := make([]byte, ioBufferSize)
	return &buf
}

func (b *bufferPool) put(v *[]byte) { b.p.Put(v) }

// Get and Put are httputil.BufferPool's (which costs an allocation per
// Put).
func (b *bufferPool) Get() []byte { return *b.get() }

func (b *bufferPool) Put(v []byte) {
	if cap(v) == ioBufferSize {
		v = v[:ioBufferSize]
		b.put(&v)
	}
}
