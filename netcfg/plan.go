package netcfg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/portlist"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Plan lists the differences between the host and the file, in the order
// Apply would make them. Reports (OpReport) are findings Apply leaves to
// the administrator.
func (h *Host) Plan(spec *Spec) ([]Change, error) {
	st, err := Desired(spec)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	j, err := h.loadJournal()
	if err != nil {
		return nil, err
	}
	return h.plan(st, j)
}

// observed is the part of the host netcfg looks at.
type observed struct {
	links  map[string]netlink.Link // the managed links, by name
	names  map[int]string          // every link, by index
	addrs  []netlink.Addr
	routes []netlink.Route // main table, both families
	neigh  map[string][]netlink.Neigh
	sysctl map[string]string
	// expires: when the IPv6 routes that expire will, by expiryKey.
	expires map[string]time.Time
}

func (o *observed) index(name string) int {
	if lk, ok := o.links[name]; ok {
		return lk.Attrs().Index
	}
	for i, n := range o.names {
		if n == name {
			return i
		}
	}
	return -1
}

// dump retries a netlink dump the kernel interrupted because the table
// changed meanwhile.
func dump[T any](f func() ([]T, error)) ([]T, error) {
	var err error
	for range 10 {
		var out []T
		out, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return nil, err
}

func (h *Host) observe(st *State) (*observed, error) {
	o := &observed{links: map[string]netlink.Link{}, names: map[int]string{}, neigh: map[string][]netlink.Neigh{}}
	for _, name := range st.Links {
		lk, err := h.link(name)
		if err != nil {
			if errors.Is(err, ErrNoLink) {
				key := "network.external.interface"
				if name == st.Internal {
					key = "network.internal.interface"
				}
				return nil, fmt.Errorf("%w: %s (%s): fix the name or create the interface", ErrNoLink, name, key)
			}
			return nil, err
		}
		o.links[name] = lk
	}
	all, err := dump(h.nl.LinkList)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, lk := range all {
		o.names[lk.Attrs().Index] = lk.Attrs().Name
	}
	if o.addrs, err = dump(func() ([]netlink.Addr, error) { return h.nl.AddrList(nil, netlink.FAMILY_ALL) }); err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := dump(func() ([]netlink.Route, error) {
			return h.nl.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		for i := range rs {
			rs[i].Family = fam
		}
		o.routes = append(o.routes, rs...)
	}
	if o.expires, err = h.routeExpiries(); err != nil {
		return nil, err
	}
	for _, name := range st.Links {
		ns, err := dump(func() ([]netlink.Neigh, error) {
			return h.nl.NeighList(o.links[name].Attrs().Index, netlink.FAMILY_ALL)
		})
		if err != nil {
			return nil, fmt.Errorf("list neighbours of %s: %w", name, err)
		}
		o.neigh[name] = ns
	}
	keys := make([]string, 0, len(st.Sysctls))
	for _, s := range st.Sysctls {
		keys = append(keys, s.Key)
	}
	if o.sysctl, err = h.readSysctls(keys); err != nil {
		return nil, err
	}
	return o, nil
}

// plan diffs the desired state against the host. Caller holds h.mu.
func (h *Host) plan(st *State, j *journal) ([]Change, error) {
	o, err := h.observe(st)
	if err != nil {
		return nil, err
	}
	d := &differ{st: st, o: o, j: j, removed: map[int]bool{}, wantRoutes: map[string]bool{}}
	d.links()
	if err := d.sysctls(); err != nil {
		return nil, err
	}
	d.routesToRemove()
	d.addresses()
	d.routesToSet()
	d.otherDefaults()
	d.moreSpecific()
	d.neighbours()
	return d.out, nil
}

// differ lists the changes that make the observed host the desired
// state, section by section, in the order Apply makes them.
type differ struct {
	st  *State
	o   *observed
	j   *journal
	out []Change
	// removed marks the routes (indexes into o.routes) a change removes.
	removed map[int]bool
	// wantRoutes are the keys of the desired routes.
	wantRoutes map[string]bool
}

// links brings the managed links up.
func (d *differ) links() {
	st, o := d.st, d.o
	for _, name := range st.Links {
		if o.links[name].Attrs().Flags&net.FlagUp == 0 {
			d.out = append(d.out, Change{Op: OpModify, Kind: KindLink, Subject: "link " + name, From: "down", To: "up", act: linkUp{name}})
		}
	}
}

// sysctls changes each setting that differs, or reports it.
func (d *differ) sysctls() error {
	cs, err := sysctlChanges(d.st.Sysctls, d.o.sysctl)
	d.out = append(d.out, cs...)
	return err
}

// sysctlChanges compares the wanted settings with the current values
// (keys missing: the setting does not exist).
func sysctlChanges(ss []Sysctl, current map[string]string) ([]Change, error) {
	var out []Change
	for _, s := range ss {
		cur, ok := current[s.Key]
		if !ok {
			if s.Optional || s.Report {
				continue
			}
			return out, fmt.Errorf("read sysctl %s: it does not exist (IPv6 disabled in the kernel?): enable it or remove the IPv6 settings from network", s.Name())
		}
		if s.Report {
			if cur != s.Value {
				out = append(out, Change{Op: OpReport, Kind: KindSysctl, Subject: "sysctl " + s.Name(), Reason: fmt.Sprintf("is %s; %s", cur, s.Why)})
			}
			continue
		}
		want := s.Value
		if s.Merge {
			have, err := portlist.Parse(cur)
			if err != nil {
				return out, fmt.Errorf("read sysctl %s: %w", s.Name(), err)
			}
			add, err := portlist.Parse(s.Value)
			if err != nil {
				return out, err
			}
			if have.Covers(add) {
				continue
			}
			want = have.Add(add...).String()
		} else if cur == want {
			continue
		}
		out = append(out, Change{Op: OpModify, Kind: KindSysctl, Subject: "sysctl " + s.Name(), From: show(cur), To: show(want), Reason: s.Why,
			act: sysctlSet{key: s.Key, old: cur, new: want}, required: s.required})
	}
	return out, nil
}

// routesToRemove removes default routes on the internal NIC and the
// routes netcfg added that the file no longer has.
func (d *differ) routesToRemove() {
	st, o, j := d.st, d.o, d.j
	removed, wantRoutes := d.removed, d.wantRoutes
	for _, r := range st.Routes {
		wantRoutes[specOf(r).key()] = true
	}
	intIdx := -1
	if st.Internal != "" {
		intIdx = o.index(st.Internal)
	}
	for i, r := range o.routes {
		dst := prefixOf(r.Dst, r.Family)
		if dst.Bits() != 0 || r.Type != unix.RTN_UNICAST {
			continue
		}
		if r.LinkIndex == intIdx && intIdx > 0 && len(r.MultiPath) == 0 {
			removed[i] = true
			s := o.spec(r)
			d.out = append(d.out, Change{Op: OpRemove, Kind: KindRoute, Subject: "route " + s.text(), Reason: "default route on the internal NIC", act: routeDel{s}, other: protocolName(s.Protocol)})
			continue
		}
		for _, nh := range r.MultiPath {
			if nh.LinkIndex == intIdx && intIdx > 0 {
				d.out = append(d.out, Change{Op: OpReport, Kind: KindRoute, Subject: "route " + o.spec(r).text(),
					Reason: "a multipath default route runs through the internal NIC: remove it by hand (ip route del default)"})
				break
			}
		}
	}
	for _, e := range j.Entries {
		if e.Kind != KindRoute || e.Op != "add" || e.Route == nil || wantRoutes[e.Route.key()] {
			continue
		}
		for i, r := range o.routes {
			if !removed[i] && len(r.MultiPath) == 0 && o.spec(r).key() == e.Route.key() {
				removed[i] = true
				d.out = append(d.out, Change{Op: OpRemove, Kind: KindRoute, Subject: "route " + e.Route.text(), Reason: "added by edgeproxy, no longer in the file", act: routeDel{*e.Route}})
			}
		}
	}
}

// addresses adds or resizes addresses, reports one found on another
// link, and removes those netcfg added that the file no longer has.
func (d *differ) addresses() {
	st, o, j := d.st, d.o, d.j
	wantAddr := map[string]bool{}
	for _, a := range st.Addresses {
		wantAddr[a.Link+"|"+a.Prefix.String()] = true
		idx := o.index(a.Link)
		present := false
		for _, e := range o.addrs {
			if addrOf(e.IP) != a.Prefix.Addr() {
				continue
			}
			bits, _ := e.Mask.Size()
			have := netip.PrefixFrom(a.Prefix.Addr(), bits)
			if e.LinkIndex != idx {
				d.out = append(d.out, Change{Op: OpReport, Kind: KindAddress, Subject: fmt.Sprintf("address %s dev %s", have, o.names[e.LinkIndex]),
					Reason: fmt.Sprintf("the file puts %s on %s as well: remove one of them", a.Prefix.Addr(), a.Link)})
				continue
			}
			present = true
			if bits != a.Prefix.Bits() {
				nodad := a.Prefix.Addr().Is6()
				d.out = append(d.out, Change{Op: OpModify, Kind: KindAddress, Subject: fmt.Sprintf("address %s dev %s", a.Prefix.Addr(), a.Link),
					From: "/" + strconv.Itoa(bits), To: "/" + strconv.Itoa(a.Prefix.Bits()),
					// The new prefix first: the address never leaves the
					// link, so the kernel keeps the routes through it.
					act: seq{addrAdd{link: a.Link, prefix: a.Prefix, nodad: nodad}, addrDel{link: a.Link, prefix: have, nodad: nodad, attrs: attrsOf(e)}}})
			}
		}
		if !present {
			var reason string
			if a.VIP {
				reason = "virtual address"
			}
			d.out = append(d.out, Change{Op: OpAdd, Kind: KindAddress, Subject: a.String(), Reason: reason,
				act: addrAdd{link: a.Link, prefix: a.Prefix, nodad: a.Prefix.Addr().Is6()}})
		}
	}
	for _, e := range j.Entries {
		if e.Kind != KindAddress || e.Op != "add" || wantAddr[e.Link+"|"+e.Address] {
			continue
		}
		p, err := netip.ParsePrefix(e.Address)
		if err != nil {
			continue
		}
		idx := o.index(e.Link)
		for _, a := range o.addrs {
			bits, _ := a.Mask.Size()
			if a.LinkIndex == idx && addrOf(a.IP) == p.Addr() && bits == p.Bits() {
				d.out = append(d.out, Change{Op: OpRemove, Kind: KindAddress, Subject: fmt.Sprintf("address %s dev %s", p, e.Link),
					Reason: "added by edgeproxy, no longer in the file", act: addrDel{link: e.Link, prefix: p, nodad: e.NoDAD}})
				break
			}
		}
	}
}

// routesToSet adds or replaces the desired routes.
func (d *differ) routesToSet() {
	st, o := d.st, d.o
	removed := d.removed
	for _, r := range st.Routes {
		want := specOf(r)
		idx := o.index(r.Link)
		ok := false
		var old *RouteSpec
		for i, e := range o.routes {
			if removed[i] || len(e.MultiPath) != 0 || prefixOf(e.Dst, e.Family) != r.Dst {
				continue
			}
			if e.Priority != want.Metric {
				if e.Priority < want.Metric && e.Type == unix.RTN_UNICAST {
					d.out = append(d.out, Change{Op: OpReport, Kind: KindRoute, Subject: "route " + o.spec(e).text(),
						Reason: fmt.Sprintf("its lower metric wins over the file's route %s: remove it", r)})
				}
				continue
			}
			if e.LinkIndex == idx && addrOf(e.Gw) == r.Via && e.Type == unix.RTN_UNICAST {
				ok = true
				break
			}
			if old == nil {
				s := o.spec(e)
				old = &s
			}
		}
		if ok {
			continue
		}
		if old != nil {
			d.out = append(d.out, Change{Op: OpModify, Kind: KindRoute, Subject: "route " + routeText(r.Dst, netip.Addr{}, "", 0),
				From: routeVia(*old), To: routeVia(want), act: routeSet{want: want, old: old}, other: protocolName(old.Protocol)})
			continue
		}
		d.out = append(d.out, Change{Op: OpAdd, Kind: KindRoute, Subject: r.String(), act: routeSet{want: want}})
	}
}

// otherDefaults reports other default routes and leaves them alone.
func (d *differ) otherDefaults() {
	st, o := d.st, d.o
	removed := d.removed
	for _, r := range st.Routes {
		if r.Dst.Bits() != 0 {
			continue
		}
		for i, e := range o.routes {
			dst := prefixOf(e.Dst, e.Family)
			if removed[i] || dst.Bits() != 0 || dst.Addr().Is6() != r.Dst.Addr().Is6() || e.Type != unix.RTN_UNICAST {
				continue
			}
			if e.Priority == metric(r.Dst) || e.Priority < metric(r.Dst) {
				continue // replaced or reported above
			}
			d.out = append(d.out, Change{Op: OpReport, Kind: KindRoute, Subject: "route " + o.spec(e).text(),
				Reason: "another default route: the default route is via the external gateway only; remove it if nothing else needs it"})
		}
	}
}

// moreSpecific reports the routes that take part of a subnet the file
// routes (a static route, or a NIC's own subnet) away from it: more
// specific, and through another link or of another type (blackhole,
// unreachable). The longest prefix wins, so the file's route no longer
// carries that traffic; netcfg leaves them, not knowing who needs them.
func (d *differ) moreSpecific() {
	type cover struct {
		dst  netip.Prefix
		link string
		text string
	}
	var covers []cover
	for _, r := range d.st.Routes {
		if r.Dst.Bits() > 0 {
			covers = append(covers, cover{r.Dst, r.Link, r.String()})
		}
	}
	for _, a := range d.st.Addresses {
		if !a.VIP && a.Prefix.Bits() < a.Prefix.Addr().BitLen() {
			dst := a.Prefix.Masked()
			covers = append(covers, cover{dst, a.Link, fmt.Sprintf("subnet %s of %s", dst, a.Link)})
		}
	}
	for i, e := range d.o.routes {
		dst := prefixOf(e.Dst, e.Family)
		s := d.o.spec(e)
		if d.removed[i] || d.wantRoutes[s.key()] || len(e.MultiPath) != 0 {
			continue
		}
		var best *cover
		for j, c := range covers {
			if c.dst.Bits() < dst.Bits() && c.dst.Contains(dst.Addr()) && (best == nil || c.dst.Bits() > best.dst.Bits()) {
				best = &covers[j]
			}
		}
		if best == nil || (s.Link == best.link && e.Type == unix.RTN_UNICAST) {
			continue
		}
		d.out = append(d.out, Change{Op: OpReport, Kind: KindRoute, Subject: "route " + s.text(),
			Reason: fmt.Sprintf("more specific than the file's %s, it takes %s away from it: remove it (ip route del %s) unless that traffic must go there", best.text, dst, s.text())})
	}
}

// neighbours makes the next hops managed neighbour entries and removes
// those netcfg added that the file no longer has.
func (d *differ) neighbours() {
	st, o, j := d.st, d.o, d.j
	wantNeigh := map[string]bool{}
	for _, n := range st.Neighbours {
		wantNeigh[n.Link+"|"+n.Addr.String()] = true
		managed := false
		for _, e := range o.neigh[n.Link] {
			if addrOf(e.IP) == n.Addr && (e.FlagsExt&netlink.NTF_EXT_MANAGED != 0 || e.State&netlink.NUD_PERMANENT != 0) {
				managed = true
				break
			}
		}
		if !managed {
			d.out = append(d.out, Change{Op: OpAdd, Kind: KindNeighbour, Subject: n.String(), Reason: "managed: the kernel keeps the next hop resolved",
				act: neighManage{link: n.Link, addr: n.Addr}})
		}
	}
	for _, e := range j.Entries {
		if e.Kind != KindNeighbour || e.Op != "add" || wantNeigh[e.Link+"|"+e.Address] {
			continue
		}
		a, err := netip.ParseAddr(e.Address)
		if err != nil {
			continue
		}
		for _, n := range o.neigh[e.Link] {
			if addrOf(n.IP) == a && n.FlagsExt&netlink.NTF_EXT_MANAGED != 0 {
				d.out = append(d.out, Change{Op: OpRemove, Kind: KindNeighbour, Subject: fmt.Sprintf("neighbour %s dev %s", a, e.Link),
					Reason: "added by edgeproxy, no longer in the file", act: neighDel{link: e.Link, addr: a}})
				break
			}
		}
	}
}

// spec describes a route found on the host.
func (o *observed) spec(r netlink.Route) RouteSpec {
	s := RouteSpec{
		Link:     o.names[r.LinkIndex],
		Dst:      prefixOf(r.Dst, r.Family).String(),
		Metric:   r.Priority,
		Table:    r.Table,
		Protocol: int(r.Protocol),
		Scope:    int(r.Scope),
		OnLink:   r.Flags&int(netlink.FLAG_ONLINK) != 0,
		MTU:      r.MTU,
		AdvMSS:   r.AdvMSS,
		Hoplimit: r.Hoplimit,
	}
	if r.Type != unix.RTN_UNICAST {
		s.Type = r.Type
	}
	if gw := addrOf(r.Gw); gw.IsValid() {
		s.Via = gw.String()
	}
	if src := addrOf(r.Src); src.IsValid() {
		s.Src = src.String()
	}
	if r.Family == netlink.FAMILY_V6 {
		s.ExpiresAt = o.expires[expiryKey(r.LinkIndex, prefixOf(r.Dst, r.Family), addrOf(r.Gw), r.Priority)]
	}
	return s
}

// protocolName names the rtm protocol of a route: who added it.
func protocolName(p int) string {
	return "rtm protocol " + netlink.RouteProtocol(p).String()
}

func routeVia(s RouteSpec) string {
	t := ""
	if s.Via != "" {
		t = "via " + s.Via + " "
	}
	return t + "dev " + s.Link
}

func show(s string) string {
	if s == "" {
		return `""`
	}
	return s
}
