package config

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// validator checks a decoded configuration with defaults applied.
type validator struct {
	c     *Config
	now   time.Time
	errs  []*Error
	warns []*Error
	// decoded marks the paths the decoder already reported, so that a
	// value that did not decode is not reported again as missing.
	decoded map[string]bool
}

func (v *validator) finding(path, format string, args ...any) *Error {
	p := v.c.Pos.Find(path)
	return &Error{File: v.c.File, Line: p.Line, Column: p.Column, Path: path, Msg: fmt.Sprintf(format, args...)}
}

func (v *validator) errorf(path, format string, args ...any) {
	if v.decoded[path] {
		return
	}
	v.errs = append(v.errs, v.finding(path, format, args...))
}

func (v *validator) warnf(path, format string, args ...any) {
	v.warns = append(v.warns, v.finding(path, format, args...))
}

// line returns " (line N)" for a path's position, for messages that
// refer to another place in the file.
func (v *validator) line(path string) string {
	if p := v.c.Pos.Find(path); p.Line > 0 {
		return fmt.Sprintf(" (line %d)", p.Line)
	}
	return ""
}

// choice checks that value is one of options; "" is accepted when
// allowEmpty.
func choice[T ~string](v *validator, path, what string, value T, allowEmpty bool, options ...T) bool {
	if value == "" && allowEmpty || slices.Contains(options, value) {
		return true
	}
	val, choices := string(value), make([]string, len(options))
	for i, o := range options {
		choices[i] = string(o)
	}
	if val == "" {
		v.errorf(path, "%s is required: one of %s", what, oneOf(quoteAll(choices)))
		return false
	}
	v.errorf(path, "unknown %s %q: expected %s%s", what, val, oneOf(quoteAll(choices)), didYouMean(val, choices))
	return false
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = fmt.Sprintf("%q", x)
	}
	return out
}

func (v *validator) validate() {
	v.decoded = map[string]bool{}
	for _, e := range v.errs {
		v.decoded[e.Path] = true
	}
	v.admin()
	v.log()
	v.network()
	v.fastPath()
	v.pools()
	v.virtuals()
	v.listeners()
	v.bgp()
}

func (v *validator) admin() {
	l := v.c.Admin.Listen
	if l == "" {
		return // disabled
	}
	ap, err := netip.ParseAddrPort(l)
	if err != nil {
		v.errorf("admin.listen", "%q is not an address:port: write it like 127.0.0.1:9469 (or null to disable the endpoint)", l)
		return
	}
	if ap.Port() == 0 {
		v.errorf("admin.listen", "port 0: choose a port, e.g. 127.0.0.1:9469")
	}
	if !ap.Addr().IsLoopback() {
		v.warnf("admin.listen", "the admin endpoint %s is reachable beyond this host: /status and /metrics reveal the configuration and traffic; keep it on 127.0.0.1 unless a firewall guards it", l)
	}
}

func (v *validator) log() {
	choice(v, "log.format", "log format", v.c.Log.Format, false, "text", "json")
	choice(v, "log.level", "log level", v.c.Log.Level, false, "debug", "info", "warn", "error")
}

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

func (v *validator) fastPath() {
	fp := &v.c.FastPath
	if !filepath.IsAbs(fp.PinPath) {
		v.errorf("fastpath.pin_path", "%q is not an absolute path: use a directory on the BPF file system, e.g. %s", fp.PinPath, DefaultPinPath)
	} else if !strings.HasPrefix(filepath.Clean(fp.PinPath)+"/", "/sys/fs/bpf/") {
		v.warnf("fastpath.pin_path", "%s is not under /sys/fs/bpf: it must be on a mounted BPF file system (mount -t bpf bpf DIR)", fp.PinPath)
	}
	const maxFlows = 1 << 24
	if fp.MaxFlows < 0 || fp.MaxFlows > maxFlows {
		v.errorf("fastpath.max_flows", "%d flows is out of range: choose 1 to %d (default %d)", fp.MaxFlows, maxFlows, DefaultMaxFlows)
	}
	if r := fp.SNATPorts; !r.IsZero() {
		if r.First < 1024 {
			v.errorf("fastpath.snat_ports", "%s includes privileged ports below 1024 that services on this host may use: start at 1024 or above, e.g. %s", r, DefaultSNATPorts)
		} else if r.Size() < 1024 {
			v.warnf("fastpath.snat_ports", "%s holds only %d ports: each SNAT address can carry that many flows per member at once", r, r.Size())
		}
	}
	if g := fp.GCInterval.D(); g < 100*time.Millisecond || g > time.Minute {
		v.errorf("fastpath.gc_interval", "%s is out of range: choose 100ms to 1m (default %s)", g, DefaultGCInterval)
	}
}

