package netcfg

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// logBuffer collects what a logger writes from several goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runReconciler applies spec, then runs a Reconciler for it until the
// test ends; the Host logs into the returned buffer.
func runReconciler(t *testing.T, h *Host, spec *Spec) (*Reconciler, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	h.log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, err := h.Apply(spec); err != nil {
		t.Fatal(err)
	}
	rec, err := NewReconciler(h, spec, ReconcilerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rec.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("reconciler: %v", err)
		}
	})
	return rec, logs
}

// checked waits until the reconciler has compared the host twice more:
// events before now have been seen.
func checked(t *testing.T, rec *Reconciler) {
	t.Helper()
	n := testutil.ToFloat64(rec.checks)
	eventually(t, "reconciler checks", func() bool {
		rec.Trigger()
		return testutil.ToFloat64(rec.checks) >= n+2
	})
}

func TestPrivilegedReloadAddingVIPsRemovesNone(t *testing.T) {
	t.Parallel()
	l, h := lab(t)
	spec := labSpec(l)
	rec, _ := runReconciler(t, h, spec)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mon logBuffer
	cmd := l.Proxy.Command(ctx, "ip", "monitor", "address")
	cmd.Stdout = &mon
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	// The monitor is listening once it shows a probe address.
	eventually(t, "ip monitor shows addresses", func() bool {
		_, _ = l.Proxy.Output("ip", "addr", "del", "198.18.0.250/32", "dev", "ext0")
		_, _ = l.Proxy.Output("ip", "addr", "add", "198.18.0.250/32", "dev", "ext0")
		return strings.Contains(mon.String(), "198.18.0.250")
	})

	next := labSpec(l)
	added := []string{"198.18.0.20", "198.18.0.21", "2001:db8:1::20"}
	for _, a := range added {
		next.VIPs = append(next.VIPs, netip.MustParseAddr(a))
	}
	// A reload: the network step applies, the reconciler gets the
	// compiled spec at the end.
	if _, err := h.Apply(next); err != nil {
		t.Fatal(err)
	}
	checked(t, rec)
	if err := rec.SetSpec(next); err != nil {
		t.Fatal(err)
	}
	checked(t, rec)
	for _, line := range strings.Split(mon.String(), "\n") {
		for _, a := range added {
			if strings.HasPrefix(line, "Deleted") && strings.Contains(line, " "+a+"/") {
				t.Errorf("a VIP the reload added was removed: %s", line)
			}
		}
	}
}

func TestPrivilegedRouteFightIsBounded(t *testing.T) {
	t.Parallel()
	l, h := lab(t)
	rec, logs := runReconciler(t, h, labSpec(l))

	// Another manager puts its own route to the members in place, ten
	// times a second for 10 s.
	end := time.Now().Add(10 * time.Second)
	for i := 0; i < 100 && time.Now().Before(end); i++ {
		l.Proxy.Run(t, "ip", "route", "replace", "198.19.1.0/24", "via", "198.19.0.99", "dev", "int0", "proto", "boot")
		time.Sleep(100 * time.Millisecond)
	}
	if n := rec.Repairs(KindRoute); n > 12 || n < 10 {
		t.Errorf("%d route repairs in a 10 s fight, want 10 to 12", n)
	}
	if n := testutil.ToFloat64(rec.conflicts.WithLabelValues("route")); n < 10 {
		t.Errorf("conflicts counted: %v, want every contradiction after the first", n)
	}
	warns := strings.Count(logs.String(), "level=WARN")
	if warns != 1 {
		t.Errorf("%d warnings, want 1:\n%s", warns, logs)
	}
	if !strings.Contains(logs.String(), "198.19.1.0/24") || !strings.Contains(logs.String(), "other=\"rtm protocol boot\"") {
		t.Errorf("the warning names neither the route nor the other party:\n%s", logs)
	}
	eventually(t, "route restored after the fight", func() bool {
		out, err := l.Proxy.Output("ip", "route", "show", "198.19.1.0/24")
		return err == nil && strings.Contains(out, "via 198.19.0.1 dev int0")
	})
}

