package netcfg

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
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
	// optional: skipped when the key does not exist (IPv6 disabled).
	optional bool
	// merge: Value is a port list merged into the current one.
	merge bool
}

// Name is the key in sysctl(8) notation.
func (s Sysctl) Name() string { return strings.ReplaceAll(s.Key, "/", ".") }

// Desired turns the configuration into the state netcfg maintains.
func Desired(cfg *config.Config) (*State, error) {
	if cfg == nil {
		return nil, fmt.Errorf("%w: no configuration", ErrBadNetwork)
	}
	n := cfg.Network
	st := &State{
		External: n.External.Interface,
		Internal: n.Internal.Interface,
		Managed:  n.Manage == nil || *n.Manage,
	}
	if st.External == "" && st.Internal == "" {
		return nil, ErrNoNetwork
	}
	if st.External != "" && st.External == st.Internal {
		return nil, fmt.Errorf("%w: network.external.interface and network.internal.interface are both %q: name two different NICs", ErrBadNetwork, st.External)
	}
	if st.Internal != "" {
		if n.Internal.Gateway.IsValid() || n.Internal.Gateway6.IsValid() {
			return nil, fmt.Errorf("%w: network.internal.gateway is set: the internal NIC has no default route; list the internal subnets under network.internal.routes instead", ErrBadNetwork)
		}
		for i, r := range n.Internal.Routes {
			if r.To.IsValid() && r.To.Bits() == 0 {
				return nil, fmt.Errorf("%w: network.internal.routes[%d] is a default route: the default route is on the external NIC only; route the internal subnets instead", ErrBadNetwork, i)
			}
		}
	}
	if st.External == "" && (n.External.Gateway.IsValid() || n.External.Gateway6.IsValid() || len(n.External.Addresses) > 0) {
		return nil, fmt.Errorf("%w: network.external has settings but no interface: set network.external.interface", ErrBadNetwork)
	}
	if st.Internal == "" && (len(n.Internal.Addresses) > 0 || len(n.Internal.Routes) > 0) {
		return nil, fmt.Errorf("%w: network.internal has settings but no interface: set network.internal.interface", ErrBadNetwork)
	}

	for _, l := range []string{st.External, st.Internal} {
		if l != "" {
			st.Links = append(st.Links, l)
		}
	}

	// Addresses of the NICs.
	hostIPs := map[netip.Addr]bool{}
	v6 := map[string]bool{}
	for _, nic := range []struct {
		key string
		c   config.NIC
	}{{"external", n.External}, {"internal", n.Internal}} {
		for i, p := range nic.c.Addresses {
			if !p.IsValid() {
				return nil, fmt.Errorf("%w: network.%s.addresses[%d] is not an address/prefix: write it as 198.51.100.10/24", ErrBadNetwork, nic.key, i)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
			if hostIPs[p.Addr()] {
				return nil, fmt.Errorf("%w: network.%s.addresses[%d]: %s is listed twice: keep it on one NIC", ErrBadNetwork, nic.key, i, p.Addr())
			}
			hostIPs[p.Addr()] = true
			st.Addresses = append(st.Addresses, Address{Link: nic.c.Interface, Prefix: p})
			if p.Addr().Is6() {
				v6[nic.c.Interface] = true
			}
		}
	}

	// The virtuals' addresses on the external NIC, SNAT pool addresses on
	// the internal one (they must answer ARP there).
	added := map[netip.Addr]bool{}
	addHost := func(link string, a netip.Addr) {
		a = a.Unmap()
		if link == "" || !a.IsValid() || a.IsUnspecified() || hostIPs[a] || added[a] {
			return
		}
		added[a] = true
		st.Addresses = append(st.Addresses, Address{Link: link, Prefix: netip.PrefixFrom(a, a.BitLen()), VIP: true})
		if a.Is6() {
			v6[link] = true
		}
	}
	fastl4 := false
	for _, v := range cfg.Virtuals {
		if v == nil {
			continue
		}
		addHost(st.External, v.Listen.Addr())
		if v.Mode == config.ModeFastL4 {
			fastl4 = true
			for _, a := range v.SNAT.Addresses {
				addHost(st.Internal, a)
			}
		}
	}

	// Routes: the default through the external gateway only; static
	// routes through each NIC's next hops.
	neigh := map[Neighbour]bool{}
	addNeigh := func(link string, a netip.Addr) {
		nb := Neighbour{Link: link, Addr: a.Unmap()}
		if link == "" || !a.IsValid() || neigh[nb] {
			return
		}
		neigh[nb] = true
		st.Neighbours = append(st.Neighbours, nb)
	}
	for _, gw := range []struct {
		key string
		a   netip.Addr
		v6  bool
	}{{"gateway", n.External.Gateway, false}, {"gateway6", n.External.Gateway6, true}} {
		if !gw.a.IsValid() {
			continue
		}
		a := gw.a.Unmap()
		if a.Is6() != gw.v6 {
			want := "an IPv4 address"
			if gw.v6 {
				want = "an IPv6 address"
			}
			return nil, fmt.Errorf("%w: network.external.%s is %s: it must be %s", ErrBadNetwork, gw.key, a, want)
		}
		st.Routes = append(st.Routes, Route{Link: st.External, Dst: netip.PrefixFrom(zeroOf(a), 0), Via: a})
		addNeigh(st.External, a)
		if a.Is6() {
			v6[st.External] = true
		}
	}
	seen := map[netip.Prefix]bool{}
	for _, nic := range []struct {
		key string
		c   config.NIC
	}{{"external", n.External}, {"internal", n.Internal}} {
		for i, r := range nic.c.Routes {
			if !r.To.IsValid() {
				return nil, fmt.Errorf("%w: network.%s.routes[%d].to is missing: write the destination as 10.10.0.0/16", ErrBadNetwork, nic.key, i)
			}
			dst := netip.PrefixFrom(r.To.Addr().Unmap(), r.To.Bits()).Masked()
			via := r.Via.Unmap()
			if via.IsValid() && via.Is6() != dst.Addr().Is6() {
				return nil, fmt.Errorf("%w: network.%s.routes[%d]: %s via %s mixes IPv4 and IPv6: use a next hop of the destination's family", ErrBadNetwork, nic.key, i, dst, via)
			}
			if seen[dst] {
				return nil, fmt.Errorf("%w: network.%s.routes[%d]: %s is routed twice: keep one route per destination", ErrBadNetwork, nic.key, i, dst)
			}
			if dst.Bits() == 0 && ((dst.Addr().Is4() && n.External.Gateway.IsValid()) || (dst.Addr().Is6() && n.External.Gateway6.IsValid())) {
				return nil, fmt.Errorf("%w: network.%s.routes[%d] is a default route and network.external.gateway is set: keep one of them", ErrBadNetwork, nic.key, i)
			}
			seen[dst] = true
			st.Routes = append(st.Routes, Route{Link: nic.c.Interface, Dst: dst, Via: via})
			addNeigh(nic.c.Interface, via)
			if dst.Addr().Is6() {
				v6[nic.c.Interface] = true
			}
		}
	}

	// Pool members on a NIC's own subnet are next hops themselves.
	for _, name := range sortedKeys(cfg.Pools) {
		p := cfg.Pools[name]
		if p == nil {
			continue
		}
		for _, m := range p.Members {
			a, ok := staticAddr(n.Hosts, m.Address)
			if !ok {
				continue
			}
			for _, ad := range st.Addresses {
				if !ad.VIP && ad.Prefix.Bits() < ad.Prefix.Addr().BitLen() && ad.Prefix.Masked().Contains(a) {
					addNeigh(ad.Link, a)
					break
				}
			}
		}
	}

	// Sysctls of a dual-homed host that is not a router.
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
			Sysctl{Key: "net/ipv6/conf/" + l + "/keep_addr_on_down", Value: "1", optional: true},
		)
		if v6[l] {
			st.Sysctls = append(st.Sysctls, Sysctl{Key: "net/ipv6/conf/" + l + "/disable_ipv6", Value: "0"})
		}
	}
	if st.Internal != "" {
		// No router advertisements on the internal NIC: they would
		// install a default route there.
		st.Sysctls = append(st.Sysctls, Sysctl{Key: "net/ipv6/conf/" + st.Internal + "/accept_ra", Value: "0", optional: true})
	}
	if fastl4 {
		pr := cfg.FastPath.SNATPorts
		if pr.First == 0 && pr.Last == 0 {
			pr = config.PortRange{First: 40000, Last: 59999}
		}
		if pr.First > pr.Last || pr.First == 0 {
			return nil, fmt.Errorf("%w: fastpath.snat_ports %d-%d is not a range: write it as 40000-59999", ErrBadNetwork, pr.First, pr.Last)
		}
		st.Sysctls = append(st.Sysctls, Sysctl{
			Key: "net/ipv4/ip_local_reserved_ports", Value: portlist.Of(portlist.Range{First: pr.First, Last: pr.Last}).String(), merge: true,
			Why: "the SNAT ports of the fast path are kept out of the host's ephemeral ports",
		})
	}
	st.Sysctls = append(st.Sysctls,
		Sysctl{Key: "net/ipv4/ip_forward", Value: "0", Report: true,
			Why: "the host is not a router and the fast path does not need forwarding: set it to 0 unless something else on the host routes"},
		Sysctl{Key: "net/ipv6/conf/all/forwarding", Value: "0", Report: true, optional: true,
			Why: "the host is not a router and the fast path does not need forwarding: set it to 0 unless something else on the host routes"},
	)
	return st, nil
}

// staticAddr resolves a member without DNS: an address or a name in
// network.hosts.
func staticAddr(hosts map[string]netip.Addr, s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if a, ok := lookupHosts(hosts, s); ok {
		return a, true
	}
	return netip.Addr{}, false
}

func zeroOf(a netip.Addr) netip.Addr {
	if a.Is6() {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
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
