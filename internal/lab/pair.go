package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strings"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// Pair is the lab of an active/standby pair: a client, two proxy nodes
// and a backend, with a bridge on each side standing in for the DMZ
// switches (IPv4 only).
//
//	client ns               node ns a / b                    backend ns
//	sw0 198.18.0.1  <->  ext0 198.18.0.2 / .3   int0 198.19.0.2 / .3  <->  sw1 198.19.0.1
//	                     VIP 198.18.0.10        floating 198.19.0.5        lo 198.19.1.11, .12 ...
//
// Each node's ext0 and int0 are veths whose peers are ports of sw0 and
// sw1. The VIP and the floating address are on no node: keepalived puts
// them on the active one.
type Pair struct {
	Client, Backend *NS
	Nodes           [2]*NS

	ClientAddr, RouterAddr netip.Addr
	ExtAddrs, IntAddrs     [2]netip.Addr
	VIP, Floating          netip.Addr
	Members                []netip.Addr
	MemberNet              netip.Prefix

	dummies []link.Link
}

// BuildPair builds a pair lab with members pool member addresses; the
// caller must Close it.
func BuildPair(members int) (_ *Pair, err error) {
	var suffix [3]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return nil, fmt.Errorf("build pair lab: %w", err)
	}
	id := "epha-" + hex.EncodeToString(suffix[:])
	a := netip.MustParseAddr
	p := &Pair{ClientAddr: a("198.18.0.1"), RouterAddr: a("198.19.0.1"),
		ExtAddrs: [2]netip.Addr{a("198.18.0.2"), a("198.18.0.3")}, IntAddrs: [2]netip.Addr{a("198.19.0.2"), a("198.19.0.3")},
		VIP: a("198.18.0.10"), Floating: a("198.19.0.5"), MemberNet: netip.MustParsePrefix("198.19.1.0/24")}
	for i := range min(max(members, 1), 200) {
		p.Members = append(p.Members, netip.AddrFrom4([4]byte{198, 19, 1, byte(11 + i)}))
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	for _, n := range []struct {
		dst  **NS
		role string
	}{{&p.Client, "client"}, {&p.Backend, "backend"}, {&p.Nodes[0], "a"}, {&p.Nodes[1], "b"}} {
		if *n.dst, err = NewNS(id + "-" + n.role); err != nil {
			return nil, err
		}
	}
	if err := p.switches(); err != nil {
		return nil, fmt.Errorf("build pair lab %s: %w", id, err)
	}
	for i := range p.Nodes {
		if err := p.wireNode(i); err != nil {
			return nil, fmt.Errorf("build pair lab %s: node %d: %w", id, i, err)
		}
	}
	return p, nil
}

// switches makes the bridges with the client's and the router's
// addresses, and the members' addresses.
func (p *Pair) switches() error {
	if err := addSwitch(p.Client, "sw0", netip.PrefixFrom(p.ClientAddr, 24)); err != nil {
		return err
	}
	if err := addSwitch(p.Backend, "sw1", netip.PrefixFrom(p.RouterAddr, 24)); err != nil {
		return err
	}
	return addMembers(p.Backend, p.Members)
}

// wireNode connects node i's ext0 and int0 to the bridges and gives them
// the node's own addresses and routes.
func (p *Pair) wireNode(i int) error {
	dummies, err := plugNode(nodePlug{node: p.Nodes[i], index: i, ext: p.Client, int: p.Backend,
		extAddr: p.ExtAddrs[i], intAddr: p.IntAddrs[i], gateway: p.ClientAddr, memberNet: p.MemberNet, memberVia: p.RouterAddr})
	p.dummies = append(p.dummies, dummies...)
	return err
}

// addSwitch makes the bridge name in ns, up, with addrs.
func addSwitch(ns *NS, name string, addrs ...netip.Prefix) error {
	return ns.Do(func() error {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			return fmt.Errorf("add bridge %s: %w", name, err)
		}
		return setupLink(name, addrs)
	})
}

// addMembers puts the members' addresses on the backend's MemberIf.
func addMembers(backend *NS, members []netip.Addr) error {
	var mem []netip.Prefix
	for _, m := range members {
		mem = append(mem, netip.PrefixFrom(m, 32))
	}
	return backend.Do(func() error { return setupLink(MemberIf, mem) })
}

