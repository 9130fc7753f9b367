package hostprobe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// XDPFeatures are the XDP capabilities a driver advertises (enum
// netdev_xdp_act in the kernel's netdev netlink family, Linux 6.3+).
type XDPFeatures uint64

// XDP feature bits.
const (
	XDPBasic       XDPFeatures = 1 << 0 // native XDP: PASS, DROP, TX, ABORTED
	XDPRedirect    XDPFeatures = 1 << 1 // XDP_REDIRECT out of this device's programs
	XDPNDOXmit     XDPFeatures = 1 << 2 // can be the target of XDP_REDIRECT
	XDPXSKZeroCopy XDPFeatures = 1 << 3
	XDPHWOffload   XDPFeatures = 1 << 4
	XDPRxSG        XDPFeatures = 1 << 5
	XDPNDOXmitSG   XDPFeatures = 1 << 6
)

func (f XDPFeatures) String() string {
	names := []string{"basic", "redirect", "ndo-xmit", "xsk-zerocopy", "hw-offload", "rx-sg", "ndo-xmit-sg"}
	var out []string
	for i, n := range names {
		if f&(1<<uint(i)) != 0 {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ",")
}

// nativeXDPDrivers have native (driver-mode) XDP with XDP_REDIRECT, for
// kernels older than 6.3 that do not report XDP features.
var nativeXDPDrivers = []string{
	"atlantic", "bnxt_en", "dpaa2-eth", "ena", "enetc", "fec", "gve", "hv_netvsc", "i40e", "ice", "igb", "igc",
	"ixgbe", "ixgbevf", "lan966x-switch", "mlx4_en", "mlx5_core", "mvneta", "mvpp2", "netdevsim", "nfp", "qede",
	"sfc", "stmmac", "thunder-nicvf", "tsnep", "tun", "veth", "virtio_net",
}

// Link is what the host says about one network interface.
type Link struct {
	Name   string
	Index  int
	Type   string // netlink link type: device, veth, dummy, bond, ...
	Up     bool
	Driver string // from ethtool; "" when the device has none
	Addrs  []netip.Prefix

	// Features is the driver's XDP support as the kernel reports it;
	// FeaturesKnown is false on kernels before 6.3, where NativeXDP falls
	// back to a list of drivers.
	Features      XDPFeatures
	FeaturesKnown bool

	// ProgID is the XDP program attached now (0: none), in AttachMode
	// (native, generic, offload).
	ProgID     uint32
	AttachMode string
}

// NativeXDP reports whether the driver runs XDP programs natively.
// Without it the kernel falls back to generic XDP, which runs after the
// socket buffer is allocated and is several times slower.
func (l *Link) NativeXDP() bool {
	if l.FeaturesKnown {
		return l.Features&XDPBasic != 0
	}
	return slices.Contains(nativeXDPDrivers, l.Driver)
}

// RedirectTarget reports whether frames redirected by XDP from the other
// NIC can be transmitted through this one natively. On kernels before 6.3
// it is assumed for drivers with native XDP.
func (l *Link) RedirectTarget() bool {
	if l.FeaturesKnown {
		return l.Features&XDPNDOXmit != 0
	}
	return l.NativeXDP()
}

// HasAddr reports whether a is configured on the link.
func (l *Link) HasAddr(a netip.Addr) bool {
	for _, p := range l.Addrs {
		if p.Addr() == a {
			return true
		}
	}
	return false
}

// Interface inspects the named interface in the calling thread's network
// namespace.
func Interface(name string) (*Link, error) {
	lk, err := netlink.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("inspect interface %s: %w", name, ErrNoInterface)
		}
		return nil, fmt.Errorf("inspect interface %s: %w", name, err)
	}
	a := lk.Attrs()
	l := &Link{
		Name:  a.Name,
		Index: a.Index,
		Type:  lk.Type(),
		Up:    a.Flags&unix.IFF_UP != 0,
	}
	if x := a.Xdp; x != nil && x.Attached {
		l.ProgID = x.ProgId
		switch x.AttachMode {
		case nlXDPAttachedDrv:
			l.AttachMode = "native"
		case nlXDPAttachedSKB:
			l.AttachMode = "generic"
		case nlXDPAttachedHW:
			l.AttachMode = "offload"
		case nlXDPAttachedMulti:
			l.AttachMode = "multiple"
		}
	}
	addrs, err := netlink.AddrList(lk, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, ad := range addrs {
		ip, ok := netip.AddrFromSlice(ad.IP)
		if !ok {
			continue
		}
		ones, _ := ad.Mask.Size()
		l.Addrs = append(l.Addrs, netip.PrefixFrom(ip.Unmap(), ones))
	}
	l.Driver, _ = driver(name)
	l.Features, l.FeaturesKnown = xdpFeatures(a.Index)
	return l, nil
}

// IFLA_XDP_ATTACHED values.
const (
	nlXDPAttachedDrv   = 1
	nlXDPAttachedSKB   = 2
	nlXDPAttachedHW    = 3
	nlXDPAttachedMulti = 4
)

// driver returns the interface's driver name through ethtool.
func driver(name string) (string, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open ethtool socket: %w", err)
	}
	defer unix.Close(fd)
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, name)
	if err != nil {
		return "", fmt.Errorf("read driver of %s: %w", name, err)
	}
	return unix.ByteSliceToString(info.Driver[:]), nil
}

// The kernel's "netdev" generic netlink family.
const (
	netdevCmdDevGet        = 1
	netdevAttrIfindex      = 1
	netdevAttrXDPFeatures  = 3
	netdevFamilyName       = "netdev"
	netdevFamilyMinVersion = 1
)

// xdpFeatures asks the kernel for the device's XDP features. ok is false
// when the kernel does not report them (before 6.3).
func xdpFeatures(ifindex int) (XDPFeatures, bool) {
	fam, err := netlink.GenlFamilyGet(netdevFamilyName)
	if err != nil {
		return 0, false
	}
	req := nl.NewNetlinkRequest(int(fam.ID), unix.NLM_F_REQUEST)
	// The generic netlink header is written by hand: its two reserved
	// bytes must be zero, which nl.Genlmsg does not guarantee.
	req.AddRawData([]byte{netdevCmdDevGet, netdevFamilyMinVersion, 0, 0})
	req.AddRawData(nl.NewRtAttr(netdevAttrIfindex, nl.Uint32Attr(uint32(ifindex))).Serialize())
	msgs, err := req.Execute(unix.NETLINK_GENERIC, 0)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		if len(m) < nl.SizeofGenlmsg {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[nl.SizeofGenlmsg:])
		if err != nil {
			continue
		}
		for _, a := range attrs {
			if a.Attr.Type == netdevAttrXDPFeatures && len(a.Value) >= 8 {
				return XDPFeatures(binary.NativeEndian.Uint64(a.Value)), true
			}
		}
	}
	return 0, false
}
