package health

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// deadline bounds every wait for an event; checks run every few
// milliseconds, so reaching it means the event never came.
const deadline = 20 * time.Second

func fastMonitor(typ MonitorType, port uint16) Monitor {
	return Monitor{
		Type:     typ,
		Port:     port,
		Interval: 20 * time.Millisecond,
		Timeout:  2 * time.Second,
		Rise:     2,
		Fall:     3,
	}
}

func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func portOf(ln net.Listener) uint16 {
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// serveTCP accepts and closes connections until ln is closed.
func serveTCP(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// run starts c until the test ends and returns its event stream.
func run(t *testing.T, c *Checker) <-chan Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	events := c.Subscribe(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return events
}

// waitEvent reads events until one for member matches want.
func waitEvent(t *testing.T, events <-chan Event, member string, want State) Event {
	t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("event stream closed while waiting for %s to be %s", member, want)
			}
			if ev.Member == member && ev.State == want {
				return ev
			}
		case <-timeout:
			t.Fatalf("no event %s -> %s within %s", member, want, deadline)
		}
	}
}

func status(t *testing.T, c *Checker, member string) MemberStatus {
	t.Helper()
	for _, s := range c.Snapshot() {
		if s.Member == member {
			return s
		}
	}
	t.Fatalf("member %s not in snapshot %+v", member, c.Snapshot())
	return MemberStatus{}
}

func TestTCPMonitorUpThenDown(t *testing.T) {
	ln := listen(t, "127.0.0.2")
	serveTCP(ln)
	var dials atomic.Int64
	c := New(Options{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}})
	mon := fastMonitor(MonitorTCP, portOf(ln))
	if err := c.Update([]Target{{Pool: "fe", Member: "fe01", Addr: netip.MustParseAddr("127.0.0.2")}},
		map[string]Monitor{"fe": mon}); err != nil {
		t.Fatal(err)
	}
	if s := status(t, c, "fe01"); s.State != StateUnknown {
		t.Fatalf("state before any check = %s, want unknown", s.State)
	}
	events := run(t, c)
	ev := waitEvent(t, events, "fe01", StateUp)
	if !ev.Up || ev.Prev != StateUnknown || ev.Addr != netip.MustParseAddr("127.0.0.2") || ev.Pool != "fe" {
		t.Fatalf("up event = %+v", ev)
	}
	if dials.Load() == 0 {
		t.Fatal("the Dial option was not used")
	}
	if got := c.Up("fe"); len(got) != 1 || got[0].Member != "fe01" {
		t.Fatalf("Up(fe) = %+v", got)
	}

	ln.Close()
	ev = waitEvent(t, events, "fe01", StateDown)
	if ev.Up || !strings.Contains(ev.Reason, "connection refused") {
		t.Fatalf("down event = %+v, want a reason naming the refused connection", ev)
	}
	s := status(t, c, "fe01")
	if s.State != StateDown || !strings.Contains(s.LastError, "connection refused") || s.Failures < 3 {
		t.Fatalf("status after down = %+v", s)
	}
	if got := c.Up("fe"); len(got) != 0 {
		t.Fatalf("Up(fe) after down = %+v", got)
	}
}

// modalServer answers ok or fail and counts the answers since the last
// switch.
type modalServer struct {
	mu       sync.Mutex
	fail     bool
	ok, bad  int
	status   int // answer when failing
	hosts    map[string]bool
	paths    map[string]bool
	upStatus int
}

func (m *modalServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	m.hosts[r.Host] = true
	m.paths[r.URL.Path] = true
	code := m.upStatus
	if m.fail {
		m.bad++
		code = m.status
	} else {
		m.ok++
	}
	m.mu.Unlock()
	w.WriteHeader(code)
}

func (m *modalServer) set(fail bool) {
	m.mu.Lock()
	m.fail, m.ok, m.bad = fail, 0, 0
	m.mu.Unlock()
}

func (m *modalServer) counts() (ok, bad int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ok, m.bad
}

type counted struct {
	Event
	ok, bad int
}

