package main

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/f5"
)

func TestImportF5Command(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "edgeproxy.yaml")
	rep := filepath.Join(dir, "report.txt")
	src := filepath.Join("..", "..", "f5", "testdata", "sfb-fastl4.conf")
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// bigip_base.conf holds the network, bigip.conf the rest.
	split := strings.Index(string(data), "ltm node ")
	base, conf := filepath.Join(dir, "bigip_base.conf"), filepath.Join(dir, "bigip.conf")
	if err := os.WriteFile(base, data[:split], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, data[split:], 0o644); err != nil {
		t.Fatal(err)
	}
	// Flags after the file names work too.
	if err := run([]string{"import", "f5", base, conf, "-o", out, "-report", rep, "-external", "eth1"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(out)
	if err != nil {
		t.Fatalf("the written configuration does not load: %v", err)
	}
	if len(c.Virtuals) != 2 || c.Network.External.Interface != "eth1" {
		t.Errorf("virtuals %d, external %q", len(c.Virtuals), c.Network.External.Interface)
	}
	text, err := os.ReadFile(rep)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"# not carried over (1)\n",
		conf + ":" + strconv.Itoa(lineIn(string(data[split:]), "ltm virtual /Common/sfb_webext_443_v6 {")) + ": ltm virtual /Common/sfb_webext_443_v6:",
		base + ":45: net self /Common/self_ha:",
		"# edgeproxy check of " + out + ": 0 error(s), 0 warning(s)",
	} {
		if !strings.Contains(string(text), s) {
			t.Errorf("report lacks %q:\n%s", s, text)
		}
	}
}

// lineIn is the line where text starts in s.
func lineIn(s, text string) int {
	return strings.Count(s[:strings.Index(s, text)], "\n") + 1
}

func TestImportF5CommandErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bigip.conf")
	if err := os.WriteFile(bad, []byte("ltm node /Common/n {\n    address 10.0.0.1\n    description \"unterminated\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run([]string{"import", "f5", bad, "-o", filepath.Join(dir, "out.yaml")}, io.Discard)
	if !errors.Is(err, f5.ErrSyntax) || !strings.Contains(err.Error(), bad+":3:17: unterminated quoted string") {
		t.Errorf("got %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "out.yaml")); !os.IsNotExist(err) {
		t.Errorf("an output was written for a file that does not parse")
	}
	if err := run([]string{"import", "f5"}, io.Discard); !errors.Is(err, errUsage) {
		t.Errorf("no file: got %v, want usage", err)
	}
	if err := run([]string{"import", "nginx", bad}, io.Discard); err == nil || !strings.Contains(err.Error(), `unknown source "nginx"`) {
		t.Errorf("unknown source: got %v", err)
	}
}
