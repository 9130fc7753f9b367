package l7

import (
	"net/netip"
	"testing"
	"time"
)

// connEvent is one call of Options.OnConn.
type connEvent struct {
	open          bool
	client, local netip.AddrPort
}

// The listener tells of each client connection it accepts and of its
// end, by its client and local tuples.
func TestOnConn(t *testing.T) {
	events := make(chan connEvent, 16)
	e := newEnv(t, envOptions{onConn: func(open bool, client, local netip.AddrPort) {
		events <- connEvent{open, client, local}
	}})
	rc := e.dialPlain()
	client := netip.MustParseAddrPort(rc.c.LocalAddr().String())
	local := netip.MustParseAddrPort(e.httpAddr)
	next := func() connEvent {
		select {
		case ev := <-events:
			return ev
		case <-time.After(3 * time.Second):
			t.Fatal("no connection event within 3s")
		}
		return connEvent{}
	}
	if ev := next(); ev != (connEvent{true, client, local}) {
		t.Errorf("on accept: %+v, want open %s -> %s", ev, client, local)
	}
	rc.c.Close()
	if ev := next(); ev != (connEvent{false, client, local}) {
		t.Errorf("on close: %+v, want closed %s -> %s", ev, client, local)
	}
}
