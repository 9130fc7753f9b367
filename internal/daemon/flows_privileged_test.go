package daemon_test

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPrivilegedFlowsKill: `edgeproxy flows kill -client ADDR:PORT`
// removes one fastl4 flow and resets its TCP connection both ways: the
// client and the member each read ECONNRESET, and another flow of the
// same virtual keeps working.
func TestPrivilegedFlowsKill(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	fe1 := d.members[0]
	ln, err := d.lab.Backend.Listen("tcp", netip.AddrPortFrom(fe1.addr, 5201).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	d.start(t)
	d.waitMember(t, "bulk", fe1.name, "up")
	vip := netip.AddrPortFrom(d.vip, 5201)
	killed, killedAtMember := d.bulkConn(t, vip, accepted, "kill\n")
	kept, keptAtMember := d.bulkConn(t, vip, accepted, "keep\n")
	defer killed.Close()
	defer kept.Close()

	out, err := d.cli(t, "flows", "kill", "-config", d.cfgPath, "-client", killed.LocalAddr().String())
	if err != nil || !strings.Contains(out, "1 flows killed") {
		t.Fatalf("edgeproxy flows kill: %v\n%s", err, out)
	}
	for side, c := range map[string]net.Conn{"client": killed, "member": killedAtMember} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 16)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the %s side of the killed flow read %v, want a reset", side, err)
		}
	}
	exchange(t, kept, keptAtMember)
	out, err = d.cli(t, "flows", "-config", d.cfgPath, "-client", killed.LocalAddr().String())
	if err != nil || !strings.Contains(out, "0 flows") {
		t.Fatalf("the killed flow is still listed: %v\n%s", err, out)
	}
}

// bulkConn opens a connection through the bulk virtual and returns both
// ends after a first exchange both ways. The member also accepts its
// monitor's connections: its end is the one that reads the client's
// token.
func (d *deployment) bulkConn(t *testing.T, vip netip.AddrPort, accepted <-chan net.Conn, token string) (net.Conn, net.Conn) {
	t.Helper()
	c, err := d.lab.Client.DialContext(t.Context(), "tcp", vip.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(token)); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for {
		var m net.Conn
		select {
		case m = <-accepted:
		case <-deadline:
			t.Fatal("the member got no connection through the bulk virtual in 10s")
		}
		_ = m.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, len(token))
		if _, err := io.ReadFull(m, buf); err != nil || string(buf) != token {
			m.Close()
			continue
		}
		t.Cleanup(func() { m.Close() })
		exchange(t, c, m)
		return c, m
	}
}

// exchange sends a line each way and fails unless both arrive.
func exchange(t *testing.T, a, b net.Conn) {
	t.Helper()
	for _, p := range [][2]net.Conn{{a, b}, {b, a}} {
		if _, err := p[0].Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		_ = p[1].SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 5)
		if _, err := io.ReadFull(p[1], buf); err != nil {
			t.Fatalf("exchange: %v", err)
		}
	}
}
