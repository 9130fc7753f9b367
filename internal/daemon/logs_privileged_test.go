package daemon_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestPrivilegedDaemonAccessLogRotation: requests flow through the L7
// virtual while the access log is renamed and the daemon gets SIGUSR1, as
// logrotate does; every request has its line in one of the files and the
// daemon writes to the new file.
func TestPrivilegedDaemonAccessLogRotation(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	access := filepath.Join(d.dir, "access.log")
	p := d.params
	p.AccessLog = access
	d.writeConfig(t, p)
	d.start(t)
	c := d.client(netip.AddrPortFrom(d.lab.VIP4, 443), true)
	defer c.CloseIdleConnections()
	const requests, rotations = 300, 5
	done := make(chan error, 1)
	go func() {
		for i := range requests {
			if _, err := echo(c, fmt.Sprintf("https://webext.example.com/echo?n=%d", i)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for r := range rotations {
		time.Sleep(50 * time.Millisecond)
		if err := os.Rename(access, fmt.Sprintf("%s.%d", access, r)); err != nil {
			t.Fatalf("rotate: %v", err)
		}
		d.signal(t, syscall.SIGUSR1)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The daemon writes a request's line after its response: the last
	// one may follow the client's return by a moment.
	files, _ := filepath.Glob(access + "*")
	count := func() int {
		n := 0
		for _, f := range files {
			b, _ := os.ReadFile(f)
			n += bytes.Count(b, []byte(`"msg":"request"`))
		}
		return n
	}
	deadline := time.Now().Add(5 * time.Second)
	for count() < requests && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := count(); n != requests {
		t.Fatalf("%d request lines in %d files for %d requests across %d rotations", n, len(files), requests, rotations)
	}
	if _, err := echo(c, "https://webext.example.com/echo?after=rotation"); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(access)
		if bytes.Contains(b, []byte("after=rotation")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon does not write to the new %s after SIGUSR1", access)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
