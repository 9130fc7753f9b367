package netcfg

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Op is what a Change does.
type Op byte

// Operations of a Change.
const (
	OpAdd    Op = '+'
	OpRemove Op = '-'
	OpModify Op = '~'
	// OpReport is a finding netcfg shows but does not act on.
	OpReport Op = '!'
)

// Kind is what a Change is about; it labels the repairs counter.
type Kind string

// Kinds of changes.
const (
	KindLink      Kind = "link"
	KindAddress   Kind = "address"
	KindRoute     Kind = "route"
	KindSysctl    Kind = "sysctl"
	KindNeighbour Kind = "neighbour"
)

// Change is one difference between the host and the file.
type Change struct {
	Op   Op
	Kind Kind
	// Subject names the object: "address 198.19.0.2/24 dev int0".
	Subject string
	// From and To are the old and new values of a modification.
	From, To string
	// Reason explains a removal or a report.
	Reason string

	act action
	// required: a change of a sysctl another plane needs, made even
	// with network.manage false.
	required bool
	// other names who made what the change undoes, when the host says
	// (the rtm protocol of a route).
	other string
}

// String renders the change as plan prints it: "+ address 198.19.0.2/24
// dev int0", "- route default via 10.0.0.1 dev int0 (default route on the
// internal NIC)", "~ sysctl net.ipv4.conf.int0.arp_ignore: 0 → 1",
// "! sysctl net.ipv4.ip_forward: is 1; ...".
func (c Change) String() string {
	var b strings.Builder
	b.WriteByte(byte(c.Op))
	b.WriteByte(' ')
	b.WriteString(c.Subject)
	switch c.Op {
	case OpModify:
		fmt.Fprintf(&b, ": %s → %s", c.From, c.To)
		if c.Reason != "" {
			fmt.Fprintf(&b, " (%s)", c.Reason)
		}
	case OpReport:
		if c.Reason != "" {
			b.WriteString(": " + c.Reason)
		}
	default:
		if c.Reason != "" {
			fmt.Fprintf(&b, " (%s)", c.Reason)
		}
	}
	return b.String()
}

// IsReport tells a finding (shown, never applied) from a change.
func (c Change) IsReport() bool { return c.Op == OpReport || c.act == nil }

// Changes returns the changes of a plan that Apply would make, without
// the reports.
func Changes(plan []Change) []Change {
	var out []Change
	for _, c := range plan {
		if !c.IsReport() {
			out = append(out, c)
		}
	}
	return out
}

// ApplyError is a change that failed part-way through Apply.
type ApplyError struct {
	Change Change
	Err    error
	// RolledBack are the changes made before the failure and undone.
	RolledBack []Change
	// RollbackErr is set when undoing them failed too.
	RollbackErr error
}

func (e *ApplyError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "apply %q: %v", e.Change.String(), e.Err)
	if n := len(e.RolledBack); n > 0 {
		fmt.Fprintf(&b, "; rolled back the %d change(s) made before it", n)
	} else {
		b.WriteString("; nothing was changed")
	}
	if e.RollbackErr != nil {
		fmt.Fprintf(&b, "; rollback incomplete: %v", e.RollbackErr)
	}
	return b.String()
}

func (e *ApplyError) Unwrap() error { return e.Err }

// action makes a change and undoes it; entries is what the journal keeps.
type action interface {
	do(h *Host) error
	undo(h *Host) error
	entries() []Entry
}

// seq is several actions made as one change.
type seq []action

func (s seq) do(h *Host) error {
	for i, a := range s {
		if err := a.do(h); err != nil {
			for j := i - 1; j >= 0; j-- {
				err = errors.Join(err, s[j].undo(h))
			}
			return err
		}
	}
	return nil
}

func (s seq) undo(h *Host) error {
	var err error
	for i := len(s) - 1; i >= 0; i-- {
		err = errors.Join(err, s[i].undo(h))
	}
	return err
}

