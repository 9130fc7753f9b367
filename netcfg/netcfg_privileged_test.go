package netcfg

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testnet"
	"github.com/prometheus/client_golang/prometheus"
)

// lab builds fresh namespaces with bare ext0/int0 on the proxy and opens
// a Host inside the proxy namespace, journaling to a temporary file.
func lab(t *testing.T) (*testnet.Lab, *Host) {
	t.Helper()
	testnet.RequireRoot(t, "ping")
	l := testnet.New(t, testnet.Options{NoAddresses: true, NoDummyXDP: true, Prefix: "epnc"})
	h, err := Open(Options{
		NetNS:     l.Proxy.Handle(),
		StatePath: filepath.Join(t.TempDir(), "netcfg.json"),
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return l, h
}

// labSpec is the lab's network: both NICs, routes to the members, VIPs
// of fastl4 and L7 virtuals, the members and the fast path's SNAT ports.
func labSpec(l *testnet.Lab) *Spec {
	p := netip.MustParsePrefix
	return &Spec{
		External: NIC{
			Interface: testnet.ExtIf,
			Addresses: []netip.Prefix{p("198.18.0.2/24"), p("2001:db8:1::2/64")},
			Gateway:   l.ClientAddr4,
			Gateway6:  l.ClientAddr6,
		},
		Internal: NIC{
			Interface: testnet.IntIf,
			Addresses: []netip.Prefix{p("198.19.0.2/24"), p("2001:db8:2::2/64")},
			Routes: []StaticRoute{
				{To: l.MemberNet4, Via: l.RouterAddr4},
				{To: l.MemberNet6, Via: l.RouterAddr6},
			},
		},
		Managed: true,
		VIPs:    []netip.Addr{l.VIP4, l.VIP6, netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("0.0.0.0")},
		Members: []netip.Addr{l.Members4[0], l.Members6[1]},
		Sysctls: []Sysctl{reservedPorts("40000-59999")},
	}
}

func lines(cs []Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	return out
}

func mustContain(t *testing.T, got []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("missing %q in:\n%s", w, strings.Join(got, "\n"))
		}
	}
}

// eventually polls cond for up to 10s (a bound, not a timing assertion).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pingOK(ns *testnet.NS, dst netip.Addr) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return ns.Command(ctx, "ping", "-c1", "-W2", dst.String()).Run() == nil
}

