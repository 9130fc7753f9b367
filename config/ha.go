package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"
)

// HA defaults.
const (
	DefaultAdvertInterval = Duration(100 * time.Millisecond)
	DefaultHAFifo         = "/run/edgeproxy/keepalived.fifo"
	// DefaultMirrorBandwidth is what flow mirroring may send: 10 MB/s,
	// about 70,000 new flows a second.
	DefaultMirrorBandwidth = Bandwidth(10_000_000)
)

func haDefaults(c *Config) {
	h := c.HA
	if h == nil {
		return
	}
	if h.AdvertInterval == 0 {
		h.AdvertInterval = DefaultAdvertInterval
	}
	if h.Fifo == "" {
		h.Fifo = DefaultHAFifo
	}
	if h.Mirror != nil && h.Mirror.Bandwidth == 0 {
		h.Mirror.Bandwidth = DefaultMirrorBandwidth
	}
}

// VIPs returns the virtuals' listen addresses, each once, in file order:
// what the external VRRP instance carries in an HA pair.
func (c *Config) VIPs() []netip.Addr {
	var out []netip.Addr
	for _, v := range c.Virtuals {
		if v != nil && v.Listen.Addr().IsValid() && !slices.Contains(out, v.Listen.Addr()) {
			out = append(out, v.Listen.Addr())
		}
	}
	return out
}

// floating returns the HA floating address of a family, if any.
func (c *Config) floating(is4 bool) (netip.Addr, bool) {
	for _, p := range c.HA.Floating() {
		if p.Addr().Is4() == is4 {
			return p.Addr(), true
		}
	}
	return netip.Addr{}, false
}

// HoldFile is the file beside the FIFO that keepalived tracks
// (track_file): "1" makes it give up the active role, for a planned
// switchover (edgeproxy ha standby), "0" lets it serve.
func (h *HA) HoldFile() string {
	return filepath.Join(filepath.Dir(h.Fifo), "keepalived.hold")
}

// Floating returns the floating internal addresses (nil without HA).
func (h *HA) Floating() []netip.Prefix {
	if h == nil {
		return nil
	}
	return h.Internal.Floating
}

func (v *validator) ha() {
	h := v.c.HA
	if h == nil {
		return
	}
	if h.Priority < 1 || h.Priority > 254 {
		v.errorf("ha.priority", "priority %d is out of range: choose 1 to 254, higher on the node that should be active (e.g. 150 and 100)", h.Priority)
	}
	if a := h.AdvertInterval.D(); a < 10*time.Millisecond || a > 40950*time.Millisecond || a%(10*time.Millisecond) != 0 {
		v.errorf("ha.advert_interval", "%s is not a VRRPv3 advertisement interval: choose 10ms to 40.95s in steps of 10ms (default %s)", a, DefaultAdvertInterval.D())
	}
	if v.c.Admin.Listen == "" {
		v.errorf("admin.listen", "an HA pair needs the admin endpoint: keepalived asks it (edgeproxy ha check) whether this node can serve; set admin.listen, e.g. %s", DefaultAdminListen)
	}
	if !filepath.IsAbs(h.Fifo) {
		v.errorf("ha.fifo", "%q is not an absolute path: write it like %s", h.Fifo, DefaultHAFifo)
	}
	v.haSide("ha.external", &h.External, v.c.Network.External.Addresses)
	v.haSide("ha.internal", &h.Internal, v.c.Network.Internal.Addresses)
	if h.External.VRID != 0 && h.External.VRID == h.Internal.VRID {
		v.errorf("ha.internal.vrid", "VRID %d is also the external instance's: give each instance its own, e.g. 51 and 52", h.Internal.VRID)
	}
	if len(h.External.Floating) > 0 {
		v.errorf("ha.external.floating", "a floating address belongs to the internal NIC: move it to ha.internal.floating (the VIPs are the external instance's addresses)")
	}
	v.haFloating()
	v.haAutomap()
	v.haVIPs()
	v.haMirror()
}