func (s seq) entries() []Entry {
	var out []Entry
	for _, a := range s {
		out = append(out, a.entries()...)
	}
	return out
}

// linkUp sets a link up.
type linkUp struct{ link string }

func (a linkUp) do(h *Host) error {
	lk, err := h.link(a.link)
	if err != nil {
		return err
	}
	if err := h.nl.LinkSetUp(lk); err != nil {
		return fmt.Errorf("set link %s up: %w", a.link, err)
	}
	return nil
}

func (a linkUp) undo(h *Host) error {
	lk, err := h.link(a.link)
	if err != nil {
		return err
	}
	if err := h.nl.LinkSetDown(lk); err != nil {
		return fmt.Errorf("set link %s down: %w", a.link, err)
	}
	return nil
}

func (a linkUp) entries() []Entry {
	return []Entry{{Kind: KindLink, Op: "up", Link: a.link}}
}

// addrAdd adds an address; addrDel removes one.
type addrAdd struct {
	link   string
	prefix netip.Prefix
	nodad  bool
	attrs  *AddrAttrs // of an address found on the host
}

// AddrAttrs is what else an address found on the host had, so that
// Revert restores it as it was.
type AddrAttrs struct {
	Broadcast string `json:"broadcast,omitempty"`
	Scope     int    `json:"scope,omitempty"`
	Flags     int    `json:"flags,omitempty"`
	Label     string `json:"label,omitempty"`
}

// attrsOf keeps the attributes of a as found on the host (not the
// states the kernel sets, such as secondary or tentative).
func attrsOf(a netlink.Addr) *AddrAttrs {
	const kept = unix.IFA_F_NODAD | unix.IFA_F_HOMEADDRESS | unix.IFA_F_NOPREFIXROUTE | unix.IFA_F_MANAGETEMPADDR | unix.IFA_F_PERMANENT
	at := &AddrAttrs{Scope: a.Scope, Flags: a.Flags & kept, Label: a.Label}
	if b := addrOf(a.Broadcast); b.IsValid() {
		at.Broadcast = b.String()
	}
	return at
}

type addrDel addrAdd

func (a addrAdd) nl() *netlink.Addr {
	na := &netlink.Addr{IPNet: ipNet(a.prefix)}
	if a.nodad && a.prefix.Addr().Is6() {
		na.Flags = unix.IFA_F_NODAD
	}
	if at := a.attrs; at != nil {
		na.Scope, na.Flags, na.Label = at.Scope, na.Flags|(at.Flags&^unix.IFA_F_PERMANENT), at.Label
		na.Broadcast = net.IPv4zero // none, unless it had one
		if b, err := netip.ParseAddr(at.Broadcast); err == nil {
			na.Broadcast = b.AsSlice()
		}
	}
	return na
}

func (a addrAdd) do(h *Host) error {
	lk, err := h.link(a.link)
	if err != nil {
		return err
	}
	if err := h.nl.AddrAdd(lk, a.nl()); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add address %s dev %s: %w", a.prefix, a.link, err)
	}
	return nil
}

func (a addrAdd) undo(h *Host) error { return addrDel(a).do(h) }

func (a addrAdd) entries() []Entry {
	return []Entry{{Kind: KindAddress, Op: "add", Link: a.link, Address: a.prefix.String(), NoDAD: a.nodad}}
}

func (a addrDel) do(h *Host) error {
	lk, err := h.link(a.link)
	if err != nil {
		return err
	}
	if err := h.nl.AddrDel(lk, addrAdd(a).nl()); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("remove address %s dev %s: %w", a.prefix, a.link, err)
	}
	return nil
}

func (a addrDel) undo(h *Host) error { return addrAdd(a).do(h) }

func (a addrDel) entries() []Entry {
	return []Entry{{Kind: KindAddress, Op: "remove", Link: a.link, Address: a.prefix.String(), NoDAD: a.nodad, AddrAttrs: a.attrs}}
}

