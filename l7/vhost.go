package l7

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"golang.org/x/net/http/httpguts"
)

// vhost is a compiled https/http virtual: immutable, swapped atomically
// on its listener by a reload.
type vhost struct {
	p        *Proxy
	name     string
	mode     Mode
	https    bool
	listen   netip.AddrPort
	certs    *certStore
	tlsH2    *tls.Config // ALPN h2 + http/1.1
	tlsH1    *tls.Config // ALPN http/1.1 only
	sites    []*site
	hosts    hostTable
	trustedP []netip.Prefix
	hsts     string // Strict-Transport-Security value; "" off
	params   serverParams
	drain    time.Duration

	limits           connLimits
	handshakeTimeout time.Duration

	tickets      *ticketKeys // shared by the virtual's generations
	ticketPeriod time.Duration
	ticketMu     sync.Mutex
	ticketGen    atomic.Uint64 // generation of the keys installed in tlsH1/tlsH2

	obs reqObservers
}

// serverParams are the settings of the http.Server itself, fixed for the
// life of a server: a change replaces the server (connections drain).
type serverParams struct {
	headerTimeout time.Duration // least of the sites'
	maxHeader     int           // largest of the sites'
	idle          time.Duration // largest of the sites'
}

func (vh *vhost) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range vh.trustedP {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// configForClient is the listener's GetConfigForClient: ALPN offers
// http/1.1 only to clients without SNI and on sites with Windows
// authentication (IIS refuses it over HTTP/2), h2 and http/1.1 otherwise.
func (vh *vhost) configForClient(hello *tls.ClientHelloInfo) *tls.Config {
	vh.syncTickets()
	if hello.ServerName == "" {
		return vh.tlsH1
	}
	if s := vh.hosts.lookup(hello.ServerName); s != nil && s.windowsAuth {
		return vh.tlsH1
	}
	return vh.tlsH2
}

// exchange is one request as the checks, the forwarding and the access
// log share it.
type exchange struct {
	w   http.ResponseWriter // net/http's own, for MaxBytesReader
	rw  *respWriter
	r   *http.Request
	cs  *connState // nil when the request came without one
	rec *reqRecord
	s   *site // once checkHost found it
	// xff is the client's X-Forwarded-For, for the access log: relay
	// rewrites the client's headers.
	xff []string

	// What rw and rec point to, allocated with the exchange.
	rwv  respWriter
	recv reqRecord
}

// refuse answers the request with a short text error and returns c; with
// closeConn the client connection closes after the answer.
func (x *exchange) refuse(code int, c cause, closeConn bool) cause {
	if closeConn {
		x.rw.Header().Set("Connection", "close")
	}
	plainError(x.rw, code)
	return c
}

// requestChecks run in order on every request before it goes upstream;
// the first to return a cause has answered the request and ends it.
var requestChecks = []func(*vhost, *exchange) cause{
	(*vhost).checkFraming,     // smuggling
	checkH2ConnAuth,           // http2_windows_auth
	(*vhost).checkRequestLine, // method, asterisk
	(*vhost).checkHost,        // unknown_host, misdirected
	checkSiteMethod,           // method
	(*vhost).checkHeaderSize,  // header_limit
	(*vhost).setHSTS,          // never: answers from here on carry HSTS
	(*vhost).checkPath,        // bad_path, denied
	checkRedirect,             // redirect
	checkUpgrade,              // never: drops an Upgrade the site refuses
	checkBodySize,             // body_limit
}

// ServeHTTP runs every request of the virtual: the checks, then the
// site's reverse proxy, then the access log.
func (vh *vhost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	x := &exchange{w: w, r: r, cs: connStateFrom(r.Context()), xff: r.Header["X-Forwarded-For"]}
	x.rw, x.rec = &x.rwv, &x.recv
	x.rwv.init(w)
	defer func() {
		if v := recover(); v != nil {
			x.rec.setCause(causeAborted)
			vh.p.logRequest(vh, x, start)
			panic(v)
		}
		vh.p.logRequest(vh, x, start)
	}()
	// A deadline left by the previous response on this connection must
	// not cut this one while it waits for its member.
	x.rw.ctl.SetWriteDeadline(time.Time{})
	// ACME http-01 validations come to port 80 before any redirect or
	// site routing.
	if !vh.https && vh.p.acme.serveHTTPChallenge(x.rw, r) {
		return
	}
	for _, check := range requestChecks {
		if c := check(vh, x); c != causeNone {
			x.rec.setCause(c)
			return
		}
	}
	x.forward()
}

// forward sends the request to the site's members (relay; through the
// site's reverse proxy when it asks for an Upgrade), its body held to the
// site's limit and stall timeout.
func (x *exchange) forward() {
	s, rw, rec := x.s, x.rw, x.rec
	rw.stall, rw.hide = s.limits.stall, s.hideMember
	var body *reqBody
	if x.r.Body != nil && x.r.Body != http.NoBody {
		rc := x.r.Body
		if s.limits.maxBody >= 0 {
			rc = http.MaxBytesReader(x.w, rc, s.limits.maxBody)
		}
		body = &reqBody{ReadCloser: rc, ctl: rw.ctl, stall: s.limits.stall, rec: rec}
	}
	if x.r.Header.Get("Upgrade") == "" {
		x.relay(body)
	} else {
		r2 := x.r.WithContext(withRecord(x.r.Context(), rec))
		if body != nil {
			r2.Body = body
		}
		s.proxy.ServeHTTP(rw, r2)
	}
	if body != nil {
		body.abandon()
	}
}

// checkFraming refuses an HTTP/1 request the connection's framing guard
// found ambiguous (request smuggling), and closes the connection.
func (vh *vhost) checkFraming(x *exchange) cause {
	if x.r.ProtoMajor != 1 || x.cs == nil || x.cs.guard == nil {
		return causeNone
	}
	why := x.cs.guard.rejectAt(x.cs.requests.Add(1))
	if why == "" {
		return causeNone
	}
	vh.p.log.Warn("request refused: ambiguous framing", "reason", why,
		"virtual", vh.name, "client", remoteAddr(x.r).String())
	return x.refuse(http.StatusBadRequest, causeSmuggling, true)
}

// checkHost finds the request's site: 400 for a Host that is no valid
// field (HTTP/2's :authority; Request.Write would send the member an
// empty Host), 404 for an unknown Host, 421 for the Host of another
// site than the connection's SNI (HTTP/2 connection reuse, or a client
// that lies). Never 421 without SNI.
func (vh *vhost) checkHost(x *exchange) cause {
	if !httpguts.ValidHostHeader(x.r.Host) {
		return x.refuse(http.StatusBadRequest, causeUnknownHost, false)
	}
	x.s = vh.hosts.lookup(x.r.Host)
	if x.s == nil {
		return x.refuse(http.StatusNotFound, causeUnknownHost, false)
	}
	if x.cs != nil && x.cs.sni != "" && vh.hosts.lookup(x.cs.sni) != x.s {
		return x.refuse(http.StatusMisdirectedRequest, causeMisdirected, false)
	}
	return causeNone
}

// checkHeaderSize refuses a request head over the site's limit when the
// server's own limit (the largest of the virtual's sites) let it in.
func (vh *vhost) checkHeaderSize(x *exchange) cause {
	if limit := x.s.limits.maxHeader; vh.params.maxHeader > limit && headerSize(x.r) > limit {
		return x.refuse(http.StatusRequestHeaderFieldsTooLarge, causeHeaderLimit, true)
	}
	return causeNone
}

// setHSTS adds the virtual's Strict-Transport-Security header to every
// answer from here on.
func (vh *vhost) setHSTS(x *exchange) cause {
	if vh.hsts != "" {
		x.rw.Header().Set("Strict-Transport-Security", vh.hsts)
		x.rw.hsts = vh.hsts
	}
	return causeNone
}

// checkPath applies the site's path rules (checkTarget).
func (vh *vhost) checkPath(x *exchange) cause {
	if code, c := vh.checkTarget(x.s, x.r); code != 0 {
		return x.refuse(code, c, false)
	}
	return causeNone
}

// checkRedirect answers a redirecting site's requests with their https
// URL: 301 for GET and HEAD, 308 (the method kept) otherwise.
func checkRedirect(_ *vhost, x *exchange) cause {
	if !x.s.redirect {
		return causeNone
	}
	code := http.StatusMovedPermanently
	if x.r.Method != http.MethodGet && x.r.Method != http.MethodHead {
		code = http.StatusPermanentRedirect
	}
	target := "https://" + hostForURL(x.r.Host) + x.r.URL.RequestURI()
	http.Redirect(x.rw, x.r, target, code)
	return causeRedirect
}

// checkUpgrade removes an Upgrade the site does not allow (filterUpgrade).
func checkUpgrade(_ *vhost, x *exchange) cause {
	x.s.filterUpgrade(x.r, x.rw, x.cs)
	return causeNone
}

// checkBodySize refuses a request whose declared body is over the site's
// limit before reading any of it.
func checkBodySize(_ *vhost, x *exchange) cause {
	if limit := x.s.limits.maxBody; limit >= 0 && x.r.ContentLength > limit {
		return x.refuse(http.StatusRequestEntityTooLarge, causeBodyLimit, true)
	}
	return causeNone
}

// headerSize approximates the request head's size as net/http counts it.
func headerSize(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n + len(r.Host) + 8
}

// hasControl reports control characters in a decoded path (NUL and
// friends that Windows servers treat in surprising ways).
func hasControl(p string) bool {
	for _, c := range p {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0 && unicode.IsControl(c)) {
			return true
		}
	}
	return false
}

