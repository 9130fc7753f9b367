package f5

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
)

// Options tune the translation.
type Options struct {
	// ExternalInterface and InternalInterface name the host's NICs
	// (default ext0 and int0).
	ExternalInterface string
	InternalInterface string
	// CertDir is where the certificate and key files of https virtuals are
	// expected (default /etc/edgeproxy/tls).
	CertDir string
}

// DefaultCertDir is where imported certificates are expected by default.
const DefaultCertDir = "/etc/edgeproxy/tls"

// Result is a translated configuration.
type Result struct {
	Config *config.Config
	Report *Report
	// Files lists the certificate and key files the configuration refers
	// to. They are not created: export them from the BIG-IP as PEM.
	Files []string
	// comments are attached to YAML keys ("virtuals.0", "pools.sfb").
	comments map[string]string
}

// Import parses tmsh text and translates it.
func Import(name string, data []byte, opt Options) (*Result, error) {
	f, err := Parse(name, data)
	if err != nil {
		return nil, err
	}
	return Translate(f, opt), nil
}

// Translate turns parsed objects into an edgeproxy configuration. It never
// fails: what it cannot carry over goes to the report.
func Translate(f *File, opt Options) *Result {
	if opt.ExternalInterface == "" {
		opt.ExternalInterface = "ext0"
	}
	if opt.InternalInterface == "" {
		opt.InternalInterface = "int0"
	}
	if opt.CertDir == "" {
		opt.CertDir = DefaultCertDir
	}
	t := &tr{
		opt:      opt,
		ix:       newIndex(f),
		rep:      &Report{File: f.Name},
		cfg:      &config.Config{Pools: map[string]*config.Pool{}},
		comments: map[string]string{},
		pools:    map[string]*poolOut{},
		profiles: map[string]*profileOut{},
		monitors: map[string]*monitorOut{},
		vlanVote: map[string]int{},
		hosts:    map[string]netip.Addr{},
		names:    map[string]map[string]string{},
	}
	t.cfg.Admin.Listen = "127.0.0.1:9469"
	for _, o := range t.ix.ofKind("ltm virtual") {
		t.virtual(o)
	}
	t.dropUnusedPools()
	t.network()
	t.fillHosts()
	t.checkVIPs()
	if len(t.hosts) > 0 {
		t.cfg.Network.Hosts = t.hosts
	}
	t.leftoverObjects()
	if len(t.cfg.Virtuals) == 0 {
		t.rep.add(Unsupported, nil, "", "no virtual server could be carried over: the output has no virtuals")
	}
	sort.Strings(t.files)
	return &Result{Config: t.cfg, Report: t.rep, Files: t.files, comments: t.comments}
}

type tr struct {
	opt      Options
	ix       *index
	rep      *Report
	cfg      *config.Config
	comments map[string]string
	files    []string

	pools    map[string]*poolOut    // by F5 path
	profiles map[string]*profileOut // by F5 path
	monitors map[string]*monitorOut // by F5 path
	names    map[string]map[string]string

	// L7 virtuals, for filling in site hosts.
	l7 []*l7Virtual

	// What the virtuals tell about the network.
	vips     []netip.Addr
	members  []netip.Addr
	vlanVote map[string]int // VLAN path → virtuals enabled on it
	hosts    map[string]netip.Addr
}

// outName gives the edgeproxy name of an F5 object: its base name, or the
// path with '/' turned into '_' when two objects share a base name.
func (t *tr) outName(kind, path string) string {
	m := t.names[kind]
	if m == nil {
		m = map[string]string{}
		t.names[kind] = m
	}
	if n, ok := m[path]; ok {
		return n
	}
	n := baseName(path)
	for p, other := range m {
		if other == n && p != path {
			n = strings.ReplaceAll(strings.TrimPrefix(path, "/"), "/", "_")
			break
		}
	}
	m[path] = n
	return n
}

func (t *tr) addFile(p string) {
	for _, f := range t.files {
		if f == p {
			return
		}
	}
	t.files = append(t.files, p)
}

func secs(n int) config.Duration { return config.Duration(time.Duration(n) * time.Second) }

func where(o *object) string {
	return fmt.Sprintf("%s (%s)", o.label(), pos(o.st))
}

