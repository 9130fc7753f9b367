package netcfg_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
	"github.com/edgeproxy/edgeproxy/netcfg"
)

func TestMain(m *testing.M) { labtest.Main(m) }

// dhcpHost is a namespace as a DHCP client left it: ext0 and int0 up,
// int0 with a /16 and a default route (proto dhcp, src, metric) that
// netcfg resizes and removes.
func dhcpHost(t *testing.T) *lab.NS {
	t.Helper()
	testnet.RequireRoot(t)
	ns, err := lab.NewNS(fmt.Sprintf("epcr%d", time.Now().UnixNano()%1e6))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)
	for _, args := range [][]string{
		{"link", "add", "ext0", "type", "veth", "peer", "name", "ext0p"},
		{"link", "add", "int0", "type", "veth", "peer", "name", "int0p"},
		{"link", "set", "ext0", "up"}, {"link", "set", "ext0p", "up"},
		{"link", "set", "int0", "up"}, {"link", "set", "int0p", "up"},
		{"addr", "add", "198.19.0.2/16", "dev", "int0"},
		{"route", "add", "default", "via", "198.19.0.1", "dev", "int0", "proto", "dhcp", "src", "198.19.0.2", "metric", "100"},
		{"route", "add", "198.19.9.0/24", "via", "198.19.0.1", "dev", "int0", "proto", "boot", "mtu", "1400"},
	} {
		ns.Run(t, "ip", args...)
	}
	// The link-local addresses settle (DAD) before the host is looked at.
	for i := 0; strings.Contains(ns.Run(t, "ip", "addr"), "tentative"); i++ {
		if i == 200 {
			t.Fatal("link-local addresses still tentative after 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return ns
}

// snapshot is what revert must give back byte for byte: addresses,
// routes and the sysctls of the namespace.
func snapshot(t *testing.T, ns *lab.NS) string {
	t.Helper()
	var b strings.Builder
	b.WriteString(ns.Run(t, "ip", "-d", "addr"))
	b.WriteString(ns.Run(t, "ip", "-d", "route", "show", "table", "all"))
	b.WriteString(ns.Run(t, "ip", "-d", "-6", "route", "show", "table", "all"))
	b.WriteString(ns.Run(t, "sh", "-c", "cd /proc/sys/net && grep -rs . ipv4/conf ipv6/conf ipv4/ip_forward ipv4/ip_local_reserved_ports || true"))
	return b.String()
}

// netcfgRun runs the real binary's netcfg action in ns; crashAt > 0
// kills it at that point of the apply.
func netcfgRun(t *testing.T, bin string, ns *lab.NS, state string, crashAt int, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args = append(args, "-state", state, "-netns", ns.Name)
	cmd := exec.CommandContext(ctx, bin, append([]string{"netcfg"}, args...)...)
	if crashAt > 0 {
		cmd.Env = append(cmd.Environ(), fmt.Sprintf("%s=%d", netcfg.CrashEnv, crashAt))
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestPrivilegedCrashAtEveryStepThenRevert(t *testing.T) {
	bin := labtest.Binary(t)
	ns := dhcpHost(t)
	cfg, _ := filepath.Abs("testdata/crash.yaml")
	state := filepath.Join(t.TempDir(), "netcfg.json")
	before := snapshot(t, ns)

	out, err := netcfgRun(t, bin, ns, state, 0, "plan", "-config", cfg)
	if err != nil {
		t.Fatalf("plan: %v\n%s", err, out)
	}
	n := strings.Count(out, "\n") - 1 // the last line is the summary
	if n < 10 {
		t.Fatalf("plan lists %d changes, want a real apply:\n%s", n, out)
	}
	for at := 1; at <= 2*n; at++ {
		out, err := netcfgRun(t, bin, ns, state, at, "apply", "-config", cfg)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ProcessState.String() != "signal: killed" {
			t.Fatalf("apply killed at step %d: %v\n%s", at, err, out)
		}
		if out, err := netcfgRun(t, bin, ns, state, 0, "revert"); err != nil {
			t.Fatalf("revert after a kill at step %d: %v\n%s", at, err, out)
		}
		if after := snapshot(t, ns); after != before {
			t.Fatalf("after a kill at step %d of %d and revert, the namespace differs:\n%s", at, 2*n, diffLines(before, after))
		}
	}
}

// After an apply, plan lists what it leaves to the administrator (a
// host that forwards, a more specific route taking part of the members'
// subnet out of the external NIC) and never says the host matches.
func TestPrivilegedPlanListsDrift(t *testing.T) {
	bin := labtest.Binary(t)
	ns := dhcpHost(t)
	cfg, _ := filepath.Abs("testdata/crash.yaml")
	state := filepath.Join(t.TempDir(), "netcfg.json")
	if out, err := netcfgRun(t, bin, ns, state, 0, "apply", "-config", cfg); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	ns.Run(t, "ip", "route", "add", "198.19.1.0/25", "via", "198.18.0.1", "dev", "ext0")
	ns.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	out, err := netcfgRun(t, bin, ns, state, 0, "plan", "-config", cfg)
	if err != nil {
		t.Fatalf("plan: %v\n%s", err, out)
	}
	for _, want := range []string{
		"! route 198.19.1.0/25 via 198.18.0.1 dev ext0: more specific than the file's route 198.19.1.0/24 via 198.19.0.1 dev int0",
		"! sysctl net.ipv4.ip_forward: is 1;",
		"the 2 finding(s) marked ! differ from the file",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "matches") {
		t.Errorf("plan says the host matches while it lists findings:\n%s", out)
	}
}

// diffLines lists the lines only one side has.
func diffLines(a, b string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	ia, ib := in(a), in(b)
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if !ib[l] {
			out = append(out, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if !ia[l] {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

func TestPrivilegedApplyConfirm(t *testing.T) {
	bin := labtest.Binary(t)
	cfg, _ := filepath.Abs("testdata/crash.yaml")

	t.Run("unconfirmed reverts by itself", func(t *testing.T) {
		ns := dhcpHost(t)
		state := filepath.Join(t.TempDir(), "netcfg.json")
		before := snapshot(t, ns)
		if out, err := netcfgRun(t, bin, ns, state, 0, "apply", "-config", cfg, "-confirm", "2s"); err != nil {
			t.Fatalf("apply -confirm: %v\n%s", err, out)
		}
		if snapshot(t, ns) == before {
			t.Fatal("apply -confirm changed nothing")
		}
		deadline := time.Now().Add(20 * time.Second)
		for snapshot(t, ns) != before {
			if time.Now().After(deadline) {
				t.Fatalf("not reverted 20s after a 2s confirmation window:\n%s", diffLines(before, snapshot(t, ns)))
			}
			time.Sleep(200 * time.Millisecond)
		}
		for i := 0; ; i++ { // the waiting process logs what it reverted
			log, err := os.ReadFile(state + ".confirm.log")
			if err == nil && strings.Contains(string(log), "- address 198.18.0.10/32 dev ext0") {
				break
			}
			if i == 100 {
				t.Fatalf("the revert is not logged: %v\n%s", err, log)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("confirmed stays", func(t *testing.T) {
		ns := dhcpHost(t)
		state := filepath.Join(t.TempDir(), "netcfg.json")
		if out, err := netcfgRun(t, bin, ns, state, 0, "apply", "-config", cfg, "-confirm", "2s"); err != nil {
			t.Fatalf("apply -confirm: %v\n%s", err, out)
		}
		applied := snapshot(t, ns)
		if out, err := netcfgRun(t, bin, ns, state, 0, "confirm"); err != nil || !strings.Contains(out, "confirmed") {
			t.Fatalf("confirm: %v\n%s", err, out)
		}
		// confirm returns once the waiting process is gone: nothing is
		// left to revert.
		if out, _ := exec.Command("pgrep", "-f", "netcfg wait-confirm -state "+state).Output(); len(out) > 0 {
			t.Fatalf("the waiting process outlived the confirmation: %s", out)
		}
		if after := snapshot(t, ns); after != applied {
			t.Fatalf("a confirmed apply was undone:\n%s", diffLines(applied, after))
		}
		if out, err := netcfgRun(t, bin, ns, state, 0, "apply", "-config", cfg); err != nil || !strings.Contains(out, "no changes") {
			t.Fatalf("apply after confirm: %v\n%s", err, out)
		}
	})
}
