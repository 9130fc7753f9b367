package l4

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/vishvananda/netns"

	"github.com/edgeproxy/edgeproxy/internal/nsrun"
)

// ownNetns opens the caller's network namespace: the fast path's, where
// the upkeep looks for its NICs whatever goroutine runs it.
func ownNetns() (netns.NsHandle, error) {
	h, err := netns.Get()
	if err != nil {
		return netns.None(), fmt.Errorf("open network namespace: %w", err)
	}
	return h, nil
}

// keepAttached re-attaches the program to a NIC that was re-created or
// whose XDP program someone else detached, and logs each loss and
// recovery once. Meanwhile Interfaces leaves the NIC out.
func (f *FastPath) keepAttached() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := nsrun.Do(f.netns, func() error { f.reattach(); return nil }); err != nil {
		f.limiter.log(f.log, "reattach", slog.LevelWarn, "check the XDP attachments", "err", err)
	}
}

// reattach is keepAttached inside the fast path's namespace.
func (f *FastPath) reattach() {
	for _, nic := range []struct {
		name string
		mode XDPMode
		slot uint32
	}{{f.opts.ExtIf, f.opts.XDPMode, 1}, {f.opts.IntIf, f.opts.IntXDPMode, 2}} {
		if nic.name == "" {
			continue
		}
		ifc, err := net.InterfaceByName(nic.name)
		if err == nil && f.attachedTo(nic.name, ifc.Index) {
			continue
		}
		if _, ok := f.modes[nic.name]; ok {
			f.log.Warn("the XDP program is no longer attached: re-attaching when the interface is there", "interface", nic.name)
			delete(f.modes, nic.name)
		}
		if l := f.links[nic.name]; l != nil {
			l.Close()
			delete(f.links, nic.name)
		}
		if err != nil {
			continue
		}
		if err := f.attach(nic.name, nic.mode, nic.slot); err != nil {
			delete(f.modes, nic.name)
			f.limiter.log(f.log, "reattach "+nic.name, slog.LevelWarn, "re-attach the XDP program", "interface", nic.name, "err", err)
			continue
		}
		if err := f.setNICs(); err != nil {
			f.limiter.log(f.log, "reattach "+nic.name, slog.LevelWarn, "re-attach the XDP program", "interface", nic.name, "err", err)
			continue
		}
		f.log.Info("re-attached the XDP program", "interface", nic.name)
	}
}

// attachedTo says whether the program's link on name is attached to the
// interface with ifindex.
func (f *FastPath) attachedTo(name string, ifindex int) bool {
	l := f.links[name]
	if l == nil {
		return false
	}
	info, err := l.Info()
	if err != nil {
		return false
	}
	xdp := info.XDP()
	return xdp != nil && int(xdp.Ifindex) == ifindex
}