// serve runs the server on addr until the test ends.
func (m *modalServer) serve(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln := listen(t, addr)
	hs := &http.Server{Handler: m, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln
}

// countingChecker returns a Checker whose changes carry the answers the
// server had given when each happened: OnChange runs before the next
// check, so the counts are exactly the answers that led to the change.
func countingChecker(srv *modalServer) (*Checker, chan counted) {
	changes := make(chan counted, 16)
	c := New(Options{OnChange: func(ev Event) {
		ok, bad := srv.counts()
		changes <- counted{ev, ok, bad}
	}})
	return c, changes
}

// TestHTTPMonitorRiseFall counts the answers the member gave before each
// change: up after the first success, down after exactly fall failures,
// up again after exactly rise successes.
func TestHTTPMonitorRiseFall(t *testing.T) {
	srv := &modalServer{status: http.StatusServiceUnavailable, upStatus: http.StatusOK, hosts: map[string]bool{}, paths: map[string]bool{}}
	ln := srv.serve(t, "127.0.0.3")
	c, changes := countingChecker(srv)
	mon := fastMonitor(MonitorHTTP, portOf(ln))
	mon.Path = "/hosting/discovery"
	if err := c.Update([]Target{{Pool: "fe", Member: "fe01.corp.example.com", Addr: netip.MustParseAddr("127.0.0.3")}},
		map[string]Monitor{"fe": mon}); err != nil {
		t.Fatal(err)
	}
	run(t, c)
	next := func(want State) counted {
		t.Helper()
		select {
		case ch := <-changes:
			if ch.State != want {
				t.Fatalf("change = %+v, want %s", ch.Event, want)
			}
			return ch
		case <-time.After(deadline):
			t.Fatalf("no change to %s within %s", want, deadline)
		}
		return counted{}
	}

	if ch := next(StateUp); ch.ok != 1 || ch.Prev != StateUnknown {
		t.Fatalf("first up after %d successes (prev %s), want 1 from unknown", ch.ok, ch.Prev)
	}
	srv.set(true)
	ch := next(StateDown)
	if ch.bad != 3 {
		t.Fatalf("down after %d failed checks, want fall = 3", ch.bad)
	}
	if !strings.Contains(ch.Reason, "503") || !strings.Contains(ch.Reason, "[200]") {
		t.Fatalf("down reason %q does not name the status and the expected codes", ch.Reason)
	}
	srv.set(false)
	if ch := next(StateUp); ch.ok != 2 {
		t.Fatalf("up again after %d successful checks, want rise = 2", ch.ok)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.hosts) != 1 || !srv.hosts["fe01.corp.example.com"] {
		t.Errorf("Host headers seen %v, want the member name", srv.hosts)
	}
	if len(srv.paths) != 1 || !srv.paths["/hosting/discovery"] {
		t.Errorf("paths seen %v, want the monitor path", srv.paths)
	}
}

// TestHTTPMonitorDownFromStart: a member failing from the start goes from
// unknown to down after fall failures, never up.
func TestHTTPMonitorDownFromStart(t *testing.T) {
	srv := &modalServer{fail: true, status: http.StatusNotFound, upStatus: http.StatusOK, hosts: map[string]bool{}, paths: map[string]bool{}}
	ln := srv.serve(t, "127.0.0.4")
	c, changes := countingChecker(srv)
	mon := fastMonitor(MonitorHTTP, portOf(ln))
	mon.Host = "webext.example.com"
	if err := c.Update([]Target{{Pool: "fe", Member: "fe01", Addr: netip.MustParseAddr("127.0.0.4")}},
		map[string]Monitor{"fe": mon}); err != nil {
		t.Fatal(err)
	}
	run(t, c)
	select {
	case ch := <-changes:
		if ch.State != StateDown || ch.Prev != StateUnknown || ch.bad != 3 || ch.ok != 0 {
			t.Fatalf("first change %+v after %d failures, want unknown -> down after 3", ch.Event, ch.bad)
		}
		if !strings.Contains(ch.Reason, "404") {
			t.Fatalf("reason %q does not name the status", ch.Reason)
		}
	case <-time.After(deadline):
		t.Fatal("member never went down")
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if !srv.hosts["webext.example.com"] || len(srv.hosts) != 1 {
		t.Errorf("Host headers seen %v, want the monitor host", srv.hosts)
	}
}

// testCA is a certificate authority for tests.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemFile string
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), name+".pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pemFile: file}
}

