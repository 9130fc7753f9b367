// Package fakefe is a stand-in for a Skype for Business front end's
// External Web Site, for tests, the demo and diagnose. It is a real HTTP
// server with the behaviours a reverse proxy in front of such a pool has
// to get right:
//
//   - Windows authentication bound to the TCP connection: an NTLM
//     negotiate, challenge and authenticate on one connection makes that
//     connection (and only it) authenticated, as IIS does;
//   - /Autodiscover/AutodiscoverService.svc/root answering JSON links on
//     the external web services name;
//   - /CertProv/CertProvisioningService.svc and /WebTicket/... answering
//     401 with both "WWW-Authenticate: NTLM" and "Negotiate" until the
//     connection authenticates;
//   - a long poll (/longpoll?wait=65s), streaming upload and download
//     endpoints, an echo of the request as received, and a protocol
//     upgrade (/upgrade with "Upgrade: echo" or websocket) that echoes bytes;
//   - the management paths (/cscp, /OcsPowerShell, /RgsConfig), which a
//     correct proxy never lets through: every hit is counted.
//
// Every response carries X-Fake-FE (the server's name) and X-Fake-Conn
// (the id of the TCP connection it came in on).
package fakefe

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/ntlm"
)

// Options shape a front end.
type Options struct {
	// Name identifies this front end in X-Fake-FE (default "fe").
	Name string
	// ExternalName is the external web services FQDN the autodiscover
	// links point at (default "webext.example.com").
	ExternalName string
	// Domain is the NetBIOS domain of the challenge (default "CONTOSO").
	Domain string
	// Users maps user names to passwords. Empty: every user is accepted
	// whatever the password (the exchange must still happen on one
	// connection).
	Users map[string]string
	// MaxLongPoll caps /longpoll's wait (default 1h).
	MaxLongPoll time.Duration
	// Logger receives a line per management-path hit and auth event.
	Logger *slog.Logger
}

// Server is a fake front end. Install ConnContext on the http.Server
// that runs it (HTTPServer does): authentication state lives in the
// connection.
type Server struct {
	opts   Options
	log    *slog.Logger
	connID atomic.Uint64

	requests   atomic.Int64
	open       atomic.Int64
	management atomic.Int64
	authOK     atomic.Int64
	authFailed atomic.Int64
}

// New returns a front end.
func New(opts Options) *Server {
	if opts.Name == "" {
		opts.Name = "fe"
	}
	if opts.ExternalName == "" {
		opts.ExternalName = "webext.example.com"
	}
	if opts.Domain == "" {
		opts.Domain = "CONTOSO"
	}
	if opts.MaxLongPoll == 0 {
		opts.MaxLongPoll = time.Hour
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{opts: opts, log: log}
}

// conn is the per-connection authentication state.
type conn struct {
	id uint64

	mu        sync.Mutex
	challenge *[8]byte
	user      string
}

type connKey struct{}

// ConnContext is http.Server.ConnContext: it gives every TCP connection
// its own authentication state.
func (s *Server) ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, &conn{id: s.connID.Add(1)})
}

// ConnState is http.Server.ConnState: it counts open connections.
func (s *Server) ConnState(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		s.open.Add(1)
	case http.StateClosed, http.StateHijacked:
		s.open.Add(-1)
	}
}

// OpenConnections is the number of client connections open now (with
// HTTPServer or ConnState installed).
func (s *Server) OpenConnections() int64 { return s.open.Load() }

