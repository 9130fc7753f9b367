package l4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// Ingress validation: the program accepts a client's packets only on the
// external NIC and a member's only on the internal one, addressed to the
// NIC's MAC, and opens no flow for a martian source. The control plane
// gives it the NICs (settings) and the martian prefixes (two LPM tries).

// bogons are sources that never arrive from outside, whatever the
// configuration: this network, loopback, link-local, multicast, reserved
// and broadcast; IPv6 unspecified, loopback, IPv4-mapped, link-local and
// multicast.
var bogons = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::ffff:0:0/96"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// nic is what the program checks a NIC's packets against.
type nic struct {
	ifindex uint32
	mac     [6]byte
}

// setNICs writes the external and internal NICs into the settings: the
// program records them in each new flow half. With one NIC attached, both
// sides use it.
func (f *FastPath) setNICs() error {
	for i, name := range []string{f.opts.ExtIf, f.opts.IntIf} {
		if name == "" {
			continue
		}
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return fmt.Errorf("find NIC %s: %w", name, err)
		}
		if len(ifc.HardwareAddr) != 6 {
			return fmt.Errorf("find NIC %s: %w: not an Ethernet interface (MAC %q)", name, ErrAttach, ifc.HardwareAddr)
		}
		f.nics[i] = nic{ifindex: uint32(ifc.Index), mac: [6]byte(ifc.HardwareAddr)}
	}
	if f.nics[0].ifindex == 0 {
		f.nics[0] = f.nics[1]
	}
	if f.nics[1].ifindex == 0 {
		f.nics[1] = f.nics[0]
	}
	var s bpf.FastL4Config
	if err := f.objs.Settings.Lookup(uint32(0), &s); err != nil {
		return fmt.Errorf("read fast path settings: %w", err)
	}
	before := [2]nic{{s.ExtIfindex, s.ExtMac}, {s.IntIfindex, s.IntMac}}
	s.ExtIfindex, s.ExtMac = f.nics[0].ifindex, f.nics[0].mac
	s.IntIfindex, s.IntMac = f.nics[1].ifindex, f.nics[1].mac
	if err := f.objs.Settings.Put(uint32(0), &s); err != nil {
		return fmt.Errorf("write fast path settings: %w", err)
	}
	return f.followNICs(before)
}

// martianPrefixes lists the sources the program refuses new flows from:
// the bogons, the host's own addresses (and the broadcast address of
// their IPv4 subnets), the internal subnets, every virtual's VIP and the
// given SNAT addresses. A route to everything (a /0) is no subnet of its
// own and is left out.
func martianPrefixes(h Host, snat []netip.Addr) []netip.Prefix {
	out := append([]netip.Prefix(nil), bogons...)
	host := func(a netip.Addr) {
		if a.IsValid() {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		}
	}
	for _, p := range h.Addresses {
		host(p.Addr())
		if p.Addr().Is4() && p.Bits() < 31 {
			host(broadcast4(p.Masked()))
		}
	}
	for _, p := range h.Internal {
		if p.Bits() > 0 {
			out = append(out, p.Masked())
		}
	}
	for _, a := range h.VIPs {
		host(a)
	}
	for _, a := range snat {
		host(a)
	}
	return out
}

func broadcast4(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	x := binary.BigEndian.Uint32(b[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(b[:], x)
	return netip.AddrFrom4(b)
}

// setMartians makes the program's martian tries hold exactly ps.
func (f *FastPath) setMartians(ps []netip.Prefix) error {
	want4 := map[bpf.FastL4Martian4]bool{}
	want6 := map[bpf.FastL4Martian6]bool{}
	for _, p := range ps {
		p = p.Masked()
		if p.Addr().Is4() {
			want4[bpf.FastL4Martian4{Prefixlen: uint32(p.Bits()), Addr: addrToBPF(p.Addr()).W[0]}] = true
		} else {
			var k bpf.FastL4Martian6
			b := p.Addr().As16() // as is: an IPv4-mapped prefix stays IPv6
			for i := range 4 {
				k.Addr.W[i] = binary.LittleEndian.Uint32(b[i*4:])
			}
			k.Prefixlen = uint32(p.Bits())
			want6[k] = true
		}
	}
	if err := syncSet(f.objs.Martians4, want4); err != nil {
		return fmt.Errorf("write IPv4 martians: %w", err)
	}
	if err := syncSet(f.objs.Martians6, want6); err != nil {
		return fmt.Errorf("write IPv6 martians: %w", err)
	}
	return nil
}

// syncSet makes the keys of m (values: 1) exactly want.
func syncSet[K comparable](m *ebpf.Map, want map[K]bool) error {
	var stale []K
	var k K
	var v uint8
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	for k := range want {
		if err := m.Put(k, uint8(1)); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("%w: more than %d martian prefixes", ErrTooMany, m.MaxEntries())
			}
			return err
		}
	}
	return nil
}
