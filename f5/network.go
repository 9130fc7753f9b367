package f5

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
)

type selfIP struct {
	o        *object
	prefix   netip.Prefix
	floating bool
	vlan     string
}

type route struct {
	o      *object
	to     netip.Prefix
	via    netip.Addr
	usable bool
}

// network fills network.external/internal from net self and net route,
// choosing the external VLAN from where the virtuals live and the
// internal one from where the pool members live.
func (t *tr) network() {
	n := &t.cfg.Network
	n.External.Interface = t.opt.ExternalInterface
	n.Internal.Interface = t.opt.InternalInterface
	selfs, vlans := t.selfIPs()
	routes := t.netRoutes()
	extVLAN, intVLAN := t.chooseVLANs(selfs, routes, vlans)
	t.networkAddresses(selfs, extVLAN, intVLAN)
	t.networkRoutes(selfs, routes, len(vlans) > 0, extVLAN, intVLAN)
	t.sayVLANs(extVLAN, intVLAN)
}

// selfIPs reads the self IPs and the VLANs they are on.
func (t *tr) selfIPs() (selfs []selfIP, vlans []string) {
	for _, o := range t.ix.ofKind("net self") {
		o.used = true
		st := o.st
		s := selfIP{o: o}
		at, _ := st.Attr("address")
		p, rd, err := parsePrefix(at)
		if err != nil || !strings.Contains(at, "/") {
			t.rep.add(Unsupported, st, o.label(), "address %q: expected address/prefix length, not carried over", at)
			continue
		}
		if rd != "" && rd != "0" {
			t.rep.add(Changed, st, o.label(), "route domain %%%s dropped", rd)
		}
		s.prefix = p
		if p.Addr().Is6() && p.Addr().IsLinkLocalUnicast() {
			t.rep.add(Ignored, st, o.label(), "link-local address %s: the kernel assigns one", p)
			continue
		}
		if tg, ok := st.Attr("traffic-group"); ok && !strings.HasSuffix(tg, "traffic-group-local-only") {
			s.floating = true
		}
		if f, _ := st.Attr("floating"); f == "enabled" {
			s.floating = true
		}
		v, _ := st.Attr("vlan")
		s.vlan = fullPath(o.folder(), v)
		if !hasWord(vlans, s.vlan) {
			vlans = append(vlans, s.vlan)
		}
		handled := map[string]bool{"address": true, "vlan": true, "traffic-group": true, "floating": true, "allow-service": true, "unit": true, "address-source": true}
		t.leftovers(o, st, handled, nil)
		selfs = append(selfs, s)
	}

	return selfs, vlans
}

// netRoutes reads the routes via a gateway.
func (t *tr) netRoutes() (routes []route) {
	for _, o := range t.ix.ofKind("net route") {
		o.used = true
		st := o.st
		r := route{o: o}
		nw, _ := st.Attr("network")
		to, rd, err := parsePrefix(nw)
		if err != nil {
			t.rep.add(Unsupported, st, o.label(), "network %q: %v, not carried over", nw, err)
			continue
		}
		if rd != "" && rd != "0" {
			t.rep.add(Changed, st, o.label(), "route domain %%%s dropped", rd)
		}
		r.to = to.Masked()
		gw, ok := st.Attr("gw")
		if !ok {
			what := "no gateway"
			for _, k := range []string{"interface", "pool", "blackhole", "tm-route"} {
				if c := st.Get(k); c != nil {
					what = strings.Join(c.Words, " ")
				}
			}
			t.rep.add(Unsupported, st, o.label(), "%s: only routes via a gateway address are carried over", what)
			continue
		}
		ga, err := parseAddr(gw)
		if err != nil || ga.Wildcard {
			t.rep.add(Unsupported, st, o.label(), "gateway %q is not an address, not carried over", gw)
			continue
		}
		r.via, r.usable = ga.IP, true
		t.leftovers(o, st, map[string]bool{"network": true, "gw": true}, map[string]string{"mtu": "0"})
		routes = append(routes, r)
	}

	return routes
}

