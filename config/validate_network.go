package config

import (
	"net/netip"
	"sort"
	"strings"
)

// nicPath returns "network.external" or "network.internal".
func nicPath(external bool) string {
	if external {
		return "network.external"
	}
	return "network.internal"
}

func validIfName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsAny(s, "/: \t\n")
}

func (v *validator) network() {
	n := &v.c.Network
	if !v.c.Pos.Has("network") {
		v.errorf("network", "network is required: the external NIC (interface, addresses, gateway) and the internal NIC (interface, addresses, routes), e.g. network: {external: {interface: ext0, addresses: [203.0.113.10/24], gateway: 203.0.113.1}, internal: {interface: int0, addresses: [10.20.0.10/24], routes: [{to: 10.10.0.0/16, via: 10.20.0.1}]}}")
		return
	}
	for _, ext := range []bool{true, false} {
		nic := &n.Internal
		if ext {
			nic = &n.External
		}
		v.nic(nic, ext)
	}
	if n.External.Interface != "" && n.External.Interface == n.Internal.Interface {
		v.errorf("network.internal.interface", "the internal interface %q is also the external one: edgeproxy needs two NICs, the default route on the external one and only static routes on the internal one", n.Internal.Interface)
	}
	for _, e := range n.External.Addresses {
		for j, i := range n.Internal.Addresses {
			if e.Masked().Overlaps(i.Masked()) {
				v.errorf(joinIndex("network.internal.addresses", j), "%s overlaps the external subnet %s: the two NICs need separate subnets, or replies leave by the wrong NIC", i, e.Masked())
			}
		}
	}

	names := make([]string, 0, len(n.Hosts))
	for name := range n.Hosts {
		names = append(names, name)
	}
	sort.Strings(names)
	lower := map[string]string{}
	for _, name := range names {
		path := joinKey("network.hosts", name)
		if !validHostname(name, false) {
			v.errorf(path, "%q is not a host name: use letters, digits, hyphens and dots, e.g. fe01.corp.example.com", name)
		}
		if prev, dup := lower[strings.ToLower(name)]; dup {
			v.errorf(path, "%q and %q are the same name (names are case-insensitive): keep one", name, prev)
		}
		lower[strings.ToLower(name)] = name
		a := n.Hosts[name]
		if !a.IsValid() {
			v.errorf(path, "no address for %q: write it as %s: 10.10.0.11", name, name)
		} else if a.IsUnspecified() || a.IsMulticast() {
			v.errorf(path, "%s is not a host address", a)
		}
	}
	// Names are looked up case-insensitively.
	for _, name := range names {
		if l := strings.ToLower(name); l != name {
			if _, exists := n.Hosts[l]; !exists {
				n.Hosts[l] = n.Hosts[name]
				delete(n.Hosts, name)
			}
		}
	}

	if r := n.Resolver; r != "" {
		if a, err := netip.ParseAddr(r); err == nil {
			n.Resolver = netip.AddrPortFrom(a, 53).String()
		} else if ap, err := netip.ParseAddrPort(r); err != nil || ap.Port() == 0 {
			v.errorf("network.resolver", "%q is not a DNS server address: write it like 192.0.2.53 or 192.0.2.53:53", r)
		}
	}
}

