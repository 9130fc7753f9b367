package netcfg

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/edgeproxy/edgeproxy/internal/portlist"
)

// State is what the network: section asks of the host.
type State struct {
	// External and Internal are the interface names ("" when a NIC is
	// not configured).
	External, Internal string
	// Managed is false when network.manage is false: report only.
	Managed    bool
	Links      []string
	Addresses  []Address
	Routes     []Route
	Sysctls    []Sysctl
	Neighbours []Neighbour
}

// Address is an address on a link.
type Address struct {
	Link   string
	Prefix netip.Prefix
	// VIP marks an address added for a virtual (or a SNAT pool address):
	// a host route (/32, /128) added without duplicate address detection.
	VIP bool
}

func (a Address) String() string { return fmt.Sprintf("address %s dev %s", a.Prefix, a.Link) }

// Route is a route in the main table. A zero Dst of Via's family is the
// default route; an invalid Via is a route on the link (no next hop).
type Route struct {
	Link string
	Dst  netip.Prefix
	Via  netip.Addr
}

func (r Route) String() string { return "route " + routeText(r.Dst, r.Via, r.Link, 0) }

// metric is the priority netcfg gives its routes: the kernel's default
// for each family (IPv6 routes without a metric get 1024).
func metric(dst netip.Prefix) int {
	if dst.Addr().Is6() {
		return 1024
	}
	return 0
}

// Neighbour is a next hop (a gateway or an on-link pool member) kept
// resolved by the kernel as a managed neighbour entry, so the XDP path
// always finds its MAC address.
type Neighbour struct {
	Link string
	Addr netip.Addr
}

func (n Neighbour) String() string { return fmt.Sprintf("neighbour %s dev %s", n.Addr, n.Link) }

// Sysctl is one kernel setting.
type Sysctl struct {
	// Key is the path under /proc/sys ("net/ipv4/conf/int0/arp_ignore").
	Key string
	// Value is the wanted value; for ip_local_reserved_ports the port
	// ranges that must be reserved (merged with what is there).
	Value string
	// Why is shown with reports.
	Why string
	// Report: checked and reported, never changed by netcfg.
	Report bool
	// Optional: skipped when the key does not exist (IPv6 disabled).
	Optional bool
	// Merge: Value is a port list merged into the current one.
	Merge bool
	// required: declared by another plane (Spec.Sysctls), which cannot
	// run without it: kept even with network.manage false.
	required bool
}

// Name is the key in sysctl(8) notation.
func (s Sysctl) Name() string { return strings.ReplaceAll(s.Key, "/", ".") }

// Desired turns the spec into the state netcfg maintains.
func Desired(spec *Spec) (*State, error) {
	if spec == nil {
		return nil, fmt.Errorf("%w: no network spec", ErrBadNetwork)
	}
	b := &builder{spec: spec, hostIPs: map[netip.Addr]bool{}, added: map[netip.Addr]bool{},
		v6: map[string]bool{}, neigh: map[Neighbour]bool{}}
	b.st = &State{External: spec.External.Interface, Internal: spec.Internal.Interface, Managed: spec.Managed}
	for _, step := range []func() error{b.checkNICs, b.nicAddresses, b.virtualAddresses, b.gateways, b.staticRoutes, b.memberNeighbours, b.sysctls} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return b.st, nil
}

// builder builds a State from a Spec, section by section.
type builder struct {
	spec    *Spec
	st      *State
	hostIPs map[netip.Addr]bool // the NICs' own addresses
	added   map[netip.Addr]bool // host addresses added for virtuals
	v6      map[string]bool     // links with IPv6 settings
	neigh   map[Neighbour]bool  // managed neighbours so far
}

// checkNICs refuses a spec with no NIC, one NIC named twice, or settings
// that contradict the two-NIC layout; it lists the links.
func (b *builder) checkNICs() error {
	n, st := b.spec, b.st
	if st.External == "" && st.Internal == "" {
		return ErrNoNetwork
	}
	if st.External != "" && st.External == st.Internal {
		return fmt.Errorf("%w: network.external.interface and network.internal.interface are both %q: name two different NICs", ErrBadNetwork, st.External)
	}
	if st.Internal != "" {
		if n.Internal.Gateway.IsValid() || n.Internal.Gateway6.IsValid() {
			return fmt.Errorf("%w: network.internal.gateway is set: the internal NIC has no default route; list the internal subnets under network.internal.routes instead", ErrBadNetwork)
		}
		for i, r := range n.Internal.Routes {
			if r.To.IsValid() && r.To.Bits() == 0 {
				return fmt.Errorf("%w: network.internal.routes[%d] is a default route: the default route is on the external NIC only; route the internal subnets instead", ErrBadNetwork, i)
			}
		}
	}
	if st.External == "" && (n.External.Gateway.IsValid() || n.External.Gateway6.IsValid() || len(n.External.Addresses) > 0) {
		return fmt.Errorf("%w: network.external has settings but no interface: set network.external.interface", ErrBadNetwork)
	}
	if st.Internal == "" && (len(n.Internal.Addresses) > 0 || len(n.Internal.Routes) > 0) {
		return fmt.Errorf("%w: network.internal has settings but no interface: set network.internal.interface", ErrBadNetwork)
	}
	for _, l := range []string{st.External, st.Internal} {
		if l != "" {
			st.Links = append(st.Links, l)
		}
	}
	return nil
}

