package diagnose

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/fakefe"
	"github.com/edgeproxy/edgeproxy/internal/ntlm"
)

// front is what the test puts between the client and the fake front end,
// standing in for the proxy with one fault at a time.
type front struct {
	denyManagement bool // 403 on the management paths, case-insensitively
	denyExactCase  bool // 403 only on the raw URI's exact spelling (a broken deny)
	refuseDots     bool // 400 on dot segments, as edgeproxy refuses targets not in canonical form
	basicOnly      bool // replace WWW-Authenticate by Basic (a pre-authenticating proxy)
	msDiag         string
	closeOnNTLM    bool   // Connection: close on the NTLM challenge
	epCert         []byte // Extended Protection: the channel binding IIS expects
	epOwnCert      bool   // Extended Protection with the served certificate's binding
}

func (f front) wrap(fe http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.refuseDots && (strings.Contains(r.RequestURI, "/./") || strings.Contains(r.RequestURI, "/../")) {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		for _, m := range []string{"/cscp", "/OcsPowerShell", "/RgsConfig"} {
			p := r.URL.Path
			if (f.denyManagement && hasPrefixFoldTest(normPath(p), m)) || (f.denyExactCase && strings.HasPrefix(r.RequestURI, m)) {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
		}
		if f.msDiag != "" {
			w.Header().Set("X-Ms-diagnostics", f.msDiag)
		}
		if f.epCert != nil && f.rejectsBinding(r) {
			w.Header().Add("WWW-Authenticate", "Negotiate")
			w.Header().Add("WWW-Authenticate", "NTLM")
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		// The member normalises the path, as IIS does.
		r.URL.Path = normPath(r.URL.Path)
		fe.ServeHTTP(hookWriter{w, f}, r)
	})
}

// rejectsBinding: an AUTHENTICATE message whose channel binding is not
// the one of the certificate IIS serves (the client saw the proxy's).
func (f front) rejectsBinding(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "NTLM ")
	if !ok {
		return false
	}
	msg, err := base64.StdEncoding.DecodeString(tok)
	if err != nil || ntlm.MessageType(msg) != ntlm.TypeAuthenticate {
		return false
	}
	a, err := ntlm.ParseAuthenticate(msg)
	return err != nil || !bytes.Equal(a.ChannelBindings(), f.epCert)
}

// hookWriter rewrites the front end's headers for the faults.
type hookWriter struct {
	http.ResponseWriter
	f front
}

func (h hookWriter) WriteHeader(code int) {
	hd := h.Header()
	if h.f.basicOnly && hd.Get("WWW-Authenticate") != "" {
		hd.Del("WWW-Authenticate")
		hd.Set("WWW-Authenticate", `Basic realm="portal"`)
	}
	if h.f.closeOnNTLM && strings.HasPrefix(hd.Get("WWW-Authenticate"), "NTLM ") {
		hd.Set("Connection", "close")
	}
	h.ResponseWriter.WriteHeader(code)
}

func (h hookWriter) Write(b []byte) (int, error) { return h.ResponseWriter.Write(b) }

func hasPrefixFoldTest(p, prefix string) bool {
	return len(p) >= len(prefix) && strings.EqualFold(p[:len(prefix)], prefix)
}