func (ca *testCA) leaf(t *testing.T, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestTLSMonitorVerifiesCertificate(t *testing.T) {
	ca := newCA(t, "internal-ca")
	other := newCA(t, "other-ca")
	cert := ca.leaf(t, "fe01.corp.example.com")
	ln := listen(t, "127.0.0.5")
	tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	go func() {
		for {
			c, err := tln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				c.Close()
			}()
		}
	}()
	port := portOf(ln)
	addr := netip.MustParseAddr("127.0.0.5")

	good := fastMonitor(MonitorTLS, port)
	good.CA = ca.pemFile
	wrongCA := good
	wrongCA.CA = other.pemFile
	wrongName := good
	wrongName.Host = "fe99.corp.example.com"
	noCA := fastMonitor(MonitorTLS, port)

	c := New(Options{})
	err := c.Update([]Target{
		{Pool: "good", Member: "fe01.corp.example.com", Addr: addr},
		{Pool: "wrongca", Member: "fe01.corp.example.com", Addr: addr},
		{Pool: "wrongname", Member: "fe01.corp.example.com", Addr: addr},
		{Pool: "noca", Member: "fe01.corp.example.com", Addr: addr},
	}, map[string]Monitor{"good": good, "wrongca": wrongCA, "wrongname": wrongName, "noca": noCA})
	if err != nil {
		t.Fatal(err)
	}
	events := run(t, c)
	want := map[string]State{"good": StateUp, "wrongca": StateDown, "wrongname": StateDown, "noca": StateUp}
	got := map[string]Event{}
	timeout := time.After(deadline)
	for len(got) < len(want) {
		select {
		case ev := <-events:
			if _, ok := got[ev.Pool]; !ok {
				got[ev.Pool] = ev
			}
		case <-timeout:
			t.Fatalf("events within %s: %+v, want one per pool", deadline, got)
		}
	}
	for pool, st := range want {
		if got[pool].State != st {
			t.Errorf("pool %s: first change %+v, want %s", pool, got[pool], st)
		}
	}
	if r := got["wrongca"].Reason; !strings.Contains(r, "certificate signed by unknown authority") {
		t.Errorf("wrong CA reason %q does not name the certificate problem", r)
	}
	if r := got["wrongname"].Reason; !strings.Contains(r, "certificate is valid for fe01.corp.example.com, not fe99.corp.example.com") {
		t.Errorf("wrong name reason %q does not name the certificate problem", r)
	}

	// A plain TCP server is not a TLS member.
	plain := listen(t, "127.0.0.5")
	serveTCP(plain)
	err = Probe(context.Background(), nil, Target{Pool: "p", Member: "fe01.corp.example.com", Addr: addr}, fastMonitor(MonitorTLS, portOf(plain)))
	if err == nil || !strings.Contains(err.Error(), "tls handshake") {
		t.Errorf("Probe against a plain TCP server = %v, want a tls handshake error", err)
	}
}

func TestHTTPSMonitorAuthAlive(t *testing.T) {
	ca := newCA(t, "internal-ca")
	ln := listen(t, "127.0.0.6")
	var hosts sync.Map
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts.Store(r.Host, r.TLS.ServerName)
		w.Header().Set("WWW-Authenticate", "NTLM")
		w.Header().Add("WWW-Authenticate", "Negotiate")
		w.WriteHeader(http.StatusUnauthorized)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.leaf(t, "fe01.corp.example.com", "webext.example.com")}}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	alive := fastMonitor(MonitorHTTPS, portOf(ln))
	alive.CA = ca.pemFile
	alive.AuthAlive = true
	strict := alive
	strict.AuthAlive = false
	strict.Host = "webext.example.com"
	addr := netip.MustParseAddr("127.0.0.6")
	c := New(Options{})
	if err := c.Update([]Target{
		{Pool: "alive", Member: "fe01.corp.example.com", Addr: addr},
		{Pool: "strict", Member: "fe01.corp.example.com", Addr: addr},
	}, map[string]Monitor{"alive": alive, "strict": strict}); err != nil {
		t.Fatal(err)
	}
	events := run(t, c)
	got := map[string]Event{}
	timeout := time.After(deadline)
	for len(got) < 2 {
		select {
		case ev := <-events:
			if _, ok := got[ev.Pool]; !ok {
				got[ev.Pool] = ev
			}
		case <-timeout:
			t.Fatalf("events within %s: %+v", deadline, got)
		}
	}
	if got["alive"].State != StateUp {
		t.Errorf("auth_alive: first change %+v, want up on 401", got["alive"])
	}
	if ev := got["strict"]; ev.State != StateDown || !strings.Contains(ev.Reason, "401") || !strings.Contains(ev.Reason, "auth_alive") {
		t.Errorf("without auth_alive: first change %+v, want down naming 401 and auth_alive", ev)
	}
	for host, sni := range map[string]string{"fe01.corp.example.com": "fe01.corp.example.com", "webext.example.com": "webext.example.com"} {
		if v, ok := hosts.Load(host); !ok || v != sni {
			t.Errorf("request with Host %s: seen %v (SNI %v), want SNI = Host", host, ok, v)
		}
	}
}

