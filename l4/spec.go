package l4

import (
	"fmt"
	"net/netip"
	"time"
)

// Spec is the fast path a configuration asks for, every default applied
// and every member resolved (internal/plan builds it). Open takes its
// Options; Apply takes the rest and the SNAT ports.
type Spec struct {
	Options
	// Virtuals are the fastl4 virtuals, in configuration order (new
	// virtuals get ids in it).
	Virtuals []Virtual
	// Pools are the members of the pools the virtuals use, by pool name.
	Pools map[string][]Member
	// Host is the host's own addressing: the program takes no new flow
	// from it.
	Host Host
	// LogRate caps the connection log's lines per second (virtuals with
	// Log); 0: DefaultLogRate.
	LogRate int
}

// Protocol is the IP protocol of a virtual.
type Protocol uint8

// Protocols of a virtual.
const (
	TCP Protocol = 6
	UDP Protocol = 17
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("protocol %d", uint8(p))
}

// XDPMode is how the program is attached to a NIC.
type XDPMode string

// Attach modes.
const (
	// XDPNative runs in the driver, falling back to XDPGeneric (with a
	// warning) when the driver has no native XDP.
	XDPNative  XDPMode = "native"
	XDPGeneric XDPMode = "generic"
)

// Virtual is a fastl4 virtual: a VIP:port translated to its pool's
// members and a SNAT address.
type Virtual struct {
	Name   string // at most 63 bytes
	Listen netip.AddrPort
	Proto  Protocol // TCP when zero
	Pool   string
	// Port is the members' port; 0: the listen port.
	Port uint16
	// SNAT are the source addresses of the VIP's family; when empty and
	// Automap, the internal NIC's first global address of the family.
	SNAT    []netip.Addr
	Automap bool
	// Timeouts; zero takes F5's FastL4 default (DefaultIdleTimeout...).
	IdleTimeout, HandshakeTimeout, CloseTimeout time.Duration
	ResetOnTimeout                              bool
	LooseInit, LooseClose                       bool
	// MSSOverride clamps the MSS of SYNs; 0: off.
	MSSOverride uint16
	// Log reports each connection's open and close to Options.FlowLog.
	Log bool
	// Mirror reports the virtual's flows to the mirror sink
	// (SetMirrorSink), for the HA peer.
	Mirror bool
}

// Member is a pool member as the fast path sees it.
type Member struct {
	Name     string // as written in the configuration
	Addr     netip.Addr
	Up       bool // passes its health checks
	Disabled bool // drains: keeps its flows, takes no new ones
}

// Host is the host's addressing, which new flows never come from.
type Host struct {
	// Addresses are the NICs' addresses with their subnets.
	Addresses []netip.Prefix
	// Internal are the internal subnets: the internal NIC's and those
	// routed through it.
	Internal []netip.Prefix
	// VIPs are every virtual's address, L7 virtuals included.
	VIPs []netip.Addr
}
