package f5

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
)

// poolOut is a translated pool.
type poolOut struct {
	path string
	name string
	port uint16 // the members' port
	// v4 and v6 tell the address families of the members with addresses.
	v4, v6 bool
}

var poolDefaults = map[string]string{
	"allow-nat": "yes", "allow-snat": "yes", "ignore-persisted-weight": "disabled",
	"ip-tos-to-client": "pass-through", "ip-tos-to-server": "pass-through",
	"link-qos-to-client": "pass-through", "link-qos-to-server": "pass-through",
	"min-active-members": "0", "min-up-members": "0", "min-up-members-action": "failover",
	"min-up-members-checking": "disabled", "queue-depth-limit": "0",
	"queue-on-connection-limit": "disabled", "queue-time-limit": "0",
	"reselect-tries": "0", "service-down-action": "none", "slow-ramp-time": "10",
	"mwf-enabled": "disabled",
}

var memberDefaults = map[string]string{
	"connection-limit": "0", "dynamic-ratio": "1", "ephemeral": "false",
	"inherit-profile": "enabled", "logging": "disabled", "monitor": "default",
	"priority-group": "0", "rate-limit": "disabled", "ratio": "1",
	"session": "monitor-enabled", "state": "up", "trans-first-hop": "",
}

// pool translates an ltm pool, once.
func (t *tr) pool(ref string) *poolOut {
	if p, ok := t.pools[ref]; ok {
		return p
	}
	o := t.ix.get("ltm pool", ref)
	if o == nil {
		t.pools[ref] = nil
		return nil
	}
	o.used = true
	st := o.st
	lbl := o.label()
	p := &poolOut{path: ref, name: t.outName("pool", ref)}
	t.pools[ref] = p
	out := &config.Pool{}

	mode, _ := st.Attr("load-balancing-mode")
	ratio := false
	switch mode {
	case "", "round-robin":
	case "least-connections-member", "least-connections-node":
		out.LB = "least_conn"
	case "ratio-member", "ratio-node", "ratio-session":
		ratio = true
		t.rep.add(Changed, st.Get("load-balancing-mode"), lbl, "load-balancing-mode %s carried over as member weights", mode)
	default:
		t.rep.add(Changed, st.Get("load-balancing-mode"), lbl, "load-balancing-mode %s has no equivalent: round robin (L7) and consistent hashing (fastl4)", mode)
	}

	ports := map[uint16]int{}
	var portOrder []uint16
	for _, it := range st.Items("members") {
		m, port, ok := t.member(o, it, ratio)
		if !ok {
			continue
		}
		if a, ok := t.memberIP(m); ok {
			p.v4 = p.v4 || a.Is4()
			p.v6 = p.v6 || a.Is6()
		}
		if ports[port] == 0 {
			portOrder = append(portOrder, port)
		}
		ports[port]++
		out.Members = append(out.Members, m)
	}
	if len(out.Members) == 0 {
		t.rep.add(Unsupported, st, lbl, "no usable members: the pool is empty")
	}
	for _, pt := range portOrder {
		if ports[pt] > ports[p.port] {
			p.port = pt
		}
	}
	if len(portOrder) > 1 {
		list := make([]string, len(portOrder))
		for i, pt := range portOrder {
			list[i] = strconv.Itoa(int(pt))
		}
		t.rep.add(Changed, st.Get("members"), lbl, "members listen on different ports (%s): edgeproxy sends to one port per virtual; %d is used", strings.Join(list, ", "), p.port)
	}

	comment := fmt.Sprintf("from %s (%s)", lbl, pos(st))
	if mon := st.Get("monitor"); mon != nil && len(monitorRefs(mon)) > 0 {
		refs := monitorRefs(mon)
		if len(refs) > 1 {
			t.rep.add(Changed, mon, lbl, "several monitors (%s): only the first is used", strings.Join(refs, ", "))
		}
		m, from := t.monitor(fullPath(o.folder(), refs[0]), p.port)
		out.Monitor = m
		if from != "" {
			comment += "; monitor " + from
		}
	} else {
		out.Monitor = config.Monitor{Type: config.MonitorTCP, Port: p.port}
		t.rep.add(Changed, st, lbl, "no monitor on the BIG-IP: a tcp connect monitor on port %d is used", p.port)
	}
	handled := map[string]bool{"members": true, "monitor": true, "load-balancing-mode": true}
	t.leftovers(o, st, handled, poolDefaults)
	t.cfg.Pools[p.name] = out
	t.comments["pools."+p.name] = comment
	return p
}

