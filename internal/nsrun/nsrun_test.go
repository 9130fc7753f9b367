package nsrun

import (
	"errors"
	"os"
	"os/exec"
	"testing"

	"github.com/vishvananda/netns"
)

// TestPrivilegedDo enters a fresh namespace and comes back: fn sees the
// namespace's own interfaces, its error is returned, and the caller's
// thread is back in its namespace afterwards.
func TestPrivilegedDo(t *testing.T) {
	if testing.Short() {
		t.Skip("privileged test: skipped under -short")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("privileged test: needs root")
		}
		t.Skip("privileged test: needs root")
	}
	name := "epn-nsrun"
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()

	want := errors.New("from fn")
	err = Do(ns, func() error {
		cur, err := netns.Get()
		if err != nil {
			return err
		}
		defer cur.Close()
		if !cur.Equal(ns) {
			t.Error("fn did not run in the namespace")
		}
		return want
	})
	if !errors.Is(err, want) {
		t.Fatalf("Do returned %v, want fn's error", err)
	}
	ran := false
	if err := Do(netns.None(), func() error { ran = true; return nil }); err != nil || !ran {
		t.Fatalf("Do(None): ran %t, %v", ran, err)
	}
	// Many calls leave no thread behind in the namespace.
	for range 50 {
		if err := Do(ns, func() error { return nil }); err != nil {
			t.Fatal(err)
		}
		cur, err := netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		back := cur.Equal(orig)
		cur.Close()
		if !back {
			t.Fatal("a thread left in the namespace after Do")
		}
	}
}
