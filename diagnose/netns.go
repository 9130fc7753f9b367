package diagnose

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// NamedNS opens the network namespace name (as `ip netns` knows it) and
// returns a function for Env.NS that runs fn inside it on a locked OS
// thread, and a function that releases the namespace.
func NamedNS(name string) (run func(fn func() error) error, release func(), err error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, nil, fmt.Errorf("open network namespace %s: %w", name, err)
	}
	run = func(fn func() error) error {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return fmt.Errorf("get current network namespace: %w", err)
		}
		defer orig.Close()
		if err := netns.Set(h); err != nil {
			return fmt.Errorf("enter network namespace %s: %w", name, err)
		}
		defer func() {
			if err := netns.Set(orig); err != nil {
				// Never hand a thread in the wrong namespace back to the
				// scheduler: locked without unlock, it ends with the goroutine.
				runtime.LockOSThread()
			}
		}()
		return fn()
	}
	return run, func() { h.Close() }, nil
}