// Apply twice in a row changes nothing, prefix changes included: the
// second apply of each step finds nothing to do, and the static routes
// are all there.
func TestPrivilegedApplyFixpointAcrossPrefixChanges(t *testing.T) {
	t.Parallel()
	l, h := lab(t)
	p := netip.MustParsePrefix
	steps := []struct{ intAddr, route string }{
		{"198.19.0.2/24", "198.19.1.0/24"},
		{"198.19.0.2/16", "198.19.1.0/24"}, // the internal address grows
		{"198.19.0.2/16", "198.19.1.0/25"}, // the static route shrinks
		{"198.19.0.2/24", "198.19.1.0/24"}, // both back
	}
	for _, s := range steps {
		spec := labSpec(l)
		spec.Internal.Addresses[0] = p(s.intAddr)
		spec.Internal.Routes[0].To = p(s.route)
		if _, err := h.Apply(spec); err != nil {
			t.Fatalf("apply %s, %s: %v", s.intAddr, s.route, err)
		}
		again, err := h.Plan(spec)
		if err != nil {
			t.Fatal(err)
		}
		if cs := Changes(again); len(cs) > 0 {
			t.Errorf("after apply %s, %s, a second apply would make:\n%s", s.intAddr, s.route, strings.Join(lines(cs), "\n"))
		}
		out := l.Proxy.Run(t, "ip", "route", "show", "table", "main")
		if !strings.Contains(out, s.route+" via 198.19.0.1 dev int0") {
			t.Errorf("after apply %s, %s, the static route is missing:\n%s", s.intAddr, s.route, out)
		}
	}
}

// What plan reports and netcfg leaves alone, a host that forwards and a
// more specific route that takes part of the members' subnet out of the
// external NIC, is logged once with its fix however often the host is
// checked, and exported while it lasts.
func TestPrivilegedDriftLoggedOnceAndExported(t *testing.T) {
	t.Parallel()
	l, h := lab(t)
	l.Proxy.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	rec, logs := runReconciler(t, h, labSpec(l))
	hijack := netip.PrefixFrom(l.MemberNet4.Addr(), l.MemberNet4.Bits()+1).String()
	l.Proxy.Run(t, "ip", "route", "add", hijack, "via", l.ClientAddr4.String(), "dev", "ext0")
	plan, err := h.Plan(labSpec(l))
	if err != nil {
		t.Fatal(err)
	}
	reports := lines(plan)
	mustContain(t, reports,
		"! route "+hijack+" via "+l.ClientAddr4.String()+" dev ext0: more specific than the file's route "+l.MemberNet4.String()+" via "+l.RouterAddr4.String()+" dev int0, it takes "+hijack+" away from it: remove it (ip route del "+hijack+" via "+l.ClientAddr4.String()+" dev ext0) unless that traffic must go there",
		"! sysctl net.ipv4.ip_forward: is 1; the host is not a router and the fast path does not need forwarding: set it to 0 unless something else on the host routes",
	)
	for range 3 {
		checked(t, rec)
	}
	// Checks that fail for a while (the journal unreadable) forget
	// nothing that was said.
	journal, err := os.ReadFile(h.StatePath())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h.StatePath(), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	checked(t, rec)
	if err := os.WriteFile(h.StatePath(), journal, 0o600); err != nil {
		t.Fatal(err)
	}
	checked(t, rec)
	for _, c := range plan {
		if n := strings.Count(logs.String(), c.String()); n != 1 {
			t.Errorf("%q logged %d times in several checks, want once:\n%s", c, n, logs)
		}
	}
	for kind, want := range map[string]float64{"sysctl": 1, "route": 1} {
		if v := testutil.ToFloat64(rec.drift.WithLabelValues(kind)); v != want {
			t.Errorf("edgeproxy_netcfg_drift{kind=%s} = %v, want %v", kind, v, want)
		}
	}
	l.Proxy.Run(t, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward")
	l.Proxy.Run(t, "ip", "route", "del", hijack)
	checked(t, rec)
	for _, kind := range []string{"sysctl", "route"} {
		if v := testutil.ToFloat64(rec.drift.WithLabelValues(kind)); v != 0 {
			t.Errorf("edgeproxy_netcfg_drift{kind=%s} = %v after the fix, want 0", kind, v)
		}
	}
}
