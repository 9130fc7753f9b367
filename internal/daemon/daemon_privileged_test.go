package daemon_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// spread makes n requests and returns which members answered.
func spread(t *testing.T, c *http.Client, url string, n int, wantPeer netip.Addr) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for i := 0; i < n; i++ {
		e, err := echo(c, url)
		if err != nil {
			t.Fatal(err)
		}
		seen[e.FE]++
		if wantPeer.IsValid() {
			host, _, _ := net.SplitHostPort(e.RemoteAddr)
			if host != wantPeer.String() {
				t.Fatalf("member %s saw the client as %s, want the SNAT address %s", e.FE, host, wantPeer)
			}
		}
	}
	return seen
}

// TestPrivilegedDaemonFailover: a member that fails its monitor gets no
// new fastl4 flow and no new L7 request; it takes traffic again when it
// recovers.
func TestPrivilegedDaemonFailover(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	l7 := d.client(netip.AddrPortFrom(d.lab.VIP4, 443), false)
	l4 := d.client(netip.AddrPortFrom(d.vip, 443), false)
	const url = "https://webext.example.com/echo"
	fe1, fe2 := d.members[0].name, d.members[1].name

	for name, c := range map[string]*http.Client{"L7": l7, "fastl4": l4} {
		peer := d.lab.IntAddr4 // both paths reach members from the internal NIC
		if seen := spread(t, c, url, 24, peer); seen[fe1] == 0 || seen[fe2] == 0 {
			t.Fatalf("%s: both members healthy but traffic reached only %v", name, seen)
		}
	}

	d.members[0].stop()
	d.waitMember(t, "sfb-fe", fe1, "down")
	// What an operator sees: `edgeproxy status` on the proxy host.
	out := d.lab.Proxy.Run(t, labtest.Binary(t), "status")
	for _, want := range []string{"sfb-web-l4", "sfb-web", fe1, "down", fe2, "up"} {
		if !strings.Contains(strings.ToLower(out), want) {
			t.Fatalf("edgeproxy status lacks %q:\n%s", want, out)
		}
	}
	for name, c := range map[string]*http.Client{"L7": l7, "fastl4": l4} {
		if seen := spread(t, c, url, 16, netip.Addr{}); seen[fe1] != 0 || seen[fe2] != 16 {
			t.Fatalf("%s: %s down, yet new requests went to %v", name, fe1, seen)
		}
	}

	d.members[0].start(t, d.lab)
	d.waitMember(t, "sfb-fe", fe1, "up")
	for name, c := range map[string]*http.Client{"L7": l7, "fastl4": l4} {
		if seen := spread(t, c, url, 24, netip.Addr{}); seen[fe1] == 0 {
			t.Fatalf("%s: %s recovered but gets no traffic: %v", name, fe1, seen)
		}
	}
}

// loadResult counts a bounded load's requests and failures.
type loadResult struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	firstErr   error
}

func (r *loadResult) add(err error) {
	if err == nil {
		r.ok.Add(1)
		return
	}
	r.failed.Add(1)
	r.mu.Lock()
	if r.firstErr == nil {
		r.firstErr = err
	}
	r.mu.Unlock()
}

