// Package nsrun runs a function inside a network namespace: the one way
// edgeproxy, its diagnostics and its lab enter a namespace.
package nsrun

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on the calling goroutine with its OS thread locked inside
// the network namespace ns, and returns the thread to its namespace
// afterwards; fn runs where it is when ns is not open (netns.None) or is
// the current namespace. Sockets fn creates stay in ns for their whole
// life. A thread that cannot return is never handed back to the
// scheduler: it stays locked and exits with the goroutine.
func Do(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("get current network namespace: %w", err)
	}
	defer orig.Close()
	if orig.Equal(ns) {
		return fn()
	}
	if err := netns.Set(ns); err != nil {
		return fmt.Errorf("enter network namespace %s: %w", ns, err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// Locked once more than unlocked: the thread exits with the
			// goroutine instead of serving others in the wrong namespace.
			runtime.LockOSThread()
		}
	}()
	return fn()
}
