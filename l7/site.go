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

	members []*siteMember
	rr      atomic.Uint64
	proxy   *httputil.ReverseProxy
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
	rec := recordFrom(req.Context())
	cs := connStateFrom(req.Context())
	if cs == nil {
		if hasConnAuth(req.Header, "Authorization") {
			// Never share an upstream connection for these.
			return nil, errNoConnState
		}
	} else if hasConnAuth(req.Header, "Authorization") || cs.pinned(s.pinKey) {
		// Pinned from the first NTLM/Negotiate credentials, or once a
		// challenge was answered (modifyResponse); anonymous requests,
		// Windows-auth site or not, share the pool.
		return s.roundTripPinned(req, cs, rec)
	}

	return s.retry(req, rec, func(tried map[*siteMember]bool) (*try, error) {
		sm, hit := s.choose(req, tried)
		if sm == nil {
			return nil, &noMemberError{pool: s.poolName}
		}
		rec.setMember(sm.addr, false)
		if s.affinity && !hit {
			rec.setCookie(sm.cookie)
		}
		sm.m.active.Add(1)
		return &try{sm: sm, addr: sm.addr, rt: sm.rt,
			done:        func() { sm.m.active.Add(-1) },
			unreachable: sm.m.markFailed}, nil
	})
}

// roundTripPinned sends the request over the client connection's own
// upstream. A member that cannot be reached is replaced by another
// (nothing was sent); a request that went out is never sent again,
// whatever happens to it.
func (s *site) roundTripPinned(req *http.Request, cs *connState, rec *reqRecord) (*http.Response, error) {
	return s.retry(req, rec, func(tried map[*siteMember]bool) (*try, error) {
		p, err := cs.pin(s, req, tried)
		if err != nil {
			return nil, err
		}
		rec.setMember(p.addr, true)
		if s.affinity {
			if c, err := req.Cookie(affinityCookie); err != nil || c.Value != p.sm.cookie {
				rec.setCookie(p.sm.cookie)
			}
		}
		return &try{sm: p.sm, addr: p.addr, rt: p.rt, unreachable: func() {
			p.member.markFailed()
			cs.unpin(s.pinKey, p)
		}}, nil
	})
}

// try is one attempt at a member.
type try struct {
	sm          *siteMember
	addr        string // member address:port, for errors
	rt          http.RoundTripper
	done        func() // when the response body is finished or the attempt failed; may be nil
	unreachable func() // when the member could not be reached (dial or TLS)
}

// retry sends the request to the members next picks (never one already
// tried) until one answers. Only a member that could not be reached is
// replaced, at most maxDialAttempts times, and only while nothing of the
// client's body was read; any other failure is the answer.
func (s *site) retry(req *http.Request, rec *reqRecord,
	next func(tried map[*siteMember]bool) (*try, error)) (*http.Response, error) {
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
		res, err := t.rt.RoundTrip(req)
		if err == nil {
			s.wrapBody(res, rec, t.done)
			return res, nil
		}
		if t.done != nil {
			t.done()
		}
		ue := asUpstreamError(err)
		if ue == nil || (ue.op != "dial" && ue.op != "tls") || req.Context().Err() != nil {
			return nil, wrapUpstream(err, t.addr)
		}
		t.unreachable()
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

// wrapBody puts the stall-timed reader around a response body and runs
// done when the body is finished.
func (s *site) wrapBody(res *http.Response, rec *reqRecord, done func()) {
	rec.gotHeaders()
	if res.StatusCode == http.StatusSwitchingProtocols {
		// The body is the upgraded connection itself.
		if done != nil {
			done()
		}
		return
	}
	res.Body = &bodyReader{ReadCloser: res.Body, conn: rec.upConn(), rec: rec, onDone: done}
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
	out.URL.Scheme = s.scheme
	out.URL.Host = net.JoinHostPort(hostOnly(in.Host), strconv.Itoa(int(s.port)))
	out.URL.RawQuery = in.URL.RawQuery
	out.Host = in.Host

	client := remoteAddr(in)
	trusted := s.vh.trusted(client.Addr())
	xff := client.Addr().String()
	proto := "http"
	if s.vh.https {
		proto = "https"
	}
	host := in.Host
	if trusted {
		if prior := in.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			xff = strings.Join(prior, ", ") + ", " + xff
		}
		if v := in.Header.Get("X-Forwarded-Proto"); v != "" {
			proto = v
		}
		if v := in.Header.Get("X-Forwarded-Host"); v != "" {
			host = v
		}
		if v := in.Header.Values("Forwarded"); len(v) > 0 {
			out.Header["Forwarded"] = v
		}
	}
	dropForwarding(out.Header, trusted)
	out.Header.Set("X-Forwarded-For", xff)
	out.Header.Set("X-Forwarded-Proto", proto)
	out.Header.Set("X-Forwarded-Host", host)
}

// modifyResponse notes NTLM/Negotiate challenges (the connection is
// pinned from the next request on), and adds the affinity cookie and the
// proxy's HSTS policy. WWW-Authenticate headers are left as they are.
func (s *site) modifyResponse(res *http.Response) error {
	rec := recordFrom(res.Request.Context())
	if cs := connStateFrom(res.Request.Context()); cs != nil && !rec.isPinned() &&
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
	return nil
}

// errorHandler answers a request the upstream side failed: 502 (or 504 on
// a timeout), 503 when the pool has no healthy member; the client's own
// faults get their 4xx (clientFault). The Edgeproxy-Error header naming
// the member goes to trusted proxies only; the log always has it.
func (s *site) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	rec := recordFrom(r.Context())
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

// sync.Pool of copy buffers for the reverse proxies.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, ioBufferSize)
}

func (b *bufferPool) Put(v []byte) {
	if cap(v) == ioBufferSize {
		v = v[:ioBufferSize]
		b.p.Put(&v)
	}
}