// memberIP is the address of a translated member.
func (t *tr) memberIP(m config.Member) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(m.Address); err == nil {
		return a, true
	}
	a, ok := t.hosts[m.Address]
	return a, ok
}

// monitorRefs reads `monitor a`, `monitor a and b`, `monitor min 1 of { a b }`.
func monitorRefs(mon *Stmt) []string {
	var refs []string
	if len(mon.Words) > 1 && mon.Words[1] == "min" {
		for _, c := range mon.Block {
			refs = append(refs, c.Words...)
		}
		return refs
	}
	for _, w := range mon.Words[1:] {
		if w != "and" && w != "none" {
			refs = append(refs, w)
		}
	}
	return refs
}

// member translates one pool member; it adds a network.hosts entry for a
// named node.
func (t *tr) member(pool *object, it *Stmt, ratio bool) (config.Member, uint16, bool) {
	lbl := pool.label()
	full := fullPath(pool.folder(), it.Key())
	host, portText, err := splitHostPort(baseName(full))
	if err != nil {
		t.rep.add(Unsupported, it, lbl, "member %s: %v, left out", it.Key(), err)
		return config.Member{}, 0, false
	}
	port, err := parsePort(portText)
	if err != nil || port == 0 {
		t.rep.add(Unsupported, it, lbl, "member %s: port %q is not usable, left out", it.Key(), portText)
		return config.Member{}, 0, false
	}
	nodePath := folderOf(full) + "/" + host
	node := t.ix.get("ltm node", nodePath)
	addrText, _ := it.Attr("address")
	fqdn := ""
	if f := it.Get("fqdn"); f != nil {
		fqdn, _ = f.Attr("name")
	}
	if node != nil {
		node.used = true
		if addrText == "" {
			addrText, _ = node.st.Attr("address")
		}
		if f := node.st.Get("fqdn"); f != nil && fqdn == "" {
			fqdn, _ = f.Attr("name")
		}
		t.nodeSettings(node)
	}
	if addrText == "" {
		addrText = host
	}
	var m config.Member
	a, aerr := parseAddr(addrText)
	switch {
	case aerr == nil && !a.Wildcard:
		if a.RD != "" && a.RD != "0" {
			t.rep.add(Changed, it, lbl, "route domain %%%s of member %s dropped", a.RD, it.Key())
		}
		t.members = append(t.members, a.IP)
		if _, err := parseAddr(host); err == nil {
			m.Address = a.IP.String()
		} else {
			m.Address = t.hostName(host, a.IP, it, lbl)
		}
	case fqdn != "" && fqdn != "none":
		m.Address = fqdn
		t.rep.add(Supply, it, lbl, "member %s is the FQDN node %s: add it to network.hosts or set network.resolver", it.Key(), fqdn)
	default:
		t.rep.add(Unsupported, it, lbl, "member %s has no address, left out", it.Key())
		return m, 0, false
	}

	handled := map[string]bool{"address": true, "fqdn": true}
	if s, _ := it.Attr("session"); s == "user-disabled" {
		m.Disabled = true
		t.rep.add(Changed, it, lbl, "member %s is disabled on the BIG-IP (no new connections): carried over as disabled", it.Key())
	}
	if s, _ := it.Attr("state"); s == "user-down" {
		m.Disabled = true
		t.rep.add(Changed, it, lbl, "member %s is forced offline: carried over as disabled", it.Key())
	}
	handled["session"], handled["state"] = true, true
	if node != nil && !m.Disabled {
		s, _ := node.st.Attr("session")
		state, _ := node.st.Attr("state")
		if s == "user-disabled" || state == "user-down" {
			m.Disabled = true
			t.rep.add(Changed, it, lbl, "member %s: its node %s is disabled on the BIG-IP: carried over as a disabled member", it.Key(), node.path)
		}
	}
	if r, ok := it.Attr("ratio"); ok && r != "1" {
		n, err := strconv.Atoi(r)
		switch {
		case err != nil:
		case ratio:
			m.Weight = n
		default:
			t.rep.add(Ignored, it, lbl, "member %s ratio %s is unused by the BIG-IP's load-balancing mode", it.Key(), r)
		}
	}
	handled["ratio"] = true
	if it.HasBlock {
		t.leftovers(pool, it, handled, memberDefaults)
	}
	return m, port, true
}

