package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
)

// TestPrivilegedPinsOwned: while a daemon runs, a second `edgeproxy run`
// on the same pin directory (its configuration drops a virtual) and
// `edgeproxy flows -cleanup` both exit non-zero naming the running
// daemon's PID, and the pinned maps are as they were.
func TestPrivilegedPinsOwned(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	before := pinnedState(t, d.pin)

	second := t.TempDir()
	cfg := secondConfig(t, d, second)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, runErr := d.lab.Proxy.Command(ctx, labtest.Binary(t), "run", "-config", cfg,
		"-pid-file", filepath.Join(second, "edgeproxy.pid"), "-netcfg-state", filepath.Join(second, "netcfg.json"),
		"-member-state", filepath.Join(second, "members.json")).CombinedOutput()
	pid, err := os.ReadFile(filepath.Join(d.dir, "edgeproxy.pid"))
	if err != nil {
		t.Fatal(err)
	}
	holder := "process " + strings.TrimSpace(string(pid))
	if runErr == nil || ctx.Err() != nil || !strings.Contains(string(out), holder) {
		t.Errorf("a second edgeproxy run on the same pins: %v (want an exit naming %s)\n%s", runErr, holder, out)
	}
	out2, err := d.cli(t, "flows", "-cleanup", "-pin-path", d.pin)
	if err == nil || !strings.Contains(out2, holder) {
		t.Errorf("edgeproxy flows -cleanup under a running daemon: %v (want an exit naming %s)\n%s", err, holder, out2)
	}
	if after := pinnedState(t, d.pin); !slices.Equal(before, after) {
		t.Errorf("the pinned state changed:\nbefore %q\nafter  %q", before, after)
	}
}

// secondConfig writes the deployment's configuration without the bulk
// virtual, its control socket and admin endpoint apart from the first
// daemon's, in dir.
func secondConfig(t *testing.T, d *deployment, dir string) string {
	t.Helper()
	s := withoutBulk(d.params)
	s.Admin, s.ControlSocket = "127.0.0.1:9479", filepath.Join(dir, "control.sock")
	path := filepath.Join(dir, "edgeproxy.yaml")
	if err := os.WriteFile(path, []byte(d.lab.SkypeYAML(s)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// withoutBulk returns s without the bulk virtual (the pool stays).
func withoutBulk(s lab.Skype) lab.Skype {
	bulk := *s.Bulk
	bulk.NoVirtual = true
	s.Bulk = &bulk
	return s
}

// TestPrivilegedRestartWithoutVirtual: a fastl4 virtual removed from the
// file while the daemon was down takes no new connection after the
// restart (its VIP:port is refused), while the other fastl4 virtual
// keeps serving.
func TestPrivilegedRestartWithoutVirtual(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	ln, err := d.lab.Backend.Listen("tcp", netip.AddrPortFrom(d.members[0].addr, 5201).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	d.start(t)
	d.waitMember(t, "bulk", d.members[0].name, "up")
	bulk := netip.AddrPortFrom(d.vip, 5201)
	c, err := d.lab.Client.DialContext(t.Context(), "tcp", bulk.String())
	if err != nil {
		t.Fatalf("connect to the bulk virtual: %v", err)
	}
	c.Close()

	d.Stop()
	d.writeConfig(t, withoutBulk(d.params))
	d.start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if c, err := d.lab.Client.DialContext(ctx, "tcp", bulk.String()); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Errorf("connect to the removed bulk virtual after the restart: %v, want connection refused", err)
	}
	web := netip.AddrPortFrom(d.vip, 443)
	if _, err := echo(d.client(web, false), "https://webext.example.com/echo"); err != nil {
		t.Errorf("the remaining fastl4 virtual after the restart: %v", err)
	}
}

// pinnedState lists what is pinned under dir with the contents of the
// maps that describe the service and its flows (counters move on their
// own).
func pinnedState(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var state []string
	for _, e := range entries {
		state = append(state, e.Name())
		switch e.Name() {
		case "settings", "virtuals", "pools", "services", "snat_addrs", "tx_ports", "flows4_tcp", "flows4_udp", "flows6":
		default:
			continue
		}
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, e.Name()), &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		var k, v []byte
		it := m.Iterate()
		for it.Next(&k, &v) {
			state = append(state, fmt.Sprintf("%s %x=%x", e.Name(), k, v))
		}
		if err := it.Err(); err != nil {
			t.Fatalf("read %s: %v", e.Name(), err)
		}
		m.Close()
	}
	return state
}

// TestPrivilegedRestartWithoutFastPath: restarted with no fastl4 virtual
// left, the daemon drains the pinned fast path, then detaches XDP from
// both NICs and removes the pins; /status says so.
func TestPrivilegedRestartWithoutFastPath(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	if out := d.lab.Proxy.Run(t, "ip", "link", "show"); !strings.Contains(out, "xdp") {
		t.Fatalf("no XDP program attached with fastl4 virtuals:\n%s", out)
	}
	d.Stop()
	p := d.params
	p.FastL4 = nil
	d.writeConfig(t, p)
	d.start(t)
	deadline := time.Now().Add(10 * time.Second)
	var state, links string
	for time.Now().Before(deadline) {
		if st, err := d.Status(); err == nil && st.FastPath != nil {
			state = st.FastPath.State
		}
		links = d.lab.Proxy.Run(t, "ip", "link", "show")
		if _, err := os.Stat(d.pin); errors.Is(err, os.ErrNotExist) && state == "removed" && !strings.Contains(links, "xdp") {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("10 s after a restart without fastl4 virtual: /status fast path state %q, pins at %s, links:\n%s", state, d.pin, links)
}

// TestPrivilegedReattachDetachedNIC: when someone else detaches the XDP
// program from the internal NIC, the daemon re-attaches it: connections
// through a fastl4 virtual work again within 2 s, without a restart, and
// /status lists the NIC again.
func TestPrivilegedReattachDetachedNIC(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	web := netip.AddrPortFrom(d.vip, 443)
	if _, err := echo(d.client(web, false), "https://webext.example.com/echo"); err != nil {
		t.Fatalf("the fastl4 virtual before the detach: %v", err)
	}
	d.lab.Proxy.Run(t, "bpftool", "link", "detach", "pinned", filepath.Join(d.pin, "link_int0"))
	detached := time.Now()
	var err error
	for time.Since(detached) < 2*time.Second {
		if _, err = echo(d.client(web, false), "https://webext.example.com/echo"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if took := time.Since(detached); err != nil || took > 2*time.Second {
		t.Fatalf("the fastl4 virtual after its internal NIC lost the XDP program: %v after %v, want an answer within 2 s", err, took)
	}
	st, err := d.Status()
	if err != nil || st.FastPath == nil || !slices.ContainsFunc(st.FastPath.Interfaces, func(s string) bool { return strings.HasPrefix(s, "int0 ") }) {
		t.Fatalf("/status after the re-attach: %v %+v", err, st)
	}
}
