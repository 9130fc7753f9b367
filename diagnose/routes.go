package diagnose

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/portlist"
	"github.com/vishvananda/netlink"
)

// Routes: the members are reached through the internal NIC, the only
// default route is on the external NIC, the host is not a router, and
// fastl4 virtuals SNAT so that replies come back through the proxy
// (seed 002's static routes, seed 000's "Are you SNATting").
var Routes = Check{
	Name: "routes",
	Doc:  "members routed via the internal NIC, one default route on the external NIC, SNAT for fastl4, no forwarding",
	Run:  checkRoutes,
}

// routeProtoRA is RTPROT_RA: a route learnt from a router advertisement.
const routeProtoRA = 9

// hop is one next hop of a route.
type hop struct {
	Link int
	Gw   netip.Addr
}

func hopsOf(r netlink.Route) []hop {
	if len(r.MultiPath) == 0 {
		return []hop{{r.LinkIndex, addrOf(r.Gw)}}
	}
	var out []hop
	for _, nh := range r.MultiPath {
		out = append(out, hop{nh.LinkIndex, addrOf(nh.Gw)})
	}
	return out
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

func checkRoutes(ctx context.Context, e *Env) []Finding {
	var f findings
	c := e.Config
	h, err := e.netlink()
	if err != nil {
		f.add(Fail, "host", err.Error(), "run diagnose as root on the proxy host")
		return f
	}
	extName, intName := c.Network.External.Interface, c.Network.Internal.Interface
	extLk, extErr := linkByName(h, extName, "network.external.interface")
	intLk, intErr := linkByName(h, intName, "network.internal.interface")
	for _, err := range []error{extErr, intErr} {
		if err != nil {
			f.add(Fail, "interfaces", err.Error(), "set network.external.interface and network.internal.interface to the NICs' names")
		}
	}
	if extErr != nil || intErr != nil {
		return f
	}
	extIdx, intIdx := extLk.Attrs().Index, intLk.Attrs().Index
	linkName := func(idx int) string {
		if lk, err := h.LinkByIndex(idx); err == nil {
			return lk.Attrs().Name
		}
		return "ifindex " + strconv.Itoa(idx)
	}

	f = append(f, e.defaultRoutes(h, extIdx, intIdx, linkName)...)
	f = append(f, e.memberRoutes(ctx, h, intIdx, linkName)...)

	// The host is not a router.
	for _, s := range []struct{ key, name string }{
		{"net/ipv4/ip_forward", "net.ipv4.ip_forward"},
		{"net/ipv6/conf/all/forwarding", "net.ipv6.conf.all.forwarding"},
	} {
		v, err := e.sysctl(s.key)
		if err != nil {
			continue
		}
		if v != "0" {
			f.add(Warn, s.name, fmt.Sprintf("%s = %s: the host forwards packets between its NICs; the proxy does not need it (the XDP path redirects itself)", s.name, v),
				fmt.Sprintf("sysctl -w %s=0 (a reverse proxy with persistent routes is not a router)", s.name))
		}
	}

	// SNAT of fastl4 virtuals: replies must come back through the proxy.
	intAddrs := map[netip.Addr]bool{}
	for _, p := range e.linkAddrs(intName) {
		intAddrs[p.Addr()] = true
	}
	anyFast := false
	for _, v := range c.Virtuals {
		if v.Mode != config.ModeFastL4 {
			continue
		}
		anyFast = true
		f = append(f, e.snatFinding(ctx, v, intName, intAddrs))
	}
	if anyFast {
		if fd, ok := e.snatPortsFinding(); ok {
			f = append(f, fd)
		}
	}
	return f
}

// defaultRoutes: the only default route of each family in use is on the
// external NIC.
func (e *Env) defaultRoutes(h *netlink.Handle, extIdx, intIdx int, linkName func(int) string) []Finding {
	var f findings
	c := e.Config
	extName, intName := c.Network.External.Interface, c.Network.Internal.Interface
	// Families in use: the VIPs' (replies to clients) and the members'.
	vipFam := map[bool]bool{} // is4 -> used
	for _, v := range c.Virtuals {
		if a := v.Listen.Addr(); !a.IsUnspecified() {
			vipFam[a.Unmap().Is4()] = true
		}
	}

	for _, fam := range []struct {
		is4  bool
		nl   int
		name string
		gw   netip.Addr
		key  string
	}{
		{true, netlink.FAMILY_V4, "IPv4", c.Network.External.Gateway, "gateway"},
		{false, netlink.FAMILY_V6, "IPv6", c.Network.External.Gateway6, "gateway6"},
	} {
		rs, err := h.RouteList(nil, fam.nl)
		if err != nil {
			f.add(Fail, "routes "+fam.name, fmt.Sprintf("list routes: %v", err), "")
			continue
		}
		var onExt []hop
		subj := "default route " + fam.name
		for _, r := range rs {
			if !isDefault(r) {
				continue
			}
			for _, hp := range hopsOf(r) {
				desc := describeHop(hp, linkName)
				switch hp.Link {
				case extIdx:
					onExt = append(onExt, hp)
				case intIdx:
					fix := fmt.Sprintf("ip route del default %s; the internal NIC gets persistent static routes to the internal subnets only (network.internal.routes)", desc)
					if r.Protocol == routeProtoRA {
						fix = fmt.Sprintf("it was learnt from a router advertisement: sysctl -w net.ipv6.conf.%s.accept_ra=0, then ip route del default %s", intName, desc)
					}
					f.add(Fail, subj, fmt.Sprintf("default route %s on the internal NIC: traffic to the Internet may leave through the internal network", desc), fix)
				default:
					f.add(Fail, subj, fmt.Sprintf("default route %s is not on the external NIC %s", desc, extName),
						fmt.Sprintf("ip route del default %s; the only default gateway is on the external NIC (network.external.%s)", desc, fam.key))
				}
			}
		}
		switch {
		case len(onExt) == 0 && vipFam[fam.is4]:
			f.add(Fail, subj, fmt.Sprintf("no %s default route on %s: replies to Internet clients of the %s VIPs have no way out", fam.name, extName, fam.name),
				fmt.Sprintf("set network.external.%s and run edgeproxy netcfg apply", fam.key))
		case len(onExt) > 1:
			var ds []string
			for _, hp := range onExt {
				ds = append(ds, describeHop(hp, linkName))
			}
			f.add(Fail, subj, fmt.Sprintf("%d default routes on %s: %s", len(onExt), extName, strings.Join(ds, "; ")),
				"keep exactly one default route, through the external gateway")
		case len(onExt) == 1:
			desc := describeHop(onExt[0], linkName)
			if fam.gw.IsValid() && onExt[0].Gw != fam.gw {
				f.add(Warn, subj, fmt.Sprintf("default route %s, but network.external.%s is %s", desc, fam.key, fam.gw),
					"run edgeproxy netcfg apply, or correct the configuration")
			} else {
				f.pass(subj, "%s", desc)
			}
		}
	}

	return f
}

func (e *Env) snatFinding(ctx context.Context, v *config.Virtual, intName string, intAddrs map[netip.Addr]bool) Finding {
	c := e.Config
	subj := "SNAT " + v.Name
	if v.SNAT.IsZero() {
		return Finding{Subject: subj, Verdict: Fail,
			Evidence: "no SNAT: members see the client's public address and answer through their own default gateway, bypassing the proxy, so the connection never completes",
			Fix:      fmt.Sprintf("set snat: automap on virtual %s", v.Name)}
	}
	// The families the members need.
	fams := map[bool]bool{}
	if p := c.Pools[v.Pool]; p != nil {
		for _, m := range p.Members {
			if a, _, err := e.resolveMember(ctx, m.Address); err == nil {
				fams[a.Is4()] = true
			}
		}
	}
	var used []string
	for _, is4 := range []bool{true, false} {
		if !fams[is4] {
			continue
		}
		var cands []netip.Addr
		if v.SNAT.Automap {
			for _, p := range c.Network.Internal.Addresses {
				if p.Addr().Is4() == is4 {
					cands = append(cands, p.Addr())
					break
				}
			}
			if len(cands) == 0 {
				for a := range intAddrs {
					if a.Is4() == is4 && !a.IsLinkLocalUnicast() {
						cands = append(cands, a)
						break
					}
				}
			}
		} else {
			for _, a := range v.SNAT.Addresses {
				if a.Is4() == is4 {
					cands = append(cands, a)
				}
			}
		}
		fam := "IPv6"
		if is4 {
			fam = "IPv4"
		}
		if len(cands) == 0 {
			return Finding{Subject: subj, Verdict: Fail,
				Evidence: fmt.Sprintf("SNAT %s has no %s address for the %s members of pool %s", v.SNAT, fam, fam, v.Pool),
				Fix:      fmt.Sprintf("add an %s address to network.internal.addresses (automap) or to the virtual's snat list", fam)}
		}
		for _, a := range cands {
			if !intAddrs[a] {
				return Finding{Subject: subj, Verdict: Fail,
					Evidence: fmt.Sprintf("SNAT address %s is not on the internal NIC %s: nothing answers ARP/ND for the members' replies", a, intName),
					Fix:      fmt.Sprintf("run edgeproxy netcfg apply, or: ip addr add %s dev %s", hostPrefix(a), intName)}
			}
			used = append(used, a.String())
		}
	}
	ev := fmt.Sprintf("snat %s → %s on %s", v.SNAT, strings.Join(used, ", "), intName)
	if len(used) == 0 {
		ev = fmt.Sprintf("snat %s (no resolvable members in pool %s)", v.SNAT, v.Pool)
	}
	ev += fmt.Sprintf("\nnot checkable from here: on each member, the route back to %s must lead to the proxy's internal network "+
		"(route print / ip route get %s on the member) and no host firewall may drop it", strings.Join(used, ", "), firstOr(used, "the SNAT address"))
	return Finding{Subject: subj, Verdict: Pass, Evidence: ev}
}

// snatPortsFinding warns when the SNAT port range overlaps the kernel's
// ephemeral ports without being reserved: the L7 proxy and monitors dial
// out of the same internal address.
func (e *Env) snatPortsFinding() (Finding, bool) {
	r := e.Config.FastPath.SNATPorts
	if r.IsZero() {
		r = config.DefaultSNATPorts
	}
	lr, err := e.sysctl("net/ipv4/ip_local_port_range")
	if err != nil {
		return Finding{}, false
	}
	var lo, hi int
	if _, err := fmt.Sscan(lr, &lo, &hi); err != nil {
		return Finding{}, false
	}
	res, err := e.sysctl("net/ipv4/ip_local_reserved_ports")
	if err != nil {
		return Finding{}, false
	}
	subj := "SNAT ports " + r.String()
	reserved, err := portlist.Parse(res)
	if err != nil {
		return Finding{}, false
	}
	clash := false
	for p := max(int(r.First), lo); p <= min(int(r.Last), hi) && !clash; p++ {
		clash = !reserved.Contains(uint16(p))
	}
	if !clash {
		return Finding{Subject: subj, Verdict: Pass, Evidence: fmt.Sprintf("outside the ephemeral range %d-%d or reserved (%s)", lo, hi, orIf(res, "none"))}, true
	}
	return Finding{Subject: subj, Verdict: Warn,
		Evidence: fmt.Sprintf("the ephemeral port range %d-%d overlaps the SNAT ports and they are not reserved (ip_local_reserved_ports = %q): the kernel may pick a SNAT port for the proxy's own connections", lo, hi, res),
		Fix:      fmt.Sprintf("sysctl -w net.ipv4.ip_local_reserved_ports=%s (edgeproxy run sets it)", r)}, true
}

func describeHop(hp hop, linkName func(int) string) string {
	s := ""
	if hp.Gw.IsValid() {
		s = "via " + hp.Gw.String() + " "
	}
	return s + "dev " + linkName(hp.Link)
}

func sortedPools(c *config.Config) []string {
	var out []string
	for n, p := range c.Pools {
		if p != nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func firstOr(s []string, alt string) string {
	if len(s) == 0 {
		return alt
	}
	return s[0]
}

// memberRoute is how the host reaches one member.
type memberRoute struct {
	names []string // the members' names at this address
	addr  netip.Addr
	hosts bool // the address comes from network.hosts
	route netlink.Route
	err   error
}

// memberRoutes: each member is reached through the internal NIC. The
// members that are not fail together, once per way they are reached
// (one missing route is one finding), with the fix the situation needs.
func (e *Env) memberRoutes(ctx context.Context, h *netlink.Handle, intIdx int, linkName func(int) string) []Finding {
	var f findings
	c := e.Config
	intName := c.Network.Internal.Interface
	var order []string
	groups := map[string][]*memberRoute{}
	byAddr := map[netip.Addr]*memberRoute{}
	for _, pn := range sortedPools(c) {
		for _, m := range c.Pools[pn].Members {
			a, src, err := e.resolveMember(ctx, m.Address)
			subj := "member " + m.Address
			if err != nil {
				f.add(Fail, subj, err.Error(), fmt.Sprintf("add %s to network.hosts", m.Address))
				continue
			}
			if mr := byAddr[a]; mr != nil {
				if !slices.Contains(mr.names, m.Address) {
					mr.names = append(mr.names, m.Address)
				}
				continue
			}
			mr := &memberRoute{names: []string{m.Address}, addr: a, hosts: src == "network.hosts"}
			byAddr[a] = mr
			rs, err := h.RouteGet(net.IP(a.AsSlice()))
			if err == nil && len(rs) == 0 {
				err = fmt.Errorf("no route")
			}
			var k string
			if err != nil {
				mr.err, k = err, "none"
			} else {
				mr.route = rs[0]
				k = describeHop(hop{rs[0].LinkIndex, addrOf(rs[0].Gw)}, linkName)
				if rs[0].LinkIndex == intIdx {
					k = "ok " + a.String()
				}
			}
			if _, ok := groups[k]; !ok {
				order = append(order, k)
			}
			groups[k] = append(groups[k], mr)
		}
	}
	for _, k := range order {
		g := groups[k]
		var names, explains []string
		for _, mr := range g {
			names = append(names, mr.names...)
			explains = append(explains, "member "+mr.addr.String())
		}
		subj := "member " + strings.Join(names, ", ")
		if strings.HasPrefix(k, "ok ") {
			r := g[0].route
			desc := fmt.Sprintf("%s %s", g[0].addr, describeHop(hop{r.LinkIndex, addrOf(r.Gw)}, linkName))
			if r.Src != nil {
				desc += " src " + addrOf(r.Src).String()
			}
			f.pass(subj, "%s", desc)
			continue
		}
		ev, fix := e.memberRouteFault(h, g, intIdx, intName, linkName)
		f.add(Fail, subj, ev, fix)
		f.about(explains, nil)
	}
	return f
}

// memberRouteFault explains why members are not reached through the
// internal NIC, and the fix: the route the file lists but the host lacks,
// a more specific route that wins over the internal one, or a
// network.hosts address no internal route covers.
func (e *Env) memberRouteFault(h *netlink.Handle, g []*memberRoute, intIdx int, intName string, linkName func(int) string) (string, string) {
	mr := g[0]
	var addrs []string
	for _, m := range g {
		addrs = append(addrs, m.addr.String())
	}
	ev := fmt.Sprintf("no route to %s: %v", strings.Join(addrs, ", "), mr.err)
	if mr.err == nil {
		r := mr.route
		ev = fmt.Sprintf("%s %s: the members are reached through %s, not the internal NIC %s",
			strings.Join(addrs, ", "), describeHop(hop{r.LinkIndex, addrOf(r.Gw)}, linkName), linkName(r.LinkIndex), intName)
	}
	if in, win, ok := e.shadowedRoute(h, mr.addr, intIdx, mr.route.LinkIndex); ok && mr.err == nil {
		return ev + fmt.Sprintf("; the internal route %s exists, but the more specific %s wins", in, win),
			fmt.Sprintf("remove the more specific route (ip route del %s) or send it through %s; the internal route is already there", win, intName)
	}
	for _, r := range e.Config.Network.Internal.Routes {
		if r.To.Contains(mr.addr) {
			return ev + fmt.Sprintf("; the file lists {to: %s, via: %s} under network.internal.routes, but the host lacks it", r.To, r.Via),
				fmt.Sprintf("run edgeproxy netcfg apply (or: ip route add %s via %s dev %s)", r.To, r.Via, intName)
		}
	}
	if mr.hosts {
		return ev + fmt.Sprintf("; %s is %s by network.hosts, which no internal subnet or route covers", mr.names[0], mr.addr),
			fmt.Sprintf("if %s is not %s's address, correct network.hosts; otherwise add a route to its subnet under network.internal.routes", mr.addr, mr.names[0])
	}
	return ev, fmt.Sprintf("add a persistent static route to the members' subnet via the internal router: network.internal.routes "+
		"(ip route add <member subnet> via <internal router> dev %s)", intName)
}

// shadowedRoute finds a route on the internal NIC covering a and the
// more specific route on another link that wins over it.
func (e *Env) shadowedRoute(h *netlink.Handle, a netip.Addr, intIdx, winLink int) (in, win string, ok bool) {
	fam := netlink.FAMILY_V4
	if a.Is6() {
		fam = netlink.FAMILY_V6
	}
	rs, err := h.RouteList(nil, fam)
	if err != nil {
		return "", "", false
	}
	best := map[bool]netip.Prefix{} // on the internal NIC -> most specific prefix covering a
	for _, r := range rs {
		if r.Dst == nil || (r.LinkIndex != intIdx && r.LinkIndex != winLink) {
			continue
		}
		p, okp := prefixOf(r.Dst)
		if !okp || !p.Masked().Contains(a) {
			continue
		}
		onInt := r.LinkIndex == intIdx
		if b, seen := best[onInt]; !seen || p.Bits() > b.Bits() {
			best[onInt] = p.Masked()
		}
	}
	i, okIn := best[true]
	w, okWin := best[false]
	if !okIn || !okWin || w.Bits() <= i.Bits() {
		return "", "", false
	}
	return i.String(), w.String(), true
}
