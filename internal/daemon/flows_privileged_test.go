package daemon_test

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPrivilegedFlowsKill: `edgeproxy flows kill -client ADDR:PORT`
// removes one fastl4 flow and resets its TCP connection both ways: the
// client and the member each read ECONNRESET, and another flow of the
// same virtual keeps working. The virtual's connection log (log.fastl4)
// has both openings and the killed flow's close.
func TestPrivilegedFlowsKill(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	connLog := filepath.Join(d.dir, "fastl4.log")
	s := d.skype()
	s.FastL4Log = connLog
	s.FastL4.LogBulk = true
	d.writeConfig(t, s)
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
	// Opens are read from the program's ring a few times a second.
	want := []string{
		`"msg":"open","virtual":"bulk","proto":"tcp","client":"` + killed.LocalAddr().String() + `"`,
		`"msg":"open","virtual":"bulk","proto":"tcp","client":"` + kept.LocalAddr().String() + `"`,
		`"msg":"close","virtual":"bulk","proto":"tcp","client":"` + killed.LocalAddr().String() + `"`,
		`"termination":"killed"`,
	}
	var b []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if b, _ = os.ReadFile(connLog); containsAll(string(b), want) {
			break
		}
	}
	if !containsAll(string(b), want) || strings.Count(string(b), "\n") != 3 {
		t.Errorf("connection log %s:\n%s\nwant 3 lines with %q", connLog, b, want)
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
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