func TestUpdateKeepsState(t *testing.T) {
	a := listen(t, "127.0.0.7")
	serveTCP(a)
	b := listen(t, "127.0.0.8")
	serveTCP(b)
	mons := map[string]Monitor{"fe": fastMonitor(MonitorTCP, portOf(a))}
	other := map[string]Monitor{"fe": mons["fe"], "be": fastMonitor(MonitorTCP, portOf(b))}
	fe01 := Target{Pool: "fe", Member: "fe01", Addr: netip.MustParseAddr("127.0.0.7")}
	// fe03 answers too, but is disabled.
	fe03 := Target{Pool: "fe", Member: "fe03", Addr: netip.MustParseAddr("127.0.0.7"), Disabled: true}
	be01 := Target{Pool: "be", Member: "be01", Addr: netip.MustParseAddr("127.0.0.8")}

	var mu sync.Mutex
	var all []Event
	c := New(Options{OnChange: func(ev Event) {
		mu.Lock()
		all = append(all, ev)
		mu.Unlock()
	}})
	if err := c.Update([]Target{fe01, fe03}, mons); err != nil {
		t.Fatal(err)
	}
	events := run(t, c)
	waitEvent(t, events, "fe01", StateUp)
	if s := status(t, c, "fe03"); s.State != StateDisabled || s.Checks != 0 {
		t.Fatalf("disabled member status %+v, want disabled and never checked", s)
	}
	before := status(t, c, "fe01")

	// A bad update changes nothing.
	bad := map[string]Monitor{"fe": mons["fe"], "be": {Type: MonitorTCP}}
	if err := c.Update([]Target{fe01, be01}, bad); !errors.Is(err, ErrMonitorPort) {
		t.Fatalf("update with a monitor without port: %v, want ErrMonitorPort", err)
	}
	if err := c.Update([]Target{fe01, fe01}, mons); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("update with a member twice: %v, want ErrDuplicate", err)
	}
	if n := len(c.Snapshot()); n != 2 {
		t.Fatalf("after failed updates: %d members, want 2", n)
	}

	// Adding a pool keeps fe01 as it is.
	if err := c.Update([]Target{fe01, fe03, be01}, other); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, "be01", StateUp)
	after := status(t, c, "fe01")
	if after.State != StateUp || !after.LastChange.Equal(before.LastChange) || after.Checks < before.Checks {
		t.Fatalf("fe01 across the update: before %+v, after %+v", before, after)
	}

	// Enabling fe03 starts it from unknown; disabling fe01 drains it.
	fe03.Disabled = false
	fe01.Disabled = true
	if err := c.Update([]Target{fe01, fe03, be01}, other); err != nil {
		t.Fatal(err)
	}
	if ev := waitEvent(t, events, "fe01", StateDisabled); ev.Up || ev.Prev != StateUp {
		t.Fatalf("disable event %+v", ev)
	}
	waitEvent(t, events, "fe03", StateUp)
	if got := c.Up("fe"); len(got) != 1 || got[0].Member != "fe03" {
		t.Fatalf("Up(fe) = %+v, want fe03 only", got)
	}

	// Removing fe01 reports it once and forgets it.
	if err := c.Update([]Target{fe03, be01}, other); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, events, "fe01", StateRemoved)
	for _, s := range c.Snapshot() {
		if s.Member == "fe01" {
			t.Fatalf("removed member still in snapshot: %+v", s)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	var fe01Changes []State
	for _, ev := range all {
		if ev.Member == "fe01" {
			fe01Changes = append(fe01Changes, ev.State)
		}
	}
	want := []State{StateUp, StateDisabled, StateRemoved}
	if strings.Join(states(fe01Changes), ",") != strings.Join(states(want), ",") {
		t.Fatalf("fe01 changes %v, want %v (no change from the updates that kept it)", fe01Changes, want)
	}
}

func states(s []State) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = string(v)
	}
	return out
}

