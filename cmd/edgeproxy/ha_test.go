package main

import (
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/certgen"
)

// stdout runs the command and returns what it printed.
func stdout(t *testing.T, args ...string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "stdout")
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = f
	err = run(args, io.Discard)
	os.Stdout = saved
	if err != nil {
		t.Fatalf("edgeproxy %s: %v", strings.Join(args, " "), err)
	}
	out, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

var update = flag.Bool("update", false, "write examples/ha/keepalived-*.conf from the example nodes' files")

// The keepalived configuration of both example nodes is what
// examples/ha holds (-update writes it), and keepalived itself accepts it.
func TestKeepalivedConfOfTheExamplePair(t *testing.T) {
	dir := t.TempDir()
	if _, err := certgen.Write(filepath.Join(dir, "tls"), certgen.Options{}); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "mirror.key")
	if err := os.WriteFile(key, []byte(strings.Repeat("k", 48)), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, node := range []string{"node-a", "node-b"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "examples", "ha", node+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(dir, node+".yaml")
		text := strings.ReplaceAll(string(data), "/etc/edgeproxy/tls/", dir+"/tls/")
		text = strings.ReplaceAll(text, "/etc/edgeproxy/mirror.key", key)
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		got := stdout(t, "ha", "keepalived-conf", "-config", cfg, "-edgeproxy", "/usr/local/bin/edgeproxy")
		got = strings.ReplaceAll(got, cfg, "/etc/edgeproxy/edgeproxy.yaml")
		golden := filepath.Join("..", "..", "examples", "ha", "keepalived-"+node+".conf")
		if *update {
			if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("%s: keepalived-conf differs from %s (go test ./cmd/edgeproxy -run %s -update writes it):\n%s", node, golden, t.Name(), got)
		}
		checkKeepalived(t, got)
	}
}

// checkKeepalived has keepalived parse the configuration, when it is
// installed (make deps).
func checkKeepalived(t *testing.T, conf string) {
	t.Helper()
	bin, err := exec.LookPath("keepalived")
	if err != nil {
		t.Log("keepalived not installed: configuration not checked by keepalived")
		return
	}
	f := filepath.Join(t.TempDir(), "keepalived.conf")
	if err := os.WriteFile(f, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// keepalived exits non-zero for the interfaces this host lacks; any
	// other finding is a mistake of the generated file.
	out, _ := exec.Command(bin, "--config-test", "--log-console", "--use-file="+f).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" || strings.Contains(line, "interface") {
			continue
		}
		t.Errorf("keepalived: %s", line)
	}
}