// nodePlug is a proxy node plugged into two switches: ext0 into the
// bridge sw0 of ext, int0 into sw1 of int.
type nodePlug struct {
	node             *NS
	index            int // names the ports: p<index>-ext, p<index>-int
	ext, int         *NS
	extAddr, intAddr netip.Addr // the node's own, /24
	gateway          netip.Addr // the default route, on the external side
	memberNet        netip.Prefix
	memberVia        netip.Addr // on the internal side
}

// plugNode connects the node's NICs to the switches (each port with an
// XDP_PASS program, returned, so that XDP_REDIRECT into the node's NICs
// works) and gives them their addresses and routes.
func plugNode(n nodePlug) ([]link.Link, error) {
	h, err := netlink.NewHandleAt(n.node.handle)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in %s: %w", n.node.Name, err)
	}
	defer h.Close()
	var dummies []link.Link
	for _, s := range []struct {
		local, port, bridge string
		ns                  *NS
	}{{ExtIf, fmt.Sprintf("p%d-ext", n.index), "sw0", n.ext}, {IntIf, fmt.Sprintf("p%d-int", n.index), "sw1", n.int}} {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: s.local}, PeerName: s.port, PeerNamespace: netlink.NsFd(int(s.ns.handle))}
		if err := h.LinkAdd(v); err != nil {
			return dummies, fmt.Errorf("add veth %s/%s: %w", s.local, s.port, err)
		}
		var dummy link.Link
		if err := s.ns.Do(func() error {
			port, err := netlink.LinkByName(s.port)
			if err != nil {
				return err
			}
			br, err := netlink.LinkByName(s.bridge)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetMaster(port, br); err != nil {
				return fmt.Errorf("attach %s to %s: %w", s.port, s.bridge, err)
			}
			if err := netlink.LinkSetUp(port); err != nil {
				return err
			}
			dummy, err = AttachPass(s.port)
			return err
		}); err != nil {
			return dummies, err
		}
		dummies = append(dummies, dummy)
	}
	if err := n.node.Do(func() error {
		if err := setupLink(ExtIf, []netip.Prefix{netip.PrefixFrom(n.extAddr, 24)}); err != nil {
			return err
		}
		if err := setupLink(IntIf, []netip.Prefix{netip.PrefixFrom(n.intAddr, 24)}); err != nil {
			return err
		}
		return addRoutes(route{IntIf, n.memberNet, n.memberVia}, route{ExtIf, netip.Prefix{}, n.gateway})
	}); err != nil {
		return dummies, err
	}
	return dummies, txOff(n.node, ExtIf, IntIf)
}

// txOff turns TX checksum offload off on the named interfaces of ns, so
// that the frames they send carry full checksums the fast path can
// update.
func txOff(ns *NS, ifcs ...string) error {
	for _, ifc := range ifcs {
		if out, err := ns.Command(context.Background(), "ethtool", "-K", ifc, "tx", "off").CombinedOutput(); err != nil {
			return fmt.Errorf("turn off tx checksum offload on %s: %v: %s", ifc, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// Close tears the pair lab down.
func (p *Pair) Close() {
	for _, d := range p.dummies {
		if d != nil {
			d.Close()
		}
	}
	p.dummies = nil
	for _, ns := range []*NS{p.Client, p.Backend, p.Nodes[0], p.Nodes[1]} {
		ns.Close()
	}
}

// NodeNetworkYAML is node i's network section.
func (p *Pair) NodeNetworkYAML(i int) string {
	return nodeNetworkYAML(p.ExtAddrs[i], p.IntAddrs[i], p.ClientAddr, p.MemberNet, p.RouterAddr)
}

// nodeNetworkYAML is the network section of a node plugged into the
// lab's switches (plugNode).
func nodeNetworkYAML(extAddr, intAddr, gateway netip.Addr, memberNet netip.Prefix, memberVia netip.Addr) string {
	return fmt.Sprintf(`network:
  external:
    interface: %s
    addresses: [%s/24]
    gateway: %s
  internal:
    interface: %s
    addresses: [%s/24]
    routes:
      - {to: %s, via: %s}
`, ExtIf, extAddr, gateway, IntIf, intAddr, memberNet, memberVia)
}
