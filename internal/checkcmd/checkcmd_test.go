package checkcmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/certgen"
	"github.com/edgeproxy/edgeproxy/internal/checkcmd"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// writeExample writes examples/skype.yaml with its certificate paths
// pointing at freshly issued certificates, and returns its path.
func writeExample(t *testing.T, edits ...string) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := certgen.Write(filepath.Join(dir, "tls"), certgen.Options{}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("../../examples/skype.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "/etc/edgeproxy/tls/", filepath.Join(dir, "tls")+"/")
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(text, edits[i]) {
			t.Fatalf("%q not in the example", edits[i])
		}
		text = strings.Replace(text, edits[i], edits[i+1], 1)
	}
	path := filepath.Join(dir, "skype.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExamplePlan(t *testing.T) {
	path := writeExample(t)
	var out bytes.Buffer
	if err := checkcmd.Run(context.Background(), checkcmd.Options{Config: path}, &out); err != nil {
		t.Fatalf("check of the example failed: %v\n%s", err, out.String())
	}
	text := out.String()

	// Each table is aligned: a row's cells start under their headers.
	assertColumn := func(header, rowStart, cell, col string) {
		t.Helper()
		var hdrLine, row string
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(l, header) && hdrLine == "" {
				hdrLine = l
			}
			if strings.HasPrefix(l, rowStart) && hdrLine != "" && row == "" {
				row = l
			}
		}
		if hdrLine == "" || row == "" {
			t.Fatalf("no table %q with row %q in:\n%s", header, rowStart, text)
		}
		hi, ci := strings.Index(hdrLine, col), strings.Index(row, cell)
		if hi < 0 || hi != ci {
			t.Errorf("column %s at %d, cell %q at %d:\n%s\n%s", col, hi, cell, ci, hdrLine, row)
		}
	}
	assertColumn("  NAME ", "  sfb-web-l4 ", "fastl4", "MODE")
	assertColumn("  NAME ", "  sfb-web-l4 ", "4443", "PORT")
	assertColumn("  NAME ", "  sfb-web-l4 ", "automap (10.20.0.10)", "SNAT")
	assertColumn("  NAME ", "  sfb-web ", "203.0.113.10:443", "LISTEN")
	assertColumn("  NAME ", "  sfb-web-http ", "sfb-fe", "POOL")
	assertColumn("  POOL ", "  sfb-fe ", "10.10.0.11", "ADDRESS")
	assertColumn("  POOL ", "  owas ", "https :443 /hosting/discovery", "MONITOR")
	assertColumn("  INTERFACE  ROLE", "  ext0       VIP", "203.0.113.20/32", "ADDRESS")
	assertColumn("  INTERFACE  TO", "  int0 ", "10.20.0.1", "VIA")

	for _, want := range []string{
		"sfb-web-l4, sfb-web-l4-http", // the VIP serves both fastl4 virtuals
		"default       203.0.113.1",
		"owas01.corp.example.com  10.10.0.30",
		"profile skype, NTLM pinning, response 16m, idle 30m",
		"pinned at /sys/fs/bpf/edgeproxy, 262144 flows (flow tables pin 162 MiB), SNAT ports 40000-59999 (20000 connections per SNAT address and member)",
		// The example publishes the front ends at L4 too: their
		// management paths are open there.
		"skype.yaml:35:5: virtuals[0].pool: fastl4 virtual sfb-web-l4 publishes pool sfb-fe, which virtual sfb-web publishes with profile skype: at L4 the management paths (/cscp, /OcsPowerShell, /RgsConfig) cannot be filtered",
		"publish the pool through the https virtual only (remove virtual sfb-web-l4), or close those paths on the front ends themselves",
		"skype.yaml:43:5: virtuals[1].pool: fastl4 virtual sfb-web-l4-http publishes pool sfb-fe",
		"skype.yaml: OK, 2 warning(s)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "\nhost\n") {
		t.Error("host checks ran without Options.Host")
	}
}

