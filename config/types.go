// Package config defines the edgeproxy configuration file, decodes it
// strictly (unknown keys, wrong types and missing fields are errors that
// name the file, line and key) and validates it.
package config

import (
	"net/netip"
	"time"
)

// Mode is how a virtual server handles its traffic.
type Mode string

// Modes of a virtual server.
const (
	ModeFastL4 Mode = "fastl4" // pass-through in XDP: DNAT + SNAT between the NICs
	ModeHTTPS  Mode = "https"  // TLS terminated by the L7 proxy
	ModeHTTP   Mode = "http"   // plain HTTP handled by the L7 proxy
)

// MonitorType is the kind of a pool's health check.
type MonitorType string

// Monitor types.
const (
	MonitorTCP   MonitorType = "tcp"
	MonitorTLS   MonitorType = "tls"
	MonitorHTTPS MonitorType = "https"
	MonitorHTTP  MonitorType = "http"
)

// Protocol is the transport protocol of a fastl4 virtual.
type Protocol string

// Protocols of a fastl4 virtual.
const (
	ProtoTCP Protocol = "tcp"
	ProtoUDP Protocol = "udp"
)

// XDPMode is how the fast path's program is attached to a NIC.
type XDPMode string

// XDP attach modes of a NIC.
const (
	XDPNative  XDPMode = "native"  // in the driver; falls back to generic when it has none
	XDPGeneric XDPMode = "generic" // after the driver, in the kernel's receive path
	XDPOff     XDPMode = "off"     // no program on this NIC
)

// SNATAutomap selects the internal NIC's first address of the right
// family, or in an HA pair the floating internal address.
const SNATAutomap = "automap"

// Config is the whole file.
type Config struct {
	Admin    Admin            `yaml:"admin"`
	Control  Control          `yaml:"control"`
	Log      Log              `yaml:"log"`
	Network  Network          `yaml:"network"`
	FastPath FastPath         `yaml:"fastpath"`
	Pools    map[string]*Pool `yaml:"pools"`
	Virtuals []*Virtual       `yaml:"virtuals"`
	// BGP announces the VIPs to upstream routers (nil: not announced).
	BGP *BGP `yaml:"bgp"`
	// Cluster sends connections the router moves between nodes back to
	// their owner (nil: off).
	Cluster *Cluster `yaml:"cluster"`
	// HA makes this host one node of an active/standby pair (nil: a
	// single host).
	HA   *HA         `yaml:"ha"`
	ACME ACMEOptions `yaml:"acme"`

	// File is the path the configuration was read from ("" when parsed
	// from memory). Not part of the YAML.
	File string `yaml:"-"`
	// Pos maps a key path ("virtuals[0].pool") to its position in the
	// file, for messages that name a line. Not part of the YAML.
	Pos Positions `yaml:"-"`
	// Warnings are findings that do not stop the configuration from
	// running (an expiring certificate, a non-loopback admin endpoint).
	Warnings []*Error `yaml:"-"`
}

// Admin is the management endpoint: /metrics, /healthz, /status.
type Admin struct {
	// Listen defaults to 127.0.0.1:9469. Set to "" (explicit null) to
	// disable; a non-loopback address must be asked for.
	Listen string `yaml:"listen"`
}

// Control is the daemon's control socket: reload, member state, flows.
type Control struct {
	// Socket defaults to /run/edgeproxy/control.sock.
	Socket string `yaml:"socket"`
	// Group, when set, may use the socket besides root.
	Group string `yaml:"group"`
}

// Log selects the daemon's log format and level.
type Log struct {
	Format string `yaml:"format"` // text (default) | json
	Level  string `yaml:"level"`  // debug | info (default) | warn | error
	Access string `yaml:"access"` // access log: "" (stderr with the daemon log) | "off" | a file path
	// FastL4 is the connection log of the fastl4 virtuals with log: true.
	FastL4 FastL4Log `yaml:"fastl4"`
}

// FastL4Log is where the fastl4 connection log goes and how fast.
type FastL4Log struct {
	// Path: "" (stderr with the daemon log, so the journal under
	// systemd) | "off" | a file path (JSON lines).
	Path string `yaml:"path"`
	// Rate caps the lines written per second (default 1000); the rest
	// are counted in edgeproxy_fastl4_log_dropped_total{reason="rate"}.
	Rate int `yaml:"rate"`
}

// Network is the dual-NIC DMZ host, managed by netcfg.
type Network struct {
	External NIC `yaml:"external"`
	Internal NIC `yaml:"internal"`
	// Hosts resolves backend names without the internal DNS.
	Hosts map[string]netip.Addr `yaml:"hosts"`
	// Resolver is an optional DMZ DNS server (host:port) asked for names
	// missing from Hosts. Empty: only Hosts is used.
	Resolver string `yaml:"resolver"`
	// Manage: when false, netcfg only checks and reports (default true).
	Manage *bool `yaml:"manage"`
}