func (v *validator) nic(nic *NIC, ext bool) {
	base := nicPath(ext)
	which := "internal"
	example := "int0"
	if ext {
		which, example = "external", "ext0"
	}
	if !v.c.Pos.Has(base) {
		if ext {
			v.errorf(base, "network.external is required: the NIC facing the Internet, e.g. external: {interface: ext0, addresses: [203.0.113.10/24], gateway: 203.0.113.1}")
		} else {
			v.errorf(base, "network.internal is required: the NIC facing the servers, e.g. internal: {interface: int0, addresses: [10.20.0.10/24], routes: [{to: 10.10.0.0/16, via: 10.20.0.1}]}")
		}
		return
	}
	if nic.Interface == "" {
		v.errorf(base+".interface", "the %s NIC's interface is required, e.g. interface: %s", which, example)
	} else if !validIfName(nic.Interface) {
		v.errorf(base+".interface", "%q is not an interface name (at most 15 characters, no '/', ':' or spaces)", nic.Interface)
	}
	if len(nic.Addresses) == 0 {
		ex := "[10.20.0.10/24]"
		if ext {
			ex = "[203.0.113.10/24]"
		}
		v.errorf(base+".addresses", "the %s NIC's addresses are required, with prefix length, e.g. addresses: %s", which, ex)
	}
	seen := map[netip.Addr]int{}
	for i, p := range nic.Addresses {
		path := joinIndex(base+".addresses", i)
		if !p.IsValid() {
			continue // reported by the decoder
		}
		a := p.Addr()
		if j, dup := seen[a]; dup {
			v.errorf(path, "%s is listed twice (also %s.addresses[%d]): keep one", a, base, j)
			continue
		}
		seen[a] = i
		switch {
		case a.IsUnspecified() || a.IsMulticast() || a.IsLoopback():
			v.errorf(path, "%s is not a usable host address for a NIC", p)
		case p.Bits() < a.BitLen()-1 && p.Masked().Addr() == a:
			v.errorf(path, "%s is the subnet's network address, not the host's: write this host's address, e.g. %s/%d", p, p.Addr().Next(), p.Bits())
		}
	}

	choice(v, base+".xdp_mode", "xdp_mode", nic.XDPMode, false, XDPNative, XDPGeneric, XDPOff)

	if !ext {
		if nic.Gateway.IsValid() || nic.Gateway6.IsValid() {
			key := "gateway"
			gw := nic.Gateway
			if !gw.IsValid() {
				key, gw = "gateway6", nic.Gateway6
			}
			v.errorf(base+"."+key, "the internal NIC has no default gateway (the only default route is on the external NIC): replace it with static routes, e.g. routes: [{to: 10.10.0.0/16, via: %s}]", gw)
		}
	} else {
		v.gateway(nic, base+".gateway", nic.Gateway, true)
		v.gateway(nic, base+".gateway6", nic.Gateway6, false)
	}

	seenRoute := map[netip.Prefix]int{}
	for i, r := range nic.Routes {
		path := joinIndex(base+".routes", i)
		if !r.To.IsValid() {
			if !v.c.Pos.Has(path + ".to") {
				v.errorf(path, "the route needs a destination: to: 10.10.0.0/16")
			}
			continue
		}
		if r.To.Masked() != r.To {
			v.errorf(path+".to", "%s has host bits set: did you mean %s?", r.To, r.To.Masked())
		}
		if j, dup := seenRoute[r.To.Masked()]; dup {
			v.errorf(path+".to", "a route to %s is already %s.routes[%d]: keep one", r.To.Masked(), base, j)
		}
		seenRoute[r.To.Masked()] = i
		if !ext && r.To.Bits() == 0 {
			v.errorf(path+".to", "a default route on the internal NIC: the default route belongs to the external NIC (network.external.gateway); list the internal subnets instead")
		}
		if !r.Via.IsValid() {
			if !v.c.Pos.Has(path + ".via") {
				v.errorf(path, "the route to %s needs a next hop: via: <router on the %s subnet>", r.To, which)
			}
			continue
		}
		if r.Via.Is4() != r.To.Addr().Is4() {
			v.errorf(path+".via", "next hop %s and destination %s are of different address families", r.Via, r.To)
			continue
		}
		if !onSubnet(nic.Addresses, r.Via) {
			v.errorf(path+".via", "next hop %s is not on the %s NIC's subnets (%s): it must be directly reachable through %s", r.Via, which, subnets(nic.Addresses), ifOr(nic.Interface, which))
		}
	}
}

func (v *validator) gateway(nic *NIC, path string, gw netip.Addr, want4 bool) {
	if !gw.IsValid() {
		return
	}
	if gw.Is4() != want4 {
		if want4 {
			v.errorf(path, "%s is an IPv6 address: put it under gateway6", gw)
		} else {
			v.errorf(path, "%s is an IPv4 address: put it under gateway", gw)
		}
		return
	}
	if !onSubnet(nic.Addresses, gw) && !(gw.Is6() && gw.IsLinkLocalUnicast()) {
		v.errorf(path, "gateway %s is not on the external NIC's subnets (%s): use the router on that subnet", gw, subnets(nic.Addresses))
	}
}

func ifOr(name, which string) string {
	if name != "" {
		return name
	}
	return "the " + which + " NIC"
}

// onSubnet reports whether a is inside one of the prefixes.
func onSubnet(prefixes []netip.Prefix, a netip.Addr) bool {
	for _, p := range prefixes {
		if p.IsValid() && p.Masked().Contains(a) {
			return true
		}
	}
	return false
}

func subnets(prefixes []netip.Prefix) string {
	var s []string
	for _, p := range prefixes {
		if p.IsValid() {
			s = append(s, p.Masked().String())
		}
	}
	if len(s) == 0 {
		return "none configured"
	}
	return strings.Join(s, ", ")
}

// reachableInternally reports whether a is on an internal subnet or
// covered by an internal static route.
func (c *Config) reachableInternally(a netip.Addr) bool {
	in := &c.Network.Internal
	if onSubnet(in.Addresses, a) {
		return true
	}
	for _, r := range in.Routes {
		if r.To.IsValid() && r.To.Masked().Contains(a) {
			return true
		}
	}
	return false
}

// validHostname checks a DNS name; wildcard allows a leading "*.".
func validHostname(s string, wildcard bool) bool {
	if wildcard {
		s = strings.TrimPrefix(s, "*.")
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
				return false
			}
		}
	}
	return true
}
