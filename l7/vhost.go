package l7

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
)

// vhost is a compiled https/http virtual: immutable, swapped atomically
// on its listener by a reload.
type vhost struct {
	p        *Proxy
	name     string
	mode     string
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
	ticketGen    uint64 // generation of the keys installed in tlsH1/tlsH2
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

// ServeHTTP runs every request of the virtual.
func (vh *vhost) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	cs := connStateFrom(r.Context())
	rec := &reqRecord{}
	rw := newRespWriter(w)
	var s *site
	defer func() {
		if v := recover(); v != nil {
			rec.setCause("aborted")
			vh.p.logRequest(vh, s, cs, r, rw, rec, start)
			panic(v)
		}
		vh.p.logRequest(vh, s, cs, r, rw, rec, start)
	}()
	// A deadline left by the previous response on this connection must
	// not cut this one while it waits for its member.
	rw.ctl.SetWriteDeadline(time.Time{})

	if r.ProtoMajor == 1 && cs != nil && cs.guard != nil {
		if why := cs.guard.rejectAt(cs.requests.Add(1)); why != "" {
			rec.setCause("smuggling")
			vh.p.log.Warn("request refused: ambiguous framing", "reason", why,
				"virtual", vh.name, "client", remoteAddr(r).String())
			rw.Header().Set("Connection", "close")
			plainError(rw, http.StatusBadRequest)
			return
		}
	}
	refuseH2ConnAuth(r, rec)
	if vh.refuseRequestLine(rw, r, rec) {
		return
	}
	s = vh.hosts.lookup(r.Host)
	if s == nil {
		rec.setCause("unknown_host")
		plainError(rw, http.StatusNotFound)
		return
	}
	if cs != nil && cs.sni != "" && vh.hosts.lookup(cs.sni) != s {
		// The connection was set up for another site (HTTP/2
		// connection reuse, or a client that lies): ask for a new one.
		// Never when the client sent no SNI.
		rec.setCause("misdirected")
		plainError(rw, http.StatusMisdirectedRequest)
		return
	}
	if s.refuseMethod(rw, r, rec) {
		return
	}
	if vh.params.maxHeader > s.limits.maxHeader && headerSize(r) > s.limits.maxHeader {
		rec.setCause("header_limit")
		rw.Header().Set("Connection", "close")
		plainError(rw, http.StatusRequestHeaderFieldsTooLarge)
		return
	}
	if vh.hsts != "" {
		rw.Header().Set("Strict-Transport-Security", vh.hsts)
	}
	if code, cause := vh.checkTarget(s, r); code != 0 {
		rec.setCause(cause)
		plainError(rw, code)
		return
	}
	if s.redirect {
		rec.setCause("redirect")
		code := http.StatusMovedPermanently
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			code = http.StatusPermanentRedirect
		}
		target := "https://" + hostForURL(r.Host) + r.URL.RequestURI()
		http.Redirect(rw, r, target, code)
		return
	}
	s.filterUpgrade(r, rw, cs)
	if s.limits.maxBody >= 0 && r.ContentLength > s.limits.maxBody {
		rec.setCause("body_limit")
		rw.Header().Set("Connection", "close")
		plainError(rw, http.StatusRequestEntityTooLarge)
		return
	}
	rw.stall = s.limits.stall
	var body *reqBody
	if r.Body != nil && r.Body != http.NoBody {
		rc := r.Body
		if s.limits.maxBody >= 0 {
			rc = http.MaxBytesReader(w, rc, s.limits.maxBody)
		}
		body = &reqBody{ReadCloser: rc, ctl: rw.ctl, stall: s.limits.stall, rec: rec}
	}
	r2 := r.WithContext(withRecord(r.Context(), rec))
	if body != nil {
		r2.Body = body
	}
	s.proxy.ServeHTTP(rw, r2)
	if body != nil {
		body.abandon()
	}
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
func (p *Proxy) logRequest(vh *vhost, s *site, cs *connState, r *http.Request, rw *respWriter, rec *reqRecord, start time.Time) {
	dur := time.Since(start)
	status := rw.status
	rec.mu.Lock()
	if rec.status != 0 && !rw.wroteHeader {
		status = rec.status
	}
	member, pinned, cause, attempts := rec.member, rec.pinned, rec.cause, rec.attempts
	connect, upStart, headersAt, reused := rec.connectTime, rec.upStart, rec.headersAt, rec.reused
	rec.mu.Unlock()
	if status == 0 {
		status = http.StatusOK
		if cause == "aborted" {
			status = 499
		}
	}
	siteName := ""
	if s != nil {
		siteName = s.name
	}
	code := strconv.Itoa(status)
	p.metrics.requests.WithLabelValues(vh.name, siteName, code).Inc()
	p.metrics.duration.WithLabelValues(vh.name, siteName).Observe(dur.Seconds())

	if !p.access.Enabled(r.Context(), slog.LevelInfo) {
		return
	}
	attrs := make([]slog.Attr, 0, 24)
	attrs = append(attrs,
		slog.String("virtual", vh.name),
		slog.String("client", remoteAddr(r).String()),
	)
	if cs != nil && cs.tls {
		attrs = append(attrs, slog.String("sni", cs.sni), slog.String("alpn", cs.alpn))
	}
	attrs = append(attrs,
		slog.String("proto", r.Proto),
		slog.String("host", r.Host),
		slog.String("method", r.Method),
		slog.String("path", truncate(r.URL.Path, 1024)),
		slog.Int("status", status),
		slog.Int64("bytes_in", rec.bodyRead()),
		slog.Int64("bytes_out", rw.bytes),
		slog.Float64("duration_ms", ms(dur)),
	)
	if siteName != "" {
		attrs = append(attrs, slog.String("site", siteName))
	}
	if member != "" {
		attrs = append(attrs, slog.String("upstream", member), slog.Bool("pinned", pinned))
		if attempts > 1 {
			attrs = append(attrs, slog.Int("attempts", attempts))
		}
		if !upStart.IsZero() {
			if !reused {
				attrs = append(attrs, slog.Float64("upstream_connect_ms", ms(connect)))
			}
			if !headersAt.IsZero() {
				attrs = append(attrs, slog.Float64("upstream_header_ms", ms(headersAt.Sub(upStart))))
			}
		}
	}
	if cause != "" {
		attrs = append(attrs, slog.String("termination", cause))
	}
	if cs != nil {
		attrs = append(attrs, slog.Uint64("conn", cs.id))
	}
	p.access.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