// vlanOf is the VLAN of the self IP whose subnet holds a ("" if none).
func vlanOf(selfs []selfIP, a netip.Addr) string {
	for _, s := range selfs {
		if s.prefix.Masked().Contains(a) {
			return s.vlan
		}
	}
	return ""
}

// chooseVLANs tells the external VLAN (where the virtuals and the
// default route are) from the internal one (where the members are).
func (t *tr) chooseVLANs(selfs []selfIP, routes []route, vlans []string) (extVLAN, intVLAN string) {
	inVLAN := func(v string, a netip.Addr) bool {
		for _, s := range selfs {
			if s.vlan == v && s.prefix.Masked().Contains(a) {
				return true
			}
		}
		return false
	}

	// Score the VLANs.
	ext := map[string]int{}
	in := map[string]int{}
	for _, v := range vlans {
		ext[v] += 2 * t.vlanVote[v]
		for _, a := range t.vips {
			if inVLAN(v, a) {
				ext[v]++
			}
		}
		for _, r := range routes {
			if r.to.Bits() == 0 && inVLAN(v, r.via) {
				ext[v]++
			}
		}
	}
	for _, m := range t.members {
		if v := vlanOf(selfs, m); v != "" {
			in[v]++
			continue
		}
		best := -1
		bestV := ""
		for _, r := range routes {
			if r.to.Bits() > 0 && r.to.Contains(m) && r.to.Bits() > best {
				best, bestV = r.to.Bits(), vlanOf(selfs, r.via)
			}
		}
		if bestV != "" {
			in[bestV]++
		}
	}

	extVLAN = pick(vlans, ext, "", []string{"ext", "outside", "public", "untrust", "wan", "dmz", "front"})
	intVLAN = pick(vlans, in, extVLAN, []string{"int", "inside", "server", "back", "trust", "lan"})
	if len(vlans) > 0 && ext[extVLAN] == 0 {
		t.rep.add(Changed, nil, "", "could not tell the external VLAN from the virtuals: %s was chosen; check network.external", extVLAN)
	}
	if intVLAN != "" && in[intVLAN] == 0 {
		t.rep.add(Changed, nil, "", "could not tell the internal VLAN from the pool members: %s was chosen; check network.internal", intVLAN)
	}
	if len(vlans) == 0 {
		t.rep.add(Supply, nil, "", "no net self in the input (bigip_base.conf holds them): fill in network.external and network.internal addresses")
	} else if intVLAN == "" {
		t.rep.add(Unsupported, nil, "", "only one VLAN (%s, one-arm): edgeproxy needs an external and an internal interface; fill in network.internal", extVLAN)
	}

	return extVLAN, intVLAN
}

// networkAddresses puts the self IPs of the two VLANs on the NICs.
func (t *tr) networkAddresses(selfs []selfIP, extVLAN, intVLAN string) {
	n := &t.cfg.Network
	// Addresses: on the internal side floating self IPs first, since
	// SNAT automap prefers them and the members may only accept those.
	for _, s := range selfs {
		switch s.vlan {
		case extVLAN, intVLAN:
			if as := s.o.st.Get("allow-service"); as != nil && as.Value() != "none" {
				t.rep.add(Ignored, as, s.o.label(), "allow-service (port lockdown) not carried over: edgeproxy does not manage the host firewall")
			}
			if s.floating {
				tg, _ := s.o.st.Attr("traffic-group")
				t.rep.add(Changed, s.o.st, s.o.label(), "floating self IP %s (%s) carried over as a host address (first on its NIC, so that SNAT automap uses it as the BIG-IP did): edgeproxy has no HA failover", s.prefix, tg)
			}
		default:
			t.rep.add(Ignored, s.o.st, s.o.label(), "self IP %s on VLAN %s (neither external nor internal, e.g. HA or management) not carried over", s.prefix, s.vlan)
		}
	}
	for _, s := range selfs {
		if s.vlan == extVLAN && !s.floating {
			n.External.Addresses = append(n.External.Addresses, s.prefix)
		}
		if s.vlan == intVLAN && s.floating {
			n.Internal.Addresses = append(n.Internal.Addresses, s.prefix)
		}
	}
	for _, s := range selfs {
		if s.vlan == extVLAN && s.floating {
			n.External.Addresses = append(n.External.Addresses, s.prefix)
		}
		if s.vlan == intVLAN && !s.floating {
			n.Internal.Addresses = append(n.Internal.Addresses, s.prefix)
		}
	}

}

