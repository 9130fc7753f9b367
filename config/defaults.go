package config

import (
	"slices"
	"time"
)

// Defaults. Every package uses these rather than its own numbers.
const (
	DefaultAdminListen = "127.0.0.1:9469"
	// DefaultControlSocket is where the daemon takes commands.
	DefaultControlSocket = "/run/edgeproxy/control.sock"

	DefaultLogFormat = "text"
	DefaultLogLevel  = "info"
	// DefaultFastL4LogRate is log.fastl4.rate, lines per second.
	DefaultFastL4LogRate = 1000

	DefaultXDPMode = XDPNative

	DefaultPinPath    = "/sys/fs/bpf/edgeproxy"
	DefaultMaxFlows   = 262144
	DefaultGCInterval = Duration(time.Second)

	// F5 FastL4 profile defaults.
	DefaultIdleTimeout      = Duration(300 * time.Second)
	DefaultHandshakeTimeout = Duration(5 * time.Second)
	DefaultCloseTimeout     = Duration(5 * time.Second)
	DefaultResetOnTimeout   = true

	DefaultProto        = ProtoTCP
	DefaultDrainTimeout = Duration(30 * time.Second)
	DefaultMinVersion   = "1.2"

	// DefaultTLSHandshakeTimeout bounds a TLS handshake: a client that
	// opens a connection and sends no ClientHello holds it that long at
	// most, well below the 20s header timeout.
	DefaultTLSHandshakeTimeout = Duration(10 * time.Second)
	// DefaultTicketRotation replaces session-ticket keys twice a day;
	// a ticket stays usable for at most two periods (24h).
	DefaultTicketRotation = Duration(12 * time.Hour)

	// DefaultMaxConnsPerSource: HAProxy and nginx set no per-source cap
	// by default; this one is far above what one client opens (a browser
	// 6-8 per host, a Skype client a handful) and leaves room for a few
	// hundred users behind one NAT address, while one source can no
	// longer hold every descriptor.
	DefaultMaxConnsPerSource = 1000
	// DefaultMaxHandshakesPerSource: a handshake takes one or two round
	// trips, so even a large NAT has few in progress at once; a source
	// that opens connections and never completes them is held to this.
	DefaultMaxHandshakesPerSource = 100

	DefaultMonitorType     = MonitorTCP
	DefaultMonitorInterval = Duration(5 * time.Second)
	DefaultMonitorTimeout  = Duration(2 * time.Second)
	DefaultMonitorRise     = 2
	DefaultMonitorFall     = 3
	DefaultMonitorPath     = "/"
	DefaultMonitorExpect   = 200

	DefaultWeight = 1
	DefaultLB     = LBRoundRobin
)

// DefaultSNATPorts is the SNAT source port range: 20,000 ports inside
// Linux's default ephemeral range (net.ipv4.ip_local_port_range
// 32768-60999), which run reserves with net.ipv4.ip_local_reserved_ports,
// leaving the host 8,232 for its own connections. A closed connection's
// port is reused as soon as the member accepts the new SYN, so the range
// bounds the connections open at once, not the rate. Wider is not better
// by default: during a SYN flood, SNAT tuples beyond what the half-open
// table holds are recycled by its LRU instead of the oldest half-open
// flow (bpf/README.md, "Floods").
var DefaultSNATPorts = PortRange{First: 40000, Last: 59999}

// LB is a load-balancing method of the L7 proxy.
type LB string

// Load-balancing methods of the L7 proxy.
const (
	LBRoundRobin LB = "round_robin"
	LBLeastConn  LB = "least_conn"
)

// Site profiles.
const (
	ProfileNone  = ""
	ProfileSkype = "skype" // Skype for Business / Lync web services
)

// PoolKindSkypeFE marks a pool of Skype for Business / Lync front ends.
const PoolKindSkypeFE = "skype-fe"

// Site redirect targets and affinities.
const (
	RedirectHTTPS   = "https"
	AffinityMSWSMan = "ms-wsman"
)

// UpgradeWebSocket is the Upgrade token of WebSocket (RFC 6455), the only
// protocol switch a site may allow.
const UpgradeWebSocket = "websocket"

// skypeDenied are the front end's management paths, never published.
var skypeDenied = []string{"/cscp", "/OcsPowerShell", "/RgsConfig"}

// SkypeDeniedPaths returns the path prefixes the skype profile closes
// (matched segment by segment with Unicode case folding, on targets in
// canonical form only).
func SkypeDeniedPaths() []string { return slices.Clone(skypeDenied) }

// DefaultFastL4 returns F5's FastL4 profile defaults: idle 300s,
// handshake 5s, close 5s, reset on timeout, loose init/close off, no MSS
// override.
func DefaultFastL4() FastL4 {
	rst := DefaultResetOnTimeout
	return FastL4{
		IdleTimeout:      DefaultIdleTimeout,
		HandshakeTimeout: DefaultHandshakeTimeout,
		CloseTimeout:     DefaultCloseTimeout,
		ResetOnTimeout:   &rst,
	}
}

