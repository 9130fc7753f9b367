package checkcmd

import (
	"fmt"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
)

// BGPRow is one neighbour of the bgp section, with the NIC it is
// reached on.
type BGPRow struct {
	Neighbor  string `json:"neighbor"`
	AS        uint32 `json:"as"`
	Interface string `json:"interface"` // "" when on no NIC's subnet (an error)
	Detection string `json:"detection"` // "BFD 0.9s" or "hold 3s"
	LocalAS   uint32 `json:"local_as"`
	RouterID  string `json:"router_id"`
}

// bgpRows lists the neighbours (nil without bgp).
func bgpRows(c *config.Config) []BGPRow {
	b := c.BGP
	if b == nil {
		return nil
	}
	var rows []BGPRow
	for _, n := range b.Neighbors {
		r := BGPRow{Neighbor: n.Address.String(), AS: n.AS, LocalAS: b.LocalAS, RouterID: b.RouterID.String()}
		switch config.NeighborNIC(c, n.Address) {
		case "external":
			r.Interface = c.Network.External.Interface
		case "internal":
			r.Interface = c.Network.Internal.Interface
		}
		hold := n.HoldTime
		if hold == 0 {
			hold = config.DefaultHoldTime
		}
		r.Detection = "hold " + shortDur(hold)
		if n.BFD {
			r.Detection = "BFD 0.9s, " + r.Detection
		}
		rows = append(rows, r)
	}
	return rows
}

func renderBGP(ew *errWriter, rows []BGPRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(ew, "\nbgp: AS %d, router id %s; each VIP announced while it has members up\n", rows[0].LocalAS, rows[0].RouterID)
	t := newTable(ew, "  NEIGHBOR", "AS", "INTERFACE", "FAILURE DETECTION")
	for _, r := range rows {
		t.row("  "+r.Neighbor, fmt.Sprint(r.AS), dash(r.Interface), r.Detection)
	}
	t.flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ClusterRow is the cluster section: where this node talks to its peers.
type ClusterRow struct {
	Address   string   `json:"address"` // this node's, with the port
	Interface string   `json:"interface"`
	Peers     []string `json:"peers"`
}

// clusterRow describes the cluster section (nil without one).
func clusterRow(c *config.Config) *ClusterRow {
	cl := c.Cluster
	if cl == nil {
		return nil
	}
	port := cl.Port
	if port == 0 {
		port = config.DefaultClusterPort
	}
	r := &ClusterRow{Address: fmt.Sprintf("%s:%d", config.ClusterAddr(c), port), Interface: c.Network.External.Interface}
	for _, p := range cl.Peers {
		r.Peers = append(r.Peers, p.String())
	}
	return r
}

func renderCluster(ew *errWriter, r *ClusterRow) {
	if r == nil {
		return
	}
	fmt.Fprintf(ew, "\ncluster: connections the router moves are sent back to their owner; this node at %s on %s, peers %s\n",
		r.Address, dash(r.Interface), strings.Join(r.Peers, ", "))
}
