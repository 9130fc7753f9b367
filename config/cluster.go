package config

import (
	"net/netip"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/peerlink"
)

// Cluster makes the nodes that announce the same VIPs over BGP tell
// each other which connections they own, so that a connection the
// router moves to another node is sent back to its owner (second
// chance). Every node lists the others.
type Cluster struct {
	// Port is the UDP port of the channel between the nodes, on this
	// node's first network.external address (DefaultClusterPort).
	Port uint16 `yaml:"port"`
	// Peers are the other nodes' addresses on the external segment.
	Peers []netip.Addr `yaml:"peers"`
	// KeyFile holds the key the nodes share (mode 0600, at least 32
	// bytes).
	KeyFile string `yaml:"key_file"`
	// Idle is how long a peer's connection is kept without being
	// announced again (DefaultClusterIdle).
	Idle Duration `yaml:"idle"`
}

// Cluster defaults.
const (
	DefaultClusterPort = 7946
	DefaultClusterIdle = Duration(60 * time.Second)
)

// ClusterAddr is this node's address on the external segment: the
// first IPv4 address of network.external, else its first address.
func ClusterAddr(c *Config) netip.Addr {
	for _, p := range c.Network.External.Addresses {
		if p.Addr().Is4() {
			return p.Addr()
		}
	}
	if len(c.Network.External.Addresses) > 0 {
		return c.Network.External.Addresses[0].Addr()
	}
	return netip.Addr{}
}

func (v *validator) cluster() {
	cl := v.c.Cluster
	if cl == nil {
		return
	}
	if v.c.BGP == nil {
		v.errorf("cluster", "cluster needs a bgp section: the nodes share the VIPs' traffic through the router's ECMP route; add bgp or remove cluster")
	}
	if !v.hasFastL4() {
		v.errorf("cluster", "cluster forwards connections in the XDP fast path, which runs with at least one fastl4 virtual: add one or remove cluster")
	}
	self := ClusterAddr(v.c)
	if !self.IsValid() {
		v.errorf("cluster", "cluster needs network.external.addresses: the nodes talk on the external segment")
	}
	if len(cl.Peers) == 0 {
		v.errorf("cluster.peers", "cluster needs peers: the other nodes' addresses on the external segment, e.g. [198.18.1.3, 198.18.1.4]")
	}
	seen := map[netip.Addr]bool{}
	for i, p := range cl.Peers {
		path := joinIndex("cluster.peers", i)
		switch {
		case p == self:
			v.errorf(path, "peer %s is this node's own address: list only the other nodes", p)
		case seen[p]:
			v.errorf(path, "peer %s is listed twice: keep one", p)
		case !onSubnet(v.c.Network.External.Addresses, p):
			v.errorf(path, "peer %s is on no subnet of network.external (%s): the nodes must share the external segment, where connections are sent to their owner's MAC", p, subnets(v.c.Network.External.Addresses))
		}
		seen[p] = true
	}
	if cl.KeyFile == "" {
		v.errorf("cluster.key_file", "cluster needs key_file: a file of at least %d bytes shared by the nodes, mode 0600 (head -c 48 /dev/urandom | base64 > /etc/edgeproxy/cluster.key)", peerlink.MinKeyLen)
	} else if _, err := peerlink.LoadKey(cl.KeyFile); err != nil {
		v.errorf("cluster.key_file", "%v", err)
	}
	if d := cl.Idle.D(); d != 0 && d < 3*time.Second {
		v.errorf("cluster.idle", "idle %s: at least 3s (the nodes announce their connections again every idle/3)", cl.Idle)
	}
}

func (v *validator) hasFastL4() bool {
	for _, vs := range v.c.Virtuals {
		if vs != nil && vs.Mode == ModeFastL4 {
			return true
		}
	}
	return false
}