// Mirrors reports whether the virtual's flows are mirrored to the HA
// peer when ha.mirror is set (the default).
func (f FastL4) Mirrors() bool { return f.Mirror == nil || *f.Mirror }

// ResetsOnTimeout reports whether a flow that times out is reset (the
// default).
func (f FastL4) ResetsOnTimeout() bool {
	if f.ResetOnTimeout == nil {
		return DefaultResetOnTimeout
	}
	return *f.ResetOnTimeout
}

// ProfileLimits returns the limits and timeouts of a site profile.
//
// Generic sites: 20s to read the request header, 32 KiB of headers, 100 MiB
// bodies, 60s for the member's response, 120s idle client connections.
//
// The skype profile follows Microsoft's reverse-proxy requirements: UCWA
// long polls last up to 1800s and push notifications 900-960s, so the
// member's response may take 960s and an idle client connection lives for
// 1800s; Kerberos tokens need 64 KiB of headers; uploads of hundreds of
// MB are streamed, so the body limit is 1 GiB and only per-read/per-write
// stalls are timed, never the whole request.
//
// Both close idle upstream connections after 90s, before IIS's 120s.
func ProfileLimits(profile string) Limits {
	l := Limits{
		HeaderTimeout:   Duration(20 * time.Second),
		MaxHeaderBytes:  32 << 10,
		MaxBodyBytes:    100 << 20,
		ResponseTimeout: Duration(60 * time.Second),
		IdleTimeout:     Duration(120 * time.Second),
		StallTimeout:    Duration(120 * time.Second),
		DialTimeout:     Duration(5 * time.Second),
		PoolIdleTimeout: Duration(90 * time.Second),
	}
	if profile == ProfileSkype {
		l.MaxHeaderBytes = 64 << 10
		l.MaxBodyBytes = 1 << 30
		l.ResponseTimeout = Duration(960 * time.Second)
		l.IdleTimeout = Duration(1800 * time.Second)
	}
	return l
}

// Effective returns the site's limits: the values set in the file, the
// profile's defaults for the rest.
func (s *Site) Effective() Limits {
	l := s.Limits
	d := ProfileLimits(s.Profile)
	fill := func(v *Duration, def Duration) {
		if *v == 0 {
			*v = def
		}
	}
	fill(&l.HeaderTimeout, d.HeaderTimeout)
	fill(&l.ResponseTimeout, d.ResponseTimeout)
	fill(&l.IdleTimeout, d.IdleTimeout)
	fill(&l.StallTimeout, d.StallTimeout)
	fill(&l.DialTimeout, d.DialTimeout)
	fill(&l.PoolIdleTimeout, d.PoolIdleTimeout)
	if l.MaxHeaderBytes == 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = d.MaxBodyBytes
	}
	return l
}

// UsesWindowsAuth reports whether client connections that authenticate
// with NTLM/Negotiate get pinned upstream connections and HTTP/1.1 only:
// set explicitly, or implied by the skype profile.
func (s *Site) UsesWindowsAuth() bool {
	if s.WindowsAuth != nil {
		return *s.WindowsAuth
	}
	return s.Profile == ProfileSkype
}

// UsesStrictPaths reports whether request targets not in canonical form
// are refused before routing: set explicitly, or implied by the skype
// profile, by denied paths (which only canonical targets can be matched
// against reliably) and by redirect (which never echoes such a target).
func (s *Site) UsesStrictPaths() bool {
	return s.StrictPaths || s.Profile == ProfileSkype || len(s.Deny) > 0 || s.Redirect != ""
}

// DeniedPaths returns the path prefixes the site refuses: the profile's
// and the site's own deny list.
func (s *Site) DeniedPaths() []string {
	var out []string
	if s.Profile == ProfileSkype {
		out = append(out, skypeDenied...)
	}
	return append(out, s.Deny...)
}

// Effective returns the TLS options with defaults for the unset ones.
func (t TLSOptions) Effective() TLSOptions {
	if t.MinVersion == "" {
		t.MinVersion = DefaultMinVersion
	}
	if t.HandshakeTimeout == 0 {
		t.HandshakeTimeout = DefaultTLSHandshakeTimeout
	}
	if t.TicketRotation == 0 {
		t.TicketRotation = DefaultTicketRotation
	}
	return t
}

// Effective returns the connection limits with defaults for the unset
// ones. MaxConns stays 0 (derived at run time from the descriptor limit).
func (l ConnLimits) Effective() ConnLimits {
	if l.MaxConnsPerSource == 0 {
		l.MaxConnsPerSource = DefaultMaxConnsPerSource
	}
	if l.MaxHandshakesPerSource == 0 {
		l.MaxHandshakesPerSource = min(DefaultMaxHandshakesPerSource, max(l.MaxConnsPerSource, 1))
	}
	return l
}

