package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var units = []string{"edgeproxy.service", "edgeproxy-netcfg.service"}

// unitCopies writes the example units into a test directory with their
// commands pointing at an executable that exists here.
func unitCopies(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd): the units are not checked")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var out []string
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", u))
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, u)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/edgeproxy", exe)), 0o644); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

func analyze(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "systemd-analyze", args...)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil || (args[0] == "verify" && len(out) > 0) {
		t.Fatalf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestUnitsVerify: systemd-analyze verify finds nothing to say about
// the units.
func TestUnitsVerify(t *testing.T) {
	analyze(t, append([]string{"verify"}, unitCopies(t)...)...)
}

var exposure = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// TestUnitsSecurity: each unit's exposure in systemd-analyze security is
// at most 3.0 ("OK"), and the daemon keeps the capabilities it needs.
func TestUnitsSecurity(t *testing.T) {
	for _, p := range unitCopies(t) {
		out := analyze(t, "security", "--offline=true", "--no-pager", p)
		m := exposure.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no exposure level in:\n%s", filepath.Base(p), out)
		}
		if v, _ := strconv.ParseFloat(m[1], 64); v > 3.0 {
			t.Errorf("%s: exposure %s, want at most 3.0:\n%s", filepath.Base(p), m[1], out)
		}
	}
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "edgeproxy.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"Type=notify", "ExecReload=/usr/local/bin/edgeproxy reload ", "CAP_BPF", "CAP_NET_ADMIN",
		"CAP_NET_BIND_SERVICE", "CAP_PERFMON", "/proc/sys/net", "RuntimeDirectory=edgeproxy", "LogsDirectory=edgeproxy",
		// ProtectKernelTunables= keeps /sys/fs/bpf read-only whatever
		// ReadWritePaths= says; only the pin directory, made before the
		// sandbox, is writable (TestPrivilegedSystemdUnit runs it).
		"ExecStartPre=+/usr/bin/mkdir -p -m 0700 /sys/fs/bpf/edgeproxy\n", "ReadWritePaths=-/sys/fs/bpf/edgeproxy "} {
		if !strings.Contains(unit, want) {
			t.Errorf("edgeproxy.service lacks %q", want)
		}
	}
	if strings.Contains(unit, "pid-file") {
		t.Error("edgeproxy.service still names a pid file")
	}
}
