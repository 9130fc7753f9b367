package l4

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkPin is where the bpf_link of an interface is pinned.
func (f *FastPath) linkPin(ifname string) string {
	return filepath.Join(f.opts.PinPath, "link_"+ifname)
}

// attach attaches the program to ifname, or adopts the pinned link and
// updates it to this build of the program, and lists the interface as an
// egress port of the fast path in slot of tx_ports.
func (f *FastPath) attach(ifname string, mode XDPMode, slot uint32) error {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("%w to %s: %w (check the interface name in network.external/internal)", ErrAttach, ifname, err)
	}
	pin := f.linkPin(ifname)
	l, err := link.LoadPinnedLink(pin, nil)
	switch {
	case err == nil:
		if adopted, err := f.adoptLink(l, ifc, pin); err != nil {
			l.Close()
			return err
		} else if !adopted {
			l.Close()
			l = nil
		}
	case errors.Is(err, os.ErrNotExist):
		l = nil
	default:
		return fmt.Errorf("%w to %s: load pinned link %s: %w", ErrAttach, ifname, pin, err)
	}
	if l == nil {
		if l, err = f.attachNew(ifc, mode); err != nil {
			return err
		}
		if err := l.Pin(pin); err != nil {
			l.Close()
			return fmt.Errorf("%w to %s: pin link: %w", ErrAttach, ifname, err)
		}
	}
	f.links[ifname] = l
	f.modes[ifname] = attachedMode(ifc.Index, mode)
	if err := f.setTxPort(slot, uint32(ifc.Index)); err != nil {
		return fmt.Errorf("%w to %s: add egress port: %w", ErrAttach, ifname, err)
	}
	return nil
}

// setTxPort makes ifindex the egress device of slot: the device in
// tx_ports, the slot in tx_slots. An interface that had the slot before
// (another NIC named in an earlier configuration) loses it, so that the
// program no longer sends its next hops to this one.
func (f *FastPath) setTxPort(slot, ifindex uint32) error {
	var stale []uint32
	var k, v uint32
	it := f.objs.TxSlots.Iterate()
	for it.Next(&k, &v) {
		if v == slot && k != ifindex {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read egress slots: %w", err)
	}
	for _, k := range stale {
		if err := f.objs.TxSlots.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove egress slot of ifindex %d: %w", k, err)
		}
	}
	if err := f.objs.TxPorts.Put(slot, ifindex); err != nil {
		return err
	}
	return f.objs.TxSlots.Put(ifindex, slot)
}

// adoptLink keeps a pinned link that is attached to ifc, replacing its
// program when this build differs. It reports false (and unpins it) when
// the link belongs to an interface that is gone.
func (f *FastPath) adoptLink(l link.Link, ifc *net.Interface, pin string) (bool, error) {
	info, err := l.Info()
	if err != nil {
		return false, fmt.Errorf("%w to %s: read pinned link: %w", ErrAttach, ifc.Name, err)
	}
	if xdp := info.XDP(); xdp == nil || int(xdp.Ifindex) != ifc.Index {
		f.log.Warn("dropping a pinned XDP link of another interface", "interface", ifc.Name, "pin", pin)
		if err := l.Unpin(); err != nil {
			return false, fmt.Errorf("%w to %s: unpin stale link: %w", ErrAttach, ifc.Name, err)
		}
		return false, nil
	}
	same, err := sameProgram(info.Program, f.objs.EdgeproxyFastl4)
	if err != nil {
		return false, fmt.Errorf("%w to %s: %w", ErrAttach, ifc.Name, err)
	}
	if !same {
		if err := l.Update(f.objs.EdgeproxyFastl4); err != nil {
			return false, fmt.Errorf("%w to %s: replace program: %w", ErrAttach, ifc.Name, err)
		}
		f.log.Info("replaced the XDP program with this build", "interface", ifc.Name)
	} else {
		f.log.Info("adopted the attached XDP program", "interface", ifc.Name)
	}
	return true, nil
}

// sameProgram compares the attached program with this build by tag (a
// hash of the instructions).
func sameProgram(id ebpf.ProgramID, prog *ebpf.Program) (bool, error) {
	old, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return false, fmt.Errorf("open attached program: %w", err)
	}
	defer old.Close()
	oi, err := old.Info()
	if err != nil {
		return false, fmt.Errorf("read attached program: %w", err)
	}
	ni, err := prog.Info()
	if err != nil {
		return false, fmt.Errorf("read program: %w", err)
	}
	return oi.Tag == ni.Tag, nil
}

// attachNew attaches in the asked mode; native falls back to generic when
// the driver has no native XDP.
func (f *FastPath) attachNew(ifc *net.Interface, mode XDPMode) (link.Link, error) {
	flags := link.XDPDriverMode
	if mode == XDPGeneric {
		flags = link.XDPGenericMode
	}
	l, err := link.AttachXDP(link.XDPOptions{Program: f.objs.EdgeproxyFastl4, Interface: ifc.Index, Flags: flags})
	if err != nil && flags == link.XDPDriverMode && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) {
		f.log.Warn("the driver has no native XDP: attaching in generic mode, which is slower", "interface", ifc.Name)
		l, err = link.AttachXDP(link.XDPOptions{Program: f.objs.EdgeproxyFastl4, Interface: ifc.Index, Flags: link.XDPGenericMode})
	}
	if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("%w to %s: another XDP program is attached: %w (remove it with: ip link set dev %s xdp off)", ErrAttach, ifc.Name, err, ifc.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("%w to %s: %w", ErrAttach, ifc.Name, err)
	}
	return l, nil
}

// attachedMode reads the mode the kernel reports for the interface.
func attachedMode(ifindex int, asked XDPMode) XDPMode {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil {
		return asked
	}
	switch l.Attrs().Xdp.AttachMode {
	case xdpAttachedDrv:
		return XDPNative
	case xdpAttachedSKB:
		return XDPGeneric
	}
	return asked
}

// Attach modes in IFLA_XDP_ATTACHED.
const (
	xdpAttachedDrv = 1
	xdpAttachedSKB = 2
)

// Interfaces lists the attached NICs with their mode, e.g. "ext0 (native)".
func (f *FastPath) Interfaces() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, n := range []string{f.opts.ExtIf, f.opts.IntIf} {
		if m, ok := f.modes[n]; ok {
			out = append(out, fmt.Sprintf("%s (%s)", n, m))
		}
	}
	return out
}