func TestPrivilegedPlanApplyIdempotent(t *testing.T) {
	t.Parallel()
	l, h := lab(t)
	cfg := labSpec(l)
	rootPorts, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports")

	plan, err := h.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := lines(plan)
	mustContain(t, got,
		"+ address 198.18.0.2/24 dev ext0",
		"+ address 2001:db8:1::2/64 dev ext0",
		"+ address 198.19.0.2/24 dev int0",
		"+ address 2001:db8:2::2/64 dev int0",
		"+ address 198.18.0.10/32 dev ext0 (virtual address)",
		"+ address 2001:db8:1::10/128 dev ext0 (virtual address)",
		"+ route default via 198.18.0.1 dev ext0",
		"+ route default via 2001:db8:1::1 dev ext0",
		"+ route 198.19.1.0/24 via 198.19.0.1 dev int0",
		"+ route 2001:db8:3::/64 via 2001:db8:2::1 dev int0",
		"~ sysctl net.ipv4.conf.int0.arp_ignore: 0 → 1",
		"~ sysctl net.ipv4.conf.ext0.arp_announce: 0 → 2",
		"+ neighbour 198.19.0.1 dev int0 (managed: the kernel keeps the next hop resolved)",
		"+ neighbour 2001:db8:1::1 dev ext0 (managed: the kernel keeps the next hop resolved)",
	)
	for _, s := range got {
		if strings.Contains(s, "0.0.0.0") || strings.Contains(s, "198.18.0.2/32") {
			t.Errorf("unspecified or host listen address planned as a VIP: %s", s)
		}
	}
	if !slices.ContainsFunc(got, func(s string) bool {
		return strings.HasPrefix(s, "~ sysctl net.ipv4.ip_local_reserved_ports: ") && strings.HasSuffix(s, "→ 40000-59999 (the SNAT ports of the fast path are kept out of the host's ephemeral ports)")
	}) {
		t.Errorf("no reserved ports change in:\n%s", strings.Join(got, "\n"))
	}

	// The backend asks for the VIP on the internal link: Linux would
	// answer from int0 by default (weak host model).
	l.Backend.Run(t, "ip", "route", "add", "198.18.0.10/32", "dev", testnet.BackendIf)

	applied, err := h.Apply(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(Changes(applied)) != len(Changes(plan)) {
		t.Fatalf("apply made %d changes, plan had %d", len(Changes(applied)), len(Changes(plan)))
	}

	// What a user notices: the members are reachable through the internal
	// next hop (IPv4 and IPv6), the VIPs from the client.
	for _, m := range []netip.Addr{l.Members4[0], l.Members6[0]} {
		if !pingOK(l.Proxy, m) {
			t.Errorf("proxy cannot reach member %s after apply", m)
		}
	}
	for _, v := range []netip.Addr{l.VIP4, l.VIP6} {
		if !pingOK(l.Client, v) {
			t.Errorf("client cannot reach VIP %s after apply", v)
		}
	}
	// The VIP answers ARP on the external NIC only.
	if pingOK(l.Backend, l.VIP4) {
		t.Errorf("VIP %s answered ARP on the internal NIC", l.VIP4)
	}
	// Sysctls were written inside the proxy namespace, not the caller's.
	if v := strings.TrimSpace(l.Proxy.Run(t, "cat", "/proc/sys/net/ipv4/conf/int0/arp_ignore")); v != "1" {
		t.Errorf("arp_ignore on int0 = %s in the proxy namespace, want 1", v)
	}
	if v := strings.TrimSpace(l.Proxy.Run(t, "cat", "/proc/sys/net/ipv4/ip_local_reserved_ports")); v != "40000-59999" {
		t.Errorf("reserved ports in the proxy namespace = %q", v)
	}
	if now, _ := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports"); string(now) != string(rootPorts) {
		t.Errorf("the caller's namespace changed: reserved ports %q → %q", rootPorts, now)
	}
	// The kernel keeps the gateway resolved.
	if out := l.Proxy.Run(t, "ip", "neigh", "show", "dev", "int0", "198.19.0.1"); !strings.Contains(out, "managed") {
		t.Errorf("no managed neighbour for the internal next hop: %q", out)
	}

	// Idempotent: nothing left to do.
	again, err := h.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c := Changes(again); len(c) != 0 {
		t.Fatalf("second plan not empty:\n%s", strings.Join(lines(c), "\n"))
	}
	applied, err = h.Apply(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c := Changes(applied); len(c) != 0 {
		t.Fatalf("second apply changed:\n%s", strings.Join(lines(c), "\n"))
	}
	if _, err := os.Stat(h.StatePath()); err != nil {
		t.Fatalf("no journal: %v", err)
	}
}

func TestPrivilegedDefaultRouteOnInternalNICAndRevert(t *testing.T) {
	t.Parallel()
	l, h := lab(t)
	cfg := labSpec(l)
	// The host as an administrator left it: a default route on the
	// internal NIC and a reserved port of its own.
	l.Proxy.Run(t, "ip", "addr", "add", "198.19.0.2/24", "dev", "int0")
	l.Proxy.Run(t, "ip", "route", "add", "default", "via", "198.19.0.1", "dev", "int0", "metric", "10")
	l.Proxy.Run(t, "sh", "-c", "echo 8080 > /proc/sys/net/ipv4/ip_local_reserved_ports")
	// Things the file does not mention.
	l.Proxy.Run(t, "ip", "addr", "add", "198.19.5.5/32", "dev", "int0")
	l.Proxy.Run(t, "ip", "route", "add", "198.19.200.0/24", "via", "198.19.0.1", "dev", "int0")
	// A host that forwards: reported, not changed.
	l.Proxy.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	before := hostState(t, l)

	plan, err := h.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := lines(plan)
	mustContain(t, got,
		"- route default via 198.19.0.1 dev int0 metric 10 (default route on the internal NIC)",
		"~ sysctl net.ipv4.ip_local_reserved_ports: 8080 → 8080,40000-59999 (the SNAT ports of the fast path are kept out of the host's ephemeral ports)",
		"! sysctl net.ipv4.ip_forward: is 1; the host is not a router and the fast path does not need forwarding: set it to 0 unless something else on the host routes",
	)
	for _, s := range got {
		if strings.Contains(s, "198.19.5.5") || strings.Contains(s, "198.19.200.0") {
			t.Errorf("plan touches what the file does not mention: %s", s)
		}
	}
	if slices.Contains(got, "+ address 198.19.0.2/24 dev int0") {
		t.Errorf("plans an address that is there")
	}
	if _, err := h.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	out := l.Proxy.Run(t, "ip", "-4", "route", "show", "default")
	if strings.Contains(out, "int0") || !strings.Contains(out, "via 198.18.0.1 dev ext0") {
		t.Fatalf("default routes after apply:\n%s", out)
	}
	if out := l.Proxy.Run(t, "ip", "route", "show", "198.19.200.0/24"); !strings.Contains(out, "via 198.19.0.1 dev int0") {
		t.Errorf("unmentioned route removed by apply")
	}
	if out := l.Proxy.Run(t, "ip", "addr", "show", "dev", "int0"); !strings.Contains(out, "198.19.5.5/32") {
		t.Errorf("unmentioned address removed by apply")
	}
	if v := strings.TrimSpace(l.Proxy.Run(t, "cat", "/proc/sys/net/ipv4/ip_forward")); v != "1" {
		t.Errorf("apply changed ip_forward to %s; it only reports it", v)
	}

	// Revert undoes exactly what apply did.
	reverted, err := h.Revert()
	if err != nil {
		t.Fatal(err)
	}
	if len(reverted) == 0 {
		t.Fatal("revert did nothing")
	}
	if after := hostState(t, l); after != before {
		t.Fatalf("host after revert differs from before apply:\n--- before\n%s\n--- after\n%s", before, after)
	}
	if _, err := os.Stat(h.StatePath()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("journal left after revert: %v", err)
	}
	// And the plan is what it was.
	again, err := h.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := strings.Join(lines(again), "\n"), strings.Join(got, "\n"); a != b {
		t.Fatalf("plan after revert:\n%s\nwant:\n%s", a, b)
	}
}

// hostState renders the proxy namespace's addresses, routes and the
// sysctls netcfg touches.
func hostState(t *testing.T, l *testnet.Lab) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(l.Proxy.Run(t, "ip", "-br", "addr", "show", "dev", "ext0"))
	b.WriteString(l.Proxy.Run(t, "ip", "-br", "addr", "show", "dev", "int0"))
	b.WriteString(l.Proxy.Run(t, "ip", "route", "show", "table", "main"))
	b.WriteString(l.Proxy.Run(t, "ip", "-6", "route", "show", "table", "main"))
	b.WriteString(l.Proxy.Run(t, "sh", "-c", "grep -r . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/int0/arp_ignore /proc/sys/net/ipv4/conf/ext0/rp_filter /proc/sys/net/ipv4/ip_local_reserved_ports /proc/sys/net/ipv6/conf/int0/accept_ra"))
	return b.String()
}

