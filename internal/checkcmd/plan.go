package checkcmd

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/l4"
)

// Plan is what run would set up, derived from the configuration.
type Plan struct {
	Virtuals  []VirtualRow `json:"virtuals"`
	Pools     []PoolRow    `json:"pools"`
	Addresses []AddrRow    `json:"addresses"`
	Routes    []RouteRow   `json:"routes"`
	Hosts     []HostRow    `json:"hosts"`
	FastPath  FastPathRow  `json:"fastpath"`
	Admin     string       `json:"admin"`
	BGP       []BGPRow     `json:"bgp,omitempty"`
	Cluster   *ClusterRow  `json:"cluster,omitempty"`
}

// VirtualRow is one virtual, or one site of an L7 virtual.
type VirtualRow struct {
	Name    string   `json:"name"`
	Mode    string   `json:"mode"`
	Listen  string   `json:"listen"`
	Hosts   []string `json:"hosts,omitempty"`
	Pool    string   `json:"pool,omitempty"`
	Port    uint16   `json:"port,omitempty"`
	SNAT    string   `json:"snat,omitempty"`
	Options []string `json:"options,omitempty"`
}

// PoolRow is a pool with its members resolved.
type PoolRow struct {
	Name    string      `json:"name"`
	Members []MemberRow `json:"members"`
	Monitor string      `json:"monitor"`
	LB      string      `json:"lb"`
}

// MemberRow is one member and the address it resolves to.
type MemberRow struct {
	Name     string `json:"name"`
	Address  string `json:"address"` // "" when the resolver decides at run time
	Weight   int    `json:"weight"`
	Disabled bool   `json:"disabled,omitempty"`
}

// AddrRow is an address run puts on a NIC.
type AddrRow struct {
	Interface string `json:"interface"`
	Role      string `json:"role"` // host | VIP
	Address   string `json:"address"`
	For       string `json:"for,omitempty"` // the virtuals a VIP serves
}

// RouteRow is a route run installs.
type RouteRow struct {
	Interface string `json:"interface"`
	To        string `json:"to"`
	Via       string `json:"via"`
}

// HostRow is a name from network.hosts.
type HostRow struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

// FastPathRow summarises the XDP data path settings.
type FastPathRow struct {
	PinPath  string `json:"pin_path"`
	MaxFlows int    `json:"max_flows"`
	// FlowBytes is the map memory the flow tables pin with every flow in
	// use (l4.FlowMemory): sized by max_flows, for the families and
	// protocols of the fastl4 virtuals.
	FlowBytes uint64 `json:"flow_table_bytes"`
	SNATPorts string `json:"snat_ports"`
	// SNATCapacity is how many connections the SNAT ports carry at once
	// per SNAT address, member address and member port.
	SNATCapacity int    `json:"snat_capacity"`
	GCInterval   string `json:"gc_interval"`
}

// shortDur formats a duration without trailing zero units: 5m, 1h30m, 2s.
func shortDur(d config.Duration) string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// NewPlan derives the plan from a configuration (which may hold errors:
// the plan shows what could be decoded).
func NewPlan(c *config.Config) *Plan {
	p := &Plan{Admin: c.Admin.Listen}
	if p.Admin == "" {
		p.Admin = "off"
	}
	ext, in := c.Network.External, c.Network.Internal
	vipFor := map[netip.Addr][]string{}
	var vips []netip.Addr

	for _, v := range c.Virtuals {
		if v == nil {
			continue
		}
		listen := ""
		if v.Listen.IsValid() {
			listen = v.Listen.String()
			a := v.Listen.Addr()
			if !a.IsUnspecified() && !a.IsLoopback() && !isHostAddr(ext.Addresses, a) {
				if _, seen := vipFor[a]; !seen {
					vips = append(vips, a)
				}
				vipFor[a] = append(vipFor[a], v.Name)
			}
		}
		if v.Mode == config.ModeFastL4 {
			p.Virtuals = append(p.Virtuals, fastl4Row(c, v, listen))
			continue
		}
		if len(v.Sites) == 0 {
			p.Virtuals = append(p.Virtuals, VirtualRow{Name: v.Name, Mode: string(v.Mode), Listen: listen})
		}
		for _, s := range v.Sites {
			if s == nil {
				continue
			}
			p.Virtuals = append(p.Virtuals, siteRow(v, s, listen))
		}
	}

	p.Pools = poolRows(c)

	for _, nic := range []struct {
		n    config.NIC
		vips bool
	}{{ext, true}, {in, false}} {
		for _, a := range nic.n.Addresses {
			if a.IsValid() {
				p.Addresses = append(p.Addresses, AddrRow{Interface: nic.n.Interface, Role: "host", Address: a.String()})
			}
		}
		if nic.vips {
			for _, a := range vips {
				p.Addresses = append(p.Addresses, AddrRow{Interface: ext.Interface, Role: "VIP", Address: netip.PrefixFrom(a, a.BitLen()).String(), For: strings.Join(vipFor[a], ", ")})
			}
		}
	}

	if ext.Gateway.IsValid() {
		p.Routes = append(p.Routes, RouteRow{Interface: ext.Interface, To: "default", Via: ext.Gateway.String()})
	}
	if ext.Gateway6.IsValid() {
		p.Routes = append(p.Routes, RouteRow{Interface: ext.Interface, To: "default (IPv6)", Via: ext.Gateway6.String()})
	}
	for _, nic := range []config.NIC{ext, in} {
		for _, r := range nic.Routes {
			if r.To.IsValid() {
				p.Routes = append(p.Routes, RouteRow{Interface: nic.Interface, To: r.To.String(), Via: r.Via.String()})
			}
		}
	}

	hostNames := make([]string, 0, len(c.Network.Hosts))
	for n := range c.Network.Hosts {
		hostNames = append(hostNames, n)
	}
	sort.Strings(hostNames)
	for _, n := range hostNames {
		p.Hosts = append(p.Hosts, HostRow{Name: n, Address: c.Network.Hosts[n].String()})
	}

	fp := c.FastPath
	p.FastPath = FastPathRow{PinPath: fp.PinPath, MaxFlows: fp.MaxFlows, FlowBytes: flowBytes(c), SNATPorts: fp.SNATPorts.String(), SNATCapacity: fp.SNATPorts.Size(), GCInterval: shortDur(fp.GCInterval)}
	p.BGP = bgpRows(c)
	p.Cluster = clusterRow(c)
	return p
}