// HTTPServer returns an http.Server running the front end (TLS when
// tlsConfig is set; serve it with ServeTLS("", "") or a TLS listener),
// HTTP/1.1 only like IIS with Windows authentication.
func (s *Server) HTTPServer(tlsConfig *tls.Config) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	return &http.Server{
		Handler:           s,
		ConnContext:       s.ConnContext,
		ConnState:         s.ConnState,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       120 * time.Second, // IIS's connection timeout
		MaxHeaderBytes:    64 << 10,
		Protocols:         &p,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// Serve runs the front end on ln (TLS when tlsConfig is set) until ln
// closes.
func (s *Server) Serve(ln net.Listener, tlsConfig *tls.Config) error {
	hs := s.HTTPServer(tlsConfig)
	if tlsConfig != nil {
		ln = tls.NewListener(ln, tlsConfig)
	}
	err := hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// Requests is the number of requests served.
func (s *Server) Requests() int64 { return s.requests.Load() }

// ManagementHits is the number of requests that reached a management
// path (/cscp, /OcsPowerShell, /RgsConfig). A proxy in front must keep it
// at zero.
func (s *Server) ManagementHits() int64 { return s.management.Load() }

// Authentications is the number of connections that completed the NTLM
// exchange, and the number of failed attempts.
func (s *Server) Authentications() (ok, failed int64) { return s.authOK.Load(), s.authFailed.Load() }

// managementPaths are the front end's own administration applications.
var managementPaths = []string{"/cscp", "/ocspowershell", "/rgsconfig"}

// protectedPaths require Windows authentication.
var protectedPaths = []string{"/certprov/", "/webticket/", "/protected"}

func hasPrefixFold(p, prefix string) bool {
	return len(p) >= len(prefix) && strings.EqualFold(p[:len(prefix)], prefix)
}

// ServeHTTP implements the front end.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	c, _ := r.Context().Value(connKey{}).(*conn)
	if c == nil {
		http.Error(w, "fakefe: the http.Server lacks Server.ConnContext", http.StatusInternalServerError)
		return
	}
	w.Header().Set("X-Fake-FE", s.opts.Name)
	w.Header().Set("X-Fake-Conn", strconv.FormatUint(c.id, 10))
	w.Header().Set("Server", "Microsoft-IIS/10.0")

	p := r.URL.Path
	for _, m := range managementPaths {
		if hasPrefixFold(p, m) {
			s.management.Add(1)
			s.log.Warn("management path reached", "fe", s.opts.Name, "path", r.RequestURI)
			io.WriteString(w, "management application "+m+"\n")
			return
		}
	}
	for _, pp := range protectedPaths {
		if hasPrefixFold(p, pp) {
			user, ok := s.authorize(w, r, c)
			if !ok {
				return
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintf(w, "hello %s from %s\n", user, s.opts.Name)
			return
		}
	}
	switch {
	case strings.EqualFold(p, "/autodiscover/autodiscoverservice.svc/root"):
		s.autodiscover(w, r)
	case p == "/longpoll":
		s.longPoll(w, r)
	case p == "/upload":
		s.upload(w, r)
	case p == "/download":
		s.download(w, r)
	case p == "/echo":
		s.echo(w, r, c)
	case p == "/upgrade":
		s.upgrade(w, r)
	case p == "/whoami":
		c.mu.Lock()
		u := c.user
		c.mu.Unlock()
		if u == "" {
			u = "anonymous"
		}
		io.WriteString(w, u+"\n")
	case p == "/" || p == "/healthz":
		io.WriteString(w, "fake front end "+s.opts.Name+"\n")
	default:
		http.NotFound(w, r)
	}
}

// authorize runs the connection-bound NTLM exchange. It returns the
// user when the connection is (now) authenticated; otherwise it has
// answered 401.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, c *conn) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	auth := r.Header.Get("Authorization")
	if auth == "" {
		if c.user != "" {
			return c.user, true
		}
		s.challengeAll(w)
		return "", false
	}
	scheme, tok, _ := strings.Cut(auth, " ")
	if !strings.EqualFold(scheme, "NTLM") && !strings.EqualFold(scheme, "Negotiate") {
		s.challengeAll(w)
		return "", false
	}
	msg, err := base64.StdEncoding.DecodeString(strings.TrimSpace(tok))
	if err != nil {
		s.fail(w, c, "bad base64")
		return "", false
	}
	switch ntlm.MessageType(msg) {
	case ntlm.TypeNegotiate:
		var ch [8]byte
		rand.Read(ch[:])
		c.challenge, c.user = &ch, ""
		w.Header().Set("WWW-Authenticate", scheme+" "+base64.StdEncoding.EncodeToString(ntlm.ChallengeMessage(ch, s.opts.Domain, s.opts.Name, time.Now())))
		w.WriteHeader(http.StatusUnauthorized)
		return "", false
	case ntlm.TypeAuthenticate:
		if c.challenge == nil {
			// An authenticate message on a connection that was never
			// challenged: it belongs to another connection.
			s.fail(w, c, "authenticate without a challenge on this connection")
			return "", false
		}
		ch := *c.challenge
		c.challenge = nil
		a, err := ntlm.ParseAuthenticate(msg)
		if err != nil {
			s.fail(w, c, err.Error())
			return "", false
		}
		if len(s.opts.Users) > 0 {
			pw, ok := s.opts.Users[a.User]
			if !ok {
				s.fail(w, c, ErrNTLMUser.Error()+" "+a.User)
				return "", false
			}
			if err := a.Verify(pw, ch); err != nil {
				s.fail(w, c, err.Error())
				return "", false
			}
		}
		c.user = a.User
		s.authOK.Add(1)
		s.log.Info("connection authenticated", "fe", s.opts.Name, "conn", c.id, "user", a.User)
		return c.user, true
	}
	s.fail(w, c, "unexpected NTLM message")
	return "", false
}

func (s *Server) challengeAll(w http.ResponseWriter) {
	w.Header().Add("WWW-Authenticate", "Negotiate")
	w.Header().Add("WWW-Authenticate", "NTLM")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	io.WriteString(w, "401 authentication required\n")
}

func (s *Server) fail(w http.ResponseWriter, c *conn, why string) {
	s.authFailed.Add(1)
	c.user = ""
	s.log.Info("authentication failed", "fe", s.opts.Name, "conn", c.id, "reason", why)
	s.challengeAll(w)
}

func (s *Server) autodiscover(w http.ResponseWriter, r *http.Request) {
	domain := r.URL.Query().Get("originalDomain")
	if domain == "" {
		domain = strings.TrimPrefix(s.opts.ExternalName, "webext.")
	}
	base := "https://" + s.opts.ExternalName
	q := "?originalDomain=" + domain
	doc := map[string]any{
		"AccessLocation": "External",
		"Root":           map[string]any{},
		"_links": map[string]any{
			"self":   map[string]string{"href": base + "/Autodiscover/AutodiscoverService.svc/root" + q},
			"user":   map[string]string{"href": base + "/Autodiscover/AutodiscoverService.svc/root/oauth/user" + q},
			"xframe": map[string]string{"href": base + "/Autodiscover/XFrame/XFrame.html"},
		},
	}
	w.Header().Set("Content-Type", "application/vnd.microsoft.rtc.autodiscover+json; v=1")
	json.NewEncoder(w).Encode(doc)
}

func (s *Server) longPoll(w http.ResponseWriter, r *http.Request) {
	wait, err := time.ParseDuration(r.URL.Query().Get("wait"))
	if err != nil || wait < 0 {
		http.Error(w, "wait=<duration> required", http.StatusBadRequest)
		return
	}
	wait = min(wait, s.opts.MaxLongPoll)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, "{\"waited\":%q}\n", wait.String())
}