func TestJSON(t *testing.T) {
	path := writeExample(t, "profile: skype", "profile: skpye")
	var out bytes.Buffer
	err := checkcmd.Run(context.Background(), checkcmd.Options{Config: path, JSON: true}, &out)
	if !errors.Is(err, checkcmd.ErrFailed) {
		t.Fatalf("Run = %v, want ErrFailed", err)
	}
	var rep checkcmd.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out.String())
	}
	if rep.OK || len(rep.Errors) != 1 {
		t.Fatalf("report: ok %v, errors %+v", rep.OK, rep.Errors)
	}
	e := rep.Errors[0]
	if e.Path != "virtuals[2].sites[0].profile" || !strings.HasSuffix(e.Where, "skype.yaml:57:9") || !strings.Contains(e.Msg, `did you mean "skype"?`) || e.Source != "config" {
		t.Errorf("error = %+v", e)
	}
	if rep.Plan == nil || len(rep.Plan.Virtuals) != 5 || rep.Plan.Virtuals[0].SNAT != "automap (10.20.0.10)" || len(rep.Plan.Pools) != 2 {
		t.Errorf("plan = %+v", rep.Plan)
	}
}

func TestAllErrorsPrinted(t *testing.T) {
	path := writeExample(t,
		"mode: fastl4", "mode: fastl5",
		"pool: owas\n", "pool: owa\n",
		"listen: 203.0.113.10:80", "listen: 203.0.113.10:443",
	)
	var out bytes.Buffer
	err := checkcmd.Run(context.Background(), checkcmd.Options{Config: path}, &out)
	if !errors.Is(err, checkcmd.ErrFailed) || !strings.Contains(err.Error(), "3 error(s)") {
		t.Fatalf("Run = %v, want 3 errors", err)
	}
	text := out.String()
	for _, want := range []string{
		"skype.yaml:33:5: virtuals[0].mode: unknown mode \"fastl5\"",
		"skype.yaml:59:9: virtuals[2].sites[1].pool: unknown pool \"owa\"",
		"skype.yaml:64:5: virtuals[3].listen: 203.0.113.10:443/tcp is already the listener of virtuals[2] (sfb-web)",
		"3 error(s), 2 warning(s): run would not start",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	// The plan is printed even when the file has errors.
	if !strings.Contains(text, "  sfb-web-http ") {
		t.Errorf("no plan in:\n%s", text)
	}
}

func TestMissingFile(t *testing.T) {
	err := checkcmd.Run(context.Background(), checkcmd.Options{Config: filepath.Join(t.TempDir(), "none.yaml")}, &bytes.Buffer{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Run = %v, want ErrNotExist", err)
	}
}

const labConfig = `
network:
  external: {interface: EXT, addresses: [198.18.0.2/24], gateway: 198.18.0.1}
  internal:
    interface: INT
    addresses: [198.19.0.2/24]
    routes: [{to: 198.19.1.0/24, via: 198.19.0.1}]
  hosts: {fe01.corp.example.com: 198.19.1.11, fe02.corp.example.com: 198.19.1.12}
MANAGE
fastpath: {pin_path: PIN/edgeproxy}
pools:
  fe: {members: [fe01.corp.example.com, fe02.corp.example.com], monitor: {type: tls}}
virtuals:
  - {name: l4, mode: fastl4, listen: 198.18.0.10:443, pool: fe, port: 4443}
  - {name: extra, mode: fastl4, listen: 198.18.0.20:443, pool: fe, port: 4443}
  - name: web
    mode: https
    listen: 198.18.0.2:443
    certificates: [{cert: TLS/public.pem, key: TLS/public.key}]
    sites: [{hosts: [webext.example.com], pool: fe, port: 4443, backend_tls: {ca: TLS/internal-ca.pem}, profile: skype}]
`

// The host checks against a real proxy namespace: interfaces, XDP
// support, addresses, bpffs, kernel and privileges.
func TestPrivilegedHostChecks(t *testing.T) {
	lab := testnet.New(t, testnet.Options{})
	dir := t.TempDir()
	if _, err := certgen.Write(filepath.Join(dir, "tls"), certgen.Options{}); err != nil {
		t.Fatal(err)
	}
	pin := filepath.Join(dir, "bpf")
	if err := os.Mkdir(pin, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("bpf", pin, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(pin, unix.MNT_DETACH) })

	write := func(name, ext, in, manage string) string {
		r := strings.NewReplacer("EXT", ext, "INT", in, "MANAGE", manage, "PIN", pin, "TLS", filepath.Join(dir, "tls"))
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(r.Replace(labConfig)), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	check := func(path string) (*checkcmd.Report, string) {
		var rep *checkcmd.Report
		err := lab.Proxy.Do(func() error {
			var err error
			rep, err = checkcmd.Check(context.Background(), checkcmd.Options{Config: path, Host: true})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if err := checkcmd.Render(&out, rep); err != nil {
			t.Fatal(err)
		}
		return rep, out.String()
	}
	find := func(list []checkcmd.Finding, sub string) *checkcmd.Finding {
		for i := range list {
			if strings.Contains(list[i].Msg, sub) {
				return &list[i]
			}
		}
		return nil
	}

	// The lab matches the file: no errors; the VIP the lab did not add is
	// a warning, since run adds it.
	good := write("good.yaml", "ext0", "int0", "")
	rep, out := check(good)
	if !rep.OK {
		t.Fatalf("errors on a matching host:\n%s", out)
	}
	w := find(rep.Warnings, "VIP 198.18.0.20 of extra is not on ext0 yet: run adds it")
	if w == nil || !strings.Contains(w.Where, "good.yaml:15:") {
		t.Errorf("VIP warning = %+v\n%s", w, out)
	}
	if find(rep.Warnings, "198.18.0.10") != nil {
		t.Errorf("warning about the VIP already on ext0:\n%s", out)
	}
	for _, want := range []string{"XDP on ext0     ok       native, driver veth", "bpffs           ok", "privileges      ok", "kernel          ok", "interface int0  ok       up, driver veth, addresses present: 198.19.0.2/24"} {
		if !strings.Contains(out, want) {
			t.Errorf("host table lacks %q:\n%s", want, out)
		}
	}

	// A NIC whose driver has only generic XDP is a warning; a NIC that
	// does not exist is an error that names the key.
	bad := write("bad.yaml", "lo", "int9", "")
	rep, out = check(bad)
	if rep.OK {
		t.Fatalf("no error for a missing interface:\n%s", out)
	}
	if f := find(rep.Errors, "int9 does not exist on this host"); f == nil || !strings.HasSuffix(f.Where, "bad.yaml:5:5") || !strings.Contains(f.Msg, "fix network.internal.interface") {
		t.Errorf("missing interface error = %+v\n%s", f, out)
	}
	if find(rep.Warnings, "driver device has no native XDP") == nil && find(rep.Warnings, "has no native XDP: the fast path falls back to generic XDP") == nil {
		t.Errorf("no generic-XDP warning for lo:\n%s", out)
	}

	// When edgeproxy does not manage the network, missing addresses are
	// errors with the command that adds them.
	unmanaged := write("unmanaged.yaml", "ext0", "int0", "  manage: false")
	rep, out = check(unmanaged)
	if f := find(rep.Errors, "network.manage is false, so add it yourself: ip addr add 198.18.0.20/32 dev ext0"); f == nil {
		t.Errorf("no error for a missing VIP on an unmanaged host:\n%s", out)
	}
}

// check names the NIC each BGP neighbour is reached on and how its loss
// is detected.
func TestBGPNeighbours(t *testing.T) {
	path := writeExample(t, "\nvirtuals:", "\nbgp:\n  local_as: 65100\n  router_id: 10.20.0.10\n  neighbors:\n    - {address: 203.0.113.1, as: 65000, bfd: true}\n    - {address: 10.20.0.1, as: 65000}\nvirtuals:")
	var out bytes.Buffer
	if err := checkcmd.Run(context.Background(), checkcmd.Options{Config: path}, &out); err != nil {
		t.Fatalf("check failed: %v\n%s", err, out.String())
	}
	for _, want := range []string{"bgp: AS 65100, router id 10.20.0.10", "203.0.113.1  65000  ext0", "BFD 0.9s, hold 3s", "10.20.0.1    65000  int0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// check shows where the node talks to its cluster peers.
func TestClusterPeers(t *testing.T) {
	key := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(key, []byte(strings.Repeat("k", 40)), 0o600); err != nil {
		t.Fatal(err)
	}
	path := writeExample(t, "\nvirtuals:", "\nbgp:\n  local_as: 65100\n  router_id: 10.20.0.10\n  neighbors:\n    - {address: 203.0.113.1, as: 65000}\ncluster:\n  peers: [203.0.113.11, 203.0.113.12]\n  key_file: "+key+"\nvirtuals:")
	var out bytes.Buffer
	if err := checkcmd.Run(context.Background(), checkcmd.Options{Config: path}, &out); err != nil {
		t.Fatalf("check failed: %v\n%s", err, out.String())
	}
	if want := "this node at 203.0.113.10:7946 on ext0, peers 203.0.113.11, 203.0.113.12"; !strings.Contains(out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}
}
