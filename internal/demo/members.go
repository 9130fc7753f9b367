package demo

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/fakefe"
)

// Member ports: the External Web Site on 4443/8080 (what the proxy must
// reach) and the internal site on 443 (what it must never reach).
const (
	portExternalTLS  = 4443
	portExternalHTTP = 8080
	portInternalTLS  = 443
)

// Response headers every member sets, so a client sees where its request
// landed.
const (
	hdrMember = "X-Demo-Member" // short name: fe01
	hdrPeer   = "X-Demo-Peer"   // the source address:port the member saw
	hdrPort   = "X-Demo-Port"   // the member port that answered
	hdrSite   = "X-Demo-Site"   // external | internal
)

// Demo users of the NTLM-style handshake.
const (
	demoDomain   = "EXAMPLE"
	demoUser     = "alice"
	demoPassword = "Passw0rd!"
)

// listenFunc opens a listener (inside the backend namespace).
type listenFunc func(network, addr string) (net.Listener, error)

// member is one front end of the pool: a Skype-like External Web Site
// on 4443 (HTTPS) and 8080 (HTTP), and an internal site on 443.
type member struct {
	name  string // fe01.corp.example.com
	short string // fe01
	addr  netip.Addr
	cert  tls.Certificate
	fe    *fakefe.Server

	listen listenFunc

	mu      sync.Mutex
	servers []*http.Server
}

func newMember(name string, addr netip.Addr, cert tls.Certificate, listen listenFunc, log *slog.Logger) *member {
	short, _, _ := strings.Cut(name, ".")
	return &member{
		name: name, short: short, addr: addr, cert: cert, listen: listen,
		fe: fakefe.New(fakefe.Options{
			Name:         short,
			ExternalName: "webext.example.com",
			Domain:       demoDomain,
			Users:        map[string]string{demoUser: demoPassword},
			MaxLongPoll:  time.Minute,
			Logger:       log,
		}),
	}
}

func (m *member) tlsConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{m.cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}
}

// start opens the member's three listeners and serves them.
func (m *member) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.servers) > 0 {
		return nil
	}
	type site struct {
		port int
		tls  bool
		hs   *http.Server
	}
	ext := func(port int, tlsOn bool) *http.Server {
		var tc *tls.Config
		if tlsOn {
			tc = m.tlsConfig()
		}
		hs := m.fe.HTTPServer(tc)
		hs.Handler = m.tag(port, "external", m.fe)
		return hs
	}
	internal := &http.Server{
		Handler:           m.tag(portInternalTLS, "internal", http.HandlerFunc(m.internalSite)),
		TLSConfig:         m.tlsConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	sites := []site{
		{portExternalTLS, true, ext(portExternalTLS, true)},
		{portExternalHTTP, false, ext(portExternalHTTP, false)},
		{portInternalTLS, true, internal},
	}
	var lns []net.Listener
	for _, s := range sites {
		ln, err := m.listen("tcp", netip.AddrPortFrom(m.addr, uint16(s.port)).String())
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("start member %s: %w", m.short, err)
		}
		if s.tls {
			ln = tls.NewListener(ln, s.hs.TLSConfig)
		}
		lns = append(lns, ln)
	}
	for i, s := range sites {
		m.servers = append(m.servers, s.hs)
		go func(hs *http.Server, ln net.Listener) {
			if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				slog.Debug("member server stopped", "member", m.short, "err", err)
			}
		}(s.hs, lns[i])
	}
	return nil
}

// stop closes the listeners and every open connection, as a crashed
// front end would.
func (m *member) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, hs := range m.servers {
		hs.Close()
	}
	m.servers = nil
}

// tag marks every response with the member, its port and the peer
// address it saw.
func (m *member) tag(port int, site string, h http.Handler) http.Handler {
	p := strconv.Itoa(port)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(hdrMember, m.short)
		w.Header().Set(hdrPeer, r.RemoteAddr)
		w.Header().Set(hdrPort, p)
		w.Header().Set(hdrSite, site)
		h.ServeHTTP(w, r)
	})
}

// internalSite answers like a front end's internal web site: its
// autodiscover links name the internal pool, which clients on the
// Internet cannot reach. This is what a proxy forwarding 443→443 would
// hand out.
func (m *member) internalSite(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Server", "Microsoft-IIS/10.0")
	if strings.EqualFold(r.URL.Path, "/autodiscover/autodiscoverservice.svc/root") {
		base := "https://" + m.name
		doc := map[string]any{
			"AccessLocation": "Internal",
			"_links": map[string]any{
				"self":   map[string]string{"href": base + "/Autodiscover/AutodiscoverService.svc/root?originalDomain=example.com"},
				"user":   map[string]string{"href": base + "/Autodiscover/AutodiscoverService.svc/root/oauth/user?originalDomain=example.com"},
				"xframe": map[string]string{"href": base + "/Autodiscover/XFrame/XFrame.html"},
			},
		}
		w.Header().Set("Content-Type", "application/vnd.microsoft.rtc.autodiscover+json; v=1")
		_ = json.NewEncoder(w).Encode(doc)
		return
	}
	fmt.Fprintf(w, "internal web site of %s\n", m.name)
}