func TestNoMonitorIsUp(t *testing.T) {
	c := New(Options{})
	if err := c.Update([]Target{{Pool: "p", Member: "10.0.0.1", Addr: netip.MustParseAddr("127.0.0.9")}}, nil); err != nil {
		t.Fatal(err)
	}
	if s := status(t, c, "10.0.0.1"); s.State != StateUp || s.Monitor != "none" {
		t.Fatalf("member of a pool without monitor: %+v, want up", s)
	}
	if err := c.Update([]Target{{Pool: "p", Member: "x", Addr: netip.MustParseAddr("127.0.0.9")}},
		map[string]Monitor{"p": {Type: "icmp", Port: 1}}); !errors.Is(err, ErrMonitorType) {
		t.Fatalf("unknown monitor type: %v", err)
	}
	if err := c.Update([]Target{{Pool: "p", Member: "x"}}, nil); !errors.Is(err, ErrInvalidAddr) {
		t.Fatalf("member without address: %v", err)
	}
	mon := fastMonitor(MonitorTLS, 4443)
	mon.CA = filepath.Join(t.TempDir(), "missing.pem")
	if err := c.Update([]Target{{Pool: "p", Member: "x", Addr: netip.MustParseAddr("127.0.0.9")}},
		map[string]Monitor{"p": mon}); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("missing CA file: %v, want an error naming the file", err)
	}
}

func TestMetrics(t *testing.T) {
	ln := listen(t, "127.0.0.10")
	serveTCP(ln)
	dead := listen(t, "127.0.0.10")
	deadPort := portOf(dead)
	dead.Close()
	c := New(Options{})
	if err := c.Update([]Target{
		{Pool: "fe", Member: "fe01", Addr: netip.MustParseAddr("127.0.0.10")},
		{Pool: "gone", Member: "fe02", Addr: netip.MustParseAddr("127.0.0.10")},
		{Pool: "fe", Member: "fe03", Addr: netip.MustParseAddr("127.0.0.10"), Disabled: true},
	}, map[string]Monitor{
		"fe":   fastMonitor(MonitorTCP, portOf(ln)),
		"gone": fastMonitor(MonitorTCP, deadPort),
	}); err != nil {
		t.Fatal(err)
	}
	events := run(t, c)
	waitEvent(t, events, "fe01", StateUp)
	waitEvent(t, events, "fe02", StateDown)
	want := `
# HELP edgeproxy_member_up Whether the pool member takes new traffic (1) or not (0: down, unknown or disabled).
# TYPE edgeproxy_member_up gauge
edgeproxy_member_up{address="127.0.0.10",member="fe01",pool="fe"} 1
edgeproxy_member_up{address="127.0.0.10",member="fe02",pool="gone"} 0
edgeproxy_member_up{address="127.0.0.10",member="fe03",pool="fe"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "edgeproxy_member_up"); err != nil {
		t.Fatal(err)
	}
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) != 0 {
		t.Fatalf("lint: %v %+v", err, problems)
	}
	if n := testutil.CollectAndCount(c, "edgeproxy_monitor_checks_total"); n != 6 {
		t.Fatalf("%d check series, want 6 (success and failure per member)", n)
	}
	s := status(t, c, "fe02")
	if s.Failures < 3 {
		t.Fatalf("fe02 failures %d, want at least fall", s.Failures)
	}
}
