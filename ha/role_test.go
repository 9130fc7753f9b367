package ha

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// keepalived's notify_fifo lines about the pair's sync group (or its
// external instance) give the role; lines about anything else do not.
func TestParseNotify(t *testing.T) {
	cases := map[string]Role{
		`GROUP "edgeproxy" MASTER`:            RoleActive,
		`GROUP "edgeproxy" BACKUP`:            RoleStandby,
		`INSTANCE "edgeproxy_ext" FAULT 0`:    RoleFault,
		`GROUP "edgeproxy" STOP`:              RoleStopped,
		`INSTANCE "edgeproxy_int" MASTER 150`: "",
		`GROUP "other" MASTER`:                "",
		`GROUP`:                               "",
	}
	for line, want := range cases {
		got, ok := ParseNotify(line)
		if ok != (want != "") || got != want {
			t.Errorf("%q: %q %v, want %q", line, got, ok, want)
		}
	}
}

// Follow creates the FIFO, hands each role keepalived writes to set,
// survives the writer closing (keepalived restarting), and stops with ctx.
func TestFollowReadsTheFifoAcrossWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "keepalived.fifo")
	roles := make(chan Role, 8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Follow(ctx, path, func(r Role) { roles <- r }) }()
	write := func(s string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				_, err = f.WriteString(s)
				f.Close()
				if err == nil {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("write to %s: %v", path, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	next := func(want Role) {
		t.Helper()
		select {
		case r := <-roles:
			if r != want {
				t.Fatalf("role %s, want %s", r, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no role within 5s, want %s", want)
		}
	}
	write("GROUP \"edgeproxy\" BACKUP\n")
	next(RoleStandby)
	write("INSTANCE \"edgeproxy_int\" MASTER 150\nGROUP \"edgeproxy\" MASTER\n")
	next(RoleActive)
	cancel()
	select {
	case err := <-done:
		if err != context.Canceled {
			t.Fatalf("Follow returned %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Follow did not stop with its context")
	}
}