// pos is "file:line" of a statement, with the file's base name.
func pos(s *Stmt) string {
	if s.File == "" {
		return fmt.Sprintf("line %d", s.Line)
	}
	return fmt.Sprintf("%s:%d", filepath.Base(s.File), s.Line)
}

// benignKeys are attributes that never carry behaviour.
var benignKeys = map[string]bool{
	"app-service": true, "description": true, "partition": true,
	"creation-time": true, "last-modified-time": true, "generation": true,
	"metadata": true, "defaults-from": true, "inherited-traffic-group": true,
}

// leftovers reports, once, the attributes of o that were not handled and
// differ from the BIG-IP defaults.
func (t *tr) leftovers(o *object, st *Stmt, handled map[string]bool, defaults map[string]string, ignorePrefixes ...string) {
	var rest []string
	for _, c := range st.Block {
		k := c.Key()
		if handled[k] || benignKeys[k] {
			continue
		}
		skip := false
		for _, p := range ignorePrefixes {
			if strings.HasPrefix(k, p) {
				skip = true
			}
		}
		if skip {
			continue
		}
		v := strings.Join(c.Words[1:], " ")
		if c.HasBlock && len(c.Block) == 0 && !c.IsRaw {
			continue
		}
		if v == "none" && !c.HasBlock {
			continue
		}
		if d, ok := defaults[k]; ok && (d == v && !c.HasBlock || d == "" && c.HasBlock) {
			continue
		}
		if c.HasBlock {
			v = strings.TrimSpace(v + " { ... }")
		}
		rest = append(rest, strings.TrimSpace(k+" "+v))
	}
	if len(rest) == 0 {
		return
	}
	msg := strings.Join(rest, ", ")
	if len(rest) > 8 {
		msg = strings.Join(rest[:8], ", ") + fmt.Sprintf(" and %d more", len(rest)-8)
	}
	t.rep.add(Unsupported, st, o.label(), "settings with no equivalent: %s", msg)
}

// virtualDefaults are the ltm virtual attribute values that need no
// equivalent.
var virtualDefaults = map[string]string{
	"auto-lasthop": "default", "cmp-enabled": "yes", "connection-limit": "0",
	"enabled": "", "gtm-score": "0", "mirror": "disabled",
	"mobile-app-tunnel": "disabled", "nat64": "disabled", "rate-limit": "disabled",
	"rate-limit-dst-mask": "0", "rate-limit-mode": "object", "rate-limit-src-mask": "0",
	"source-port": "preserve", "syn-cookie-status": "not-activated",
	"translate-address": "enabled", "translate-port": "enabled",
	"serverssl-use-sni": "disabled", "service-down-immediate-action": "none",
	"address-status": "yes", "flow-eviction-policy": "none",
	"throughput-capacity": "infinite", "hardware-syn-cookie-instances": "0",
}

// virtualTypes are bare words that make a virtual something other than a
// standard (load-balancing) one.
var virtualTypes = [][2]string{
	{"ip-forward", "forwarding (IP) virtual"},
	{"l2-forward", "forwarding (layer 2) virtual"},
	{"reject", "reject virtual"},
	{"dhcp", "DHCP relay virtual"},
	{"internal", "internal virtual"},
	{"stateless", "stateless virtual"},
	{"perf-http", "performance (HTTP) virtual"},
	{"message-routing", "message routing virtual"},
}

// vsInfo collects what a virtual says, before choosing its mode.
type vsInfo struct {
	o        *object
	listen   netip.AddrPort
	proto    string
	fastl4   *profileOut
	clientSS []*profileOut
	serverSS *profileOut
	http     *profileOut
	redirect bool // _sys_https_redirect or an iRule redirecting to https
	// From iRules and persistence: denied paths beyond the skype
	// profile's, the iRule refusing the management paths, the affinity,
	// and what was carried over (for the output's comment).
	deny      []string
	denyFrom  []string
	skypeRule string
	affinity  string
	notes     []string
	snat      config.SNAT
	snatSet   bool
	snatNone  bool
	pool      *poolOut
	poolRef   string
	port      uint16 // member port
}

// keySet records the attributes of a statement that were handled.
type keySet map[string]bool

