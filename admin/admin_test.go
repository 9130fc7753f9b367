package admin

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bgp"
	"github.com/edgeproxy/edgeproxy/health"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

const deadline = 20 * time.Second

var quiet = slog.New(slog.DiscardHandler)

// start serves s until the test ends and returns its base URL.
func start(t *testing.T, s *Server) string {
	t.Helper()
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + addr.String()
}

func get(t *testing.T, method, url string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

// daemon is what the daemon wires: one registry with the health checker
// on it, a readiness func and a status func.
type daemon struct {
	checker  *health.Checker
	notReady atomic.Pointer[error]
	server   *Server
	url      string
}

func newDaemon(t *testing.T, opts Options) *daemon {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.11:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	d := &daemon{checker: health.New(health.Options{Logger: quiet})}
	mon := health.Monitor{Type: health.MonitorTCP, Port: uint16(ln.Addr().(*net.TCPAddr).Port),
		Interval: 20 * time.Millisecond}
	if err := d.checker.Update([]health.Target{{Pool: "sfb-fe", Member: "fe01.corp.example.com", Addr: netip.MustParseAddr("127.0.0.11")}},
		map[string]health.Monitor{"sfb-fe": mon}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	events := d.checker.Subscribe(ctx)
	done := make(chan struct{})
	go func() { d.checker.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case ev := <-events:
		if !ev.Up {
			t.Fatalf("member did not come up: %+v", ev)
		}
	case <-time.After(deadline):
		t.Fatal("member did not come up")
	}

	reg := NewRegistry("1.2.3-test")
	reg.MustRegister(d.checker)
	started := time.Now().Add(-time.Hour)
	opts.Listen = "127.0.0.1:0"
	opts.Logger = quiet
	opts.Registry = reg
	opts.Version = "1.2.3-test"
	opts.Ready = func() error {
		if p := d.notReady.Load(); p != nil {
			return *p
		}
		return nil
	}
	opts.Status = func(context.Context) (*Status, error) {
		members := MembersFromHealth(d.checker.Snapshot())
		return &Status{
			Version: "1.2.3-test", Started: started, Time: time.Now(), Ready: true,
			Virtuals: []Virtual{{Name: "sfb-web-l4", Mode: "fastl4", Listen: "203.0.113.20:443",
				Pools: []string{"sfb-fe"}, Port: 4443, MembersUp: 1, Members: 1, Flows: 7}},
			Members: members,
		}, nil
	}
	d.server = New(opts)
	d.url = start(t, d.server)
	return d
}

func TestEndpoints(t *testing.T) {
	d := newDaemon(t, Options{})

	code, hdr, body := get(t, "GET", d.url+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	for _, want := range []string{
		`edgeproxy_build_info{goversion="go`,
		`version="1.2.3-test"} 1`,
		`edgeproxy_member_up{address="127.0.0.11",member="fe01.corp.example.com",pool="sfb-fe"} 1`,
		`edgeproxy_monitor_checks_total{member="fe01.corp.example.com",pool="sfb-fe",result="success"}`,
		"go_goroutines ",
		"process_open_fds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("/metrics Content-Type %q", ct)
	}
	// Lint what a scraper gets, and the registry itself.
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil || len(problems) != 0 {
		t.Errorf("lint of /metrics: %v %+v", err, problems)
	}
	problems, err = testutil.GatherAndLint(d.server.Registry())
	if err != nil || len(problems) != 0 {
		t.Errorf("lint of the registry: %v %+v", err, problems)
	}

	if code, _, body := get(t, "GET", d.url+"/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz ready: %d %q", code, body)
	}
	notReady := errors.New("fast path not attached to ext0")
	d.notReady.Store(&notReady)
	if code, _, body := get(t, "GET", d.url+"/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "fast path not attached to ext0") {
		t.Errorf("/healthz not ready: %d %q", code, body)
	}
	d.notReady.Store(nil)
	if code, _, _ := get(t, "HEAD", d.url+"/healthz"); code != http.StatusOK {
		t.Errorf("HEAD /healthz: %d", code)
	}

	st, raw, err := FetchStatus(context.Background(), strings.TrimPrefix(d.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 1 || st.Members[0].State != "up" || st.Members[0].Address != "127.0.0.11" || st.Members[0].Monitor == "" {
		t.Fatalf("status members %+v (raw %s)", st.Members, raw)
	}
	if len(st.Virtuals) != 1 || st.Virtuals[0].Flows != 7 || st.Version != "1.2.3-test" {
		t.Fatalf("status %+v", st)
	}
	if !strings.Contains(string(raw), `"last_change"`) {
		t.Errorf("raw status lacks snake_case keys: %s", raw)
	}

	if code, _, body := get(t, "GET", d.url+"/"); code != http.StatusOK || !strings.Contains(body, "/metrics") {
		t.Errorf("GET /: %d %q", code, body)
	}
}

func TestReadOnlyAndUnknownPaths(t *testing.T) {
	d := newDaemon(t, Options{})
	for _, path := range []string{"/metrics", "/healthz", "/status"} {
		for _, method := range []string{"POST", "PUT", "DELETE", "PATCH"} {
			code, hdr, _ := get(t, method, d.url+path)
			if code != http.StatusMethodNotAllowed {
				t.Errorf("%s %s: %d, want 405", method, path, code)
			}
			if allow := hdr.Get("Allow"); !strings.Contains(allow, "GET") || strings.Contains(allow, "POST") {
				t.Errorf("%s %s: Allow %q", method, path, allow)
			}
		}
	}
	for _, path := range []string{"/reload", "/debug/pprof/", "/debug/pprof/cmdline", "/metrics/x", "/statusx"} {
		if code, _, _ := get(t, "GET", d.url+path); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, code)
		}
	}

	// curl, as an operator would poke it.
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl not installed")
		}
		t.Skip("curl not installed")
	}
	out, err := exec.Command(curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--max-time", "10", d.url+"/status").Output()
	if err != nil || string(out) != "405" {
		t.Errorf("curl -X POST /status: %q %v, want 405", out, err)
	}
	out, err = exec.Command(curl, "-sf", "--max-time", "10", d.url+"/healthz").Output()
	if err != nil || string(out) != "ok\n" {
		t.Errorf("curl /healthz: %q %v", out, err)
	}
}

func TestPprofOnlyWhenAsked(t *testing.T) {
	d := newDaemon(t, Options{Pprof: true})
	if code, _, body := get(t, "GET", d.url+"/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/ with Pprof: %d", code)
	}
	if code, _, _ := get(t, "GET", d.url+"/debug/pprof/cmdline"); code != http.StatusOK {
		t.Errorf("/debug/pprof/cmdline with Pprof: %d", code)
	}
}