// hostName registers a node name for network.hosts.
func (t *tr) hostName(name string, ip netip.Addr, at *Stmt, lbl string) string {
	if clean := cleanHostName(name); clean != name {
		t.rep.add(Changed, at, lbl, "node name %s is not a host name: called %s", name, clean)
		name = clean
	}
	if old, ok := t.hosts[name]; ok && old != ip {
		alt := name + "-" + strings.NewReplacer(".", "-", ":", "-").Replace(ip.String())
		t.rep.add(Changed, at, lbl, "node name %s is used for %s and %s: %s is called %s", name, old, ip, ip, alt)
		name = alt
	}
	t.hosts[name] = ip
	return name
}

// cleanHostName turns a node name into a usable host name: characters
// other than letters, digits, '-', '_' and '.' become '-', and labels are
// trimmed of '-'.
func cleanHostName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '-' || c == '_' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '-'
		}
	}
	labels := strings.Split(string(b), ".")
	out := labels[:0]
	for _, l := range labels {
		if l = strings.Trim(l, "-"); l != "" {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return "node"
	}
	return strings.Join(out, ".")
}

var nodeDefaults = map[string]string{
	"connection-limit": "0", "dynamic-ratio": "1", "logging": "disabled",
	"monitor": "default", "rate-limit": "disabled", "ratio": "1",
	"session": "monitor-enabled", "state": "up", "ephemeral": "false",
}

// nodeSettings reports, once, node settings without equivalent.
func (t *tr) nodeSettings(node *object) {
	if t.monitors["node:"+node.path] != nil {
		return
	}
	t.monitors["node:"+node.path] = &monitorOut{}
	st := node.st
	if mon, ok := st.Attr("monitor"); ok && mon != "default" && mon != "none" {
		t.rep.add(Unsupported, st.Get("monitor"), node.label(), "node monitor %s not carried over: edgeproxy checks members with the pool's monitor", strings.Join(st.Get("monitor").Words[1:], " "))
	}
	handled := map[string]bool{"address": true, "fqdn": true, "monitor": true, "session": true, "state": true}
	t.leftovers(node, st, handled, nodeDefaults)
}

// monitorOut is a resolved monitor, before the member port is known.
type monitorOut struct {
	m        config.Monitor
	destPort uint16
	from     string
}

var monitorDefaults = map[string]string{
	"adaptive": "disabled", "adaptive-divergence-type": "relative",
	"adaptive-divergence-value": "25", "adaptive-limit": "200",
	"adaptive-sampling-timespan": "300", "ip-dscp": "0", "manual-resume": "disabled",
	"recv-disable": "none", "reverse": "disabled", "transparent": "disabled",
	"up-interval": "0", "compatibility": "enabled", "ssl-profile": "/Common/serverssl",
	"cipherlist": "DEFAULT:+SHA:+3DES:+kEDH", "username": "", "password": "",
	"cert": "", "key": "",
}

// monitorSettings is what the chain of a monitor says.
type monitorSettings struct {
	typ                       string
	send, recv, dest          string
	interval, timeout, untilU int
}

