package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