// RouteSpec is a route as the journal keeps it.
type RouteSpec struct {
	Link     string `json:"link"`
	Dst      string `json:"dst"`
	Via      string `json:"via,omitempty"`
	Metric   int    `json:"metric"`
	Table    int    `json:"table,omitempty"`
	Protocol int    `json:"protocol,omitempty"`
	Scope    int    `json:"scope,omitempty"`
	// What else a route found on the host had, so that Revert restores
	// it as it was.
	Src      string `json:"src,omitempty"`
	Type     int    `json:"type,omitempty"`
	OnLink   bool   `json:"onlink,omitempty"`
	MTU      int    `json:"mtu,omitempty"`
	AdvMSS   int    `json:"advmss,omitempty"`
	Hoplimit int    `json:"hoplimit,omitempty"`
	// ExpiresAt: when an IPv6 route that expires (learned from a router
	// advertisement, or added with an expiry) would have; restored with
	// the time it has left.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

func (s RouteSpec) key() string {
	return fmt.Sprintf("%s|%s|%s|%d|%d", s.Link, s.Dst, s.Via, s.Metric, s.Table)
}

func (s RouteSpec) text() string {
	dst, _ := netip.ParsePrefix(s.Dst)
	via, _ := netip.ParseAddr(s.Via)
	return routeText(dst, via, s.Link, s.Metric)
}

// want is the spec of a route netcfg adds.
func specOf(r Route) RouteSpec {
	s := RouteSpec{Link: r.Link, Dst: r.Dst.String(), Metric: metric(r.Dst), Table: unix.RT_TABLE_MAIN, Protocol: unix.RTPROT_STATIC}
	if r.Via.IsValid() {
		s.Via = r.Via.String()
	} else if r.Dst.Addr().Is4() {
		s.Scope = int(netlink.SCOPE_LINK)
	}
	return s
}

func (h *Host) nlRoute(s RouteSpec) (*netlink.Route, error) {
	lk, err := h.link(s.Link)
	if err != nil {
		return nil, err
	}
	dst, err := netip.ParsePrefix(s.Dst)
	if err != nil {
		return nil, fmt.Errorf("route %s: %w", s.text(), err)
	}
	r := &netlink.Route{
		LinkIndex: lk.Attrs().Index,
		Dst:       ipNet(dst),
		Priority:  s.Metric,
		Table:     s.Table,
		Protocol:  netlink.RouteProtocol(s.Protocol),
		Scope:     netlink.Scope(s.Scope),
		Type:      s.Type,
		MTU:       s.MTU,
		AdvMSS:    s.AdvMSS,
		Hoplimit:  s.Hoplimit,
	}
	if s.OnLink {
		r.Flags = int(netlink.FLAG_ONLINK)
	}
	if s.Src != "" {
		src, err := netip.ParseAddr(s.Src)
		if err != nil {
			return nil, fmt.Errorf("route %s: src: %w", s.text(), err)
		}
		r.Src = src.AsSlice()
	}
	if r.Table == 0 {
		r.Table = unix.RT_TABLE_MAIN
	}
	if s.Via != "" {
		via, err := netip.ParseAddr(s.Via)
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", s.text(), err)
		}
		r.Gw = via.AsSlice()
	}
	return r, nil
}

// routeSet puts a route in place, replacing old (the route in the same
// slot: destination, metric, table) when there is one.
type routeSet struct {
	want RouteSpec
	old  *RouteSpec
}

func (a routeSet) do(h *Host) error {
	if err := h.putRoute(a.want, true); err != nil {
		return fmt.Errorf("add route %s: %w", a.want.text(), err)
	}
	return nil
}

func (a routeSet) undo(h *Host) error {
	if a.old != nil {
		err := h.putRoute(*a.old, true)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errExpired) {
			return fmt.Errorf("restore route %s: %w", a.old.text(), err)
		}
	}
	return routeDel{a.want}.do(h)
}