func (k keySet) h(keys ...string) {
	for _, key := range keys {
		k[key] = true
	}
}

func (t *tr) virtual(o *object) {
	o.used = true
	st := o.st
	lbl := o.label()
	v := &vsInfo{o: o}
	handled := keySet{}

	if st.Has("disabled") {
		t.rep.add(Unsupported, st, lbl, "disabled on the BIG-IP: not carried over (it would start serving)")
		return
	}
	for _, vt := range virtualTypes {
		if st.Has(vt[0]) {
			t.rep.add(Unsupported, st, lbl, "%s: no equivalent, not carried over", vt[1])
			return
		}
	}
	handled.h("destination", "mask", "enabled", "vs-index", "source", "ip-protocol")
	if !t.destination(v) {
		return
	}
	handled.h("profiles")
	t.virtualProfiles(v)
	handled.h("rules", "persist", "fallback-persistence", "policies")
	t.rules(v)
	t.persistence(v)
	t.otherAttachments(v, handled)
	handled.h("vlans", "vlans-enabled", "vlans-disabled")
	t.virtualVLANs(o)
	handled.h("source-address-translation", "snat", "snatpool")
	t.sourceTranslation(v)

	// pool
	handled.h("pool")
	if ref, ok := st.Attr("pool"); ok && ref != "none" {
		v.poolRef = fullPath(o.folder(), ref)
		v.pool = t.pool(v.poolRef)
		if v.pool != nil {
			v.port = v.pool.port
		}
	}
	if ta, _ := st.Attr("translate-address"); ta == "disabled" {
		t.rep.add(Unsupported, st.Get("translate-address"), lbl, "translate-address disabled (traffic forwarded to its original destination): edgeproxy always sends to a pool member, not carried over")
		return
	}
	if tp, _ := st.Attr("translate-port"); tp == "disabled" {
		v.port = v.listen.Port()
	}

	t.leftovers(o, st, handled, virtualDefaults)
	t.emitVirtual(v)
}

// destination reads the virtual's address, port and protocol; false when
// the virtual cannot be carried over.
func (t *tr) destination(v *vsInfo) bool {
	st, lbl := v.o.st, v.o.label()
	dest, ok := st.Attr("destination")
	if !ok {
		t.rep.add(Unsupported, st, lbl, "no destination: not carried over")
		return false
	}
	hostPart, portPart, err := splitHostPort(baseName(dest))
	if err != nil {
		t.rep.add(Unsupported, st.Get("destination"), lbl, "destination %s: %v", dest, err)
		return false
	}
	vport, err := parsePort(portPart)
	if err != nil {
		t.rep.add(Unsupported, st.Get("destination"), lbl, "destination %s: %v", dest, err)
		return false
	}
	a, ok := t.virtualAddress(v.o, dest, hostPart)
	if !ok {
		return false
	}
	if a.Wildcard {
		t.rep.add(Unsupported, st.Get("destination"), lbl, "wildcard destination %s (forwarding or catch-all virtual): no equivalent, not carried over", dest)
		return false
	}
	if vport == 0 {
		t.rep.add(Unsupported, st.Get("destination"), lbl, "destination %s listens on all ports: edgeproxy virtuals listen on one port, not carried over", dest)
		return false
	}
	if a.RD != "" && a.RD != "0" {
		t.rep.add(Changed, st.Get("destination"), lbl, "route domain %%%s dropped: edgeproxy uses the host's main routing table", a.RD)
	}
	if m, ok := st.Attr("mask"); ok {
		if bits, ok := parseMaskBits(m); !ok || bits != a.IP.BitLen() {
			t.rep.add(Unsupported, st.Get("mask"), lbl, "mask %s makes it a network virtual: edgeproxy listens on one address, not carried over", m)
			return false
		}
	}
	v.listen = netip.AddrPortFrom(a.IP, vport)
	if src, ok := st.Attr("source"); ok {
		if p, _, err := parsePrefix(src); err != nil || p.Bits() != 0 {
			t.rep.add(Changed, st.Get("source"), lbl, "source %s not carried over: the virtual accepts every client; restrict clients with a firewall", src)
		}
	}
	switch proto, _ := st.Attr("ip-protocol"); proto {
	case "", "tcp":
	case "udp":
		v.proto = "udp"
	default:
		t.rep.add(Unsupported, st.Get("ip-protocol"), lbl, "ip-protocol %s: edgeproxy forwards tcp and udp, not carried over", proto)
		return false
	}
	return true
}

