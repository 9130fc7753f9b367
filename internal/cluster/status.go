package cluster

import (
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/metric"
)

// Status is what /status and `edgeproxy status` show.
type Status struct {
	// Owned are this node's connections the peers are told of, Foreign
	// the peers' connections this node sends back to them.
	Owned   int    `json:"owned"`
	Foreign int    `json:"foreign"`
	Peers   []Peer `json:"peers"`
}

// Peer is a peer as this node knows it.
type Peer struct {
	Address string `json:"address"`
	MAC     string `json:"mac,omitempty"` // "" until it spoke
	// Synced: it sent its connections when this node started.
	Synced bool `json:"synced"`
}

// Status reports the node's state.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	st := Status{Owned: len(n.owned), Foreign: len(n.foreign)}
	for _, p := range n.spec.Peers {
		ps := Peer{Address: p.String(), Synced: n.answered[p]}
		if m, ok := n.macs[p]; ok {
			ps.MAC = m.String()
		}
		st.Peers = append(st.Peers, ps)
	}
	slices.SortFunc(st.Peers, func(a, b Peer) int { return strings.Compare(a.Address, b.Address) })
	return st
}

var connsDesc = prometheus.NewDesc(metric.Name("cluster_connections"),
	"TCP connections known to second chance: this node's (owner=\"self\"), announced to the peers, and the peers' (owner=\"peers\"), sent back to them.",
	[]string{"owner"}, nil)

// Describe and Collect make the node a prometheus.Collector.
func (n *Node) Describe(ch chan<- *prometheus.Desc) { ch <- connsDesc }

func (n *Node) Collect(ch chan<- prometheus.Metric) {
	st := n.Status()
	ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64(st.Owned), "self")
	ch <- prometheus.MustNewConstMetric(connsDesc, prometheus.GaugeValue, float64(st.Foreign), "peers")
}
