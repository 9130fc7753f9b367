package lab

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Skype describes a configuration of the lab's proxy host publishing one
// Skype for Business front-end pool: the members, their monitor, and the
// virtuals that publish them in XDP (FastL4) and through the L7 proxy
// (L7). Lab.SkypeYAML writes it as a configuration file.
type Skype struct {
	// Admin is the admin endpoint's address; "" 127.0.0.1:9469.
	Admin string
	// LogLevel is the daemon's log level; "" info.
	LogLevel string
	// NoAccessLog turns the access log off; AccessLog, when set, is its
	// path.
	NoAccessLog bool
	AccessLog   string
	// FastL4Log, when set, is the fastl4 connection log's path
	// (log.fastl4.path).
	FastL4Log string
	// ControlSocket is the control socket's path; "" the default.
	ControlSocket string
	// Network shapes the network section.
	Network NetworkOptions
	// HA, when set, makes the proxy one node of an active/standby pair.
	HA *SkypeHA
	// BGP, when set, announces the VIPs to one neighbor.
	BGP *SkypeBGP
	// PinPath is where the fast path pins its maps.
	PinPath string
	// MaxFlows sizes the flow table; 0 the default.
	MaxFlows int
	// Pool names the pool; "" sfb-fe.
	Pool string
	// Kind is the pool's kind (config.PoolKindSkypeFE); "" none.
	Kind string
	// Members are the pool's members: names of Network.Hosts or
	// addresses.
	Members []string
	Monitor SkypeMonitor
	// FastL4 and L7, when set, publish the pool.
	FastL4 *SkypeFastL4
	L7     *SkypeL7
	// Bulk, when set, adds a second pool of plain TCP members, published
	// in XDP on FastL4.VIP when FastL4 is set.
	Bulk *SkypeBulk
}

// SkypeBulk is a pool of plain TCP members (iperf3's servers, say), named
// bulk, monitored by a TCP connect and published by the fastl4 virtual
// bulk: FastL4.VIP:Port to the members' Port.
type SkypeBulk struct {
	Members []string
	// Port is the virtual's, the members' and the monitor's port; 0 5201.
	Port              uint16
	Interval, Timeout time.Duration
	// NoVirtual leaves the pool unpublished.
	NoVirtual bool
}

// SkypeHA is the ha section: the node's priority, keepalived's
// notify_fifo and the VRRP instance of each side.
type SkypeHA struct {
	Priority           int
	FIFO               string
	External, Internal SkypeHASide
}

// SkypeHASide is one side's VRRP instance: its id, the peer node and the
// addresses that float with the active node besides the VIPs.
type SkypeHASide struct {
	VRID     int
	Peer     netip.Addr
	Floating []netip.Prefix
}

// SkypeBGP is the bgp section: one neighbor.
type SkypeBGP struct {
	LocalAS, PeerAS    uint32
	RouterID, Neighbor netip.Addr
}

// SkypeMonitor is the pool's health monitor.
type SkypeMonitor struct {
	// TLS checks a TLS handshake (verified against CA), else a TCP
	// connect; on the members' port 4443 either way.
	TLS bool
	// HTTPS checks GET Path with Host over TLS (verified against CA)
	// instead.
	HTTPS             bool
	Path, Host        string
	CA                string
	Interval, Timeout time.Duration
	// Rise and Fall: zero leaves the default.
	Rise, Fall int
}

// SkypeFastL4 publishes the pool in XDP: VIP:443 to the members' 4443.
type SkypeFastL4 struct {
	VIP netip.Addr
	// HTTP adds VIP:80 to the members' 8080.
	HTTP bool
	// UDP adds UDP VIP:443 to the members' 4443.
	UDP bool
	// Port is the members' port behind VIP:443; 0 4443.
	Port uint16
	// Drain is the VIP:443 virtual's drain timeout; 0 the default.
	Drain time.Duration
	// LogBulk sets log: true on the bulk virtual (the connection log).
	LogBulk bool
}