// virtualAddress resolves the address part of a destination, a literal
// or the name of an ltm virtual-address, and reports what the
// virtual-address says.
func (t *tr) virtualAddress(o *object, dest, hostPart string) (addr, bool) {
	st, lbl := o.st, o.label()
	a, err := parseAddr(hostPart)
	if err != nil {
		va := t.ix.get("ltm virtual-address", fullPath(folderOf(dest), hostPart))
		if va == nil {
			t.rep.add(Unsupported, st.Get("destination"), lbl, "destination %s: %v and no ltm virtual-address of that name", dest, err)
			return a, false
		}
		va.used = true
		s, _ := va.st.Attr("address")
		if a, err = parseAddr(s); err != nil {
			t.rep.add(Unsupported, va.st, va.label(), "address: %v", err)
			return a, false
		}
		return a, true
	}
	if va := t.ix.get("ltm virtual-address", fullPath(folderOf(dest), hostPart)); va != nil {
		va.used = true
		if arp, _ := va.st.Attr("arp"); arp == "disabled" {
			t.rep.add(Changed, va.st, va.label(), "arp disabled on the BIG-IP (the address is routed to it); edgeproxy adds the VIP to the external interface")
		}
		if tg, ok := va.st.Attr("traffic-group"); ok && !strings.HasSuffix(tg, "traffic-group-local-only") {
			t.rep.add(Ignored, va.st, va.label(), "traffic-group %s: edgeproxy has no HA failover; the VIP is always served by this host", tg)
		}
	}
	return a, true
}

// virtualProfiles sorts the virtual's profiles by type.
func (t *tr) virtualProfiles(v *vsInfo) {
	o := v.o
	var others []string
	for _, it := range o.st.Items("profiles") {
		ref := fullPath(o.folder(), it.Key())
		p := t.profile(ref)
		switch p.typ {
		case "fastl4":
			if v.fastl4 == nil {
				v.fastl4 = p
			}
		case "client-ssl":
			v.clientSS = append(v.clientSS, p)
		case "server-ssl":
			if v.serverSS == nil {
				v.serverSS = p
			} else {
				others = append(others, ref+" (second server-ssl)")
			}
		case "http":
			v.http = p
			t.httpSettings(p)
		case "tcp", "udp":
			if p.obj != nil {
				t.rep.add(Changed, p.obj.st, p.obj.label(), "%s profile settings not carried over: edgeproxy uses the kernel's TCP stack with its own timeouts", p.typ)
				p.obj.used = true
			}
		default:
			what := p.typ
			if what == "" {
				what = "unknown"
			}
			if p.obj != nil {
				p.obj.used = true
				t.rep.add(Unsupported, p.obj.st, p.obj.label(), "%s profile: no equivalent (attached to %s)", what, where(o))
			} else {
				others = append(others, fmt.Sprintf("%s (%s)", ref, what))
			}
		}
	}
	for _, s := range others {
		t.rep.add(Unsupported, o.st.Get("profiles"), o.label(), "profile %s not carried over", s)
	}
}

// rules carries over the iRules edgeproxy has as settings: a redirect to
// https and filters refusing paths. The others go to the report.
func (t *tr) rules(v *vsInfo) {
	o := v.o
	for _, it := range o.st.Items("rules") {
		ref := fullPath(o.folder(), it.Key())
		if baseName(ref) == "_sys_https_redirect" {
			v.redirect = true
			continue
		}
		r := t.ix.get("ltm rule", ref)
		if r == nil {
			t.rep.add(Unsupported, it, o.label(), "iRule %s not carried over: iRules have no equivalent", ref)
			continue
		}
		r.used = true
		eff, ok := t.ruleEffect(r)
		switch {
		case !ok:
			t.rep.add(Unsupported, it, o.label(), "iRule %s (%s) not carried over: only redirects to https and filters refusing paths have an equivalent; check what it does", ref, pos(r.st))
		case eff.redirect:
			v.redirect = true
			v.notes = append(v.notes, fmt.Sprintf("iRule %s (%s) redirects to https: redirect: https", ref, pos(r.st)))
		default:
			skype, rest := skypeDeny(eff.deny)
			if skype {
				v.skypeRule = ref
			}
			v.deny = append(v.deny, rest...)
			note := fmt.Sprintf("iRule %s (%s) refuses %s", ref, pos(r.st), strings.Join(eff.deny, ", "))
			if skype {
				note += ": profile: skype"
			}
			if len(rest) > 0 {
				note += fmt.Sprintf(": deny: [%s]", strings.Join(rest, ", "))
			}
			v.denyFrom = append(v.denyFrom, note)
		}
	}
}

