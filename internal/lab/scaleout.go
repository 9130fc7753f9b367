package lab

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// ScaleOut is the lab of nodes that announce the same VIP over BGP: a
// client, a router, proxy nodes and a backend (IPv4 only). The router
// (BIRD, run by the test) forwards the client's flows to the VIP over
// the nodes that announce it, with an L4 hash. The nodes share one
// segment with the router (the bridge sw0), so that a node that dies
// leaves the router's own link up: only BFD or the hold time tell. Their
// internal NICs share the backend's segment (sw1); each node has its own
// internal address, which its fastl4 virtuals SNAT to.
//
//	client ns              router ns                        node ns i (0..N-1)                          backend ns
//	c0 198.18.0.1 <-> rc 198.18.0.254   sw0 198.18.1.1 <-> ext0 198.18.1.(2+i)   int0 198.19.0.(2+i) <-> sw1 198.19.0.1
//	                                                        VIP 198.18.100.10 (the daemon adds it)       lo 198.19.1.11, .12 ...
type ScaleOut struct {
	Client, Router, Backend *NS
	Nodes                   []*NS

	ClientAddr netip.Addr
	// Gateway is the router's address on the client's link.
	Gateway netip.Addr
	// RouterAddr is the router's address on sw0: the nodes' default
	// gateway and BGP neighbour.
	RouterAddr netip.Addr
	// BackendAddr is the members' next hop on sw1.
	BackendAddr        netip.Addr
	ExtAddrs, IntAddrs []netip.Addr
	VIP                netip.Addr
	Members            []netip.Addr
	MemberNet          netip.Prefix

	dummies []link.Link
}

// BuildScaleOut builds a scale-out lab with nodes proxy nodes (1 to 100)
// and members member addresses (1 to 200); the caller must Close it.
func BuildScaleOut(nodes, members int) (_ *ScaleOut, err error) {
	if nodes < 1 || nodes > 100 || members < 1 || members > 200 {
		return nil, fmt.Errorf("build scale-out lab: %d nodes, %d members; want 1 to 100 nodes, 1 to 200 members", nodes, members)
	}
	var suffix [3]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return nil, fmt.Errorf("build scale-out lab: %w", err)
	}
	id := "epso-" + hex.EncodeToString(suffix[:])
	a := netip.MustParseAddr
	s := &ScaleOut{ClientAddr: a("198.18.0.1"), Gateway: a("198.18.0.254"), RouterAddr: a("198.18.1.1"),
		BackendAddr: a("198.19.0.1"), VIP: a("198.18.100.10"), MemberNet: netip.MustParsePrefix("198.19.1.0/24"),
		Nodes: make([]*NS, nodes)}
	for i := range nodes {
		s.ExtAddrs = append(s.ExtAddrs, netip.AddrFrom4([4]byte{198, 18, 1, byte(2 + i)}))
		s.IntAddrs = append(s.IntAddrs, netip.AddrFrom4([4]byte{198, 19, 0, byte(2 + i)}))
	}
	for i := range members {
		s.Members = append(s.Members, netip.AddrFrom4([4]byte{198, 19, 1, byte(11 + i)}))
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	for _, n := range []struct {
		dst  **NS
		role string
	}{{&s.Client, "client"}, {&s.Router, "router"}, {&s.Backend, "backend"}} {
		if *n.dst, err = NewNS(id + "-" + n.role); err != nil {
			return nil, err
		}
	}
	for i := range s.Nodes {
		if s.Nodes[i], err = NewNS(fmt.Sprintf("%s-n%d", id, i)); err != nil {
			return nil, err
		}
	}
	if err := s.wire(); err != nil {
		return nil, fmt.Errorf("build scale-out lab %s: %w", id, err)
	}
	return s, nil
}

// wire links the client to the router, makes the switches and plugs the
// nodes in.
func (s *ScaleOut) wire() error {
	if err := s.Router.Do(func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "rc"}, PeerName: ClientIf, PeerNamespace: netlink.NsFd(int(s.Client.handle))}
		if err := netlink.LinkAdd(v); err != nil {
			return fmt.Errorf("add veth rc/%s: %w", ClientIf, err)
		}
		return setupLink("rc", []netip.Prefix{netip.PrefixFrom(s.Gateway, 24)})
	}); err != nil {
		return err
	}
	if err := s.Client.Do(func() error {
		if err := setupLink(ClientIf, []netip.Prefix{netip.PrefixFrom(s.ClientAddr, 24)}); err != nil {
			return err
		}
		return addRoutes(route{ClientIf, netip.Prefix{}, s.Gateway})
	}); err != nil {
		return err
	}
	// Forwarding, with the L4 hash over the next hops of a multipath
	// route.
	if _, err := s.Router.Output("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"); err != nil {
		return err
	}
	// The router takes the L4 hash the client's socket put on each
	// packet (the veth keeps it) rather than hashing the headers; a
	// socket draws a new one when it retransmits, which would try
	// another node each time. Fixed per connection, it behaves as a
	// hardware router's hash of the 5-tuple does.
	if _, err := s.Client.Output("sysctl", "-qw", "net.core.txrehash=0"); err != nil {
		return err
	}
	if err := addSwitch(s.Router, "sw0", netip.PrefixFrom(s.RouterAddr, 24)); err != nil {
		return err
	}
	if err := addSwitch(s.Backend, "sw1", netip.PrefixFrom(s.BackendAddr, 24)); err != nil {
		return err
	}
	if err := addMembers(s.Backend, s.Members); err != nil {
		return err
	}
	for i, node := range s.Nodes {
		dummies, err := plugNode(nodePlug{node: node, index: i, ext: s.Router, int: s.Backend,
			extAddr: s.ExtAddrs[i], intAddr: s.IntAddrs[i], gateway: s.RouterAddr, memberNet: s.MemberNet, memberVia: s.BackendAddr})
		s.dummies = append(s.dummies, dummies...)
		if err != nil {
			return fmt.Errorf("node %d: %w", i, err)
		}
	}
	// The frames reaching the nodes' fast path carry full checksums.
	for _, x := range []struct {
		ns  *NS
		ifc []string
	}{{s.Client, []string{ClientIf}}, {s.Router, []string{"rc", "sw0"}}, {s.Backend, []string{"sw1"}}} {
		if err := txOff(x.ns, x.ifc...); err != nil {
			return err
		}
	}
	return nil
}

// NodeNetworkYAML is node i's network section.
func (s *ScaleOut) NodeNetworkYAML(i int) string {
	return nodeNetworkYAML(s.ExtAddrs[i], s.IntAddrs[i], s.RouterAddr, s.MemberNet, s.BackendAddr)
}

// Unplug takes the switch port of node i's NIC ifc (ExtIf or IntIf)
// down, as a cable pulled at the switch, or (plugged) up again.
func (s *ScaleOut) Unplug(i int, ifc string, unplugged bool) error {
	sw, port := s.Router, fmt.Sprintf("p%d-ext", i)
	if ifc == IntIf {
		sw, port = s.Backend, fmt.Sprintf("p%d-int", i)
	}
	state := "up"
	if unplugged {
		state = "down"
	}
	_, err := sw.Output("ip", "link", "set", port, state)
	return err
}

// Close tears the lab down.
func (s *ScaleOut) Close() {
	for _, d := range s.dummies {
		if d != nil {
			d.Close()
		}
	}
	s.dummies = nil
	for _, ns := range append([]*NS{s.Client, s.Router, s.Backend}, s.Nodes...) {
		ns.Close()
	}
}
