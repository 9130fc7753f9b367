package diagnose

import (
	"fmt"

	"github.com/edgeproxy/edgeproxy/internal/nsrun"
	"github.com/vishvananda/netns"
)

// NamedNS opens the network namespace name (as `ip netns` knows it) and
// returns a function for Env.NS that runs fn inside it (nsrun.Do), and
// a function that releases the namespace.
func NamedNS(name string) (run func(fn func() error) error, release func(), err error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, nil, fmt.Errorf("open network namespace %s: %w", name, err)
	}
	run = func(fn func() error) error { return nsrun.Do(h, fn) }
	return run, func() { h.Close() }, nil
}