// persistence carries over MS-WSMAN cookie persistence as the sites'
// ms-wsman affinity; other persistence goes to the report.
func (t *tr) persistence(v *vsInfo) {
	o := v.o
	for _, it := range o.st.Items("persist") {
		ref := fullPath(o.folder(), it.Key())
		line := ""
		p := t.ix.getPrefix("ltm persistence ", ref)
		if p != nil {
			p.used = true
			line = fmt.Sprintf(" (%s)", where(p))
		}
		if msWSManCookie(p) {
			v.affinity = config.AffinityMSWSMan
			v.notes = append(v.notes, fmt.Sprintf("persistence profile %s%s pins clients with the MS-WSMAN cookie: affinity: ms-wsman", ref, line))
			continue
		}
		t.rep.add(Unsupported, it, o.label(), "persistence profile %s%s not carried over: fastl4 spreads clients by consistent hashing of the connection; https sites pin Windows-authenticated connections", ref, line)
	}
	if fp, ok := o.st.Attr("fallback-persistence"); ok && fp != "none" {
		t.rep.add(Unsupported, o.st.Get("fallback-persistence"), o.label(), "fallback persistence %s not carried over", fp)
	}
}

// otherAttachments reports the policies and other attachments, which
// have no equivalent.
func (t *tr) otherAttachments(v *vsInfo, handled keySet) {
	o := v.o
	st, lbl := o.st, o.label()
	for _, it := range st.Items("policies") {
		ref := fullPath(o.folder(), it.Key())
		if p := t.ix.get("ltm policy", ref); p != nil {
			p.used = true
		}
		t.rep.add(Unsupported, it, lbl, "LTM policy %s not carried over (traffic policies, ASM and other module policies have no equivalent)", ref)
	}
	for _, k := range []string{"security-log-profiles", "fw-enforced-policy", "fw-staged-policy", "ip-intelligence-policy", "per-flow-request-access-policy", "security-nat-policy", "service-policy", "bwc-policy", "clone-pools", "auth", "related-rules", "eviction-protected", "last-hop-pool"} {
		handled.h(k)
		c := st.Get(k)
		if c == nil || (c.HasBlock && len(c.Block) == 0) || c.Value() == "none" || (k == "eviction-protected" && c.Value() == "disabled") {
			continue
		}
		t.rep.add(Unsupported, c, lbl, "%s not carried over", strings.TrimSpace(k+" "+strings.Join(c.Words[1:], " ")))
	}
}

// virtualVLANs counts the VLANs a virtual is enabled on (they tell which
// VLAN is external).
func (t *tr) virtualVLANs(o *object) {
	st := o.st
	vlans := st.Items("vlans")
	if st.Has("vlans-enabled") {
		for _, it := range vlans {
			t.vlanVote[fullPath(o.folder(), it.Key())]++
		}
	} else if len(vlans) > 0 {
		names := make([]string, len(vlans))
		for i, it := range vlans {
			names[i] = it.Key()
		}
		t.rep.add(Changed, st.Get("vlans"), o.label(), "disabled on VLANs %s: edgeproxy serves virtuals on the external interface only", strings.Join(names, ", "))
	}
}