// SkypeL7 publishes the pool through the L7 proxy: https on VIP:443,
// re-encrypted to the members' 4443.
type SkypeL7 struct {
	VIP   netip.Addr
	Hosts []string
	// ExtraHosts are served by the https virtual only, after Hosts.
	ExtraHosts []string
	// Cert and Key are the public certificate (chain) and its key;
	// InternalCA verifies the members.
	Cert, Key, InternalCA string
	// Skype applies the skype profile (management paths denied, long-poll
	// timeouts).
	Skype bool
	// HTTP adds the http virtual on VIP:80 to the members' 8080;
	// HTTPNoProfile leaves the skype profile off it.
	HTTP, HTTPNoProfile bool
	// Port is the members' port behind the https virtual; 0 4443.
	Port uint16
	// Drain is the virtuals' drain timeout; 0 the default.
	// HTTPSDrain, when set, is the https virtual's instead.
	Drain, HTTPSDrain time.Duration
	// ACME, when set, orders the https virtual's certificate for Hosts
	// from an ACME CA.
	ACME *SkypeACME
	// NoSessionTickets turns the https virtual's session tickets off.
	NoSessionTickets bool
	// MaxConnsPerSource, when set, is the https virtual's cap on one
	// source's connections (limits.max_conns_per_source).
	MaxConnsPerSource int
}

// SkypeACME is the https virtual's ACME certificate and the acme section.
type SkypeACME struct {
	// CA is the directory URL, CARoot the PEM file verifying its TLS.
	CA, CARoot string
	// Challenge is http-01 or tls-alpn-01; "" the default (http-01).
	Challenge     string
	StateDir      string
	CheckInterval time.Duration
	// AfterFile keeps the file certificate (Cert, Key) first, the no-SNI
	// default, with the ACME entry second; else the ACME entry is alone.
	AfterFile bool
}

// SkypeYAML returns s as a configuration file, with comments for the
// reader.
func (l *Lab) SkypeYAML(s Skype) string {
	var y yamlLines
	y.line(0, "admin:", "")
	y.line(1, "listen: "+cmp.Or(s.Admin, "127.0.0.1:9469"), "/metrics, /healthz, /status (inside the proxy namespace)")
	y.b.WriteString("\n")
	y.line(0, "log:", "")
	y.line(1, "level: "+cmp.Or(s.LogLevel, "info"), "")
	if s.NoAccessLog {
		y.line(1, `access: "off"`, "")
	} else if s.AccessLog != "" {
		y.line(1, "access: "+s.AccessLog, "")
	}
	if s.FastL4Log != "" {
		y.line(1, "fastl4: {path: "+s.FastL4Log+"}", "")
	}
	if s.ControlSocket != "" {
		y.line(0, "control:", "")
		y.line(1, "socket: "+s.ControlSocket, "")
	}
	y.b.WriteString("\n")
	if s.L7 != nil && s.L7.ACME != nil {
		a := s.L7.ACME
		y.line(0, "acme:", "")
		y.line(1, "state_dir: "+a.StateDir, "accounts, keys and certificates")
		if a.CheckInterval != 0 {
			y.line(1, "check_interval: "+a.CheckInterval.String(), "")
		}
		y.b.WriteString("\n")
	}
	y.b.WriteString(l.NetworkYAML(s.Network))
	if h := s.HA; h != nil {
		y.line(0, "ha:", "")
		y.line(1, fmt.Sprintf("priority: %d", h.Priority), "")
		y.line(1, "fifo: "+h.FIFO, "")
		y.line(1, "external: "+h.External.yaml(), "")
		y.line(1, "internal: "+h.Internal.yaml(), "")
	}
	if b := s.BGP; b != nil {
		y.line(0, "bgp:", "")
		y.line(1, fmt.Sprintf("local_as: %d", b.LocalAS), "")
		y.line(1, "router_id: "+b.RouterID.String(), "")
		y.line(1, "neighbors:", "")
		y.line(2, fmt.Sprintf("- {address: %s, as: %d}", b.Neighbor, b.PeerAS), "")
	}
	y.b.WriteString("\n")
	y.line(0, "fastpath:", "")
	y.line(1, "pin_path: "+s.PinPath, "")
	if s.MaxFlows != 0 {
		y.line(1, fmt.Sprintf("max_flows: %d", s.MaxFlows), "")
	}
	pool := cmp.Or(s.Pool, "sfb-fe")
	y.b.WriteString("\n")
	y.line(0, "pools:", "")
	y.line(1, pool+":", "")
	if s.Kind != "" {
		y.line(2, "kind: "+s.Kind, "")
	}
	y.line(2, "members: ["+strings.Join(s.Members, ", ")+"]", "")
	y.line(2, "monitor: "+s.Monitor.yaml(), "")
	if b := s.Bulk; b != nil {
		y.line(1, "bulk:", "")
		y.line(2, "members: ["+strings.Join(b.Members, ", ")+"]", "")
		y.line(2, fmt.Sprintf("monitor: {type: tcp, port: %d, interval: %s, timeout: %s}", b.port(), b.Interval, b.Timeout), "")
	}
	y.b.WriteString("\n")
	y.line(0, "virtuals:", "")
	if f := s.FastL4; f != nil {
		f.write(&y, pool)
		if s.Bulk != nil && !s.Bulk.NoVirtual {
			f.writeBulk(&y, s.Bulk.port())
		}
	}
	if v := s.L7; v != nil {
		if s.FastL4 != nil {
			y.b.WriteString("\n")
		}
		v.write(&y, pool)
	}
	return y.b.String()
}