// networkRoutes puts the routes on the NICs; without self IPs to tell
// (haveVLANs false), defaults go outside and the rest inside.
func (t *tr) networkRoutes(selfs []selfIP, routes []route, haveVLANs bool, extVLAN, intVLAN string) {
	n := &t.cfg.Network
	// Routes.
	for _, r := range routes {
		v := vlanOf(selfs, r.via)
		if !haveVLANs {
			// No self IPs to tell: defaults go outside, the rest inside.
			if r.to.Bits() == 0 {
				v = extVLAN
			} else {
				v = intVLAN
			}
		}
		switch {
		case r.to.Bits() == 0 && v == extVLAN:
			if r.to.Addr().Is4() {
				if n.External.Gateway.IsValid() {
					t.rep.add(Changed, r.o.st, r.o.label(), "second IPv4 default route via %s not carried over", r.via)
					continue
				}
				n.External.Gateway = r.via
			} else {
				if n.External.Gateway6.IsValid() {
					t.rep.add(Changed, r.o.st, r.o.label(), "second IPv6 default route via %s not carried over", r.via)
					continue
				}
				n.External.Gateway6 = r.via
			}
		case r.to.Bits() == 0:
			t.rep.add(Unsupported, r.o.st, r.o.label(), "default route via %s on VLAN %s: edgeproxy allows the default gateway only on the external interface", r.via, v)
		case v == extVLAN && haveVLANs:
			n.External.Routes = append(n.External.Routes, config.Route{To: r.to, Via: r.via})
		case v == intVLAN:
			n.Internal.Routes = append(n.Internal.Routes, config.Route{To: r.to, Via: r.via})
		default:
			t.rep.add(Unsupported, r.o.st, r.o.label(), "gateway %s is not in the external or internal subnet, not carried over", r.via)
		}
	}

}

// sayVLANs tells which VLAN became which NIC.
func (t *tr) sayVLANs(extVLAN, intVLAN string) {
	n := &t.cfg.Network
	for _, side := range []struct {
		vlan, key, nic string
	}{{extVLAN, "network.external", n.External.Interface}, {intVLAN, "network.internal", n.Internal.Interface}} {
		if side.vlan == "" {
			continue
		}
		desc := "BIG-IP VLAN " + side.vlan
		var at *Stmt
		if vo := t.ix.get("net vlan", side.vlan); vo != nil {
			vo.used = true
			at = vo.st
			var ifs []string
			for _, it := range vo.st.Items("interfaces") {
				ifs = append(ifs, it.Key())
			}
			tag, _ := vo.st.Attr("tag")
			extra := ""
			if len(ifs) > 0 {
				extra = " interface " + strings.Join(ifs, ",")
			}
			if tag != "" {
				extra += " tag " + tag
			}
			desc += fmt.Sprintf(" (%s, %s)", strings.TrimSpace(extra), pos(vo.st))
			if mtu, ok := vo.st.Attr("mtu"); ok && mtu != "1500" {
				t.rep.add(Supply, vo.st, vo.label(), "MTU %s: set it on %s", mtu, side.nic)
			}
		}
		t.comments[side.key] = desc
		t.rep.add(Supply, at, "net vlan "+side.vlan, "is %s now: name the NIC %s or change %s.interface", side.nic, side.nic, side.key)
	}
}