// sourceTranslation reads the virtual's SNAT.
func (t *tr) sourceTranslation(v *vsInfo) {
	o := v.o
	st := o.st
	if sat := st.Get("source-address-translation"); sat != nil {
		typ, _ := sat.Attr("type")
		pool, _ := sat.Attr("pool")
		switch typ {
		case "automap":
			v.snat.Automap, v.snatSet = true, true
		case "snat":
			v.snat, v.snatSet = t.snatpool(o, sat, fullPath(o.folder(), pool)), true
		case "none", "":
			v.snatNone = true
		default:
			t.rep.add(Unsupported, sat, o.label(), "source-address-translation type %s: no equivalent; no SNAT", typ)
			v.snatNone = true
		}
	} else if s, ok := st.Attr("snat"); ok && s == "automap" {
		v.snat.Automap, v.snatSet = true, true
	} else if sp, ok := st.Attr("snatpool"); ok && sp != "none" {
		v.snat, v.snatSet = t.snatpool(o, st.Get("snatpool"), fullPath(o.folder(), sp)), true
	} else {
		v.snatNone = true
	}
}

// emitVirtual chooses the mode and writes the edgeproxy virtual.
func (t *tr) emitVirtual(v *vsInfo) {
	o := v.o
	out := &config.Virtual{Name: t.outName("virtual", o.path), Listen: v.listen}
	comment := fmt.Sprintf("from %s (%s)", o.label(), pos(o.st))
	ok := false
	if v.fastl4 != nil || (len(v.clientSS) == 0 && v.http == nil && !v.redirect) {
		ok = t.emitFastL4(v, out, &comment)
	} else {
		ok = t.emitL7(v, out)
	}
	if !ok {
		return
	}
	for _, n := range append(v.denyFrom, v.notes...) {
		comment += "; " + n
	}
	t.vips = append(t.vips, v.listen.Addr())
	i := len(t.cfg.Virtuals)
	t.cfg.Virtuals = append(t.cfg.Virtuals, out)
	t.comments[fmt.Sprintf("virtuals.%d", i)] = comment
}

// emitFastL4 fills a fastl4 virtual; false when it cannot be carried over.
func (t *tr) emitFastL4(v *vsInfo, out *config.Virtual, comment *string) bool {
	st, lbl := v.o.st, v.o.label()
	out.Mode = config.ModeFastL4
	if v.fastl4 == nil {
		t.rep.add(Changed, st, lbl, "standard virtual without HTTP or SSL profiles carried over as fastl4: edgeproxy forwards the packets instead of proxying the connection")
		out.FastL4 = defaultFastL4()
	} else {
		out.FastL4 = v.fastl4.fl4
		*comment += "; FastL4 profile " + v.fastl4.path
	}
	if v.pool == nil {
		if v.poolRef != "" {
			t.rep.add(Unsupported, st, lbl, "pool %s is not in the input: not carried over", v.poolRef)
		} else {
			t.rep.add(Unsupported, st, lbl, "no pool: a fastl4 virtual needs one, not carried over")
		}
		return false
	}
	if vip := v.listen.Addr(); vip.Is4() && v.pool.v6 || vip.Is6() && v.pool.v4 {
		t.rep.add(Unsupported, st, lbl, "VIP %s and members of pool %s are of different address families: edgeproxy's fast path does not translate between IPv4 and IPv6, not carried over", vip, v.pool.path)
		return false
	}
	out.Pool, out.Port, out.Proto = v.pool.name, v.port, config.Protocol(v.proto)
	switch {
	case v.snatSet:
		out.SNAT = v.snat
	case v.snatNone:
		out.SNAT.Automap = true
		t.rep.add(Changed, st, lbl, "no source address translation on the BIG-IP: edgeproxy always translates, snat automap is used (the members see the internal address, not the client's)")
	}
	if v.proto == "udp" {
		t.rep.add(Changed, st, lbl, "UDP virtual: TCP timeouts of the FastL4 profile do not apply; the idle timeout does")
	}
	if why := t.skypeLooking(v); why != "" && v.proto != "udp" {
		if p := t.cfg.Pools[v.pool.name]; p != nil && p.Kind == "" {
			p.Kind = config.PoolKindSkypeFE
			t.comments["pools."+v.pool.name] += "; kind skype-fe: Skype for Business front ends (" + why + ")"
		}
		t.internalSitePort(v, why)
	}
	return true
}

