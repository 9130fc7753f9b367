package l4

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/edgeproxy/edgeproxy/bpf"
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
		// One RTM_GETLINK for the name, not a dump of every link: this
		// runs five times a second.
		link, err := netlink.LinkByName(nic.name)
		if err == nil && f.attachedTo(nic.name, link.Attrs().Index) {
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
		f.neigh.renew()
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

// followNICs moves the flows of a NIC that was re-created (another
// ifindex or MAC than before, the NICs the settings held) to the new one.
// A half's ingress NIC follows from its direction and the settings, which
// setNICs has rewritten; what remains is every cached next hop (its
// neighbour's MAC, and the egress MAC in tx_devs, may be the old NIC's):
// it is dropped so that the next packet resolves it afresh. One pass over
// the flow tables, only when a NIC changed.
func (f *FastPath) followNICs(before [2]nic) error {
	if before == f.nics || before == ([2]nic{}) {
		return nil
	}
	var moved []half
	err := f.flows.each(func(k bpf.FastL4FlowKey, v *bpf.FastL4FlowVal) {
		moved = append(moved, half{k, *v})
	})
	if err != nil {
		return fmt.Errorf("move flows to the re-created NIC: %w", err)
	}
	if err := f.dropNextHops(moved); err != nil {
		return fmt.Errorf("move flows to the re-created NIC: %w", err)
	}
	f.log.Info("moved the flows to the NICs as they are now", "flows", len(moved), "external_ifindex", f.nics[0].ifindex, "internal_ifindex", f.nics[1].ifindex)
	return nil
}

// dropNextHops clears the cached next hop of the halves read, each
// entry read again just before it is written: the pass takes seconds
// at a million flows, and a snapshot written back would put an ended
// pair's state (its closing bits, sequence numbers, other key) into the
// key's new flow. A key that holds another flow (created since, or
// another peer) is left as it is: its next hop is resolved on the new
// NIC already.
func (f *FastPath) dropNextHops(read []half) error {
	for i := range read {
		h := &read[i]
		var cur bpf.FastL4FlowVal
		var err error
		if h.val.HalfOpen != 0 {
			err = f.flows.half.Lookup(&h.key, &cur)
		} else {
			err = f.flows.Lookup(h.key, &cur)
		}
		if err != nil || cur.CreatedNs != h.val.CreatedNs || cur.Peer != h.val.Peer || cur.TxSlot == 0 {
			continue
		}
		cur.TxSlot = 0
		if h.val.HalfOpen != 0 {
			err = f.flows.half.Update(&h.key, &cur, ebpf.UpdateExist)
		} else {
			err = f.flows.Update(h.key, &cur, ebpf.UpdateExist)
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}