func (h SkypeHASide) yaml() string {
	f := []string{fmt.Sprintf("vrid: %d", h.VRID), "peer: " + h.Peer.String()}
	if len(h.Floating) > 0 {
		fl := make([]string, len(h.Floating))
		for i, p := range h.Floating {
			fl[i] = p.String()
		}
		f = append(f, "floating: ["+strings.Join(fl, ", ")+"]")
	}
	return "{" + strings.Join(f, ", ") + "}"
}

func (m SkypeMonitor) yaml() string {
	f := []string{"type: tcp"}
	switch {
	case m.HTTPS:
		f = []string{"type: https", "port: 4443", "path: " + m.Path, "host: " + m.Host}
	case m.TLS:
		f[0] = "type: tls"
	}
	if !m.HTTPS {
		f = append(f, "port: 4443")
	}
	f = append(f, "interval: "+m.Interval.String(), "timeout: "+m.Timeout.String())
	if m.Rise != 0 {
		f = append(f, fmt.Sprintf("rise: %d", m.Rise))
	}
	if m.Fall != 0 {
		f = append(f, fmt.Sprintf("fall: %d", m.Fall))
	}
	if (m.TLS || m.HTTPS) && m.CA != "" {
		f = append(f, "ca: "+m.CA)
	}
	return "{" + strings.Join(f, ", ") + "}"
}

func (b *SkypeBulk) port() uint16 { return cmp.Or(b.Port, 5201) }

func (f *SkypeFastL4) write(y *yamlLines, pool string) {
	virtual := func(name, comment, proto string, port, memberPort uint16) {
		y.line(1, "- name: "+name, comment)
		y.line(2, "mode: fastl4", "")
		if proto != "" {
			y.line(2, "protocol: "+proto, "")
		}
		y.line(2, "listen: "+listenYAML(f.VIP, port), "")
		y.line(2, "pool: "+pool, "")
		y.line(2, fmt.Sprintf("port: %d", memberPort), "")
		y.line(2, "snat: automap", "")
		if f.Drain != 0 && name == "sfb-web-l4" {
			y.line(2, "drain_timeout: "+f.Drain.String(), "")
		}
	}
	virtual("sfb-web-l4", "F5 FastL4: DNAT + SNAT in XDP, TLS passes through", "", 443, cmp.Or(f.Port, 4443))
	if f.HTTP {
		virtual("sfb-web-l4-http", "", "", 80, 8080)
	}
	if f.UDP {
		virtual("sfb-web-l4-udp", "", "udp", 443, 4443)
	}
}