func (a routeSet) entries() []Entry {
	var out []Entry
	if a.old != nil {
		old := *a.old
		out = append(out, Entry{Kind: KindRoute, Op: "remove", Route: &old})
	}
	want := a.want
	return append(out, Entry{Kind: KindRoute, Op: "add", Route: &want})
}

// routeDel removes a route.
type routeDel struct{ spec RouteSpec }

func (a routeDel) do(h *Host) error {
	r, err := h.nlRoute(a.spec)
	if err != nil {
		return err
	}
	if err := h.nl.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("remove route %s: %w", a.spec.text(), err)
	}
	return nil
}

func (a routeDel) undo(h *Host) error {
	if err := h.putRoute(a.spec, false); err != nil && !errors.Is(err, unix.EEXIST) && !errors.Is(err, errExpired) {
		return fmt.Errorf("restore route %s: %w", a.spec.text(), err)
	}
	return nil
}

func (a routeDel) entries() []Entry {
	s := a.spec
	return []Entry{{Kind: KindRoute, Op: "remove", Route: &s}}
}

// sysctlSet writes a sysctl.
type sysctlSet struct{ key, old, new string }

func (a sysctlSet) do(h *Host) error   { return h.writeSysctl(a.key, a.new) }
func (a sysctlSet) undo(h *Host) error { return h.writeSysctl(a.key, a.old) }
func (a sysctlSet) entries() []Entry {
	return []Entry{{Kind: KindSysctl, Op: "set", Key: a.key, Old: a.old, New: a.new}}
}

// neighManage makes the kernel keep a next hop resolved; neighDel
// removes the entry.
type neighManage struct {
	link string
	addr netip.Addr
}

type neighDel neighManage

func (a neighManage) nl(h *Host) (*netlink.Neigh, error) {
	lk, err := h.link(a.link)
	if err != nil {
		return nil, err
	}
	return &netlink.Neigh{
		LinkIndex: lk.Attrs().Index,
		IP:        a.addr.AsSlice(),
		State:     netlink.NUD_NONE,
		FlagsExt:  netlink.NTF_EXT_MANAGED,
	}, nil
}

func (a neighManage) do(h *Host) error {
	n, err := a.nl(h)
	if err != nil {
		return err
	}
	if err := h.nl.NeighSet(n); err != nil {
		return fmt.Errorf("add managed neighbour %s dev %s: %w", a.addr, a.link, err)
	}
	return nil
}

func (a neighManage) undo(h *Host) error { return neighDel(a).do(h) }

func (a neighManage) entries() []Entry {
	return []Entry{{Kind: KindNeighbour, Op: "add", Link: a.link, Address: a.addr.String()}}
}

func (a neighDel) do(h *Host) error {
	n, err := neighManage(a).nl(h)
	if err != nil {
		return err
	}
	if err := h.nl.NeighDel(n); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove neighbour %s dev %s: %w", a.addr, a.link, err)
	}
	return nil
}

func (a neighDel) undo(h *Host) error { return neighManage(a).do(h) }

func (a neighDel) entries() []Entry {
	return []Entry{{Kind: KindNeighbour, Op: "remove", Link: a.link, Address: a.addr.String()}}
}

func (h *Host) link(name string) (netlink.Link, error) {
	lk, err := h.nl.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("%w: %s", ErrNoLink, name)
		}
		return nil, fmt.Errorf("find link %s: %w", name, err)
	}
	return lk, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func addrOf(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	return a.Unmap()
}

func prefixOf(n *net.IPNet, family int) netip.Prefix {
	if n == nil {
		if family == netlink.FAMILY_V6 {
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
		}
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	a := addrOf(n.IP)
	bits, _ := n.Mask.Size()
	return netip.PrefixFrom(a, bits)
}