// normPath cleans dot segments the way a proxy must before matching.
func normPath(p string) string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		switch s {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

// appLab runs a fake front end behind the front on a loopback HTTPS
// listener and returns the configuration publishing it.
func appLab(t *testing.T, opts fakefe.Options, f front) *config.Config {
	t.Helper()
	p := newTestPKI(t)
	leaf := issue(t, p.Inter, certSpec{CN: "webext.example.com", DNS: skypeNames})
	cert := tlsCert(leaf, p.Inter)
	if f.epOwnCert {
		f.epCert = ntlm.ChannelBindingHash(leaf.Cert)
	}
	fe := fakefe.New(opts)
	hs := fe.HTTPServer(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	hs.Handler = f.wrap(fe)
	ln := listen(t, "127.0.0.1:0")
	done := make(chan struct{})
	go func() { defer close(done); _ = hs.Serve(tls.NewListener(ln, hs.TLSConfig)) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		<-done
	})
	cfg := &config.Config{
		Pools: map[string]*config.Pool{"sfb-fe": {Members: []config.Member{{Address: "198.19.1.11"}}}},
		Virtuals: []*config.Virtual{{
			Name: "sfb-web", Mode: config.ModeHTTPS, Listen: netip.MustParseAddrPort(ln.Addr().String()),
			Sites: []*config.Site{{Hosts: skypeNames, Pool: "sfb-fe", Port: 4443, Profile: config.ProfileSkype,
				BackendTLS: &config.BackendTLS{}}},
		}},
	}
	return cfg
}

var alice = &Credentials{Domain: "CONTOSO", User: "alice", Password: "Winter2026!"}

func TestApplication(t *testing.T) {
	users := map[string]string{"alice": alice.Password}

	t.Run("healthy", func(t *testing.T) {
		cfg := appLab(t, fakefe.Options{Users: users}, front{denyManagement: true})
		fs := runCheck(t, &Env{Config: cfg, Credentials: alice}, Application)
		expectAtMost(t, fs, Pass)
		expect(t, fs, "lyncdiscover.example.com autodiscover", Pass, "links on webext.example.com")
		expect(t, fs, "lyncdiscover.example.com CertProv", Pass, "401", "NTLM", "Negotiate")
		expect(t, fs, "lyncdiscover.example.com NTLM", Pass, `handshake completed through the proxy as CONTOSO\alice`)
		expect(t, fs, "lyncdiscover.example.com denied paths", Pass, "→ 403")

		// Without an account the handshake stops at the challenge.
		fs = runCheck(t, &Env{Config: cfg}, Application)
		expectAtMost(t, fs, Pass)
		expect(t, fs, "NTLM", Pass, "challenge received on a kept-alive connection")
	})

	t.Run("spellings not in canonical form refused with 400", func(t *testing.T) {
		cfg := appLab(t, fakefe.Options{}, front{denyManagement: true, refuseDots: true})
		fs := runCheck(t, &Env{Config: cfg}, Application)
		expect(t, fs, "lyncdiscover.example.com denied paths", Pass, "→ 403 (400 for the spellings not in canonical form)")
	})

	for _, c := range appCases(users) {
		t.Run(c.name, func(t *testing.T) {
			cfg := appLab(t, c.opts, c.front)
			fs := runCheck(t, &Env{Config: cfg, Credentials: c.creds}, Application)
			expect(t, fs, c.subj, c.verdict, c.evidence...)
			if Worst(fs) != c.verdict {
				t.Errorf("worst verdict %s, want %s", Worst(fs), c.verdict)
			}
		})
	}

	t.Run("channel binding of the certificate the client saw", func(t *testing.T) {
		// IIS with Extended Protection accepts the client whose binding
		// matches the certificate it serves: without a TLS-terminating
		// proxy in between, the handshake completes.
		cfg := appLab(t, fakefe.Options{Users: users}, front{denyManagement: true, epOwnCert: true})
		fs := runCheck(t, &Env{Config: cfg, Credentials: alice}, Application)
		expect(t, fs, "NTLM", Pass, "handshake completed")
	})
}

func TestApplicationRedirect(t *testing.T) {
	for _, c := range []struct {
		name    string
		h       http.HandlerFunc
		verdict Verdict
	}{
		{"redirects", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://"+r.Host+r.URL.Path, http.StatusMovedPermanently)
		}, Pass},
		{"serves plain HTTP", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("hello")) }, Fail},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := serve(t, listen(t, "127.0.0.1:0"), c.h)
			cfg := &config.Config{Virtuals: []*config.Virtual{{Name: "sfb-web-http", Mode: config.ModeHTTP, Listen: addr,
				Sites: []*config.Site{{Hosts: []string{"meet.example.com"}, Redirect: config.RedirectHTTPS, Profile: config.ProfileSkype}}}}}
			fs := runCheck(t, &Env{Config: cfg}, Application)
			expect(t, fs, "meet.example.com redirect", c.verdict)
		})
	}
}

func TestApplicationListenerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	cfg := &config.Config{Virtuals: []*config.Virtual{{Name: "sfb-web", Mode: config.ModeHTTPS, Listen: addr,
		Sites: []*config.Site{{Hosts: skypeNames, Pool: "sfb-fe", Port: 4443, Profile: config.ProfileSkype}}}}}
	fs := runCheck(t, &Env{Config: cfg}, Application)
	if len(fs) != 1 {
		t.Fatalf("%d findings, want one for the unreachable listener", len(fs))
	}
	expect(t, fs, "autodiscover", Fail, "connection refused")
}

