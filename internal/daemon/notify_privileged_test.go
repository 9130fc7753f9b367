package daemon_test

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPrivilegedSystemdNotify: under Type=notify the daemon tells
// systemd READY=1 once it serves, RELOADING=1 (with MONOTONIC_USEC) then
// READY=1 around each reload, by `edgeproxy reload` or SIGHUP, and
// STOPPING=1 when it drains.
func TestPrivilegedSystemdNotify(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	path := filepath.Join(d.dir, "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msgs := make(chan string, 32)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	next := func(want string) string {
		t.Helper()
		select {
		case m := <-msgs:
			if !strings.HasPrefix(m, want+"\n") {
				t.Fatalf("systemd was told %q, want %s first", m, want)
			}
			return m
		case <-time.After(30 * time.Second):
			t.Fatalf("systemd was not told %s within 30s", want)
			return ""
		}
	}
	d.Env = []string{"NOTIFY_SOCKET=" + path}
	d.start(t)
	next("READY=1")

	if out, err := d.reloadCLI(t, d.params); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	if m := next("RELOADING=1"); !strings.Contains(m, "\nMONOTONIC_USEC=") {
		t.Fatalf("RELOADING=1 without MONOTONIC_USEC: %q", m)
	}
	next("READY=1")
	d.signal(t, syscall.SIGHUP)
	next("RELOADING=1")
	next("READY=1")
	d.signal(t, syscall.SIGTERM)
	next("STOPPING=1")
}
