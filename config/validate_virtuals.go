package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// listener is one virtual's listening socket, for overlap checks.
type listener struct {
	idx   int
	proto Protocol
	ap    netip.AddrPort
}

func (v *validator) virtuals() {
	names := map[string]int{}
	for i, vs := range v.c.Virtuals {
		base := VirtualPath(i)
		if vs == nil {
			v.errorf(base, "an empty virtual: give it name, mode and listen")
			continue
		}
		if vs.Name == "" {
			v.errorf(base, "virtual without a name: add name: <unique name>")
		} else if !plainKey(vs.Name) && !validHostname(vs.Name, false) {
			v.errorf(base+".name", "name %q: use letters, digits, '-', '_' and '.'", vs.Name)
		} else if j, dup := names[vs.Name]; dup {
			v.errorf(base+".name", "duplicate virtual name %q: virtuals[%d]%s has it already; names must be unique", vs.Name, j, v.line(VirtualPath(j)))
		} else {
			names[vs.Name] = i
		}
		if !choice(v, base+".mode", "mode", vs.Mode, false, ModeFastL4, ModeHTTPS, ModeHTTP) {
			continue
		}
		v.listen(vs, base)
		switch vs.Mode {
		case ModeFastL4:
			v.fastL4(vs, base)
		default:
			v.l7(vs, base)
		}
	}
}

func (v *validator) listen(vs *Virtual, base string) {
	path := base + ".listen"
	if !vs.Listen.IsValid() {
		if !v.c.Pos.Has(path) {
			v.errorf(base, "virtual %s needs listen: <VIP>:<port>, e.g. listen: 203.0.113.20:443", vs.Name)
		}
		return
	}
	if vs.Listen.Port() == 0 {
		v.errorf(path, "port 0: name the published port, e.g. %s:443", vs.Listen.Addr())
	}
	a := vs.Listen.Addr()
	switch {
	case a.IsUnspecified():
		if vs.Mode == ModeFastL4 {
			v.errorf(path, "fastl4 needs a specific VIP, not %s: the fast path matches packets by destination address", a)
		}
		return
	case a.IsLoopback():
		if vs.Mode == ModeFastL4 {
			v.errorf(path, "fastl4 cannot publish the loopback address %s: use a VIP on the external NIC", a)
		}
		return
	case a.IsMulticast():
		v.errorf(path, "%s is a multicast address: use a VIP on the external NIC", a)
		return
	}
	n := &v.c.Network
	if onSubnet(n.Internal.Addresses, a) {
		v.errorf(path, "VIP %s is on the internal NIC's subnet: publish it on the external NIC", a)
		return
	}
	if onSubnet(n.External.Addresses, a) {
		return
	}
	for _, r := range n.External.Routes {
		if r.To.IsValid() && r.To.Masked().Contains(a) {
			return
		}
	}
	if v.announced(a) {
		return
	}
	v.errorf(path, "VIP %s is outside the external NIC's subnets (%s) and no route covers it: use an address in those subnets, add the VIP's subnet to network.external.addresses, add a route for it to network.external.routes, or announce it with bgp", a, subnets(n.External.Addresses))
}

// announced reports whether bgp announces the VIP a (a neighbour of its
// family carries its host route): routers then reach it on this node
// wherever it lies, as in scale-out, where the VIP is on no node's
// subnet.
func (v *validator) announced(a netip.Addr) bool {
	if v.c.BGP == nil {
		return false
	}
	for _, n := range v.c.BGP.Neighbors {
		if n.Address.IsValid() && n.Address.Unmap().Is4() == a.Unmap().Is4() {
			return true
		}
	}
	return false
}

func (v *validator) knownPool(path, pool string) *Pool {
	if pool == "" {
		return nil
	}
	if p := v.c.Pools[pool]; p != nil {
		return p
	}
	names := v.poolNames()
	have := "no pools are defined: add one under pools"
	if len(names) > 0 {
		have = "defined pools: " + strings.Join(names, ", ")
	}
	v.errorf(path, "unknown pool %q%s (%s)", pool, didYouMean(pool, names), have)
	return nil
}

// familyCheck reports members of p whose address family differs from
// the VIP's: the fast path does not translate between IPv4 and IPv6.
func (v *validator) familyCheck(path string, vip netip.Addr, p *Pool) {
	for i, m := range p.Members {
		if a, ok := v.c.MemberAddr(m); ok && a.Is4() != vip.Is4() && !a.IsLoopback() {
			v.errorf(path, "member %s (%s, pools.%s.members[%d]) is not of the VIP's address family (%s): fastl4 does not translate between IPv4 and IPv6; use a pool of the same family", m.Address, a, p.Name, i, vip)
		}
	}
}