func (v *validator) pools() {
	names := v.poolNames()
	used := map[string]bool{}
	for _, vs := range v.c.Virtuals {
		if vs == nil {
			continue
		}
		if vs.Mode == ModeFastL4 {
			used[vs.Pool] = true
		}
		for _, s := range vs.Sites {
			if s != nil {
				used[s.Pool] = true
			}
		}
	}
	hostNames := make([]string, 0, len(v.c.Network.Hosts))
	for h := range v.c.Network.Hosts {
		hostNames = append(hostNames, h)
	}
	sort.Strings(hostNames)

	for _, name := range names {
		p := v.c.Pools[name]
		base := PoolPath(name)
		if !plainKey(name) {
			v.errorf(base, "pool name %q: use letters, digits, '-' and '_'", name)
		}
		if !used[name] {
			v.warnf(base, "pool %s is not used by any virtual or site", name)
		}
		if len(p.Members) == 0 {
			v.errorf(base+".members", "pool %s has no members: list names from network.hosts or addresses, e.g. members: [fe01.corp.example.com]", name)
		}
		seen := map[string]int{}
		seenAddr := map[netip.Addr]int{}
		enabled := 0
		for i, m := range p.Members {
			path := joinIndex(base+".members", i)
			if m.Address == "" {
				if v.c.Pos.Has(path) {
					v.errorf(path, "member without address: write a name from network.hosts or an address")
				}
				continue
			}
			if j, dup := seen[strings.ToLower(m.Address)]; dup {
				v.errorf(path, "member %s is listed twice (also members[%d]): keep one", m.Address, j)
				continue
			}
			seen[strings.ToLower(m.Address)] = i
			if m.Weight < 1 || m.Weight > 1000 {
				v.errorf(path+".weight", "weight %d is out of range: choose 1 to 1000", m.Weight)
			}
			if !m.Disabled {
				enabled++
			}
			a, ok := v.c.MemberAddr(m)
			if !ok {
				if _, literal := m.Addr(); !literal && !validHostname(m.Address, false) {
					v.errorf(path, "%q is neither an address nor a host name", m.Address)
					continue
				}
				if v.c.Network.Resolver == "" {
					v.errorf(path, "member %q is not in network.hosts and no network.resolver is set: add it to network.hosts (%s: <address>) or write its address%s", m.Address, m.Address, didYouMean(m.Address, hostNames))
				}
				continue
			}
			if j, dup := seenAddr[a]; dup {
				v.errorf(path, "member %s is %s, the same as members[%d]: keep one", m.Address, a, j)
				continue
			}
			seenAddr[a] = i
			if a.IsUnspecified() || a.IsMulticast() {
				v.errorf(path, "member address %s is not a host address", a)
			} else if !a.IsLoopback() && !v.c.reachableInternally(a) {
				v.errorf(path, "member %s is not reachable through the internal NIC: no internal subnet or route covers it, so its traffic would leave by the external default route; add a route under network.internal.routes, e.g. {to: %s, via: <internal router>}", memberName(m, a), coverExample(a))
			}
		}
		if len(p.Members) > 0 && enabled == 0 {
			v.warnf(base+".members", "every member of pool %s is disabled: its virtuals will refuse connections", name)
		}
		choice(v, base+".lb", "lb", p.LB, false, LBRoundRobin, LBLeastConn)
		choice(v, base+".kind", "kind", p.Kind, true, PoolKindSkypeFE)
		v.monitor(p, base+".monitor")
	}
}

// memberName is "name (address)" for named members, else the address.
func memberName(m Member, a netip.Addr) string {
	if _, literal := m.Addr(); literal {
		return a.String()
	}
	return m.Address + " (" + a.String() + ")"
}

func coverExample(a netip.Addr) string {
	bits := 16
	if a.Is6() {
		bits = 48
	}
	p, _ := a.Prefix(bits)
	return p.String()
}