// TestPrivilegedDaemonReloadUnderLoad: reloads during a steady load of
// L7 requests (kept-alive and new connections) and new fastl4 flows fail
// no request, and the new configuration serves.
func TestPrivilegedDaemonReloadUnderLoad(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	const url = "https://webext.example.com/echo"
	clients := []*http.Client{
		d.client(netip.AddrPortFrom(d.lab.VIP4, 443), true),
		d.client(netip.AddrPortFrom(d.lab.VIP4, 443), false),
		d.client(netip.AddrPortFrom(d.vip, 443), false),
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var res loadResult
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20000 && ctx.Err() == nil; i++ {
				_, err := echo(c, url)
				if ctx.Err() != nil {
					return
				}
				res.add(err)
			}
		}()
	}

	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	loaded := st.Loaded
	for i, p := range []lab.Skype{
		withExtra(d.params, []string{"new.example.com"}, 700*time.Millisecond),
		withExtra(d.params, nil, 500*time.Millisecond),
		withExtra(d.params, []string{"new.example.com"}, 600*time.Millisecond),
	} {
		time.Sleep(700 * time.Millisecond)
		d.writeConfig(t, p)
		d.signal(t, syscall.SIGHUP)
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, err := d.Status()
			if err == nil && st.Loaded.After(loaded) {
				loaded = st.Loaded
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("reload %d not applied in 20s", i+1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(700 * time.Millisecond)
	cancel()
	wg.Wait()
	if res.failed.Load() != 0 || res.ok.Load() == 0 {
		t.Fatalf("under reloads: %d requests ok, %d failed; first error: %v", res.ok.Load(), res.failed.Load(), res.firstErr)
	}
	t.Logf("%d requests, none failed, across 3 reloads", res.ok.Load())
	if e, err := echo(clients[0], "https://new.example.com/echo"); err != nil || e.Host != "new.example.com" {
		t.Fatalf("site added by reload not served: %v %+v", err, e)
	}
}

// withExtra returns s with extra names on the https virtual and the
// sfb-fe monitor's interval.
func withExtra(s lab.Skype, extra []string, interval time.Duration) lab.Skype {
	l7 := *s.L7
	l7.ExtraHosts = extra
	s.L7, s.Monitor.Interval = &l7, interval
	return s
}

// TestPrivilegedDaemonBadReload: a broken file is refused with its errors
// by `edgeproxy reload`, and the daemon, signalled anyway, keeps serving
// the old configuration.
func TestPrivilegedDaemonBadReload(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	before, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(good), "    pool: sfb-fe\n    port: 4443\n    snat: automap", "    pool: sfb-fe\n    port: 4443\n    snat: automap\n    idle_timout: 10s", 1)
	if err := os.WriteFile(d.cfgPath, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(labtest.Binary(t), "reload", "-config", d.cfgPath, "-pid-file", filepath.Join(d.dir, "edgeproxy.pid")).CombinedOutput()
	line := fmt.Sprintf(".yaml:%d:", strings.Count(bad[:strings.Index(bad, "idle_timout")], "\n")+1)
	if err == nil || !strings.Contains(string(out), "idle_timout") || !strings.Contains(string(out), line) {
		t.Fatalf("edgeproxy reload accepted a bad file or did not name the key and line: %v\n%s", err, out)
	}
	d.signal(t, syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.Log.String(), "reload rejected") {
		if time.Now().After(deadline) {
			t.Fatal("daemon did not report the rejected reload")
		}
		time.Sleep(50 * time.Millisecond)
	}
	after, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !after.Loaded.Equal(before.Loaded) {
		t.Fatalf("bad file applied: loaded %v → %v", before.Loaded, after.Loaded)
	}
	for _, addr := range []netip.AddrPort{netip.AddrPortFrom(d.lab.VIP4, 443), netip.AddrPortFrom(d.vip, 443)} {
		if _, err := echo(d.client(addr, false), "https://webext.example.com/echo"); err != nil {
			t.Fatalf("after a rejected reload, %s: %v", addr, err)
		}
	}
}

// TestPrivilegedDaemonRestartKeepsFlows: kill -9 and a restart in the
// middle of an iperf3 transfer through a fastl4 virtual do not break it.
func TestPrivilegedDaemonRestartKeepsFlows(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	srv := d.lab.Backend.Command(context.Background(), "iperf3", "-s", "-B", d.lab.Members4[0].String(), "-p", "5201")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	d.start(t)
	d.waitMember(t, "bulk", d.members[0].name, "up")

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cli := d.lab.Client.Command(ctx, "iperf3", "-c", d.vip.String(), "-p", "5201", "-t", "6", "-i", "1", "-J")
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := cli.Output()
		done <- result{out, err}
	}()
	time.Sleep(2 * time.Second)
	d.Kill()
	time.Sleep(500 * time.Millisecond)
	d.start(t)
	r := <-done
	if r.err != nil {
		t.Fatalf("iperf3 through the fastl4 virtual failed across a restart: %v\n%s", r.err, r.out)
	}
	var rep iperfIntervals
	if err := json.Unmarshal(r.out, &rep); err != nil {
		t.Fatalf("iperf3 output: %v\n%s", err, r.out)
	}
	if len(rep.Intervals) < 5 {
		t.Fatalf("iperf3 reported %d intervals, want 6", len(rep.Intervals))
	}
	for i, iv := range rep.Intervals {
		if iv.Sum.Bytes == 0 {
			t.Fatalf("interval %d moved no data: the flow stalled across the restart", i)
		}
	}
	if rep.End.SumReceived.Bytes == 0 {
		t.Fatal("the member received nothing")
	}
}

// TestPrivilegedDaemonDrainAndMetrics: /metrics lints clean, and SIGTERM
// lets an in-flight long poll finish while leaving the XDP state pinned.
func TestPrivilegedDaemonDrainAndMetrics(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	// A request through each path so every family has samples.
	c := d.client(netip.AddrPortFrom(d.lab.VIP4, 443), false)
	for _, addr := range []netip.AddrPort{netip.AddrPortFrom(d.lab.VIP4, 443), netip.AddrPortFrom(d.vip, 443)} {
		if _, err := echo(d.client(addr, false), "https://webext.example.com/echo"); err != nil {
			t.Fatal(err)
		}
	}
	text := d.metrics(t)
	for _, name := range []string{"edgeproxy_build_info", "edgeproxy_member_up", "edgeproxy_http_requests_total", "edgeproxy_xdp_", "edgeproxy_netcfg_"} {
		if !strings.Contains(text, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metrics lint: %s: %s", p.Metric, p.Text)
	}

	done := make(chan error, 1)
	go func() {
		resp, err := c.Get("https://webext.example.com/longpoll?wait=2s")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = &statusError{resp.Status}
			}
		}
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	d.signal(t, syscall.SIGTERM)
	if err := <-done; err != nil {
		t.Fatalf("in-flight request cut by SIGTERM instead of drained: %v", err)
	}
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, d.Log.String())
	}
	if ents, err := os.ReadDir(d.pin); err != nil || len(ents) == 0 {
		t.Fatalf("pinned XDP state removed by a plain SIGTERM (%v, %d entries)", err, len(ents))
	}
}

type statusError struct{ s string }

func (e *statusError) Error() string { return "status " + e.s }
