// Package packaging builds the Debian package (make deb); its test
// installs the package into a directory and runs what it ships.
package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// run runs a command and fails the test with its output.
func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDebInstallsAndChecks: `make deb` builds a package that, unpacked
// into an empty root, holds the binary, the units, the man page and the
// logrotate file, marks the configuration a conffile, and whose binary
// accepts its own configuration file (with certificates in place).
func TestDebInstallsAndChecks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the package: skipped under -short")
	}
	for _, tool := range []string{"dpkg-deb", "make", "openssl", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s missing", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("chroot needs root")
	}
	run(t, "..", "make", "deb")
	debs, _ := filepath.Glob("../bin/deb/edgeproxy_*_amd64.deb")
	if len(debs) != 1 {
		t.Fatalf("make deb made %v, want one package", debs)
	}
	root, ctrl := t.TempDir(), t.TempDir()
	run(t, ".", "dpkg-deb", "-x", debs[0], root)
	run(t, ".", "dpkg-deb", "-e", debs[0], ctrl)
	conf, err := os.ReadFile(filepath.Join(ctrl, "conffiles"))
	if err != nil || !strings.Contains(string(conf), "/etc/edgeproxy/edgeproxy.yaml") || !strings.Contains(string(conf), "/etc/logrotate.d/edgeproxy") {
		t.Fatalf("conffiles %q (%v): the configuration and logrotate file must survive upgrades", conf, err)
	}
	for _, f := range []string{"usr/bin/edgeproxy", "usr/lib/systemd/system/edgeproxy.service", "usr/share/man/man8/edgeproxy.8.gz",
		"etc/logrotate.d/edgeproxy", "usr/share/doc/edgeproxy/examples/grafana/edgeproxy.json", "usr/share/doc/edgeproxy/examples/prometheus/alerts.yml"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("package lacks /%s", f)
		}
	}
	if unit, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/edgeproxy.service")); strings.Contains(string(unit), "/usr/local/bin") {
		t.Error("packaged unit runs /usr/local/bin/edgeproxy, not the packaged /usr/bin/edgeproxy")
	}
	if v := run(t, ".", "chroot", root, "/usr/bin/edgeproxy", "--version"); !strings.Contains(v, "0.1.0~git") || !strings.Contains(v, "commit ") {
		t.Errorf("--version says %q", v)
	}
	// The certificates an operator puts in /etc/edgeproxy/tls.
	run(t, "..", "examples/gen-certs.sh", filepath.Join(root, "etc/edgeproxy/tls"))
	out := run(t, ".", "chroot", root, "/usr/bin/edgeproxy", "check", "-host=false", "-config", "/etc/edgeproxy/edgeproxy.yaml")
	if !strings.Contains(out, "0 error") && strings.Contains(out, "error") {
		t.Fatalf("the packaged check reports errors on the shipped file:\n%s", out)
	}
}