func TestStatusErrors(t *testing.T) {
	s := New(Options{Logger: quiet, Listen: "127.0.0.1:0", Status: func(context.Context) (*Status, error) {
		return nil, errors.New("flow table not readable")
	}})
	url := start(t, s)
	_, _, err := FetchStatus(context.Background(), url)
	if !errors.Is(err, ErrStatus) || !strings.Contains(err.Error(), "flow table not readable") {
		t.Fatalf("FetchStatus on a failing status: %v", err)
	}

	none := New(Options{Logger: quiet, Listen: "127.0.0.1:0"})
	if code, _, _ := get(t, "GET", start(t, none)+"/status"); code != http.StatusServiceUnavailable {
		t.Errorf("/status without a status func: %d, want 503", code)
	}

	// Nothing listening: the error tells what to check.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := busy.Addr().String()
	clash := New(Options{Logger: quiet, Listen: addr})
	if _, err := clash.Listen(); err == nil || !strings.Contains(err.Error(), "admin.listen") {
		t.Errorf("listen on a busy port: %v, want an error naming admin.listen", err)
	}
	busy.Close()
	_, _, err = FetchStatus(context.Background(), addr)
	if err == nil || !strings.Contains(err.Error(), "is edgeproxy running") {
		t.Errorf("FetchStatus with nothing listening: %v", err)
	}
}

func TestCloseStopsServing(t *testing.T) {
	s := New(Options{Logger: quiet, Listen: "127.0.0.1:0"})
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	if code, _, _ := get(t, "GET", "http://"+addr.String()+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after Close: %v", err)
		}
	case <-time.After(deadline):
		t.Fatal("Serve did not return after Close")
	}
	if c, err := net.Dial("tcp", addr.String()); err == nil {
		c.Close()
		t.Fatal("admin port still accepts after Close")
	}
	if err := s.Serve(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Close: %v, want ErrClosed", err)
	}
	if s.srv.ReadHeaderTimeout <= 0 || s.srv.ReadTimeout <= 0 || s.srv.WriteTimeout <= 0 || s.srv.IdleTimeout <= 0 {
		t.Fatalf("server without timeouts: %+v", s.srv)
	}
}