func (v *validator) poolNames() []string {
	names := make([]string, 0, len(v.c.Pools))
	for n := range v.c.Pools {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (v *validator) monitor(p *Pool, base string) {
	m := &p.Monitor
	if !choice(v, base+".type", "monitor type", m.Type, false, MonitorTCP, MonitorTLS, MonitorHTTPS, MonitorHTTP) {
		return
	}
	if m.Interval.D() < 100*time.Millisecond {
		v.errorf(base+".interval", "interval %s is too short: at least 100ms (default %s)", m.Interval, DefaultMonitorInterval)
	}
	if m.Timeout.D() < 10*time.Millisecond {
		v.errorf(base+".timeout", "timeout %s is too short: at least 10ms (default %s)", m.Timeout, DefaultMonitorTimeout)
	} else if m.Timeout >= m.Interval {
		v.errorf(base+".timeout", "timeout %s must be shorter than interval %s, or checks overlap", m.Timeout, m.Interval)
	}
	if m.Rise < 1 || m.Rise > 100 {
		v.errorf(base+".rise", "rise %d is out of range: choose 1 to 100 (default %d)", m.Rise, DefaultMonitorRise)
	}
	if m.Fall < 1 || m.Fall > 100 {
		v.errorf(base+".fall", "fall %d is out of range: choose 1 to 100 (default %d)", m.Fall, DefaultMonitorFall)
	}
	web := m.Type == MonitorHTTP || m.Type == MonitorHTTPS
	if !web {
		for _, k := range []string{"path", "host", "expect", "auth_alive"} {
			if v.c.Pos.Has(base + "." + k) {
				v.errorf(base+"."+k, "%s applies only to http and https monitors, not %s: remove it or change the type", k, m.Type)
			}
		}
	} else {
		if !strings.HasPrefix(m.Path, "/") {
			v.errorf(base+".path", "path %q must start with /", m.Path)
		}
		for i, code := range m.Expect {
			if code < 100 || code > 599 {
				v.errorf(joinIndex(base+".expect", i), "%d is not an HTTP status code (100-599)", code)
			}
		}
		if m.Host != "" && !validHostname(m.Host, false) {
			v.errorf(base+".host", "%q is not a host name", m.Host)
		}
	}
	if m.CA != "" {
		if m.Type != MonitorTLS && m.Type != MonitorHTTPS {
			v.errorf(base+".ca", "ca applies only to tls and https monitors, not %s", m.Type)
		} else {
			v.caFile(base+".ca", m.CA)
		}
	}
}

// listener is one virtual's listening socket, for overlap checks.
type listener struct {
	idx   int
	proto string
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
	v.errorf(path, "VIP %s is outside the external NIC's subnets (%s) and no route covers it: use an address in those subnets, add the VIP's subnet to network.external.addresses, or add a route for it to network.external.routes", a, subnets(n.External.Addresses))
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
	choice(v, base+".protocol", "protocol", vs.Proto, false, "tcp", "udp")
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
	if vs.Proto == "udp" && (vs.LooseInit || vs.LooseClose || vs.MSSOverride != 0) {
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
		if len(in.Addresses) > 0 && len(v.c.SNATAddresses(vs)) == 0 {
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

func (v *validator) l7(vs *Virtual, base string) {
	for _, k := range []string{"pool", "port", "snat", "protocol", "idle_timeout", "handshake_timeout", "close_timeout", "reset_on_timeout", "loose_init", "loose_close", "mss_override"} {
		if v.c.Pos.Has(base + "." + k) {
			hint := ""
			if k == "pool" || k == "port" {
				hint = "; put pool and port under sites"
			}
			v.errorf(base+"."+k, "%s applies only to fastl4 virtuals, not mode %s%s", k, vs.Mode, hint)
		}
	}
	if vs.Mode == ModeHTTPS {
		if len(vs.Certificates) == 0 {
			v.errorf(base, "https virtual %s needs certificates: [{cert: <leaf and chain PEM>, key: <key PEM>}]", vs.Name)
		}
		v.tlsOptions(vs, base+".tls")
	} else {
		if v.c.Pos.Has(base + ".certificates") {
			v.errorf(base+".certificates", "an http virtual serves no TLS: use mode https to terminate TLS with these certificates")
		}
		if v.c.Pos.Has(base + ".tls") {
			v.errorf(base+".tls", "an http virtual serves no TLS: use mode https")
		}
	}
	for i, p := range vs.TrustedProxies {
		if p.IsValid() && p.Masked() != p {
			v.errorf(joinIndex(base+".trusted_proxies", i), "%s has host bits set: did you mean %s?", p, p.Masked())
		}
	}
	if vs.DrainTimeout.D() > 10*time.Minute {
		v.errorf(base+".drain_timeout", "drain_timeout %s is out of range: at most 10m", vs.DrainTimeout)
	}
	v.connLimits(vs, base+".limits")

	if len(vs.Sites) == 0 {
		v.errorf(base, "%s virtual %s needs sites: [{hosts: [...], pool: <pool>, port: <member port>}]", vs.Mode, vs.Name)
	}
	hostSite := map[string]int{}
	for i, s := range vs.Sites {
		path := joinIndex(base+".sites", i)
		if s == nil {
			v.errorf(path, "an empty site: give it hosts and pool")
			continue
		}
		v.site(vs, s, path)
		for j, h := range s.Hosts {
			h = strings.ToLower(strings.TrimSuffix(h, "."))
			s.Hosts[j] = h
			if k, dup := hostSite[h]; dup {
				v.errorf(joinIndex(path+".hosts", j), "host %s is already served by sites[%d]%s: a host name belongs to one site", h, k, v.line(joinIndex(base+".sites", k)))
			}
			hostSite[h] = i
		}
	}
	if vs.Mode == ModeHTTPS {
		v.certificates(vs, base)
	}
}

func (v *validator) tlsOptions(vs *Virtual, path string) {
	t := &vs.TLS
	versions := []string{"1.0", "1.1", "1.2", "1.3"}
	if !choice(v, path+".min_version", "TLS version", t.MinVersion, false, versions...) {
		return
	}
	if (t.MinVersion == "1.0" || t.MinVersion == "1.1") && !t.AllowLegacy {
		v.errorf(path+".min_version", "TLS %s is deprecated and insecure: use 1.2 (the default), or set allow_legacy: true if old clients must connect", t.MinVersion)
	}
	if h := t.HSTS.D(); h != 0 && h < time.Hour {
		v.warnf(path+".hsts", "HSTS max-age %s is very short: browsers typically expect days to a year", h)
	}
	if h := t.HandshakeTimeout.D(); h < time.Second || h > time.Minute {
		v.errorf(path+".handshake_timeout", "handshake_timeout %s is out of range: 1s to 1m (default %s)", t.HandshakeTimeout, DefaultTLSHandshakeTimeout)
	} else {
		for i, s := range vs.Sites {
			if s != nil && s.HeaderTimeout != 0 && s.HeaderTimeout.D() <= h {
				v.warnf(path+".handshake_timeout", "handshake_timeout %s is not below sites[%d]'s header_timeout %s: a client that never completes its handshake holds its connection longer than a slow request; keep it shorter (default %s)", t.HandshakeTimeout, i, s.HeaderTimeout, DefaultTLSHandshakeTimeout)
				break
			}
		}
	}
	if r := t.TicketRotation.D(); r < time.Minute || r > 72*time.Hour {
		v.errorf(path+".ticket_rotation", "ticket_rotation %s is out of range: 1m to 72h (default %s); a ticket stays valid for two periods", t.TicketRotation, DefaultTicketRotation)
	}
}

// connLimits checks a virtual's connection caps.
func (v *validator) connLimits(vs *Virtual, path string) {
	l := vs.ConnLimits
	for _, f := range []struct {
		key string
		n   int
	}{{"max_conns", l.MaxConns}, {"max_conns_per_source", l.MaxConnsPerSource}, {"max_handshakes_per_source", l.MaxHandshakesPerSource}} {
		if f.n < 0 {
			v.errorf(path+"."+f.key, "%s %d is negative: give a positive number, or leave it out for the default", f.key, f.n)
		}
	}
	if l.MaxConns > 0 && l.MaxConnsPerSource > l.MaxConns {
		v.errorf(path+".max_conns_per_source", "max_conns_per_source %d is above max_conns %d: one source could take every connection; lower it below max_conns", l.MaxConnsPerSource, l.MaxConns)
	}
	if l.MaxHandshakesPerSource > l.MaxConnsPerSource && l.MaxConnsPerSource > 0 {
		v.errorf(path+".max_handshakes_per_source", "max_handshakes_per_source %d is above max_conns_per_source %d: a handshake is a connection too; lower it", l.MaxHandshakesPerSource, l.MaxConnsPerSource)
	}
}

func (v *validator) site(vs *Virtual, s *Site, path string) {
	if len(s.Hosts) == 0 {
		v.errorf(path, "the site needs hosts: [webext.example.com, ...], the names clients use")
	}
	for j, h := range s.Hosts {
		if !validHostname(h, true) {
			v.errorf(joinIndex(path+".hosts", j), "%q is not a host name (a wildcard is allowed only as the first label, *.example.com)", h)
		}
	}
	v.strictPaths(s, path)
	if v.c.Pos.Has(path+".redirect") || s.Redirect != "" {
		if !choice(v, path+".redirect", "redirect", s.Redirect, false, RedirectHTTPS) {
			return
		}
		if vs.Mode == ModeHTTPS {
			v.errorf(path+".redirect", "an https site cannot redirect to https (a loop): redirect on the http virtual instead")
		}
		for _, k := range []string{"pool", "port", "backend_tls"} {
			if v.c.Pos.Has(path + "." + k) {
				v.errorf(path+"."+k, "a redirecting site does not forward: remove %s, or remove redirect to forward to the pool", k)
			}
		}
		v.redirectTargets(s, path)
		return
	}
	if s.Pool == "" {
		v.errorf(path, "the site needs pool: <pool name> (or redirect: https)")
	}
	v.knownPool(path+".pool", s.Pool)
	if s.Profile == "" && s.Pool != "" && v.poolHasSkypeSite(s.Pool) {
		// The same front ends published without the profile would expose
		// their management applications: deny them here too.
		for _, p := range skypeDenied {
			if !slices.Contains(s.Deny, p) {
				s.Deny = append(s.Deny, p)
			}
		}
		v.warnf(path, "pool %s is published with profile skype elsewhere; its management paths (%s) are denied on this site too: set profile: skype here to say so", s.Pool, strings.Join(skypeDenied, ", "))
	}
	if s.Port == 0 {
		if v.c.Pos.Has(path + ".port") {
			v.errorf(path+".port", "port 0: name the members' port, e.g. 4443")
		} else {
			v.errorf(path, "the site needs port: the members' port, e.g. 4443 (HTTPS) or 8080 (HTTP) for a front end's external web site")
		}
	}
	choice(v, path+".profile", "profile", s.Profile, true, ProfileSkype)
	choice(v, path+".affinity", "affinity", s.Affinity, true, AffinityMSWSMan)
	choice(v, path+".lb", "lb", s.LB, true, LBRoundRobin, LBLeastConn)
	for i, d := range s.Deny {
		if !strings.HasPrefix(d, "/") {
			v.errorf(joinIndex(path+".deny", i), "denied path %q must start with /", d)
		} else if why := nonCanonicalPath(d); why != "" {
			v.errorf(joinIndex(path+".deny", i), "denied path %q is not a plain path (%s): write it as its segments, e.g. /Internal/Admin", d, why)
		}
	}
	v.upgrade(s, path)
	if s.Profile == ProfileSkype {
		v.internalSitePort(path+".port", s.Port)
	}
	if bt := s.BackendTLS; bt != nil {
		if bt.InsecureSkipVerify {
			if bt.CA != "" {
				v.errorf(path+".backend_tls.insecure_skip_verify", "insecure_skip_verify with a ca: choose one (keep ca to verify the members)")
			} else {
				v.warnf(path+".backend_tls.insecure_skip_verify", "members' certificates are not verified: anyone on the internal path can impersonate them; set ca to the internal CA instead")
			}
		}
		if bt.CA != "" {
			v.caFile(path+".backend_tls.ca", bt.CA)
		}
		if bt.ServerName != "" && !validHostname(bt.ServerName, false) {
			v.errorf(path+".backend_tls.server_name", "%q is not a host name", bt.ServerName)
		}
		if s.Port == 80 || s.Port == 8080 {
			v.warnf(path+".backend_tls", "TLS to port %d, usually plain HTTP: check the port (4443 is the front end's HTTPS port)", s.Port)
		}
	} else if s.Port == 443 || s.Port == 4443 {
		v.warnf(path+".port", "plain HTTP to port %d, which expects TLS: add backend_tls: {ca: <internal CA PEM>}", s.Port)
	}
	l := s.Limits
	for _, t := range []struct {
		key string
		d   Duration
	}{{"header_timeout", l.HeaderTimeout}, {"response_timeout", l.ResponseTimeout}, {"idle_timeout", l.IdleTimeout}, {"stall_timeout", l.StallTimeout}, {"dial_timeout", l.DialTimeout}, {"pool_idle_timeout", l.PoolIdleTimeout}} {
		if t.d.D() < 100*time.Millisecond {
			v.errorf(path+"."+t.key, "%s %s is too short: at least 100ms", t.key, t.d)
		}
	}
	if l.MaxHeaderBytes < 4096 {
		v.errorf(path+".max_header_bytes", "max_header_bytes %d is too small: at least 4096 (Kerberos tokens need 64 KiB)", l.MaxHeaderBytes)
	}
	if l.MaxBodyBytes < 0 {
		v.errorf(path+".max_body_bytes", "max_body_bytes %d is negative", l.MaxBodyBytes)
	}
	if s.Profile == ProfileSkype && l.ResponseTimeout.D() < 960*time.Second {
		v.warnf(path+".response_timeout", "response_timeout %s is shorter than the 960s Skype push notifications and UCWA long polls need: mobile clients will be disconnected", l.ResponseTimeout)
	}
	if pit := l.PoolIdleTimeout.D(); pit >= 120*time.Second {
		v.warnf(path+".pool_idle_timeout", "pool_idle_timeout %s is not shorter than IIS's 120s connection timeout: requests may hit connections the member is closing", pit)
	}
}

// upgrade checks the protocols a site lets clients switch to.
func (v *validator) upgrade(s *Site, path string) {
	for i, u := range s.Upgrade {
		if !strings.EqualFold(u, UpgradeWebSocket) {
			v.errorf(joinIndex(path+".upgrade", i), "unknown upgrade protocol %q: only %q can be allowed (or leave upgrade out to remove Upgrade headers)", u, UpgradeWebSocket)
		}
	}
}

// redirectTargets warns when an http site redirects names that no https
// virtual serves.
func (v *validator) redirectTargets(s *Site, path string) {
	served := map[string]bool{}
	for _, o := range v.c.Virtuals {
		if o == nil || o.Mode != ModeHTTPS {
			continue
		}
		for _, os := range o.Sites {
			if os == nil {
				continue
			}
			for _, h := range os.Hosts {
				served[strings.ToLower(h)] = true
			}
		}
	}
	for j, h := range s.Hosts {
		if !served[strings.ToLower(h)] {
			v.warnf(joinIndex(path+".hosts", j), "redirects %s to https, but no https virtual serves %s", h, h)
		}
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
			proto = "tcp"
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
			if l.proto == "tcp" && l.ap.Port() == ap.Port() && (l.ap.Addr() == ap.Addr() || covers(l.ap.Addr(), ap.Addr()) || covers(ap.Addr(), l.ap.Addr())) {
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

// strictPaths refuses strict_paths: false where the site's profile, deny
// list or redirect implies it.
func (v *validator) strictPaths(s *Site, path string) {
	if !v.c.Pos.Has(path+".strict_paths") || s.StrictPaths {
		return
	}
	why := ""
	switch {
	case s.Profile == ProfileSkype:
		why = "profile skype implies it"
	case len(s.Deny) > 0:
		why = "denied paths can only be matched on canonical targets"
	case s.Redirect != "":
		why = "a redirect never echoes a target that is not canonical"
	default:
		return
	}
	v.errorf(path+".strict_paths", "strict_paths: false cannot be set on this site (%s): remove the key", why)
}

// nonCanonicalPath says why a configured path is not a plain sequence of
// segments (the form a denied prefix is matched in), or "".
func nonCanonicalPath(p string) string {
	segs := strings.Split(p[1:], "/")
	for i, seg := range segs {
		switch {
		case seg == "" && i < len(segs)-1:
			return "an empty segment"
		case seg == "." || seg == "..":
			return "a dot segment"
		case strings.ContainsAny(seg, `\%;:?#`):
			return `one of \ % ; : ? #`
		case strings.HasSuffix(seg, ".") || strings.HasSuffix(seg, " "):
			return "a segment ending in a dot or space"
		}
		for _, c := range seg {
			if c < 0x20 || c == 0x7f {
				return "a control character"
			}
		}
	}
	return ""
}
