package l7

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/fakefe"
	"github.com/edgeproxy/edgeproxy/internal/logs"
	"github.com/prometheus/client_golang/prometheus"
)

// Published names of the test deployment.
var skypeHosts = []string{"webext.example.com", "meet.example.com", "dialin.example.com", "lyncdiscover.example.com"}

const owasHost = "owas.example.com"

// testCA is a root CA and an intermediate issuing leaves.
type testCA struct {
	rootPath  string
	root      *x509.Certificate
	inter     *x509.Certificate
	interKey  *ecdsa.PrivateKey
	interPEM  []byte
	dir       string
	serial    int64
	withInter bool
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	dir := t.TempDir()
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " Root CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(rootDER)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	interTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " Issuing CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(5 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 0, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	interDER, err := x509.CreateCertificate(rand.Reader, interTmpl, root, &interKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	inter, _ := x509.ParseCertificate(interDER)
	ca := &testCA{root: root, inter: inter, interKey: interKey, dir: dir, serial: 10, withInter: true,
		interPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: interDER})}
	ca.rootPath = filepath.Join(dir, "root.pem")
	writeFile(t, ca.rootPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}))
	return ca
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue writes a leaf (followed by the intermediate) and its key, and
// returns their paths and the leaf.
func (ca *testCA) issue(t testing.TB, cn string, names []string, ips ...netip.Addr) (certPath, keyPath string, leaf *x509.Certificate) {
	t.Helper()
	ca.serial++
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
		DNSNames: names, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.inter, &key.PublicKey, ca.interKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if ca.withInter {
		chain = append(chain, ca.interPEM...)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	base := filepath.Join(ca.dir, fmt.Sprintf("%s-%d", strings.ReplaceAll(cn, "*", "star"), ca.serial))
	certPath, keyPath = base+".pem", base+".key"
	writeFile(t, certPath, chain)
	writeFile(t, keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	return certPath, keyPath, leaf
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.root)
	return p
}

// member is a fake front end listening with TLS (the External Web Site
// on 4443) and in plain HTTP (8080) on one loopback address.
type member struct {
	addr      netip.Addr
	fe        *fakefe.Server
	tlsLn     net.Listener
	plainLn   net.Listener
	tlsServer *http.Server
	plainSrv  *http.Server
}

// startMembers starts n front ends on 127.0.0.(10+i), all on the same
// two ports.
func startMembers(t testing.TB, n int, internal *testCA, users map[string]string) ([]*member, uint16, uint16) {
	t.Helper()
	certPath, keyPath, _ := internal.issue(t, "fe.corp.example.com", append([]string{owasHost}, skypeHosts...))
	kp, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	for attempt := 0; ; attempt++ {
		var ms []*member
		var tlsPort, plainPort int
		ok := true
		for i := range n {
			a := netip.AddrFrom4([4]byte{127, 0, 0, byte(10 + i)})
			tl, err1 := net.Listen("tcp", netip.AddrPortFrom(a, uint16(tlsPort)).String())
			pl, err2 := net.Listen("tcp", netip.AddrPortFrom(a, uint16(plainPort)).String())
			if err1 != nil || err2 != nil {
				if tl != nil {
					tl.Close()
				}
				if pl != nil {
					pl.Close()
				}
				ok = false
				break
			}
			tlsPort, plainPort = tl.Addr().(*net.TCPAddr).Port, pl.Addr().(*net.TCPAddr).Port
			ms = append(ms, &member{addr: a, tlsLn: tl, plainLn: pl})
		}
		if !ok {
			for _, m := range ms {
				m.tlsLn.Close()
				m.plainLn.Close()
			}
			if attempt > 20 {
				t.Fatal("no common free ports for the members")
			}
			continue
		}
		for i, m := range ms {
			m.fe = fakefe.New(fakefe.Options{Name: fmt.Sprintf("fe%02d", i+1), ExternalName: "webext.example.com", Users: users})
			m.tlsServer = m.fe.HTTPServer(&tls.Config{Certificates: []tls.Certificate{kp}, NextProtos: []string{"http/1.1"}})
			m.plainSrv = m.fe.HTTPServer(nil)
			go m.tlsServer.ServeTLS(m.tlsLn, "", "")
			go m.plainSrv.Serve(m.plainLn)
			t.Cleanup(func() { m.tlsServer.Close(); m.plainSrv.Close() })
		}
		return ms, uint16(tlsPort), uint16(plainPort)
	}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is a proxy with an https and an http virtual in front of fake front
// ends, on loopback.
type env struct {
	t         testing.TB
	public    *testCA
	internal  *testCA
	defCert   string // the default certificate's file
	owasCert  string
	wildCert  string
	members   []*member
	tlsPort   uint16
	plainPort uint16
	proxy     *Proxy
	reg       *prometheus.Registry
	access    *syncBuffer
	log       *syncBuffer
	cfg       *testConfig
	httpsAddr string
	httpAddr  string
	users     map[string]string
	files     [3][2]string // cert, key of the default, owas and wildcard certificates
}

type envOptions struct {
	members int
	users   map[string]string
	// site changes the skype site's configuration before Apply.
	site func(*Site)
	// virtual changes the https virtual.
	virtual func(*Virtual)
	// cfg changes the whole configuration last.
	cfg func(*testConfig)
	// onConn is Options.OnConn.
	onConn func(open bool, client, local netip.AddrPort)
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	if o.members == 0 {
		o.members = 2
	}
	e := &env{t: t, public: newTestCA(t, "Public"), internal: newTestCA(t, "Internal"),
		access: &syncBuffer{}, log: &syncBuffer{}, reg: prometheus.NewRegistry(), users: o.users}
	e.defCert, _, _ = e.issueSet()
	e.members, e.tlsPort, e.plainPort = startMembers(t, o.members, e.internal, o.users)
	e.proxy = New(Options{
		Logger:    slog.New(slog.NewJSONHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		AccessLog: slog.New(logs.NewJSONLines(e.access)),
		Registry:  e.reg,
		OnConn:    o.onConn,
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.proxy.Shutdown(ctx)
	})
	e.cfg = e.config(o)
	if err := e.proxy.Apply(e.cfg.spec()); err != nil {
		t.Fatalf("apply: %v", err)
	}
	addrs := e.proxy.Addrs()
	e.httpsAddr, e.httpAddr = addrs["sfb-web"].String(), addrs["sfb-web-http"].String()
	return e
}

// issueSet issues the public certificates: the default (all Skype names),
// Office Web Apps, and a wildcard.
func (e *env) issueSet() (string, string, string) {
	c1, k1, _ := e.public.issue(e.t, "webext.example.com", skypeHosts)
	c2, k2, _ := e.public.issue(e.t, owasHost, []string{owasHost})
	c3, k3, _ := e.public.issue(e.t, "*.apps.example.com", []string{"*.apps.example.com"})
	e.files = [3][2]string{{c1, k1}, {c2, k2}, {c3, k3}}
	e.owasCert, e.wildCert = c2, c3
	return c1, c2, c3
}

func (e *env) config(o envOptions) *testConfig {
	files := e.files
	var members []Member
	for i, m := range e.members {
		members = append(members, Member{Name: fmt.Sprintf("fe%02d.corp.example.com", i+1), Addr: m.addr})
	}
	skype := skypeSite(&Site{Hosts: skypeHosts, Pool: "sfb-fe", Port: e.tlsPort,
		BackendTLS: &BackendTLS{CA: e.internal.rootPath}})
	if o.site != nil {
		o.site(skype)
	}
	https := &Virtual{
		Name: "sfb-web", Mode: ModeHTTPS, Listen: netip.MustParseAddrPort("127.0.0.1:0"),
		Certificates: []Certificate{
			{Cert: files[0][0], Key: files[0][1]},
			{Cert: files[1][0], Key: files[1][1]},
			{Cert: files[2][0], Key: files[2][1]},
		},
		Sites: []*Site{
			skype,
			{Hosts: []string{owasHost, "*.apps.example.com"}, Pool: "owas", Port: e.tlsPort,
				BackendTLS: &BackendTLS{CA: e.internal.rootPath, ServerName: owasHost}},
		},
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.99/32")},
	}
	if o.virtual != nil {
		o.virtual(https)
	}
	cfg := &testConfig{
		Pools: map[string][]Member{"sfb-fe": members, "owas": members[:1]},
		Spec: Spec{Virtuals: []*Virtual{
			https,
			{Name: "sfb-web-http", Mode: ModeHTTP, Listen: netip.MustParseAddrPort("127.0.0.2:0"),
				Sites: []*Site{
					{Hosts: []string{"lyncdiscover.example.com"}, Pool: "sfb-fe", Port: e.plainPort},
					{Hosts: []string{"webext.example.com", "meet.example.com", "dialin.example.com"}, Redirect: true},
				}},
		}},
	}
	if o.cfg != nil {
		o.cfg(cfg)
	}
	return cfg
}

// testConfig is a Spec as a test writes it: members by pool, and sites
// whose zero limits, TLS settings and connection caps take the defaults
// the compile step gives them.
type testConfig struct {
	Pools map[string][]Member
	Spec
}

// skypeDenied are the skype profile's closed path prefixes.
var skypeDenied = []string{"/cscp", "/OcsPowerShell", "/RgsConfig"}

// skypeSite gives s the skype profile: its methods, Windows
// authentication and strict paths (the denied paths and limits come with
// spec).
func skypeSite(s *Site) *Site {
	s.Skype, s.WindowsAuth, s.StrictPaths = true, true, true
	return s
}

// profileLimits are the limits of a generic or a skype site.
func profileLimits(skype bool) Limits {
	l := Limits{HeaderTimeout: 20 * time.Second, MaxHeaderBytes: 32 << 10, MaxBodyBytes: 100 << 20,
		ResponseTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second, StallTimeout: 120 * time.Second,
		DialTimeout: 5 * time.Second, PoolIdleTimeout: 90 * time.Second}
	if skype {
		l.MaxHeaderBytes, l.MaxBodyBytes = 64<<10, 1<<30
		l.ResponseTimeout, l.IdleTimeout = 960*time.Second, 1800*time.Second
	}
	return l
}

// spec returns the Spec the proxy gets: copies of the virtuals and sites
// with the defaults filled in and each site's pool members.
func (c *testConfig) spec() *Spec {
	out := &Spec{}
	for _, v := range c.Virtuals {
		vc := *v
		if vc.TLS.HandshakeTimeout == 0 {
			vc.TLS.HandshakeTimeout = 10 * time.Second
		}
		if vc.TLS.TicketRotation == 0 {
			vc.TLS.TicketRotation = 12 * time.Hour
		}
		if vc.Limits.MaxConnsPerSource == 0 {
			vc.Limits.MaxConnsPerSource = 1000
		}
		if vc.Limits.MaxHandshakesPerSource == 0 {
			vc.Limits.MaxHandshakesPerSource = min(100, vc.Limits.MaxConnsPerSource)
		}
		vc.Sites = nil
		for _, s := range v.Sites {
			vc.Sites = append(vc.Sites, c.site(s))
		}
		out.Virtuals = append(out.Virtuals, &vc)
	}
	return out
}

func (c *testConfig) site(s *Site) *Site {
	sc := *s
	if sc.Skype {
		sc.Deny = append(slices.Clone(skypeDenied), s.Deny...)
	}
	d := profileLimits(sc.Skype)
	for _, f := range []struct{ v, def *time.Duration }{
		{&sc.HeaderTimeout, &d.HeaderTimeout}, {&sc.ResponseTimeout, &d.ResponseTimeout},
		{&sc.IdleTimeout, &d.IdleTimeout}, {&sc.StallTimeout, &d.StallTimeout},
		{&sc.DialTimeout, &d.DialTimeout}, {&sc.PoolIdleTimeout, &d.PoolIdleTimeout},
	} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	if sc.MaxHeaderBytes == 0 {
		sc.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if sc.MaxBodyBytes == 0 {
		sc.MaxBodyBytes = d.MaxBodyBytes
	}
	if !sc.Redirect {
		sc.Members = slices.Clone(c.Pools[sc.Pool])
	}
	return &sc
}

// tlsClient returns a client that trusts the public CA and dials the
// proxy whatever the URL's host. Each call makes a new transport.
func (e *env) tlsClient(h2 bool) *http.Client {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(h2)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.public.pool()},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var d net.Dialer
			if strings.HasSuffix(addr, ":80") {
				return d.DialContext(ctx, network, e.httpAddr)
			}
			return d.DialContext(ctx, network, e.httpsAddr)
		},
		Protocols: &p,
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// rawTLS is one TLS connection to the proxy where the test writes
// requests byte for byte.
type rawTLS struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func (e *env) dialTLS(sni string) *rawTLS {
	e.t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.httpsAddr,
		&tls.Config{ServerName: sni, RootCAs: e.public.pool(), InsecureSkipVerify: sni == "", NextProtos: []string{"http/1.1"}})
	if err != nil {
		e.t.Fatalf("dial proxy: %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &rawTLS{t: e.t, c: c, r: bufio.NewReader(c)}
}

func (e *env) dialPlain() *rawTLS {
	e.t.Helper()
	c, err := net.DialTimeout("tcp", e.httpAddr, 5*time.Second)
	if err != nil {
		e.t.Fatalf("dial proxy: %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &rawTLS{t: e.t, c: c, r: bufio.NewReader(c)}
}

// do sends req on the connection and reads the response with its body.
func (rc *rawTLS) do(req *http.Request) (*http.Response, string) {
	rc.t.Helper()
	rc.c.SetDeadline(time.Now().Add(20 * time.Second))
	if err := req.Write(rc.c); err != nil {
		rc.t.Fatalf("write request: %v", err)
	}
	return rc.read(req)
}

// raw sends bytes as they are and reads one response.
func (rc *rawTLS) raw(s string) (*http.Response, string, error) {
	rc.c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(rc.c, s); err != nil {
		return nil, "", err
	}
	res, err := http.ReadResponse(rc.r, nil)
	if err != nil {
		return nil, "", err
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b), nil
}

func (rc *rawTLS) read(req *http.Request) (*http.Response, string) {
	rc.t.Helper()
	res, err := http.ReadResponse(rc.r, req)
	if err != nil {
		rc.t.Fatalf("read response: %v", err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b)
}

func get(host, path string) *http.Request {
	r, _ := http.NewRequest("GET", "https://"+host+path, nil)
	return r
}

// needTool skips (or fails in CI) when a command is missing.
func needTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is needed: %v", name, err)
		}
		t.Skipf("%s missing", name)
	}
}

// curl runs curl with a bounded time and returns its stdout.
func curl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	needTool(t, "curl")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "curl", append([]string{"-sS", "--max-time", "100"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("curl %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), err
}

// resolveArgs are curl --resolve arguments pointing the names at the
// proxy.
func (e *env) resolveArgs(port string, hosts ...string) []string {
	var out []string
	for _, h := range hosts {
		out = append(out, "--resolve", h+":"+port+":127.0.0.1")
	}
	return out
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