// NIC is one of the two interfaces.
type NIC struct {
	Interface string         `yaml:"interface"`
	Addresses []netip.Prefix `yaml:"addresses"`
	// Gateway is the default route's next hop; only allowed on the
	// external NIC. Gateway6 is the IPv6 one.
	Gateway  netip.Addr `yaml:"gateway"`
	Gateway6 netip.Addr `yaml:"gateway6"`
	Routes   []Route    `yaml:"routes"`
	// XDPMode: native (default; falls back to generic with a warning when
	// the driver has no native XDP), generic, or off (no XDP on this NIC).
	XDPMode XDPMode `yaml:"xdp_mode"`
}

// Route is a persistent static route.
type Route struct {
	To  netip.Prefix `yaml:"to"`
	Via netip.Addr   `yaml:"via"`
}

// FastPath tunes the XDP data path shared by all fastl4 virtuals.
type FastPath struct {
	PinPath  string `yaml:"pin_path"`  // default /sys/fs/bpf/edgeproxy
	MaxFlows int    `yaml:"max_flows"` // flow pairs; default 262144
	// SNATPorts is the port range SNAT allocates from, reserved from the
	// host with net.ipv4.ip_local_reserved_ports. Default 40000-59999.
	SNATPorts PortRange `yaml:"snat_ports"`
	// GCInterval is how often the flow table is reaped. Default 1s.
	GCInterval Duration `yaml:"gc_interval"`
}

// PortRange is "first-last" in YAML.
type PortRange struct {
	First uint16
	Last  uint16
}

// Pool is a set of members with a health monitor.
type Pool struct {
	Members []Member `yaml:"members"`
	Monitor Monitor  `yaml:"monitor"`
	// LB: round_robin (default) | least_conn, for L7; fastl4 uses Maglev.
	LB LB `yaml:"lb"`
	// Kind: "" | skype-fe (a Skype for Business / Lync front-end pool:
	// its fastl4 virtuals are held to the External Web Site's ports).
	Kind string `yaml:"kind"`

	Name string `yaml:"-"`
}

// Member is a pool member: a name from network.hosts or an address.
// In YAML either a plain string or {address: , disabled: , weight: }.
type Member struct {
	Address  string `yaml:"address"`
	Disabled bool   `yaml:"disabled"`
	Weight   int    `yaml:"weight"`
}

// Monitor is a pool's health check.
type Monitor struct {
	Type     MonitorType `yaml:"type"` // tcp | tls | https | http
	Port     uint16      `yaml:"port"`
	Interval Duration    `yaml:"interval"` // default 5s
	Timeout  Duration    `yaml:"timeout"`  // default 2s
	Rise     int         `yaml:"rise"`     // default 2
	Fall     int         `yaml:"fall"`     // default 3
	Path     string      `yaml:"path"`     // https/http: default /
	Host     string      `yaml:"host"`     // https/http Host and SNI; default the member name
	Expect   []int       `yaml:"expect"`   // default [200]
	// AuthAlive counts a 401 as alive (what a Skype front end answers).
	AuthAlive bool `yaml:"auth_alive"`
	// CA verifies the member's certificate (tls/https). Empty: not verified.
	CA string `yaml:"ca"`
}

// Virtual is a published address:port.
type Virtual struct {
	Name   string         `yaml:"name"`
	Mode   Mode           `yaml:"mode"`
	Listen netip.AddrPort `yaml:"listen"`

	// fastl4
	Pool   string   `yaml:"pool"`
	Port   uint16   `yaml:"port"`
	SNAT   SNAT     `yaml:"snat"`
	Proto  Protocol `yaml:"protocol"` // tcp (default) | udp
	FastL4 `yaml:",inline"`

	// https / http
	Certificates []Certificate `yaml:"certificates"`
	Sites        []*Site       `yaml:"sites"`
	TLS          TLSOptions    `yaml:"tls"`
	// TrustedProxies: clients whose X-Forwarded-* headers are kept.
	TrustedProxies []netip.Prefix `yaml:"trusted_proxies"`
	// DrainTimeout on shutdown (default 30s).
	DrainTimeout Duration `yaml:"drain_timeout"`
	// ConnLimits caps client connections (https/http).
	ConnLimits ConnLimits `yaml:"limits"`
	// Announce sets the BGP attributes of the VIP's route.
	Announce Announce `yaml:"bgp"`
}