// writeBulk publishes the bulk pool on VIP:port.
func (f *SkypeFastL4) writeBulk(y *yamlLines, port uint16) {
	y.line(1, "- name: bulk", "")
	y.line(2, "mode: fastl4", "")
	y.line(2, "listen: "+listenYAML(f.VIP, port), "")
	y.line(2, "pool: bulk", "")
	y.line(2, fmt.Sprintf("port: %d", port), "")
	y.line(2, "snat: automap", "")
	if f.LogBulk {
		y.line(2, "log: true", "")
	}
}

func (v *SkypeL7) write(y *yamlLines, pool string) {
	virtual := func(name, mode, comment string, port, memberPort uint16) {
		y.line(1, "- name: "+name, comment)
		y.line(2, "mode: "+mode, "")
		y.line(2, "listen: "+listenYAML(v.VIP, port), "")
		hosts, drain := v.Hosts, v.Drain
		if mode == "https" {
			hosts, drain = append(slices.Clone(v.Hosts), v.ExtraHosts...), cmp.Or(v.HTTPSDrain, v.Drain)
		}
		if drain != 0 {
			y.line(2, "drain_timeout: "+drain.String(), "")
		}
		if mode == "https" {
			v.writeCertificates(y)
			if v.NoSessionTickets {
				y.line(2, "tls: {session_tickets: false}", "no resumption: every new connection makes a full handshake")
			}
			if v.MaxConnsPerSource != 0 {
				y.line(2, fmt.Sprintf("limits: {max_conns_per_source: %d}", v.MaxConnsPerSource), "")
			}
		}
		y.line(2, "sites:", "")
		y.line(3, "- hosts: ["+strings.Join(hosts, ", ")+"]", "")
		y.line(4, "pool: "+pool, "")
		y.line(4, fmt.Sprintf("port: %d", memberPort), "")
		if mode == "https" {
			y.line(4, "backend_tls: {ca: "+v.InternalCA+"}", "")
		}
		if v.Skype && (mode == "https" || !v.HTTPNoProfile) {
			comment := ""
			if mode == "http" {
				comment = "the management paths are closed on port 80 too"
			}
			y.line(4, "profile: skype", comment)
		}
	}
	virtual("sfb-web", "https", "TLS terminated by the L7 proxy", 443, cmp.Or(v.Port, 4443))
	if v.HTTP {
		virtual("sfb-web-http", "http", "", 80, 8080)
	}
}

// writeCertificates writes the https virtual's certificates: the file,
// the ACME entry, or both in ACME.AfterFile's order.
func (v *SkypeL7) writeCertificates(y *yamlLines) {
	y.line(2, "certificates:", "")
	a := v.ACME
	if a == nil || a.AfterFile {
		y.line(3, fmt.Sprintf("- {cert: %s, key: %s}", v.Cert, v.Key), "")
	}
	if a == nil {
		return
	}
	f := []string{"names: [" + strings.Join(v.Hosts, ", ") + "]", "ca: " + a.CA, "email: ops@example.com"}
	if a.CARoot != "" {
		f = append(f, "ca_root: "+a.CARoot)
	}
	if a.Challenge != "" {
		f = append(f, "challenge: "+a.Challenge)
	}
	y.line(3, "- acme: {"+strings.Join(f, ", ")+"}", "ordered and renewed by edgeproxy")
}

// listenYAML is addr:port as a YAML scalar: quoted for IPv6, whose
// brackets would start a YAML list.
func listenYAML(addr netip.Addr, port uint16) string {
	ap := netip.AddrPortFrom(addr, port)
	if addr.Is6() {
		return fmt.Sprintf("%q", ap)
	}
	return ap.String()
}

// yamlLines writes a configuration file line by line, with aligned
// comments.
type yamlLines struct {
	b strings.Builder
}

func (y *yamlLines) line(indent int, text, comment string) {
	s := strings.Repeat("  ", indent) + text
	if comment != "" {
		s = fmt.Sprintf("%-34s # %s", s, comment)
	}
	y.b.WriteString(s + "\n")
}