// Managed reports whether netcfg changes the host (default) rather than
// only checking it.
func (n Network) Managed() bool { return n.Manage == nil || *n.Manage }

// applyDefaults fills every unset value. It uses the recorded positions to
// tell an absent key from one set to its zero value.
func applyDefaults(c *Config) {
	if _, set := c.Pos["admin.listen"]; !set {
		c.Admin.Listen = DefaultAdminListen
	}
	if c.Control.Socket == "" {
		c.Control.Socket = DefaultControlSocket
	}
	if c.Log.Format == "" {
		c.Log.Format = DefaultLogFormat
	}
	if c.Log.Level == "" {
		c.Log.Level = DefaultLogLevel
	}
	if _, set := c.Pos["log.fastl4.rate"]; !set {
		c.Log.FastL4.Rate = DefaultFastL4LogRate
	}
	for _, nic := range []*NIC{&c.Network.External, &c.Network.Internal} {
		if nic.XDPMode == "" {
			nic.XDPMode = DefaultXDPMode
		}
	}
	if c.Network.Manage == nil {
		t := true
		c.Network.Manage = &t
	}
	fp := &c.FastPath
	if fp.PinPath == "" {
		fp.PinPath = DefaultPinPath
	}
	if fp.MaxFlows == 0 {
		fp.MaxFlows = DefaultMaxFlows
	}
	if fp.SNATPorts.IsZero() {
		fp.SNATPorts = DefaultSNATPorts
	}
	if fp.GCInterval == 0 {
		fp.GCInterval = DefaultGCInterval
	}
	poolDefaults(c)
	virtualDefaults(c)
	haDefaults(c)
}

// poolDefaults fills each pool's method, members' weights and monitor.
func poolDefaults(c *Config) {
	for name, p := range c.Pools {
		if p == nil {
			p = &Pool{}
			c.Pools[name] = p
		}
		p.Name = name
		if p.LB == "" {
			p.LB = DefaultLB
		}
		for i := range p.Members {
			if p.Members[i].Weight == 0 {
				p.Members[i].Weight = DefaultWeight
			}
		}
		m := &p.Monitor
		if m.Type == "" {
			m.Type = DefaultMonitorType
		}
		if m.Interval == 0 {
			m.Interval = DefaultMonitorInterval
		}
		if m.Timeout == 0 {
			m.Timeout = DefaultMonitorTimeout
		}
		if m.Rise == 0 {
			m.Rise = DefaultMonitorRise
		}
		if m.Fall == 0 {
			m.Fall = DefaultMonitorFall
		}
		if m.Type == MonitorHTTP || m.Type == MonitorHTTPS {
			if m.Path == "" {
				m.Path = DefaultMonitorPath
			}
			if len(m.Expect) == 0 {
				m.Expect = []int{DefaultMonitorExpect}
			}
		}
	}
}

// virtualDefaults fills each virtual's protocol, drain time, FastL4
// knobs, TLS and limits, and its sites' limits and methods.
func virtualDefaults(c *Config) {
	for _, v := range c.Virtuals {
		if v == nil {
			continue
		}
		if v.Proto == "" {
			v.Proto = DefaultProto
		}
		if v.DrainTimeout == 0 {
			v.DrainTimeout = DefaultDrainTimeout
		}
		if v.Mode == ModeFastL4 {
			def := DefaultFastL4()
			if v.IdleTimeout == 0 {
				v.IdleTimeout = def.IdleTimeout
			}
			if v.HandshakeTimeout == 0 {
				v.HandshakeTimeout = def.HandshakeTimeout
			}
			if v.CloseTimeout == 0 {
				v.CloseTimeout = def.CloseTimeout
			}
			if v.ResetOnTimeout == nil {
				v.ResetOnTimeout = def.ResetOnTimeout
			}
			if v.SNAT.IsZero() {
				v.SNAT.Automap = true
			}
			usePoolPort(c, v.Pool, v.Port)
		}
		if v.Mode == ModeHTTPS {
			v.TLS = v.TLS.Effective()
		}
		if v.Mode == ModeHTTPS || v.Mode == ModeHTTP {
			v.ConnLimits = v.ConnLimits.Effective()
		}
		for _, s := range v.Sites {
			if s == nil {
				continue
			}
			s.Limits = s.Effective()
			if p := c.Pools[s.Pool]; p != nil && s.LB == "" {
				s.LB = p.LB
			}
			if s.Redirect == "" {
				usePoolPort(c, s.Pool, s.Port)
			}
		}
	}
}

// usePoolPort gives a pool's monitor without a port the port of the first
// virtual or site that sends traffic to the pool.
func usePoolPort(c *Config, pool string, port uint16) {
	if p := c.Pools[pool]; p != nil && p.Monitor.Port == 0 {
		p.Monitor.Port = port
	}
}