// emitL7 fills an https or http virtual and its site; false when it
// cannot be carried over.
func (t *tr) emitL7(v *vsInfo, out *config.Virtual) bool {
	st, lbl := v.o.st, v.o.label()
	if v.proto == "udp" {
		t.rep.add(Unsupported, st, lbl, "HTTP/SSL profiles on a UDP virtual: not carried over")
		return false
	}
	if len(v.clientSS) > 0 {
		out.Mode = config.ModeHTTPS
		out.Certificates, out.TLS = t.certificates(v)
	} else {
		out.Mode = config.ModeHTTP
	}
	site := &config.Site{Hosts: t.siteHosts(v, out.Certificates)}
	switch {
	case v.redirect && (v.pool == nil || out.Mode == config.ModeHTTP):
		site.Redirect = config.RedirectHTTPS
		if v.pool != nil {
			t.rep.add(Changed, st, lbl, "pool %s not used: the virtual answers every request with a redirect to https", v.pool.path)
		}
	case v.pool == nil && v.poolRef != "":
		t.rep.add(Unsupported, st, lbl, "pool %s is not in the input: not carried over", v.poolRef)
		return false
	case v.pool == nil:
		t.rep.add(Unsupported, st, lbl, "no pool: not carried over")
		return false
	default:
		site.Pool, site.Port = v.pool.name, v.port
		if v.redirect {
			t.rep.add(Changed, st, lbl, "both a pool and a redirect to https on an https virtual: the pool is used")
		}
	}
	if v.serverSS != nil && site.Pool != "" {
		site.BackendTLS = t.backendTLS(v)
	}
	if v.snatSet && !v.snat.Automap {
		t.rep.add(Changed, st, lbl, "SNAT pool not used: the L7 proxy connects to the members from the internal interface's address")
	}
	if site.Pool != "" {
		t.skypeSite(v, site)
	}
	out.Sites = []*config.Site{site}
	t.l7 = append(t.l7, &l7Virtual{v: out, o: v.o, pool: site.Pool})
	return true
}

// skypeSite carries the iRules' denied paths and the affinity over to a
// forwarding site, and gives a site in front of Skype for Business front
// ends the skype profile.
func (t *tr) skypeSite(v *vsInfo, site *config.Site) {
	site.Deny, site.Affinity = v.deny, v.affinity
	why := t.skypeLooking(v)
	if why == "" {
		return
	}
	site.Profile = config.ProfileSkype
	if v.skypeRule == "" {
		t.rep.add(Changed, v.o.st, v.o.label(), "profile: skype, as the pool looks like Skype for Business front ends (%s): the site denies %s and pins Windows-authenticated connections; remove the profile if these are not front ends",
			why, strings.Join(config.SkypeDeniedPaths(), ", "))
	}
	t.internalSitePort(v, why)
}

type l7Virtual struct {
	v    *config.Virtual
	o    *object
	pool string
}

// siteHosts are the host names of an L7 virtual: the server names of its
// client-ssl profiles, else the names of its certificates when their files
// are already in place. An http virtual gets its names later from the
// https virtual on the same address (fillHosts).
func (t *tr) siteHosts(v *vsInfo, certs []config.Certificate) []string {
	var hosts []string
	for _, p := range v.clientSS {
		if p.serverName != "" && !hasWord(hosts, p.serverName) {
			hosts = append(hosts, p.serverName)
		}
	}
	if len(hosts) > 0 {
		return hosts
	}
	for _, c := range certs {
		for _, n := range certNames(c.Cert) {
			if !hasWord(hosts, n) {
				hosts = append(hosts, n)
			}
		}
	}
	if len(hosts) > 0 {
		t.rep.add(Changed, v.o.st, v.o.label(), "the BIG-IP virtual answered every host name; edgeproxy serves the names of its certificate: %s", strings.Join(hosts, ", "))
	}
	return hosts
}

// certNames reads the DNS names of the leaf certificate in a PEM file, nil
// when the file is not there (yet).
func certNames(file string) []string {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil
		}
		if len(c.DNSNames) > 0 {
			return c.DNSNames
		}
		if c.Subject.CommonName != "" {
			return []string{c.Subject.CommonName}
		}
		return nil
	}
}

