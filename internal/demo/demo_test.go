package demo

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// testSession is a session over a fresh lab with certificates in a
// temporary directory, without the daemon.
func testSession(t *testing.T, lab *testnet.Lab) *session {
	t.Helper()
	s := &session{dir: t.TempDir(), lab: lab, pinPath: pinBase + "test", out: &bytes.Buffer{}}
	if err := s.issueCertificates(); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConfigAccepted(t *testing.T) {
	lab := testnet.Plan(testnet.Options{Members: len(memberNames)})
	s := testSession(t, lab)
	text := s.configText()
	cfg, err := config.Parse(filepath.Join(s.dir, "edgeproxy.yaml"), text)
	if err != nil {
		t.Fatalf("config.Parse rejects the demo configuration: %v\n%s", err, text)
	}
	modes := map[string]config.Mode{}
	for _, v := range cfg.Virtuals {
		modes[v.Listen.String()] = v.Mode
	}
	want := map[string]config.Mode{
		"198.18.0.20:443": config.ModeFastL4, "198.18.0.20:80": config.ModeFastL4,
		"198.18.0.10:443": config.ModeHTTPS, "198.18.0.10:80": config.ModeHTTP,
	}
	for l, m := range want {
		if modes[l] != m {
			t.Errorf("virtual %s: mode %q, want %q", l, modes[l], m)
		}
	}
	p := cfg.Pools[poolName]
	if p == nil || len(p.Members) != 2 {
		t.Fatalf("pool %s: %+v", poolName, p)
	}
	if p.Monitor.Type != config.MonitorTLS || p.Monitor.Port != 4443 || p.Monitor.Fall != 1 || p.Monitor.Rise != 1 {
		t.Errorf("monitor %+v: want tls on 4443 with rise 1, fall 1", p.Monitor)
	}
	for i, n := range memberNames {
		if a := cfg.Network.Hosts[n]; a != lab.Members4[i] {
			t.Errorf("hosts[%s] = %s, want %s", n, a, lab.Members4[i])
		}
	}
	if cfg.FastPath.PinPath != s.pinPath {
		t.Errorf("pin_path %s, want %s", cfg.FastPath.PinPath, s.pinPath)
	}
	for _, w := range cfg.Warnings {
		t.Logf("warning: %v", w)
	}
}

func TestMetricsForwarded(t *testing.T) {
	text := []byte(`# HELP edgeproxy_xdp_packets_total Packets seen by the XDP program by verdict.
# TYPE edgeproxy_xdp_packets_total counter
edgeproxy_xdp_packets_total{interface="ext0",reason="fwd_new"} 12
edgeproxy_xdp_packets_total{interface="ext0",reason="fwd_client"} 30
edgeproxy_xdp_packets_total{interface="int0",reason="fwd_server"} 41
edgeproxy_xdp_packets_total{interface="ext0",reason="pass_not_service"} 7
edgeproxy_xdp_packets_total{interface="ext0",reason="drop_no_member"} 0
edgeproxy_xdp_bytes_total{interface="ext0",reason="fwd_new"} 999
edgeproxy_l7_requests_total{virtual="sfb-web"} 10
`)
	fwd, lines := forwarded(parseMetrics(text))
	if fwd != 83 {
		t.Errorf("forwarded = %g, want 83", fwd)
	}
	if len(lines) != 4 || !strings.Contains(lines[3], "pass_not_service") {
		t.Errorf("lines = %q: want the three forwarding counters then the pass counter", lines)
	}
	if fwd, _ := forwarded(parseMetrics([]byte("edgeproxy_l7_requests_total 3\n"))); fwd != 0 {
		t.Errorf("forwarded without XDP counters = %g", fwd)
	}
}

func TestReportLastLine(t *testing.T) {
	var out bytes.Buffer
	s := &session{out: &out}
	rep := &Report{Results: []Result{
		{Name: StepFastTLS, Expected: "e", Got: "200 from fe01", Pass: true},
		{Name: StepDenied, Expected: "e", Got: "/cscp 200", Pass: false},
	}}
	for i, r := range rep.Results {
		printResult(&out, i+1, r)
	}
	s.printSummary(rep, false)
	lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n")
	if last := lines[len(lines)-1]; last != "1 passed, 1 failed" {
		t.Errorf("last line %q, want %q", last, "1 passed, 1 failed")
	}
	for _, w := range []string{"PASS  " + StepFastTLS, "FAIL  " + StepDenied, "got       /cscp 200"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("report lacks %q:\n%s", w, out.String())
		}
	}
}

func TestTeardownRejectsOtherNames(t *testing.T) {
	for _, id := range []string{"", "ept-123456", "epd-../../x", "epd-1234567", "epd-ABCDEF"} {
		if err := Teardown(id, &bytes.Buffer{}); !errors.Is(err, ErrLabID) {
			t.Errorf("Teardown(%q) = %v, want ErrLabID", id, err)
		}
	}
}