// IPv6 routes that expire (as router advertisements install them) and
// that apply removes (a default route on the internal NIC) or replaces
// (one in the slot of the file's default route) come back from revert
// with the time they had left; one whose time has run out since is not
// brought back.
func TestPrivilegedRevertRestoresRouteExpiry(t *testing.T) {
	t.Parallel()
	l, h := lab(t)
	l.Proxy.Run(t, "ip", "-6", "route", "add", "default", "via", "fe80::99", "dev", "int0", "proto", "ra", "metric", "512", "expires", "600")
	l.Proxy.Run(t, "ip", "-6", "route", "add", "default", "via", "fe80::98", "dev", "ext0", "proto", "ra", "metric", "1024", "expires", "600")
	if _, err := h.Apply(labSpec(l)); err != nil {
		t.Fatal(err)
	}
	if out := l.Proxy.Run(t, "ip", "-6", "route", "show", "default"); strings.Contains(out, "fe80::") {
		t.Fatalf("apply left the advertised default routes:\n%s", out)
	}
	if _, err := h.Revert(); err != nil {
		t.Fatal(err)
	}
	out := l.Proxy.Run(t, "ip", "-6", "-d", "route", "show", "default")
	for _, want := range []string{`via fe80::99 dev int0 proto ra .*metric 512\b`, `via fe80::98 dev ext0 proto ra .*metric 1024\b`} {
		re := regexp.MustCompile(want + `(.*expires (\d+)sec)?`)
		m := re.FindStringSubmatch(out)
		switch {
		case m == nil:
			t.Errorf("revert did not restore %q:\n%s", want, out)
		case m[1] == "":
			t.Errorf("%q restored without its expiry:\n%s", want, out)
		default:
			if n, _ := strconv.Atoi(m[2]); n <= 0 || n > 600 {
				t.Errorf("%q restored to expire in %ss, want what it had left of 600s", want, m[2])
			}
		}
	}

	// Recorded as expiring a minute ago: revert says so and adds nothing.
	gone := Entry{Kind: KindRoute, Op: "remove", Route: &RouteSpec{Link: "int0", Dst: "2001:db8:77::/64", Via: "fe80::99", Metric: 1024,
		Table: 254, Protocol: 9, ExpiresAt: time.Now().Add(-time.Minute)}}
	c, err := h.revertEntry(gone)
	if err != nil || c == nil || !c.IsReport() || !strings.Contains(c.String(), "expired") {
		t.Errorf("revert of an expired route: %v, %v; want a report that it expired", c, err)
	}
	if out := l.Proxy.Run(t, "ip", "-6", "route", "show", "2001:db8:77::/64"); out != "" {
		t.Errorf("revert restored a route that has expired since:\n%s", out)
	}
}

