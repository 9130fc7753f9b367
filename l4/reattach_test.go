package l4

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

func TestPrivilegedRecreatedInternalNIC(t *testing.T) {
	testnet.RequireRoot(t, "ethtool")
	x := trafficEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tr := startTraffic(ctx, t, x)
	time.Sleep(time.Second)

	// ip link del int0, and a new int0 (another ifindex and MAC) with
	// its addresses and routes, as netcfg puts them back.
	if err := x.lab.RecreateInternal(); err != nil {
		t.Fatal(err)
	}
	recreated := time.Now()
	var err error
	for i := 0; i < 40 && time.Since(recreated) < 2*time.Second; i++ {
		actx, acancel := context.WithTimeout(ctx, 250*time.Millisecond)
		_, _, err = x.whoami(actx, netip.MustParseAddrPort("198.18.0.10:7000"))
		acancel()
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("no new connection through the fast path %v after int0 was re-created: %v", time.Since(recreated), err)
	}
	t.Logf("a new connection went through %v after int0 was re-created", time.Since(recreated).Round(time.Millisecond))
	// The established flows follow: the transfer waited while int0 was
	// gone, and from 2 s on it never waits a second again (a transfer
	// still stalled then fails with the gap since its last read).
	time.Sleep(2 * time.Second)
	tr.recv.mu.Lock()
	tr.recv.maxGap = 0
	tr.recv.mu.Unlock()
	time.Sleep(2 * time.Second)
	tr.finish(t, "the re-creation of int0")
}
