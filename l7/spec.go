package l7

import (
	"net/netip"
	"time"
)

// Spec is what the proxy serves: its https and http virtuals, with every
// default applied and every member resolved.
type Spec struct {
	Virtuals []*Virtual
	// ACME is where and how often ACME certificates are kept.
	ACME ACMEOptions
}

// ACMEOptions are the settings shared by every ACME certificate. They
// are read when the first ACME certificate is applied.
type ACMEOptions struct {
	// StateDir keeps the accounts, keys and certificates (0700).
	StateDir string
	// CheckInterval is how often certificates are checked for renewal,
	// and how often a standby re-reads them from StateDir.
	CheckInterval time.Duration
	// Shared says StateDir is shared with the other node of an HA pair:
	// certificates are ordered and renewed only while SetACMEActive says
	// this node is active; otherwise they are loaded from StateDir.
	Shared bool
}

// Mode is how a virtual speaks to clients.
type Mode string

// Modes of an L7 virtual.
const (
	ModeHTTPS Mode = "https" // TLS terminated by the proxy
	ModeHTTP  Mode = "http"  // plain HTTP
)

// Virtual is one listening address and the sites published on it.
type Virtual struct {
	Name   string
	Mode   Mode
	Listen netip.AddrPort
	// Certificates (https): the first is served to clients without SNI.
	Certificates []Certificate
	Sites        []*Site
	TLS          TLS
	// TrustedProxies are the clients whose X-Forwarded-* headers are kept.
	TrustedProxies []netip.Prefix
	// DrainTimeout bounds the wait for requests in flight when the
	// virtual goes away.
	DrainTimeout time.Duration
	Limits       ConnLimits
}

// Certificate is a PEM leaf+chain file and its key file, or, with ACME
// set, a certificate obtained and renewed from an ACME CA.
type Certificate struct {
	Cert string
	Key  string
	ACME *ACME
}

// ACME challenge types and key types.
const (
	ChallengeHTTP01    = "http-01"     // answered on the port-80 virtual of the same address
	ChallengeTLSALPN01 = "tls-alpn-01" // answered on the https virtual itself
	KeyECDSAP256       = "ecdsa-p256"
	KeyRSA2048         = "rsa2048"
)

// ACME is a certificate ordered from an ACME CA for Names.
type ACME struct {
	Names     []string
	CA        string // directory URL
	CARoot    string // PEM file that verifies the CA's own TLS; empty: the system roots
	Email     string
	Challenge string // ChallengeHTTP01 or ChallengeTLSALPN01
	KeyType   string // KeyECDSAP256 or KeyRSA2048
}

// TLS are an https virtual's handshake settings.
type TLS struct {
	MinVersion       uint16        // tls.VersionTLS12...
	HSTS             time.Duration // Strict-Transport-Security max-age; 0: none
	HandshakeTimeout time.Duration
	TicketRotation   time.Duration // session-ticket key lifetime
	NoSessionTickets bool          // issue no session tickets: every connection makes a full handshake
}

// ConnLimits cap a virtual's client connections.
type ConnLimits struct {
	MaxConns               int // 0: derived from the descriptor limit
	MaxConnsPerSource      int
	MaxHandshakesPerSource int
}

// Site is a set of host names routed to a pool's members.
type Site struct {
	Hosts []string
	// Redirect answers every request with a redirect to https instead
	// of forwarding it; Pool, Port and Members are then unused.
	Redirect bool
	Pool     string
	Port     uint16 // the members' port
	Members  []Member
	// BackendTLS re-encrypts to the members; nil: plain HTTP.
	BackendTLS *BackendTLS
	// Skype forwards only the Skype for Business methods and hides the
	// member's product headers.
	Skype bool
	// Deny are the path prefixes refused (403), the profile's included.
	Deny []string
	// Upgrade lists the protocols clients may switch to.
	Upgrade []string
	// WindowsAuth pins upstream connections and keeps HTTP/1.1.
	WindowsAuth bool
	// StrictPaths refuses request targets not in canonical form.
	StrictPaths bool
	// Affinity sets the ms-wsman affinity cookie.
	Affinity bool
	// LeastConn picks the member with the fewest requests in flight
	// instead of round robin.
	LeastConn bool
	Limits
}

// Member is a resolved pool member.
type Member struct {
	Name     string // as configured: a name or an address
	Addr     netip.Addr
	Disabled bool
}

// Limits and timeouts of a site.
type Limits struct {
	HeaderTimeout   time.Duration
	MaxHeaderBytes  int
	MaxBodyBytes    int64 // <0: unlimited
	ResponseTimeout time.Duration
	IdleTimeout     time.Duration
	StallTimeout    time.Duration
	DialTimeout     time.Duration
	PoolIdleTimeout time.Duration
}

// BackendTLS configures re-encryption to members.
type BackendTLS struct {
	CA                 string // PEM bundle file; empty: the system roots
	ServerName         string // SNI and verified name; empty: the client's Host
	InsecureSkipVerify bool
}