func TestPrivilegedApplyRollsBack(t *testing.T) {
	t.Parallel()
	l, h := lab(t)
	cfg := labSpec(l)
	// The last route's next hop is on no connected subnet.
	cfg.Internal.Routes = append(cfg.Internal.Routes,
		StaticRoute{To: netip.MustParsePrefix("198.19.50.0/24"), Via: netip.MustParseAddr("198.18.99.1")})
	before := hostState(t, l)
	plan, err := h.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}

	// network.manage: false only reports.
	cfg.Managed = false
	if _, err := h.Apply(cfg); !errors.Is(err, ErrNotManaged) {
		t.Fatalf("apply with manage false: %v", err)
	}
	cfg.Managed = true

	_, err = h.Apply(cfg)
	var ae *ApplyError
	if !errors.As(err, &ae) {
		t.Fatalf("apply: %v, want an *ApplyError", err)
	}
	if ae.Change.String() != "+ route 198.19.50.0/24 via 198.18.99.1 dev int0" {
		t.Errorf("failed change %q", ae.Change.String())
	}
	if len(ae.RolledBack) == 0 || ae.RollbackErr != nil {
		t.Errorf("rolled back %d changes, rollback error %v", len(ae.RolledBack), ae.RollbackErr)
	}
	if !strings.Contains(err.Error(), "198.19.50.0/24") || !strings.Contains(err.Error(), "rolled back") {
		t.Errorf("error does not say what failed: %v", err)
	}
	if after := hostState(t, l); after != before {
		t.Fatalf("host after the failed apply:\n%s\nwant:\n%s", after, before)
	}
	if _, err := os.Stat(h.StatePath()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("journal written by a failed apply: %v", err)
	}
	again, err := h.Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := strings.Join(lines(again), "\n"), strings.Join(lines(plan), "\n"); a != b {
		t.Fatalf("plan after rollback:\n%s\nwant:\n%s", a, b)
	}
}