// pick returns the VLAN with the highest score, not exclude; ties go to a
// name hint, then to file order.
func pick(vlans []string, score map[string]int, exclude string, hints []string) string {
	cands := make([]string, 0, len(vlans))
	for _, v := range vlans {
		if v != exclude {
			cands = append(cands, v)
		}
	}
	if len(cands) == 0 {
		return ""
	}
	hint := func(v string) int {
		b := strings.ToLower(baseName(v))
		for _, h := range hints {
			if strings.Contains(b, h) {
				return 1
			}
		}
		return 0
	}
	sort.SliceStable(cands, func(i, j int) bool {
		if score[cands[i]] != score[cands[j]] {
			return score[cands[i]] > score[cands[j]]
		}
		return hint(cands[i]) > hint(cands[j])
	})
	return cands[0]
}

// platformKinds are object kinds about the appliance itself.
var platformKinds = []string{
	"sys ", "cm ", "auth ", "net interface", "net trunk", "net stp", "net route-domain",
	"net dag-globals", "net fdb", "net lldp", "net cos", "net port-mirror", "net tunnels",
	"net self-allow", "net arp", "net ndp", "net timer-policy", "net ipsec", "net multicast-globals",
	"net dns-resolver", "net bwc", "net rate-shaping", "net sfc", "net wccp", "net router-advertisement",
	"analytics ", "ltm global-settings", "ltm default-node-monitor", "ltm dns", "ltm classification",
	"ltm tacdb", "wom ", "ilx ", "mgmt ", "util ", "ltm message-routing", "net packet-filter-trusted",
	"net ha-group", "net tunnels", "vcmp ", "ltm auth", "ltm cipher",
}

// referencedKinds are translated when a virtual refers to them.
var referencedKinds = []string{
	"ltm pool", "ltm node", "ltm monitor ", "ltm profile ", "ltm snatpool",
	"ltm snat-translation", "ltm virtual-address", "sys file ssl-", "net vlan",
	"ltm persistence ", "ltm data-group ", "ltm policy", "ltm rule",
}

func hasPrefix(s string, list []string) bool {
	for _, p := range list {
		if strings.HasPrefix(s+" ", p) || strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// leftoverObjects reports every object no carried-over virtual used.
func (t *tr) leftoverObjects() {
	type group struct {
		first *Stmt
		names []string
	}
	unused := map[string]*group{}
	platform := map[string]*group{}
	var unusedOrder, platformOrder []string
	add := func(m map[string]*group, order *[]string, kind string, o *object) {
		g := m[kind]
		if g == nil {
			g = &group{first: o.st}
			m[kind] = g
			*order = append(*order, kind)
		}
		name := o.path
		if name == "" {
			name = o.kind
		}
		g.names = append(g.names, name)
	}
	for _, o := range t.ix.all {
		if o.used {
			continue
		}
		switch {
		case o.kind == "ltm rule":
			t.rep.add(Unsupported, o.st, o.label(), "iRule (not attached to any carried-over virtual): iRules have no equivalent")
		case strings.HasPrefix(o.kind, "sys file ssl-") && hasPrefix(o.kind, referencedKinds):
			add(unused, &unusedOrder, o.kind, o)
		case hasPrefix(o.kind, platformKinds):
			add(platform, &platformOrder, o.kind, o)
		case hasPrefix(o.kind, referencedKinds):
			add(unused, &unusedOrder, o.kind, o)
		default:
			t.rep.add(Unsupported, o.st, o.label(), "no equivalent in edgeproxy")
		}
	}
	list := func(names []string) string {
		if len(names) > 6 {
			return strings.Join(names[:6], ", ") + fmt.Sprintf(" and %d more", len(names)-6)
		}
		return strings.Join(names, ", ")
	}
	for _, k := range unusedOrder {
		g := unused[k]
		t.rep.add(Ignored, g.first, k, "%d not used by any carried-over virtual: %s", len(g.names), list(g.names))
	}
	for _, k := range platformOrder {
		g := platform[k]
		t.rep.add(Ignored, g.first, k, "%d appliance setting(s) with no meaning for edgeproxy: %s", len(g.names), list(g.names))
	}
}