// haVIPs checks that every VIP is an address keepalived can move: not a
// wildcard, and not an address of this node (the standby would lose it).
func (v *validator) haVIPs() {
	ext := v.c.Network.External.Addresses
	for i, vs := range v.c.Virtuals {
		if vs == nil || !vs.Listen.IsValid() {
			continue
		}
		a, path := vs.Listen.Addr(), VirtualPath(i)+".listen"
		switch {
		case a.IsUnspecified():
			v.errorf(path, "%s listens on every address: in an HA pair each virtual listens on a VIP that keepalived moves; write that address", vs.Listen)
		case slices.ContainsFunc(ext, func(p netip.Prefix) bool { return p.Addr() == a }):
			v.errorf(path, "%s is this node's own external address: in an HA pair a VIP must be an address neither node owns, so that keepalived can move it", a)
		case a == v.c.HA.External.Peer:
			v.errorf(path, "%s is the peer's external address: in an HA pair a VIP must be an address neither node owns", a)
		}
	}
}

// haAutomap checks that each fastl4 virtual with snat: automap has a
// floating address of its VIP's family.
func (v *validator) haAutomap() {
	for i, vs := range v.c.Virtuals {
		if vs == nil || vs.Mode != ModeFastL4 || !vs.SNAT.Automap || !vs.Listen.IsValid() {
			continue
		}
		if _, ok := v.c.floating(vs.Listen.Addr().Is4()); !ok && len(v.c.HA.Floating()) > 0 {
			v.errorf(VirtualPath(i)+".snat", "snat automap in an HA pair translates to the floating address, and there is none of the family of VIP %s: add one to ha.internal.floating or list SNAT addresses", vs.Listen.Addr())
		}
	}
}

// haSide checks one VRRP instance: its VRID and a peer on one of the
// NIC's subnets that is not this node.
func (v *validator) haSide(path string, s *HASide, own []netip.Prefix) {
	if s.VRID < 1 || s.VRID > 255 {
		v.errorf(path+".vrid", "VRID %d is out of range: choose 1 to 255, unique among the VRRP routers on this segment", s.VRID)
	}
	if !s.Peer.IsValid() {
		v.errorf(path+".peer", "the peer is required: the other node's address on this NIC, e.g. %s", examplePeer(own))
		return
	}
	if !onSubnet(own, s.Peer) {
		v.errorf(path+".peer", "%s is on none of this NIC's subnets: write the other node's address on the same segment (%s)", s.Peer, subnets(own))
	}
	for _, p := range own {
		if p.Addr() == s.Peer {
			v.errorf(path+".peer", "%s is this node's own address: write the other node's", s.Peer)
		}
	}
}

func (v *validator) haFloating() {
	h := v.c.HA
	in := v.c.Network.Internal.Addresses
	if len(h.Internal.Floating) == 0 {
		v.errorf("ha.internal.floating", "the floating address is required: an address on the internal subnet that neither node owns, e.g. %s; snat: automap translates to it", exampleFloating(in))
	}
	seen := map[bool]bool{}
	for i, f := range h.Internal.Floating {
		path := joinIndex("ha.internal.floating", i)
		switch {
		case seen[f.Addr().Is4()]:
			v.errorf(path, "a second floating address of the same family: keep one per family")
		case !onSubnet(in, f.Addr()):
			v.errorf(path, "%s is on none of the internal NIC's subnets: the members must reach it directly (%s)", f, subnets(in))
		case f.Addr() == h.Internal.Peer || slices.ContainsFunc(in, func(p netip.Prefix) bool { return p.Addr() == f.Addr() }):
			v.errorf(path, "%s is a node's own address: the floating address must be one that neither node owns", f.Addr())
		}
		seen[f.Addr().Is4()] = true
	}
}

// examplePeer suggests the next address after this node's first one.
func examplePeer(own []netip.Prefix) string {
	if len(own) == 0 {
		return "10.20.0.12"
	}
	return own[0].Addr().Next().String()
}

func exampleFloating(in []netip.Prefix) string {
	if len(in) == 0 {
		return "10.20.0.5/24"
	}
	return fmt.Sprintf("%s/%d", in[0].Addr().Prev(), in[0].Bits())
}