func TestPrivilegedReconciler(t *testing.T) {
	t.Parallel()
	l, h := lab(t)
	cfg := labSpec(l)
	if _, err := h.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	rec, err := NewReconciler(h, cfg, ReconcilerOptions{Resync: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(rec)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rec.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("reconciler: %v", err)
		}
	})
	routeBack := func(family, dst, want string) func() bool {
		return func() bool {
			out, err := l.Proxy.Command(ctx, "ip", family, "route", "show", dst).CombinedOutput()
			return err == nil && strings.Contains(string(out), want)
		}
	}

	t.Run("deleted route", func(t *testing.T) {
		l.Proxy.Run(t, "ip", "route", "del", "198.19.1.0/24")
		eventually(t, "member route restored", routeBack("-4", "198.19.1.0/24", "via 198.19.0.1 dev int0"))
		if !pingOK(l.Proxy, l.Members4[1]) {
			t.Fatal("member unreachable after the repair")
		}
	})
	t.Run("replaced IPv6 route", func(t *testing.T) {
		l.Proxy.Run(t, "ip", "-6", "route", "replace", "2001:db8:3::/64", "via", "2001:db8:2::99", "dev", "int0")
		eventually(t, "IPv6 member route restored", routeBack("-6", "2001:db8:3::/64", "via 2001:db8:2::1 dev int0"))
		if !pingOK(l.Proxy, l.Members6[1]) {
			t.Fatal("IPv6 member unreachable after the repair")
		}
	})
	t.Run("default route on the internal NIC", func(t *testing.T) {
		l.Proxy.Run(t, "ip", "route", "add", "default", "via", "198.19.0.1", "dev", "int0", "metric", "5")
		eventually(t, "default route on int0 removed", func() bool {
			out, err := l.Proxy.Command(ctx, "ip", "route", "show", "default").CombinedOutput()
			return err == nil && !strings.Contains(string(out), "int0") && strings.Contains(string(out), "ext0")
		})
	})
	t.Run("link flap", func(t *testing.T) {
		l.Proxy.Run(t, "ip", "link", "set", "int0", "down")
		l.Proxy.Run(t, "ip", "link", "set", "int0", "up")
		eventually(t, "IPv4 route back after the flap", routeBack("-4", "198.19.1.0/24", "via 198.19.0.1 dev int0"))
		eventually(t, "IPv6 route back after the flap", routeBack("-6", "2001:db8:3::/64", "via 2001:db8:2::1 dev int0"))
		if !pingOK(l.Proxy, l.Members4[0]) || !pingOK(l.Proxy, l.Members6[0]) {
			t.Fatal("members unreachable after the flap")
		}
	})
	t.Run("link left down", func(t *testing.T) {
		l.Proxy.Run(t, "ip", "link", "set", "ext0", "down")
		eventually(t, "ext0 up with its default route", routeBack("-4", "default", "via 198.18.0.1 dev ext0"))
		if !pingOK(l.Client, l.VIP4) {
			t.Fatal("VIP unreachable after the repair")
		}
	})
	t.Run("deleted address and sysctl", func(t *testing.T) {
		l.Proxy.Run(t, "ip", "addr", "del", "198.18.0.10/32", "dev", "ext0")
		l.Proxy.Run(t, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/conf/int0/arp_ignore")
		eventually(t, "VIP restored", func() bool { return pingOK(l.Client, l.VIP4) })
		eventually(t, "arp_ignore restored", func() bool {
			out, err := l.Proxy.Command(ctx, "cat", "/proc/sys/net/ipv4/conf/int0/arp_ignore").Output()
			return err == nil && strings.TrimSpace(string(out)) == "1"
		})
	})

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	repairs := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "edgeproxy_netcfg_repairs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			repairs[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	for _, k := range []string{"route", "link", "address", "sysctl"} {
		if repairs[k] == 0 {
			t.Errorf("edgeproxy_netcfg_repairs_total{kind=%q} = 0 (all: %v)", k, repairs)
		}
	}
	if rec.Repairs(KindRoute) == 0 {
		t.Errorf("Repairs(route) = 0")
	}
}

// The sysctls another plane declares (the fast path's loopback
// forwarding and reserved ports) are kept even with network.manage
// false, which leaves everything else alone, and a write to
// all/forwarding, which resets loopback's, is undone by the reconciler
// without waiting for its full resync.
func TestPrivilegedRequiredSysctls(t *testing.T) {
	t.Parallel()
	l, h := lab(t)
	spec := labSpec(l)
	spec.Managed = false
	spec.Sysctls = append(spec.Sysctls, Sysctl{Key: "net/ipv4/conf/lo/forwarding", Value: "1", Why: "FIB lookups of the fast path"})
	if _, err := h.Apply(spec); !errors.Is(err, ErrNotManaged) {
		t.Fatalf("apply with manage false: %v", err)
	}
	if _, err := h.ApplyRequired(spec); err != nil {
		t.Fatal(err)
	}
	read := func(key string) string {
		return strings.TrimSpace(l.Proxy.Run(t, "cat", "/proc/sys/"+key))
	}
	if read("net/ipv4/conf/lo/forwarding") != "1" || read("net/ipv4/ip_local_reserved_ports") != "40000-59999" {
		t.Fatalf("required sysctls not set: lo forwarding %s, reserved ports %q", read("net/ipv4/conf/lo/forwarding"), read("net/ipv4/ip_local_reserved_ports"))
	}
	if read("net/ipv4/conf/int0/arp_ignore") != "0" || strings.Contains(l.Proxy.Run(t, "ip", "addr", "show", "dev", "ext0"), "198.18.0.2") {
		t.Fatal("network.manage false, yet netcfg changed more than the required sysctls")
	}

	rec, err := NewReconciler(h, spec, ReconcilerOptions{Resync: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if rec.requiredDrift() {
		t.Fatal("the watch sees a drift right after ApplyRequired")
	}
	// Turning forwarding on and off again, as a router script might,
	// turns it off on every device; the watch sees it without an event.
	l.Proxy.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/forwarding; echo 0 > /proc/sys/net/ipv4/conf/all/forwarding")
	if !rec.requiredDrift() {
		t.Fatal("the watch does not see loopback forwarding turned off")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rec.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("reconciler: %v", err)
		}
	}()
	eventually(t, "loopback forwarding restored", func() bool { return read("net/ipv4/conf/lo/forwarding") == "1" })
	if read("net/ipv4/conf/int0/arp_ignore") != "0" {
		t.Error("the reconciler changed arp_ignore with network.manage false")
	}
}