func TestWriteText(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	st := &Status{
		Version: "1.0.0", Started: now.Add(-3 * time.Hour), Time: now,
		Config: "/etc/edgeproxy/edgeproxy.yaml", Loaded: now.Add(-10 * time.Minute), Ready: true,
		Virtuals: []Virtual{
			{Name: "sfb-web-l4", Mode: "fastl4", Listen: "203.0.113.20:443", Pools: []string{"sfb-fe"}, Port: 4443, MembersUp: 1, Members: 2, Flows: 1234},
			{Name: "sfb-web", Mode: "https", Listen: "203.0.113.10:443", Pools: []string{"sfb-fe", "owas"}, MembersUp: 2, Members: 3, Connections: 12, Requests: 98765, Errors: 3},
		},
		Members: []Member{
			{Pool: "sfb-fe", Member: "fe01.corp.example.com", Address: "10.10.0.11", State: "up", Monitor: "tls:4443", LastChange: now.Add(-2 * time.Hour), Checks: 100},
			{Pool: "sfb-fe", Member: "fe02.corp.example.com", Address: "10.10.0.12", State: "down", Monitor: "tls:4443", LastChange: now.Add(-90 * time.Second),
				LastError: "connect to 10.10.0.12:4443: connection refused", LastErrorTime: now.Add(-5 * time.Second), Checks: 100, Failures: 20},
		},
		FastPath: &FastPath{Interfaces: []string{"ext0 (native)", "int0 (native)"}, Flows: 1234, MaxFlows: 262144},
	}
	var b strings.Builder
	if err := st.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `edgeproxy 1.0.0, up 3h0m0s, ready
config /etc/edgeproxy/edgeproxy.yaml, loaded 10m0s ago

VIRTUAL     MODE    LISTEN            POOL         UP   FLOWS  CONNS  REQUESTS  ERRORS
sfb-web-l4  fastl4  203.0.113.20:443  sfb-fe:4443  1/2  1234   -      -         0
sfb-web     https   203.0.113.10:443  sfb-fe,owas  2/3  -      12     98765     3

POOL    MEMBER                 ADDRESS     STATE  MONITOR   SINCE       CHECKS  FAILED  LAST ERROR
sfb-fe  fe01.corp.example.com  10.10.0.11  UP     tls:4443  2h0m0s ago  100     0       -
sfb-fe  fe02.corp.example.com  10.10.0.12  DOWN   tls:4443  1m30s ago   100     20      5s ago: connect to 10.10.0.12:4443: connection refused

fast path on ext0 (native), int0 (native): 1234 of 262144 flows
`
	if got := b.String(); got != want {
		t.Fatalf("WriteText:\n%s\nwant:\n%s", got, want)
	}

	st.Ready, st.Reason = false, "netcfg: int0 missing"
	b.Reset()
	if err := st.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if first, _, _ := strings.Cut(b.String(), "\n"); first != "edgeproxy 1.0.0, up 3h0m0s, NOT READY: netcfg: int0 missing" {
		t.Fatalf("first line when not ready: %q", first)
	}
}

// The text status lists the BGP sessions and why each VIP is or is not
// announced.
func TestWriteTextBGP(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := &Status{Version: "v", Started: now, Time: now, Ready: true, BGP: &bgp.Status{
		LocalAS: 65100, RouterID: "198.18.11.2",
		Sessions: []bgp.SessionStatus{{Neighbor: "198.18.11.1", AS: 65000, State: "established", BFD: "up"}},
		Routes: []bgp.RouteStatus{
			{Prefix: "198.18.100.10/32", Announced: true, Why: "announced: ready, every virtual on the VIP has a member up", Since: now.Add(-time.Minute)},
			{Prefix: "198.18.100.20/32", Why: "withdrawn: no member up for virtual bulk", Since: now.Add(-2 * time.Second)},
		},
	}}
	var b strings.Builder
	if err := st.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"BGP AS 65100 router id 198.18.11.2",
		"198.18.11.1  65000  ESTABLISHED  up",
		"198.18.100.10/32  1m0s ago  announced: ready",
		"198.18.100.20/32  2s ago    withdrawn: no member up for virtual bulk",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, b.String())
		}
	}
}