// fillHosts gives the sites without host names those of the https
// virtual on the same address, or else on the same pool; what remains is
// reported.
func (t *tr) fillHosts() {
	for _, x := range t.l7 {
		s := x.v.Sites[0]
		if len(s.Hosts) > 0 {
			continue
		}
		var from *l7Virtual
		for _, y := range t.l7 {
			if y != x && y.v.Mode == config.ModeHTTPS && len(y.v.Sites[0].Hosts) > 0 && y.v.Listen.Addr() == x.v.Listen.Addr() {
				from = y
				break
			}
		}
		for _, y := range t.l7 {
			if from == nil && y != x && len(y.v.Sites[0].Hosts) > 0 && y.pool != "" && y.pool == x.pool {
				from = y
			}
		}
		if from != nil {
			s.Hosts = append([]string(nil), from.v.Sites[0].Hosts...)
			continue
		}
		hint := ""
		if x.v.Mode == config.ModeHTTPS && len(x.v.Certificates) > 0 {
			hint = fmt.Sprintf(", or put the certificate in %s and import again to take its names", x.v.Certificates[0].Cert)
		}
		t.rep.add(Supply, x.o.st, x.o.label(), "host names: the BIG-IP virtual answers every name; list the names clients use in the site's hosts%s", hint)
	}
}

// dropUnusedPools removes pools that only virtuals which were not carried
// over referred to, and the host names only they used.
func (t *tr) dropUnusedPools() {
	used := map[string]bool{}
	for _, v := range t.cfg.Virtuals {
		used[v.Pool] = true
		for _, s := range v.Sites {
			used[s.Pool] = true
		}
	}
	for _, p := range t.pools {
		if p == nil || used[p.name] {
			continue
		}
		delete(t.cfg.Pools, p.name)
		delete(t.comments, "pools."+p.name)
		o := t.ix.get("ltm pool", p.path)
		t.rep.add(Ignored, o.st, o.label(), "used only by virtuals that were not carried over: left out")
	}
	names := map[string]bool{}
	for _, p := range t.cfg.Pools {
		for _, m := range p.Members {
			names[m.Address] = true
		}
	}
	for h := range t.hosts {
		if !names[h] {
			delete(t.hosts, h)
		}
	}
}

// checkVIPs reports VIPs outside the external subnets.
func (t *tr) checkVIPs() {
	ext := &t.cfg.Network.External
	if len(ext.Addresses) == 0 {
		return
	}
	for i, v := range t.cfg.Virtuals {
		a := v.Listen.Addr()
		covered := false
		for _, p := range ext.Addresses {
			covered = covered || p.Masked().Contains(a)
		}
		for _, r := range ext.Routes {
			covered = covered || r.To.Contains(a)
		}
		if !covered {
			t.rep.add(Supply, nil, "", "VIP %s of virtual %s (virtuals[%d]) is outside the external subnets: add an external address in its subnet or a route for it under network.external.routes", a, v.Name, i)
		}
	}
}

// snatpool resolves an ltm snatpool to its addresses.
func (t *tr) snatpool(vo *object, at *Stmt, ref string) config.SNAT {
	sp := t.ix.get("ltm snatpool", ref)
	if sp == nil {
		t.rep.add(Unsupported, at, vo.label(), "SNAT pool %s is not in the input: no SNAT", ref)
		return config.SNAT{}
	}
	sp.used = true
	var s config.SNAT
	for _, it := range sp.st.Items("members") {
		mref := fullPath(sp.folder(), it.Key())
		text := baseName(mref)
		if tr := t.ix.get("ltm snat-translation", mref); tr != nil {
			tr.used = true
			if a, ok := tr.st.Attr("address"); ok {
				text = a
			}
		}
		a, err := parseAddr(text)
		if err != nil || a.Wildcard {
			t.rep.add(Unsupported, it, sp.label(), "member %s: not an address, left out", it.Key())
			continue
		}
		if a.RD != "" && a.RD != "0" {
			t.rep.add(Changed, it, sp.label(), "route domain %%%s of %s dropped", a.RD, it.Key())
		}
		s.Addresses = append(s.Addresses, a.IP)
	}
	if len(s.Addresses) == 0 {
		t.rep.add(Unsupported, sp.st, sp.label(), "no usable members: no SNAT")
	}
	return s
}
