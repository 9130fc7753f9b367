package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// BGP announces every VIP as a /32 or /128 to the neighbours while the
// node can serve it, so that routers spread flows over the nodes with
// ECMP.
type BGP struct {
	LocalAS   uint32     `yaml:"local_as"`
	RouterID  netip.Addr `yaml:"router_id"`
	Neighbors []Neighbor `yaml:"neighbors"`
}

// Neighbor is one BGP peer (IPv4 or IPv6 unicast, by its address).
type Neighbor struct {
	Address  netip.Addr `yaml:"address"`
	AS       uint32     `yaml:"as"`
	Password string     `yaml:"password"` // TCP MD5 signature; "" none
	// BFD detects the neighbour's loss in under a second (300 ms x 3).
	BFD bool `yaml:"bfd"`
	// HoldTime defaults to 3s: without BFD, the longest a dead peer
	// keeps its routes on either side.
	HoldTime Duration `yaml:"hold_time"`
}

// Announce holds a virtual's BGP route attributes.
type Announce struct {
	// Communities are "AS:value" pairs attached to the VIP's route.
	Communities []string `yaml:"communities"`
	// LocalPref is sent to iBGP neighbours (0: not set).
	LocalPref uint32 `yaml:"local_pref"`
}

// DefaultHoldTime is a neighbour's hold time when not set.
const DefaultHoldTime = Duration(3 * time.Second)

// ParseCommunity reads "AS:value" (each 0-65535) as a 32-bit community.
func ParseCommunity(s string) (uint32, error) {
	hi, lo, ok := strings.Cut(s, ":")
	a, aerr := strconv.ParseUint(hi, 10, 16)
	b, berr := strconv.ParseUint(lo, 10, 16)
	if !ok || aerr != nil || berr != nil {
		return 0, fmt.Errorf("community %q: write it as AS:value, each 0-65535, e.g. 65000:100", s)
	}
	return uint32(a)<<16 | uint32(b), nil
}

func (v *validator) bgp() {
	b := v.c.BGP
	if b == nil {
		v.announceUnused()
		return
	}
	if b.LocalAS == 0 || b.LocalAS == 23456 || b.LocalAS == 4294967295 {
		v.errorf("bgp.local_as", "local_as %d is reserved: use this node's AS, 1-4294967294 except 23456 (private: 64512-65534 or 4200000000-4294967294)", b.LocalAS)
	}
	if !b.RouterID.Is4() {
		v.errorf("bgp.router_id", "bgp needs router_id: an IPv4 address unique to this node, e.g. its internal address")
	}
	if len(b.Neighbors) == 0 {
		v.errorf("bgp", "bgp needs neighbors: the routers the VIPs are announced to, e.g. - {address: 198.18.0.1, as: 65000}")
	}
	seen := map[netip.Addr]int{}
	for i, n := range b.Neighbors {
		v.neighbor(n, joinIndex("bgp.neighbors", i))
		if j, dup := seen[n.Address]; dup && n.Address.IsValid() {
			v.errorf(joinIndex("bgp.neighbors", i)+".address", "neighbour %s is listed twice (also bgp.neighbors[%d]): keep one", n.Address, j)
		}
		seen[n.Address] = i
	}
	for i, vs := range v.c.Virtuals {
		if vs != nil {
			v.announce(vs, VirtualPath(i))
		}
	}
}

func (v *validator) neighbor(n Neighbor, path string) {
	if !n.Address.IsValid() {
		v.errorf(path, "neighbour without address: add address: <the router's address on a directly connected subnet>")
	} else if NeighborNIC(v.c, n.Address) == "" {
		v.errorf(path+".address", "neighbour %s is on no subnet of network.external (%s) or network.internal (%s): BGP here peers with directly connected routers; add an address on its subnet", n.Address, subnets(v.c.Network.External.Addresses), subnets(v.c.Network.Internal.Addresses))
	}
	if n.AS == 0 || n.AS == 23456 || n.AS == 4294967295 {
		v.errorf(path+".as", "neighbour AS %d is reserved: use the router's AS, 1-4294967294 except 23456", n.AS)
	}
	if h := n.HoldTime.D(); h != 0 && (h < 3*time.Second || h > 65535*time.Second || h%time.Second != 0) {
		v.errorf(path+".hold_time", "hold_time %s: BGP allows whole seconds from 3s to 65535s (3s: a dead peer is noticed in 3s; add bfd: true for under 1s)", n.HoldTime)
	}
	if len(n.Password) > 80 {
		v.errorf(path+".password", "password of %d characters: TCP MD5 keys hold at most 80", len(n.Password))
	}
}

// NeighborNIC names the NIC (external or internal) whose subnets hold
// a neighbour's address, "" when none does.
func NeighborNIC(c *Config, a netip.Addr) string {
	switch {
	case onSubnet(c.Network.External.Addresses, a):
		return "external"
	case onSubnet(c.Network.Internal.Addresses, a):
		return "internal"
	}
	return ""
}

// announce checks a virtual's route attributes and, in scale-out, that
// its SNAT addresses are this node's own: several nodes translating to
// one shared address would take each other's replies.
func (v *validator) announce(vs *Virtual, base string) {
	for i, c := range vs.Announce.Communities {
		if _, err := ParseCommunity(c); err != nil {
			v.errorf(joinIndex(base+".bgp.communities", i), "%v", err)
		}
	}
	if vs.Mode != ModeFastL4 || vs.SNAT.Automap {
		return
	}
	own := map[netip.Addr]bool{}
	for _, p := range v.c.Network.Internal.Addresses {
		own[p.Addr()] = true
	}
	for _, a := range vs.SNAT.Addresses {
		if !own[a] {
			v.errorf(base+".snat", "SNAT address %s is not one of this node's network.internal.addresses: with bgp every node announcing the VIP must SNAT to its own internal address, or replies reach another node; use snat: automap", a)
		}
	}
}

func (v *validator) announceUnused() {
	for i, vs := range v.c.Virtuals {
		if vs != nil && v.c.Pos.Has(VirtualPath(i)+".bgp") {
			v.errorf(VirtualPath(i)+".bgp", "virtual %s sets bgp attributes but the file has no bgp section: add bgp: {local_as, router_id, neighbors} or remove them", vs.Name)
		}
	}
}