func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.CopyBuffer(h, r.Body, make([]byte, 64<<10))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, "{\"bytes\":%d,\"sha256\":%q}\n", n, hex.EncodeToString(h.Sum(nil)))
}

// Pattern returns the deterministic content of /download: byte i is
// PatternByte(i).
func PatternByte(i int64) byte { return byte(i*7 + i>>8) }

// patternReader produces the download content.
type patternReader struct{ off, size int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.size-p.off))
	for i := range n {
		b[i] = PatternByte(p.off + int64(i))
	}
	p.off += int64(n)
	return n, nil
}

// NewPatternReader returns a reader of size bytes of the download
// content.
func NewPatternReader(size int64) io.Reader { return &patternReader{size: size} }

func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	size, err := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
	if err != nil || size < 0 {
		http.Error(w, "size=<bytes> required", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if r.URL.Query().Get("chunked") == "" {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}
	io.CopyBuffer(w, &patternReader{size: size}, make([]byte, 64<<10))
}

// upgrade switches to the "echo" protocol (also when asked for websocket):
// every byte sent comes back.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request) {
	up := r.Header.Get("Upgrade")
	if !strings.EqualFold(up, "echo") && !strings.EqualFold(up, "websocket") {
		http.Error(w, "Upgrade: echo or websocket required", http.StatusUpgradeRequired)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "hijack: "+err.Error(), http.StatusInternalServerError)
		return
	}
	defer conn.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + up + "\r\n\r\n")
	brw.Flush()
	io.Copy(conn, brw)
}

// Echo is what /echo answers: the request as the front end received it.
type Echo struct {
	FE         string              `json:"fe"`
	Conn       uint64              `json:"conn"`
	Method     string              `json:"method"`
	Host       string              `json:"host"`
	RequestURI string              `json:"request_uri"`
	Proto      string              `json:"proto"`
	RemoteAddr string              `json:"remote_addr"`
	ServerName string              `json:"server_name,omitempty"` // TLS SNI
	Header     map[string][]string `json:"header"`
	BodyBytes  int64               `json:"body_bytes"`
}

func (s *Server) echo(w http.ResponseWriter, r *http.Request, c *conn) {
	n, _ := io.Copy(io.Discard, r.Body)
	e := Echo{FE: s.opts.Name, Conn: c.id, Method: r.Method, Host: r.Host, RequestURI: r.RequestURI,
		Proto: r.Proto, RemoteAddr: r.RemoteAddr, Header: r.Header, BodyBytes: n}
	if r.TLS != nil {
		e.ServerName = r.TLS.ServerName
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(e)
}