// TestPrivilegedMembers checks the front ends the demo runs: the
// External Web Site on 4443/8080 with external links, the internal site
// on 443 with internal links, the headers that say who answered, the
// management counter, and a stop and restart on the same addresses.
func TestPrivilegedMembers(t *testing.T) {
	testnet.RequireRoot(t)
	lab := testnet.New(t, testnet.Options{Members: 2})
	s := testSession(t, lab)
	if err := s.startMembers(lab.Backend.Listen); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, m := range s.members {
			m.stop()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := s.members[0]
	path := "/Autodiscover/AutodiscoverService.svc/root"
	for _, c := range []struct {
		port  uint16
		tls   bool
		site  string
		loc   string
		links string
	}{
		{portExternalTLS, true, "external", "External", "webext.example.com"},
		{portExternalHTTP, false, "external", "External", "webext.example.com"},
		{portInternalTLS, true, "internal", "Internal", m.name},
	} {
		scheme, tc := "http", s.internalTLS("webext.example.com")
		if c.tls {
			scheme = "https"
		} else {
			tc = nil
		}
		h, err := s.get(ctx, lab.Proxy, ap(m.addr, c.port), scheme+"://webext.example.com"+path, tc, nil)
		if err != nil {
			t.Fatalf("port %d: %v", c.port, err)
		}
		loc, hosts, err := linkHosts(h.body)
		if err != nil {
			t.Fatalf("port %d: %v", c.port, err)
		}
		if h.member != "fe01" || h.port != strconv.Itoa(int(c.port)) || h.site != c.site || h.peerIP() != lab.IntAddr4.String() {
			t.Errorf("port %d: member %q port %q site %q peer %q; want fe01, %d, %s, %s",
				c.port, h.member, h.port, h.site, h.peer, c.port, c.site, lab.IntAddr4)
		}
		if loc != c.loc || len(hosts) != 1 || hosts[0] != c.links {
			t.Errorf("port %d: %s links on %v, want %s on %s", c.port, loc, hosts, c.loc, c.links)
		}
	}
	h, err := s.get(ctx, lab.Proxy, ap(m.addr, portExternalTLS), "https://webext.example.com/CSCP/", s.internalTLS("webext.example.com"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if total, _ := s.managementHits(); h.status != http.StatusOK || total != 1 {
		t.Errorf("/CSCP/ straight to a member: status %d, management hits %d; want 200 and 1", h.status, total)
	}

	m.stop()
	_, err = lab.Proxy.DialContext(ctx, "tcp", ap(m.addr, portExternalTLS).String())
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Fatalf("dial a stopped member: %v, want connection refused", err)
	}
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
	if h, err := s.get(ctx, lab.Proxy, ap(m.addr, portExternalHTTP), "http://webext.example.com/", nil, nil); err != nil || h.member != "fe01" {
		t.Fatalf("restarted member: %v %+v", err, h)
	}
}

// buildEdgeproxy builds the binary the demo re-executes as the daemon.
func buildEdgeproxy(t *testing.T) string {
	t.Helper()
	testnet.RequireRoot(t, "curl", "openssl")
	return labtest.Binary(t)
}

func TestMain(m *testing.M) { labtest.Main(m) }

// runDemo runs `edgeproxy demo args...` and returns its output and the
// lab id from its first line.
func runDemo(t *testing.T, exe string, args ...string) (string, string) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, append([]string{"demo"}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	// On timeout, stop it as Ctrl-C would, so that it tears its lab down.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = time.Minute
	err := cmd.Run()
	t.Logf("edgeproxy demo %s:\n%s", strings.Join(args, " "), out.String())
	text := out.String()
	id := ""
	if first, _, _ := strings.Cut(text, "\n"); strings.HasPrefix(first, "edgeproxy demo: lab ") {
		id = strings.TrimPrefix(first, "edgeproxy demo: lab ")
	}
	if err != nil {
		t.Fatalf("edgeproxy demo %s: %v", strings.Join(args, " "), err)
	}
	if id == "" {
		t.Fatalf("no lab id in the first line of the report")
	}
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	want := strconv.Itoa(len(StepNames())) + " passed, 0 failed"
	if last := lines[len(lines)-1]; last != want {
		t.Errorf("last line %q, want %q", last, want)
	}
	for _, n := range StepNames() {
		if !strings.Contains(text, "PASS  "+n+"  (") {
			t.Errorf("step %q did not pass", n)
		}
	}
	return text, id
}

func labGone(t *testing.T, id string) {
	t.Helper()
	nsList, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(nsList), id) {
		t.Errorf("namespaces of %s left behind:\n%s", id, nsList)
	}
	if _, err := os.Stat(filepath.Join(StateBase, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory of %s left behind: %v", id, err)
	}
}

// TestPrivilegedDemo runs `edgeproxy demo` end to end, as `make demo`
// does: every step passes and nothing is left behind.
func TestPrivilegedDemo(t *testing.T) {
	exe := buildEdgeproxy(t)
	_, id := runDemo(t, exe)
	labGone(t, id)
}

// TestPrivilegedDemoKeep leaves the lab running, uses it as the printed
// instructions say, then tears it down by id.
func TestPrivilegedDemoKeep(t *testing.T) {
	exe := buildEdgeproxy(t)
	text, id := runDemo(t, exe, "-keep")
	t.Cleanup(func() { _ = Teardown(id, &bytes.Buffer{}) })
	if !strings.Contains(text, exe+" demo -teardown "+id) {
		t.Errorf("the report does not say how to tear the lab down")
	}
	dir := filepath.Join(StateBase, id)
	out, err := exec.Command("ip", "netns", "exec", id+"-client", "curl", "-sS", "-i", "--max-time", "10",
		"--resolve", "webext.example.com:443:198.18.0.10", "--cacert", filepath.Join(dir, "tls", "public-root-ca.pem"),
		"https://webext.example.com/Autodiscover/AutodiscoverService.svc/root").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "200") || !strings.Contains(string(out), hdrMember) {
		t.Errorf("curl through the kept lab: %v\n%s", err, out)
	}
	var td bytes.Buffer
	if err := Teardown(id, &td); err != nil {
		t.Fatalf("teardown: %v\n%s", err, td.String())
	}
	t.Logf("teardown:\n%s", td.String())
	for _, w := range []string{"stopped daemon", "stopped members", "lab " + id + " torn down"} {
		if !strings.Contains(td.String(), w) {
			t.Errorf("teardown output lacks %q", w)
		}
	}
	labGone(t, id)
}