// flowBytes is the memory the fast path's flow tables will pin.
func flowBytes(c *config.Config) uint64 {
	var vs []l4.Virtual
	for _, v := range c.Virtuals {
		if v != nil && v.Mode == config.ModeFastL4 {
			lv := l4.Virtual{Listen: v.Listen}
			if v.Proto == config.ProtoUDP {
				lv.Proto = l4.UDP
			}
			vs = append(vs, lv)
		}
	}
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		cpus = 1
	}
	return l4.FlowMemory(c.FastPath.MaxFlows, l4.TablesFor(vs), cpus)
}

// fastl4Row is the row of a fastl4 virtual: its SNAT and TCP options.
func fastl4Row(c *config.Config, v *config.Virtual, listen string) VirtualRow {
	snat := v.SNAT.String()
	if v.SNAT.Automap {
		var as []string
		for _, a := range c.SNATAddresses(v) {
			as = append(as, a.String())
		}
		if len(as) > 0 {
			snat += " (" + strings.Join(as, ", ") + ")"
		}
	}
	opts := []string{
		"idle " + shortDur(v.IdleTimeout),
		"handshake " + shortDur(v.HandshakeTimeout),
		"close " + shortDur(v.CloseTimeout),
	}
	if v.ResetsOnTimeout() {
		opts = append(opts, "reset on timeout")
	}
	if v.LooseInit {
		opts = append(opts, "loose init")
	}
	if v.LooseClose {
		opts = append(opts, "loose close")
	}
	if v.MSSOverride != 0 {
		opts = append(opts, fmt.Sprintf("mss %d", v.MSSOverride))
	}
	if v.Proto != "" && v.Proto != "tcp" {
		opts = append([]string{string(v.Proto)}, opts...)
	}
	return VirtualRow{Name: v.Name, Mode: string(v.Mode), Listen: listen, Pool: v.Pool, Port: v.Port, SNAT: snat, Options: opts}
}

// siteRow is the row of one site of an https/http virtual.
func siteRow(v *config.Virtual, s *config.Site, listen string) VirtualRow {
	row := VirtualRow{Name: v.Name, Mode: string(v.Mode), Listen: listen, Hosts: s.Hosts, Pool: s.Pool, Port: s.Port}
	if s.Redirect != "" {
		row.Pool, row.Port = "", 0
		row.Options = append(row.Options, "redirect to "+s.Redirect)
	}
	if bt := s.BackendTLS; bt != nil {
		switch {
		case bt.InsecureSkipVerify:
			row.Options = append(row.Options, "TLS to members (unverified)")
		case bt.CA != "":
			row.Options = append(row.Options, "TLS to members (CA "+filepath.Base(bt.CA)+")")
		default:
			row.Options = append(row.Options, "TLS to members (system CAs)")
		}
	}
	if s.Profile != "" {
		row.Options = append(row.Options, "profile "+s.Profile)
	}
	if s.UsesWindowsAuth() {
		row.Options = append(row.Options, "NTLM pinning")
	}
	if s.Redirect == "" {
		l := s.Effective()
		row.Options = append(row.Options, "response "+shortDur(l.ResponseTimeout), "idle "+shortDur(l.IdleTimeout))
	}
	return row
}

// poolRows are the pools in name order, with their members.
func poolRows(c *config.Config) []PoolRow {
	var out []PoolRow
	names := make([]string, 0, len(c.Pools))
	for n := range c.Pools {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		pool := c.Pools[n]
		if pool == nil {
			continue
		}
		row := PoolRow{Name: n, Monitor: monitorString(pool.Monitor), LB: string(pool.LB)}
		for _, m := range pool.Members {
			mr := MemberRow{Name: m.Address, Weight: m.Weight, Disabled: m.Disabled}
			if a, ok := c.MemberAddr(m); ok {
				mr.Address = a.String()
			}
			row.Members = append(row.Members, mr)
		}
		out = append(out, row)
	}
	return out
}

func isHostAddr(prefixes []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(prefixes, func(p netip.Prefix) bool { return p.Addr() == a })
}

func monitorString(m config.Monitor) string {
	s := string(m.Type)
	if m.Port != 0 {
		s += fmt.Sprintf(" :%d", m.Port)
	}
	if m.Type == config.MonitorHTTP || m.Type == config.MonitorHTTPS {
		codes := make([]string, len(m.Expect))
		for i, c := range m.Expect {
			codes[i] = fmt.Sprint(c)
		}
		s += fmt.Sprintf(" %s expect %s", m.Path, strings.Join(codes, ","))
		if m.AuthAlive {
			s += ",401"
		}
	}
	s += fmt.Sprintf(", every %s, timeout %s, rise %d, fall %d", shortDur(m.Interval), shortDur(m.Timeout), m.Rise, m.Fall)
	return s
}