// hostForURL is the client's Host without its port, for redirects.
func hostForURL(h string) string {
	host := hostOnly(h)
	if strings.Contains(host, ":") {
		return "[" + host + "]"
	}
	return host
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// hstsValue formats the Strict-Transport-Security header.
func hstsValue(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return "max-age=" + strconv.FormatInt(int64(d/time.Second), 10)
}

// logRequest writes the access log line and the request metrics.
func (p *Proxy) logRequest(vh *vhost, x *exchange, start time.Time) {
	s, cs, r, rw, rec := x.s, x.cs, x.r, x.rw, x.rec
	dur := time.Since(start)
	status := rw.status
	rec.mu.Lock()
	if rec.status != 0 && !rw.wroteHeader {
		status = rec.status
	}
	member, pinned, why, attempts := rec.member, rec.pinned, rec.cause, rec.attempts
	connect, upStart, headersAt, reused := rec.connectTime, rec.upStart, rec.headersAt, rec.reused
	rec.mu.Unlock()
	if status == 0 {
		status = http.StatusOK
		if why == causeAborted {
			status = 499
		}
	}
	siteName := ""
	if s != nil {
		siteName = s.name
	}
	vh.obs.observe(p.metrics, vh.name, siteName, status, dur.Seconds())
	vh.obs.bytes(p.metrics, vh.name, rec.bodyRead(), rw.bytes)
	if member != "" && s != nil {
		mo := vh.obs.member(p.metrics, s.poolName, member)
		mo.request(p.metrics, s.poolName, member, status)
		if !upStart.IsZero() && !headersAt.IsZero() {
			mo.duration.Observe(headersAt.Sub(upStart).Seconds())
		}
	}

	if !p.access.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	writeAccessLine(r.Context(), p.access, time.Now(), func(f accessFields) {
		f.str("virtual", vh.name)
		f.addr("client", remoteAddr(r))
		if vip, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			if ap, ok := tcpAddrPort(vip); ok {
				f.addr("vip", ap)
			} else {
				f.str("vip", vip.String())
			}
		}
		if cs != nil && cs.tls {
			f.str("sni", cs.sni)
			f.str("alpn", cs.alpn)
			f.str("tls_version", tls.VersionName(cs.tlsVersion))
			f.str("tls_cipher", cipherName(cs.cipher))
		}
		f.str("proto", r.Proto)
		f.str("host", r.Host)
		f.str("method", r.Method)
		f.str("path", truncate(r.URL.Path, 1024))
		f.str("query", truncate(r.URL.RawQuery, 1024))
		f.str("user_agent", truncate(r.UserAgent(), 512))
		f.str("xff", truncate(strings.Join(x.xff, ", "), 512))
		f.int("status", int64(status))
		f.int("bytes_in", rec.bodyRead())
		f.int("bytes_out", rw.bytes)
		f.float("duration_ms", ms(dur))
		if siteName != "" {
			f.str("site", siteName)
		}
		if member != "" {
			f.str("upstream", member)
			f.bool("pinned", pinned)
			if attempts > 1 {
				f.int("attempts", int64(attempts))
			}
			if !upStart.IsZero() {
				if !reused {
					f.float("upstream_connect_ms", ms(connect))
				}
				if !headersAt.IsZero() {
					f.float("upstream_header_ms", ms(headersAt.Sub(upStart)))
				}
			}
		}
		if why != causeNone {
			f.str("termination", string(why))
		}
		if cs != nil {
			f.uint("conn", cs.id)
		}
	})
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