func TestParseMsDiagnostics(t *testing.T) {
	for _, c := range []struct {
		in     string
		code   int
		fields map[string]string
		bad    bool
	}{
		{in: `28032;source="sfb.example.com/";reason="The web ticket is invalid.";faultcode="wsse:InvalidSecurityToken"`, code: 28032,
			fields: map[string]string{"source": "sfb.example.com/", "reason": "The web ticket is invalid.", "faultcode": "wsse:InvalidSecurityToken"}},
		// As copied from a client log, with typographic quotes.
		{in: "28032;source=\u201d/\u201d;reason=\u201dThe web ticket is invalid.\u201d", code: 28032,
			fields: map[string]string{"source": "/", "reason": "The web ticket is invalid."}},
		{in: `1000;reason="a;b";x=y`, code: 1000, fields: map[string]string{"reason": "a;b", "x": "y"}},
		{in: `abc;reason="x"`, bad: true},
		{in: `28032;reason="unterminated`, bad: true},
	} {
		d, err := ParseMsDiagnostics(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("ParseMsDiagnostics(%q) accepted", c.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseMsDiagnostics(%q): %v", c.in, err)
			continue
		}
		if d.Code != c.code {
			t.Errorf("code %d, want %d", d.Code, c.code)
		}
		for k, v := range c.fields {
			if d.Fields[k] != v {
				t.Errorf("%q: field %s = %q, want %q", c.in, k, d.Fields[k], v)
			}
		}
	}
}

func TestApplicationFastL4(t *testing.T) {
	users := map[string]string{"alice": alice.Password}
	cfg := appLab(t, fakefe.Options{Users: users}, front{denyManagement: true})
	// The member itself stands behind the fastl4 virtual: pass-through.
	https := cfg.Virtuals[0]
	cfg.Pools["sfb-fe"].Monitor.Port = 4443
	cfg.Virtuals = []*config.Virtual{{Name: "sfb-web-l4", Mode: config.ModeFastL4, Listen: https.Listen, Pool: "sfb-fe", Port: 4443,
		SNAT: config.SNAT{Automap: true}}}

	fs := runCheck(t, &Env{Config: cfg}, Application)
	expect(t, fs, "virtual sfb-web-l4", Warn, "not checked from the proxy host", "-client-netns")

	var d net.Dialer
	fs = runCheck(t, &Env{Config: cfg, ClientDial: d.DialContext, Credentials: alice}, Application)
	expectAtMost(t, fs, Pass)
	// Without sites, the virtual is asked by the names of the certificate
	// it hands clients.
	expect(t, fs, "sfb-web-l4 https://lyncdiscover.example.com autodiscover", Pass, "links on webext.example.com")
	expect(t, fs, "NTLM", Pass, "handshake completed")
	expect(t, fs, "denied paths", Pass, "fastl4 passes paths through")

	// A front end whose External Web Site serves the management paths.
	cfg2 := appLab(t, fakefe.Options{}, front{})
	cfg2.Pools["sfb-fe"].Monitor.Port = 4443
	cfg2.Virtuals = []*config.Virtual{{Name: "sfb-web-l4", Mode: config.ModeFastL4, Listen: cfg2.Virtuals[0].Listen, Pool: "sfb-fe", Port: 4443}}
	fs = runCheck(t, &Env{Config: cfg2, ClientDial: d.DialContext}, Application)
	expect(t, fs, "denied paths", Fail, "→ 200: GET /cscp", "cannot filter paths")
}

func TestApplicationSkypePoolWithoutProfile(t *testing.T) {
	// A site sending to a Skype pool without the skype profile: the
	// management paths are still checked, and found open.
	cfg := appLab(t, fakefe.Options{}, front{})
	cfg.Virtuals[0].Sites[0].Profile = ""
	cfg.Pools["sfb-fe"].Monitor.Port = 4443
	fs := runCheck(t, &Env{Config: cfg}, Application)
	expect(t, fs, "denied paths", Fail, "→ 200: GET /cscp", "/OcsPowerShell", "/RgsConfig")
}

// appCase is a misbehaving front end (or proxy) and the finding it must
// produce.
type appCase struct {
	name     string
	opts     fakefe.Options
	front    front
	creds    *Credentials
	subj     string
	verdict  Verdict
	evidence []string
}

func appCases(users map[string]string) []appCase {
	return []appCase{
		{
			name:     "autodiscover returns internal links",
			opts:     fakefe.Options{ExternalName: "fe01.corp.example.com"},
			front:    front{denyManagement: true},
			subj:     "autodiscover",
			verdict:  Fail,
			evidence: []string{"links to fe01.corp.example.com", "Internal Web Site", "4443/8080"},
		},
		{
			name:     "CertProv without NTLM",
			front:    front{denyManagement: true, basicOnly: true},
			subj:     "CertProv",
			verdict:  Fail,
			evidence: []string{"WWW-Authenticate: Basic", "no NTLM or Negotiate"},
		},
		{
			name:     "management path answers 200",
			front:    front{},
			subj:     "denied paths",
			verdict:  Fail,
			evidence: []string{"→ 200: GET /cscp, /CSCP", "/OcsPowerShell", "/RgsConfig"},
		},
		{
			name:     "deny that misses other spellings",
			front:    front{denyExactCase: true},
			subj:     "denied paths",
			verdict:  Fail,
			evidence: []string{"→ 200: GET /CSCP, /./cscp, /edgeproxy-diagnose/../cscp, /%63scp, /OCSPOWERSHELL"},
		},
		{
			name:     "X-Ms-diagnostics",
			front:    front{denyManagement: true, msDiag: `28032;source="webext.example.com/";reason="The web ticket is invalid.";faultcode="wsse:InvalidSecurityToken"`},
			subj:     "X-Ms-diagnostics",
			verdict:  Warn,
			evidence: []string{"code 28032", `reason "The web ticket is invalid."`, `faultcode "wsse:InvalidSecurityToken"`, "External Web Site"},
		},
		{
			name:     "connection closed after the NTLM challenge",
			front:    front{denyManagement: true, closeOnNTLM: true},
			subj:     "NTLM",
			verdict:  Fail,
			evidence: []string{"closed after the NTLM challenge"},
		},
		{
			name:     "IIS Extended Protection",
			opts:     fakefe.Options{Users: users},
			front:    front{denyManagement: true, epCert: bytes.Repeat([]byte{0x42}, 16)},
			creds:    alice,
			subj:     "NTLM",
			verdict:  Fail,
			evidence: []string{"completed through the proxy", "still 401", "Extended Protection", "Off"},
		},
	}
}