// ConnLimits cap an https/http virtual's client connections, so that one
// source cannot take the service from the others. A connection past a
// cap is closed as soon as it is accepted; the listener keeps accepting.
type ConnLimits struct {
	// MaxConns caps the virtual's open connections, handshakes included.
	// 0: derived from the process's file descriptor limit.
	MaxConns int `yaml:"max_conns"`
	// MaxConnsPerSource caps the open connections of one client address
	// (an IPv6 client's /64). Default 1000.
	MaxConnsPerSource int `yaml:"max_conns_per_source"`
	// MaxHandshakesPerSource caps one source's connections that have
	// not completed their TLS handshake. Default 100.
	MaxHandshakesPerSource int `yaml:"max_handshakes_per_source"`
}

// FastL4 holds the F5 FastL4 profile knobs, with F5's defaults.
type FastL4 struct {
	IdleTimeout      Duration `yaml:"idle_timeout"`      // 300s
	HandshakeTimeout Duration `yaml:"handshake_timeout"` // 5s
	CloseTimeout     Duration `yaml:"close_timeout"`     // 5s
	ResetOnTimeout   *bool    `yaml:"reset_on_timeout"`  // true
	LooseInit        bool     `yaml:"loose_init"`        // false
	LooseClose       bool     `yaml:"loose_close"`       // false
	MSSOverride      uint16   `yaml:"mss_override"`      // 0: off
	// Log writes an open and a close line per connection to log.fastl4.
	Log bool `yaml:"log"` // false
	// Mirror streams the virtual's flows to the HA peer (ha.mirror).
	Mirror *bool `yaml:"mirror"` // true
}

// SNAT is "automap" or a list of addresses (a SNAT pool).
type SNAT struct {
	Automap   bool
	Addresses []netip.Addr
}

// Certificate is a PEM leaf+chain and its key, or a certificate ordered
// from an ACME CA (acme, without cert and key).
type Certificate struct {
	Cert string    `yaml:"cert"`
	Key  string    `yaml:"key"`
	ACME *ACMECert `yaml:"acme"`
}

// ACME challenges and key types.
const (
	ChallengeHTTP01    = "http-01"
	ChallengeTLSALPN01 = "tls-alpn-01"
	KeyECDSAP256       = "ecdsa-p256"
	KeyRSA2048         = "rsa2048"
)

// ACMECert is a certificate obtained and renewed from an ACME CA, one per
// name.
type ACMECert struct {
	Names []string `yaml:"names"`
	// CA is the directory URL (https).
	CA string `yaml:"ca"`
	// CARoot is a PEM file that verifies the CA's own TLS (a private
	// CA); empty: the system roots.
	CARoot string `yaml:"ca_root"`
	Email  string `yaml:"email"`
	// Challenge is http-01 (default; needs an http virtual on port 80 of
	// the same address) or tls-alpn-01 (on the https virtual, port 443).
	Challenge string `yaml:"challenge"`
	// KeyType is ecdsa-p256 (default) or rsa2048.
	KeyType string `yaml:"key_type"`
}

// ACMEOptions are shared by every ACME certificate.
type ACMEOptions struct {
	// StateDir keeps accounts, keys and certificates (default
	// /var/lib/edgeproxy/acme, made 0700).
	StateDir string `yaml:"state_dir"`
	// CheckInterval is how often certificates are checked for renewal
	// (default 10m).
	CheckInterval Duration `yaml:"check_interval"`
}

// TLSOptions for an https virtual.
type TLSOptions struct {
	MinVersion string `yaml:"min_version"` // "1.2" (default) | "1.3"; "1.0"/"1.1" only with allow_legacy
	// AllowLegacy permits TLS 1.0/1.1 min_version.
	AllowLegacy bool `yaml:"allow_legacy"`
	// HSTS max-age; 0 = off.
	HSTS Duration `yaml:"hsts"`
	// HandshakeTimeout bounds each TLS handshake (default 10s, below the
	// sites' header_timeout).
	HandshakeTimeout Duration `yaml:"handshake_timeout"`
	// TicketRotation is how often the virtual's session-ticket key is
	// replaced (default 12h); tickets under the previous key are still
	// accepted for one more period.
	TicketRotation Duration `yaml:"ticket_rotation"`
	// SessionTickets: false issues no session tickets (TLS 1.2 and 1.3),
	// so every new connection makes a full handshake; default true.
	SessionTickets *bool `yaml:"session_tickets"`
}

// TicketsOn reports whether session tickets are issued (the default).
func (t TLSOptions) TicketsOn() bool { return t.SessionTickets == nil || *t.SessionTickets }