func (v *validator) fastL4(vs *Virtual, base string) {
	for _, k := range []string{"certificates", "sites", "tls", "trusted_proxies", "limits"} {
		if v.c.Pos.Has(base + "." + k) {
			v.errorf(base+"."+k, "%s does not apply to fastl4, which passes TLS through untouched: use mode https to terminate TLS, or remove %s", k, k)
		}
	}
	choice(v, base+".protocol", "protocol", vs.Proto, false, ProtoTCP, ProtoUDP)
	if vs.Pool == "" {
		v.errorf(base, "fastl4 virtual %s needs pool: <pool name>", vs.Name)
	}
	p := v.knownPool(base+".pool", vs.Pool)
	if vs.Port == 0 {
		if v.c.Pos.Has(base + ".port") {
			v.errorf(base+".port", "port 0: name the members' port, e.g. 4443")
		} else {
			v.errorf(base, "fastl4 virtual %s needs port: the members' port (e.g. 4443 for a front end's external web site)", vs.Name)
		}
	}
	if p != nil && vs.Listen.IsValid() && !vs.Listen.Addr().IsUnspecified() {
		v.familyCheck(base+".pool", vs.Listen.Addr(), p)
		if v.skypePool(vs.Pool) {
			v.externalSitePorts(vs, base+".port")
		}
	}
	if p != nil {
		v.skypeAtL4(vs, base)
	}

	// Timeouts.
	for _, t := range []struct {
		key string
		d   Duration
	}{{"idle_timeout", vs.IdleTimeout}, {"handshake_timeout", vs.HandshakeTimeout}, {"close_timeout", vs.CloseTimeout}} {
		if t.d.D() < time.Second {
			v.errorf(base+"."+t.key, "%s %s is too short: at least 1s", t.key, t.d)
		}
	}
	if vs.MSSOverride != 0 && (vs.MSSOverride < 536 || vs.MSSOverride > 9000) {
		v.errorf(base+".mss_override", "mss_override %d is out of range: 0 (off) or 536 to 9000", vs.MSSOverride)
	}
	if vs.Proto == ProtoUDP && (vs.LooseInit || vs.LooseClose || vs.MSSOverride != 0) {
		v.errorf(base+".protocol", "loose_init, loose_close and mss_override apply to TCP only")
	}

	// SNAT: the internal side must own the translated addresses.
	if !vs.Listen.IsValid() {
		return
	}
	in := &v.c.Network.Internal
	fam := "IPv4"
	if vs.Listen.Addr().Is6() {
		fam = "IPv6"
	}
	if vs.SNAT.Automap {
		if v.c.HA == nil && len(in.Addresses) > 0 && len(v.c.SNATAddresses(vs)) == 0 {
			v.errorf(base+".snat", "snat automap needs an %s address on the internal NIC for VIP %s: add one to network.internal.addresses or list SNAT addresses", fam, vs.Listen.Addr())
		}
		return
	}
	seen := map[netip.Addr]bool{}
	for i, a := range vs.SNAT.Addresses {
		path := joinIndex(base+".snat", i)
		if len(vs.SNAT.Addresses) == 1 {
			path = base + ".snat"
		}
		if seen[a] {
			v.errorf(path, "SNAT address %s is listed twice", a)
			continue
		}
		seen[a] = true
		if !onSubnet(in.Addresses, a) {
			v.errorf(path, "SNAT address %s is not on the internal NIC's subnets (%s): replies from the members would not come back to this host; use addresses of those subnets or automap", a, subnets(in.Addresses))
		}
	}
	if len(v.c.SNATAddresses(vs)) == 0 {
		v.errorf(base+".snat", "no %s SNAT address for VIP %s: add one, or use automap", fam, vs.Listen.Addr())
	}
}

func (v *validator) poolHasSkypeSite(pool string) bool {
	for _, vs := range v.c.Virtuals {
		if vs == nil {
			continue
		}
		for _, s := range vs.Sites {
			if s != nil && s.Pool == pool && s.Profile == ProfileSkype {
				return true
			}
		}
	}
	return false
}

// skypePool reports whether pool holds Skype front ends: a site publishes
// it with profile skype, or the pool says kind: skype-fe.
func (v *validator) skypePool(pool string) bool {
	if p := v.c.Pools[pool]; p != nil && p.Kind == PoolKindSkypeFE {
		return true
	}
	return v.poolHasSkypeSite(pool)
}

