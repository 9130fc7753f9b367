package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// Bird is a BIRD 2 routing daemon running in a namespace, the upstream
// router of scale-out tests.
type Bird struct {
	ns   *NS
	cmd  *exec.Cmd
	sock string
}

// StartBird runs bird in ns with the configuration conf, its files in
// dir; the caller must Close it.
func StartBird(ns *NS, dir, conf string) (*Bird, error) {
	path := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("write bird configuration: %w", err)
	}
	b := &Bird{ns: ns, sock: filepath.Join(dir, "bird.ctl")}
	b.cmd = ns.Command(context.Background(), "bird", "-f", "-c", path, "-s", b.sock, "-P", filepath.Join(dir, "bird.pid"))
	b.cmd.Stderr = os.Stderr
	if err := b.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start bird in %s (install bird2): %w", ns.Name, err)
	}
	return b, nil
}

// Show runs a birdc show command, e.g. Show("protocols", "all").
func (b *Bird) Show(args ...string) string {
	out, err := b.ns.Output("birdc", append([]string{"-s", b.sock, "show"}, args...)...)
	if err != nil {
		return err.Error()
	}
	return out
}

// Close stops bird.
func (b *Bird) Close() {
	_ = b.cmd.Process.Kill()
	_ = b.cmd.Wait()
}

// NextHops returns the next hops of the kernel route to dst in ns (none
// when there is no such route).
func NextHops(ns *NS, dst string) []string {
	out, err := ns.Output("ip", "route", "show", dst)
	if err != nil {
		return nil
	}
	var hops []string
	fs := strings.Fields(out)
	for i := 0; i+1 < len(fs); i++ {
		if fs[i] == "via" {
			hops = append(hops, fs[i+1])
		}
	}
	return hops
}

// RouteWatch records when the kernel routes of a namespace to one
// destination change.
type RouteWatch struct {
	dst  netip.Prefix
	done chan struct{}
	mu   sync.Mutex
	at   []time.Time
}

// WatchRoute records the changes of the routes to dst in ns until Close.
func WatchRoute(ns *NS, dst netip.Prefix) (*RouteWatch, error) {
	w := &RouteWatch{dst: dst.Masked(), done: make(chan struct{})}
	ch := make(chan netlink.RouteUpdate, 64)
	h := ns.Handle()
	if err := netlink.RouteSubscribeWithOptions(ch, w.done, netlink.RouteSubscribeOptions{Namespace: &h}); err != nil {
		return nil, fmt.Errorf("watch routes to %s in %s: %w", dst, ns.Name, err)
	}
	go func() {
		for u := range ch {
			if u.Dst == nil {
				continue
			}
			a, ok := netip.AddrFromSlice(u.Dst.IP)
			ones, _ := u.Dst.Mask.Size()
			if ok && netip.PrefixFrom(a.Unmap(), ones) == w.dst {
				w.mu.Lock()
				w.at = append(w.at, time.Now())
				w.mu.Unlock()
			}
		}
	}()
	return w, nil
}

// Changes returns when the routes changed so far.
func (w *RouteWatch) Changes() []time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.at)
}

// Close stops watching.
func (w *RouteWatch) Close() { close(w.done) }