// Site is a set of host names routed to a pool.
type Site struct {
	Hosts      []string    `yaml:"hosts"`
	Pool       string      `yaml:"pool"`
	Port       uint16      `yaml:"port"`
	Redirect   string      `yaml:"redirect"` // "https": redirect instead of forwarding
	BackendTLS *BackendTLS `yaml:"backend_tls"`
	Profile    string      `yaml:"profile"` // "" | skype
	Deny       []string    `yaml:"deny"`    // extra denied path prefixes
	// Upgrade lists the protocols clients may switch to (Upgrade header
	// tokens, e.g. websocket); default none: Upgrade is removed.
	Upgrade []string `yaml:"upgrade"`
	// WindowsAuth forces connection pinning and http/1.1 only (implied by
	// the skype profile).
	WindowsAuth *bool `yaml:"windows_auth"`
	// StrictPaths refuses request targets not in canonical form (400)
	// before routing (implied by the skype profile, a deny list and
	// redirect).
	StrictPaths bool `yaml:"strict_paths"`
	// Affinity: "" | ms-wsman (cookie affinity for Lync 2010 coexistence).
	Affinity string `yaml:"affinity"`
	// LB: round_robin | least_conn (default: the pool's).
	LB     LB `yaml:"lb"`
	Limits `yaml:",inline"`
}

// Limits and timeouts of a site; zero means the profile's default.
type Limits struct {
	HeaderTimeout   Duration `yaml:"header_timeout"`   // 20s
	MaxHeaderBytes  int      `yaml:"max_header_bytes"` // 64 KiB (skype) / 32 KiB
	MaxBodyBytes    int64    `yaml:"max_body_bytes"`   // 1 GiB (skype) / 100 MiB
	ResponseTimeout Duration `yaml:"response_timeout"` // 960s (skype) / 60s
	IdleTimeout     Duration `yaml:"idle_timeout"`     // 1800s (skype) / 120s
	StallTimeout    Duration `yaml:"stall_timeout"`    // per read/write: 120s
	DialTimeout     Duration `yaml:"dial_timeout"`     // 5s
	PoolIdleTimeout Duration `yaml:"pool_idle_timeout"`
}

// BackendTLS configures re-encryption to members.
type BackendTLS struct {
	CA string `yaml:"ca"` // PEM bundle; empty uses the system roots
	// ServerName overrides SNI and verification name (default: the
	// client's Host).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables verification (reported by check).
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Duration is a time.Duration written as a Go duration ("300s", "16m").
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Position is a place in the configuration file.
type Position struct {
	Line, Column int
}

// Positions maps key paths to positions.
type Positions map[string]Position

// HA makes the host one node of an active/standby pair whose shared
// addresses keepalived (VRRPv3) moves: the VIPs on the external NIC and
// the floating internal address, in one sync group.
type HA struct {
	// Priority is this node's VRRP priority, 1-254: the higher one is
	// active; the two nodes of a pair have different priorities.
	Priority int `yaml:"priority"`
	// AdvertInterval is the VRRPv3 advertisement interval, in steps of
	// 10ms (default 100ms): the standby takes over after about three.
	AdvertInterval Duration `yaml:"advert_interval"`
	// External and Internal are the VRRP instances on the two NICs of
	// the network section.
	External HASide `yaml:"external"`
	Internal HASide `yaml:"internal"`
	// Fifo is where keepalived writes its state changes for the daemon
	// (default /run/edgeproxy/keepalived.fifo).
	Fifo string `yaml:"fifo"`
	// Mirror streams the fastl4 flows to the peer, so that they survive
	// a failover (nil: no mirroring).
	Mirror *HAMirror `yaml:"mirror"`
}

// HAMirror is the flow mirroring channel between the two nodes: UDP,
// every datagram authenticated with a shared key (HMAC-SHA256).
type HAMirror struct {
	// Listen is this node's address and port for the channel, Peer the
	// other node's: a dedicated link or the internal network.
	Listen netip.AddrPort `yaml:"listen"`
	Peer   netip.AddrPort `yaml:"peer"`
	// KeyFile holds the shared key, at least 32 bytes, mode 0600; the
	// same file on both nodes.
	KeyFile string `yaml:"key_file"`
	// Bandwidth caps what mirroring sends (default 10MB/s).
	Bandwidth Bandwidth `yaml:"bandwidth"`
}

// HASide is one VRRP instance: on the external NIC it carries the VIPs,
// on the internal NIC the floating address.
type HASide struct {
	// VRID is the virtual router ID, 1-255, unique on the segment.
	VRID int `yaml:"vrid"`
	// Peer is the other node's address on this NIC: advertisements go
	// to it by unicast and are accepted only from it.
	Peer netip.Addr `yaml:"peer"`
	// Floating (internal only) are the addresses the active node holds
	// on the internal NIC, one per family at most; snat: automap
	// translates to them, so members answer whichever node is active.
	Floating []netip.Prefix `yaml:"floating"`
}