// keyedNIC is a NIC of the spec with its key in the file.
type keyedNIC struct {
	key string
	c   NIC
}

func (b *builder) nics() []keyedNIC {
	return []keyedNIC{{"external", b.spec.External}, {"internal", b.spec.Internal}}
}

// nicAddresses adds the addresses of the NICs.
func (b *builder) nicAddresses() error {
	for _, nic := range b.nics() {
		for i, p := range nic.c.Addresses {
			if !p.IsValid() {
				return fmt.Errorf("%w: network.%s.addresses[%d] is not an address/prefix: write it as 198.51.100.10/24", ErrBadNetwork, nic.key, i)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
			if b.hostIPs[p.Addr()] {
				return fmt.Errorf("%w: network.%s.addresses[%d]: %s is listed twice: keep it on one NIC", ErrBadNetwork, nic.key, i, p.Addr())
			}
			b.hostIPs[p.Addr()] = true
			b.st.Addresses = append(b.st.Addresses, Address{Link: nic.c.Interface, Prefix: p})
			if p.Addr().Is6() {
				b.v6[nic.c.Interface] = true
			}
		}
	}
	return nil
}

// virtualAddresses adds the virtuals' addresses on the external NIC and
// SNAT pool addresses on the internal one (they must answer ARP there).
func (b *builder) virtualAddresses() error {
	addHost := func(link string, a netip.Addr) {
		a = a.Unmap()
		if link == "" || !a.IsValid() || a.IsUnspecified() || b.hostIPs[a] || b.added[a] {
			return
		}
		b.added[a] = true
		b.st.Addresses = append(b.st.Addresses, Address{Link: link, Prefix: netip.PrefixFrom(a, a.BitLen()), VIP: true})
		if a.Is6() {
			b.v6[link] = true
		}
	}
	for _, a := range b.spec.VIPs {
		addHost(b.st.External, a)
	}
	for _, a := range b.spec.SNAT {
		addHost(b.st.Internal, a)
	}
	return nil
}

// addNeigh makes a next hop a managed neighbour, once.
func (b *builder) addNeigh(link string, a netip.Addr) {
	nb := Neighbour{Link: link, Addr: a.Unmap()}
	if link == "" || !a.IsValid() || b.neigh[nb] {
		return
	}
	b.neigh[nb] = true
	b.st.Neighbours = append(b.st.Neighbours, nb)
}

// gateways adds the default routes, through the external gateway only.
func (b *builder) gateways() error {
	ext := b.spec.External
	for _, gw := range []struct {
		key string
		a   netip.Addr
		v6  bool
	}{{"gateway", ext.Gateway, false}, {"gateway6", ext.Gateway6, true}} {
		if !gw.a.IsValid() {
			continue
		}
		a := gw.a.Unmap()
		if a.Is6() != gw.v6 {
			want := "an IPv4 address"
			if gw.v6 {
				want = "an IPv6 address"
			}
			return fmt.Errorf("%w: network.external.%s is %s: it must be %s", ErrBadNetwork, gw.key, a, want)
		}
		b.st.Routes = append(b.st.Routes, Route{Link: b.st.External, Dst: netip.PrefixFrom(zeroOf(a), 0), Via: a})
		b.addNeigh(b.st.External, a)
		if a.Is6() {
			b.v6[b.st.External] = true
		}
	}
	return nil
}

// staticRoutes adds each NIC's static routes through their next hops.
func (b *builder) staticRoutes() error {
	ext := b.spec.External
	seen := map[netip.Prefix]bool{}
	for _, nic := range b.nics() {
		for i, r := range nic.c.Routes {
			if !r.To.IsValid() {
				return fmt.Errorf("%w: network.%s.routes[%d].to is missing: write the destination as 10.10.0.0/16", ErrBadNetwork, nic.key, i)
			}
			dst := netip.PrefixFrom(r.To.Addr().Unmap(), r.To.Bits()).Masked()
			via := r.Via.Unmap()
			if via.IsValid() && via.Is6() != dst.Addr().Is6() {
				return fmt.Errorf("%w: network.%s.routes[%d]: %s via %s mixes IPv4 and IPv6: use a next hop of the destination's family", ErrBadNetwork, nic.key, i, dst, via)
			}
			if seen[dst] {
				return fmt.Errorf("%w: network.%s.routes[%d]: %s is routed twice: keep one route per destination", ErrBadNetwork, nic.key, i, dst)
			}
			if dst.Bits() == 0 && ((dst.Addr().Is4() && ext.Gateway.IsValid()) || (dst.Addr().Is6() && ext.Gateway6.IsValid())) {
				return fmt.Errorf("%w: network.%s.routes[%d] is a default route and network.external.gateway is set: keep one of them", ErrBadNetwork, nic.key, i)
			}
			seen[dst] = true
			b.st.Routes = append(b.st.Routes, Route{Link: nic.c.Interface, Dst: dst, Via: via})
			b.addNeigh(nic.c.Interface, via)
			if dst.Addr().Is6() {
				b.v6[nic.c.Interface] = true
			}
		}
	}
	return nil
}

// memberNeighbours makes pool members on a NIC's own subnet managed
// neighbours: they are next hops themselves.
func (b *builder) memberNeighbours() error {
	for _, a := range b.spec.Members {
		a = a.Unmap()
		for _, ad := range b.st.Addresses {
			if !ad.VIP && ad.Prefix.Bits() < ad.Prefix.Addr().BitLen() && ad.Prefix.Masked().Contains(a) {
				b.addNeigh(ad.Link, a)
				break
			}
		}
	}
	return nil
}

// sysctls adds the settings of a dual-homed host that is not a router,
// then those the spec declares for other planes.
func (b *builder) sysctls() error {
	st := b.st
	for _, l := range st.Links {
		st.Sysctls = append(st.Sysctls,
			// Loose reverse-path filtering: sources must be routable
			// through some NIC; strict would drop internal clients that
			// reach the public addresses through the firewall (hairpin).
			Sysctl{Key: "net/ipv4/conf/" + l + "/rp_filter", Value: "2"},
			// Answer ARP only for addresses on the NIC asked, so the
			// virtuals' addresses are announced on the external NIC only.
			Sysctl{Key: "net/ipv4/conf/" + l + "/arp_ignore", Value: "1"},
			Sysctl{Key: "net/ipv4/conf/" + l + "/arp_announce", Value: "2"},
			// Keep IPv6 addresses across a link flap.
			Sysctl{Key: "net/ipv6/conf/" + l + "/keep_addr_on_down", Value: "1", Optional: true},
		)
		if b.v6[l] {
			st.Sysctls = append(st.Sysctls, Sysctl{Key: "net/ipv6/conf/" + l + "/disable_ipv6", Value: "0"})
		}
	}
	if st.Internal != "" {
		// No router advertisements on the internal NIC: they would
		// install a default route there.
		st.Sysctls = append(st.Sysctls, Sysctl{Key: "net/ipv6/conf/" + st.Internal + "/accept_ra", Value: "0", Optional: true})
	}
	for _, s := range b.spec.Sysctls {
		s.required = true
		if s.Merge {
			if _, err := portlist.Parse(s.Value); err != nil {
				return fmt.Errorf("%w: sysctl %s %s: %w: write the ports as 40000-59999", ErrBadNetwork, s.Name(), s.Value, err)
			}
		}
		st.Sysctls = append(st.Sysctls, s)
	}
	st.Sysctls = append(st.Sysctls,
		Sysctl{Key: "net/ipv4/ip_forward", Value: "0", Report: true,
			Why: "the host is not a router and the fast path does not need forwarding: set it to 0 unless something else on the host routes"},
		Sysctl{Key: "net/ipv6/conf/all/forwarding", Value: "0", Report: true, Optional: true,
			Why: "the host is not a router and the fast path does not need forwarding: set it to 0 unless something else on the host routes"},
	)
	return nil
}

func zeroOf(a netip.Addr) netip.Addr {
	if a.Is6() {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// routeText renders a route as ip-route(8) does.
func routeText(dst netip.Prefix, via netip.Addr, link string, metric int) string {
	var b strings.Builder
	if dst.Bits() == 0 {
		b.WriteString("default")
	} else {
		b.WriteString(dst.String())
	}
	if via.IsValid() {
		b.WriteString(" via " + via.String())
	}
	if link != "" {
		b.WriteString(" dev " + link)
	}
	if metric != 0 && !(dst.Addr().Is6() && metric == 1024) {
		fmt.Fprintf(&b, " metric %d", metric)
	}
	return b.String()
}