func builtinMonitor(name string) (monitorSettings, bool) {
	ms := monitorSettings{interval: 5, timeout: 16, dest: "*:*", send: "none", recv: "none"}
	switch name {
	case "tcp", "tcp_echo", "tcp_half_open", "gateway_icmp", "icmp", "udp", "none":
		ms.typ = name
	case "http":
		ms.typ, ms.send = "http", `GET /\r\n`
	case "https":
		ms.typ, ms.send = "https", `GET /\r\n`
	case "https_443":
		ms.typ, ms.send, ms.dest = "https", `GET /\r\n`, "*:443"
	case "http_head_f5":
		ms.typ, ms.send, ms.recv = "http", `HEAD / HTTP/1.0\r\n\r\n`, "Server"
	case "https_head_f5":
		ms.typ, ms.send, ms.recv = "https", `HEAD / HTTP/1.0\r\n\r\n`, "Server"
	default:
		return ms, false
	}
	return ms, true
}

// monitor translates a monitor reference for a pool whose members listen
// on port. It returns the edgeproxy monitor and where it came from.
func (t *tr) monitor(ref string, port uint16) (config.Monitor, string) {
	mo, ok := t.monitors[ref]
	if !ok {
		mo = t.resolveMonitor(ref)
		t.monitors[ref] = mo
	}
	m := mo.m
	m.Port = mo.destPort
	if m.Port == 0 {
		m.Port = port
	}
	return m, mo.from
}

func (t *tr) resolveMonitor(ref string) *monitorOut {
	mo := &monitorOut{}
	o := t.ix.getPrefix("ltm monitor ", ref)
	var ms monitorSettings
	var lbl string
	var at *Stmt
	if o == nil {
		var known bool
		ms, known = monitorSettingsOf(ref)
		lbl = "monitor " + ref
		if !known {
			t.rep.add(Changed, nil, lbl, "monitor is not in the input and not a BIG-IP built-in: a tcp connect monitor is used")
			ms.typ = "tcp"
		}
		mo.from = ref
	} else {
		lbl = o.label()
		at = o.st
		mo.from = fmt.Sprintf("%s (%s)", lbl, pos(o.st))
		typ := strings.TrimPrefix(o.kind, "ltm monitor ")
		chain := t.chain(o, o.kind)
		root := chain[0]
		ms, _ = builtinMonitor(typ)
		if df, ok := root.st.Attr("defaults-from"); ok {
			if b, ok := builtinMonitor(baseName(df)); ok && b.typ == ms.typ {
				ms = b
			}
		}
		ms.typ = typ
		for _, c := range chain {
			c.used = true
			t.applyMonitor(c, &ms)
		}
	}

	m := config.Monitor{}
	switch ms.typ {
	case "tcp":
		m.Type = config.MonitorTCP
		if ms.send != "none" && ms.send != "" || ms.recv != "none" && ms.recv != "" {
			t.rep.add(Changed, at, lbl, "tcp monitor send/recv strings not carried over: edgeproxy checks that the port accepts connections")
		}
	case "tcp_half_open":
		m.Type = config.MonitorTCP
		t.rep.add(Changed, at, lbl, "half-open (SYN only) check carried over as a full tcp connect")
	case "http", "https":
		m.Type = config.MonitorType(ms.typ)
		if ms.typ == "https" && (ms.send == "none" || ms.send == "") {
			m.Type = config.MonitorTLS
			break
		}
		t.httpMonitor(&m, ms, at, lbl)
	default:
		m.Type = config.MonitorTCP
		t.rep.add(Changed, at, lbl, "%s monitor has no equivalent: a tcp connect monitor on the same port is used", ms.typ)
	}

	if ms.dest != "" && ms.dest != "*:*" {
		h, p, err := splitHostPort(ms.dest)
		if err == nil {
			if h != "*" {
				t.rep.add(Unsupported, at, lbl, "alias address %s not carried over: the member itself is checked", h)
			}
			if p != "*" {
				if n, err := parsePort(p); err == nil {
					mo.destPort = n
				}
			}
		}
	}

	interval := ms.interval
	if interval <= 0 {
		interval = 5
	}
	m.Interval = secs(interval)
	// BIG-IP marks a member down when no check succeeded within timeout
	// seconds; edgeproxy after fall failed checks of at most timeout each.
	m.Fall = ms.timeout / interval
	if m.Fall < 1 {
		m.Fall = 1
	}
	probe := secs(interval).D()
	if ms.timeout > 0 && secs(ms.timeout).D() < probe {
		probe = secs(ms.timeout).D()
	}
	if probe >= 2*time.Second {
		probe -= time.Second
	} else {
		probe /= 2
	}
	m.Timeout = config.Duration(probe)
	m.Rise = 1
	if ms.untilU > 0 {
		m.Rise = (ms.untilU + interval - 1) / interval
	}
	mo.m = m
	return mo
}