// externalSitePorts holds a fastl4 virtual of a Skype front-end pool to
// the External Web Site: 443 to 4443, 80 to 8080.
func (v *validator) externalSitePorts(vs *Virtual, path string) {
	const why = "the front end's Internal Web Site listens on 443 and 80 for internal clients and serves the management applications (%s); the External Web Site on 4443 (HTTPS) and 8080 (HTTP) is the one built for the reverse proxy"
	switch {
	case vs.Port == 443 || vs.Port == 80:
		ext := map[uint16]uint16{443: 4443, 80: 8080}[vs.Port]
		v.errorf(path, "fastl4 virtual %s sends Skype front-end pool %s to port %d, the Internal Web Site: "+why+"; set port: %d", vs.Name, vs.Pool, vs.Port, strings.Join(skypeDenied, ", "), ext)
	case vs.Listen.Port() == 443 && vs.Port != 4443:
		v.warnf(path, "fastl4 virtual %s sends HTTPS for Skype front-end pool %s to port %d: the External Web Site listens on 4443", vs.Name, vs.Pool, vs.Port)
	case vs.Listen.Port() == 80 && vs.Port != 8080:
		v.warnf(path, "fastl4 virtual %s sends HTTP for Skype front-end pool %s to port %d: the External Web Site listens on 8080", vs.Name, vs.Pool, vs.Port)
	}
}

// skypeAtL4 warns when a pool that an https/http virtual publishes with
// the skype profile is also published through a fastl4 virtual: at L4 the
// management paths cannot be filtered, so they are open on that VIP.
func (v *validator) skypeAtL4(vs *Virtual, base string) {
	for _, o := range v.c.Virtuals {
		if o == nil || o.Mode == ModeFastL4 {
			continue
		}
		for _, s := range o.Sites {
			if s != nil && s.Pool == vs.Pool && s.Profile == ProfileSkype {
				v.warnf(base+".pool", "fastl4 virtual %s publishes pool %s, which virtual %s publishes with profile skype: at L4 the management paths (%s) cannot be filtered, so they are open on its VIP; publish the pool through the https virtual only (remove virtual %s), or close those paths on the front ends themselves",
					vs.Name, vs.Pool, o.Name, strings.Join(skypeDenied, ", "), vs.Name)
				return
			}
		}
	}
}

// internalSitePort warns about the most common Skype for Business reverse
// proxy mistake: sending external traffic to the front end's internal web
// site.
func (v *validator) internalSitePort(path string, port uint16) {
	switch port {
	case 443:
		v.warnf(path, "port 443 reaches the front end's internal web site; the reverse proxy must use the external web site on 4443")
	case 80:
		v.warnf(path, "port 80 reaches the front end's internal web site; the reverse proxy must use the external web site on 8080")
	}
}

// listeners reports virtuals whose listening sockets collide: the same
// address, port and protocol twice, or a wildcard address and a specific
// one on the same port.
func (v *validator) listeners() {
	var ls []listener
	for i, vs := range v.c.Virtuals {
		if vs == nil || !vs.Listen.IsValid() || vs.Listen.Port() == 0 {
			continue
		}
		proto := vs.Proto
		if vs.IsL7() {
			proto = ProtoTCP
		}
		ls = append(ls, listener{idx: i, proto: proto, ap: vs.Listen})
	}
	for j := range ls {
		for i := range j {
			a, b := ls[i], ls[j]
			if a.proto != b.proto || a.ap.Port() != b.ap.Port() {
				continue
			}
			va := v.c.Virtuals[a.idx]
			other := fmt.Sprintf("virtuals[%d] (%s)%s", a.idx, va.Name, v.line(VirtualPath(a.idx)))
			path := VirtualPath(b.idx) + ".listen"
			switch {
			case a.ap == b.ap:
				v.errorf(path, "%s/%s is already the listener of %s: give each virtual its own address or port", b.ap, b.proto, other)
			case covers(a.ap.Addr(), b.ap.Addr()) || covers(b.ap.Addr(), a.ap.Addr()):
				v.errorf(path, "%s overlaps %s on %s of %s: a wildcard address takes the port on every address; use specific addresses", b.ap, a.ap, b.proto, other)
			}
		}
	}
	if ap, err := netip.ParseAddrPort(v.c.Admin.Listen); err == nil {
		for _, l := range ls {
			if l.proto == ProtoTCP && l.ap.Port() == ap.Port() && (l.ap.Addr() == ap.Addr() || covers(l.ap.Addr(), ap.Addr()) || covers(ap.Addr(), l.ap.Addr())) {
				v.errorf("admin.listen", "%s collides with the listener of virtuals[%d] (%s)%s: choose another port", ap, l.idx, v.c.Virtuals[l.idx].Name, v.line(VirtualPath(l.idx)))
			}
		}
	}
}

// covers reports whether a wildcard address w takes the port on a: 0.0.0.0
// covers IPv4 addresses, :: covers everything (dual-stack sockets).
func covers(w, a netip.Addr) bool {
	if !w.IsUnspecified() || w == a {
		return false
	}
	return w.Is6() || a.Is4()
}
