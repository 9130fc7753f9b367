package l4

import (
	"bufio"
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// pinnedHasFlow4 reports whether the pinned IPv4 TCP flow table under dir
// holds the flow from src to dst, whatever its value's layout.
func pinnedHasFlow4(t *testing.T, dir string, src, dst netip.AddrPort) bool {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.FastL4MapFlows4Tcp), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	k := flowKey(src, dst, unix.IPPROTO_TCP)
	var raw []byte
	err = m.Lookup(key4(&k), &raw)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// TestPrivilegedUpgradeInterruptedRepin: an upgrade that stops between
// two renames of its re-pinning leaves the new program serving, and the
// next start finishes the re-pinning: one layout (the new one) in every
// pinned flow table and in meta, nothing staged left, and the flows kept:
// the transfer and the long poll opened before, and a connection opened
// while the re-pinning was unfinished.
func TestPrivilegedUpgradeInterruptedRepin(t *testing.T) {
	testnet.RequireRoot(t)
	objB := buildVariant(t, "-DFLOW_VAL_TEST_PAD")
	x := trafficEnv(t)
	pins := x.opts.PinPath
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tr := startTraffic(ctx, t, x)
	time.Sleep(time.Second)

	renames := 0
	migrateFault = func(s string) error {
		if s == "rename" {
			if renames++; renames == 1 {
				return errors.New("injected failure after the first rename")
			}
		}
		return nil
	}
	err := x.restart(t, objB)
	migrateFault = nil
	if err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("upgrade failing between two renames: Open returned %v", err)
	}
	if staged, _ := filepath.Glob(filepath.Join(pins, "*"+pinSuffix)); len(staged) == 0 {
		t.Fatal("the interrupted re-pinning left nothing staged: the test injects its failure too late")
	}
	vip := netip.MustParseAddrPort("198.18.0.10:7000")
	c, err := x.lab.Client.DialContext(ctx, "tcp", vip.String())
	if err != nil {
		t.Fatalf("connect while the re-pinning is unfinished: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
		t.Fatalf("connection opened while the re-pinning is unfinished: %v", err)
	}
	client := netip.MustParseAddrPort(c.LocalAddr().String())

	if err := x.restart(t, objB); err != nil {
		t.Fatalf("restart after the interrupted re-pinning: %v", err)
	}
	checkOneLayout(t, pins, objB)
	if !pinnedHasFlow4(t, pins, client, vip) {
		t.Error("the flow opened while the re-pinning was unfinished is not in the pinned table")
	}
	if _, err := c.Write([]byte("still here\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	tr.finish(t, "an interrupted re-pinning and the restart finishing it")
}

// checkOneLayout fails the test unless the pins under dir are all of the
// build obj's layout: meta says so, no staged pin is left, and every
// pinned flow table has that build's values.
func checkOneLayout(t *testing.T, dir, obj string) {
	t.Helper()
	want := variantLayout(t, obj)
	got, _, ok, err := pinnedLayout(dir)
	if err != nil || !ok || got != want {
		t.Fatalf("the pins record layout %s (%v, %v), want %s", got, ok, err, want)
	}
	if staged, _ := filepath.Glob(filepath.Join(dir, "*"+pinSuffix)); len(staged) > 0 {
		t.Fatalf("staged pins left: %v", staged)
	}
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{bpf.FastL4MapFlows4Tcp, bpf.FastL4MapFlows4Udp, bpf.FastL4MapFlows6, bpf.FastL4MapHalfOpen} {
		if n := pinnedValueSize(t, dir, name); n != spec.Maps[name].ValueSize {
			t.Errorf("pinned %s has %d-byte values, want the new layout's %d", name, n, spec.Maps[name].ValueSize)
		}
	}
}