func monitorSettingsOf(ref string) (monitorSettings, bool) {
	if folderOf(ref) != "/Common" {
		return monitorSettings{interval: 5, timeout: 16}, false
	}
	return builtinMonitor(baseName(ref))
}

// applyMonitor overlays one monitor object of a chain.
func (t *tr) applyMonitor(o *object, ms *monitorSettings) {
	st := o.st
	handled := map[string]bool{}
	num := func(c *Stmt, dst *int) {
		handled[c.Key()] = true
		if n, err := strconv.Atoi(c.Value()); err == nil {
			*dst = n
		} else {
			t.rep.add(Unsupported, c, o.label(), "%s %q is not a number, ignored", c.Key(), c.Value())
		}
	}
	for _, c := range st.Block {
		switch c.Key() {
		case "interval":
			num(c, &ms.interval)
		case "timeout":
			num(c, &ms.timeout)
		case "time-until-up":
			num(c, &ms.untilU)
		case "send":
			handled["send"] = true
			ms.send = c.Value()
		case "recv":
			handled["recv"] = true
			ms.recv = c.Value()
		case "destination":
			handled["destination"] = true
			ms.dest = c.Value()
		case "username", "password", "cert", "key":
			handled[c.Key()] = true
			if v := c.Value(); v != "" && v != "none" {
				t.rep.add(Unsupported, c, o.label(), "%s not carried over: edgeproxy monitors do not authenticate", c.Key())
			}
		}
	}
	t.leftovers(o, st, handled, monitorDefaults)
}

var digitsRE = regexp.MustCompile(`[0-9]+`)

// httpMonitor fills path, host and expected statuses from send and recv.
func (t *tr) httpMonitor(m *config.Monitor, ms monitorSettings, at *Stmt, lbl string) {
	req := strings.NewReplacer(`\r`, "\r", `\n`, "\n").Replace(ms.send)
	lines := strings.Split(strings.ReplaceAll(req, "\r\n", "\n"), "\n")
	f := strings.Fields(lines[0])
	if len(f) >= 2 {
		if f[0] != "GET" && f[0] != "HEAD" {
			t.rep.add(Changed, at, lbl, "request method %s: edgeproxy sends GET", f[0])
		}
		p := f[1]
		if i := strings.Index(p, "://"); i >= 0 {
			p = p[i+3:]
			if j := strings.IndexByte(p, '/'); j >= 0 {
				p = p[j:]
			} else {
				p = "/"
			}
		}
		if p != "/" {
			m.Path = p
		}
	} else {
		t.rep.add(Changed, at, lbl, "send string %q is not an HTTP request: GET / is used", ms.send)
	}
	for _, l := range lines[1:] {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "host") {
			m.Host = strings.TrimSpace(v)
		}
	}
	if ms.recv == "" || ms.recv == "none" {
		t.rep.add(Changed, at, lbl, "no receive string: the BIG-IP counted any answer as up; edgeproxy expects status 200 (set expect)")
		return
	}
	seen := map[int]bool{}
	var codes []int
	for _, d := range digitsRE.FindAllString(ms.recv, -1) {
		n, _ := strconv.Atoi(d)
		if len(d) == 3 && n >= 100 && n <= 599 && !seen[n] {
			seen[n] = true
			codes = append(codes, n)
		}
	}
	sort.Ints(codes)
	if len(codes) == 0 {
		t.rep.add(Changed, at, lbl, "receive string %q matches the answer's text: edgeproxy checks the status code (200 expected)", ms.recv)
		return
	}
	if !(len(codes) == 1 && codes[0] == 200) {
		m.Expect = codes
	}
}
