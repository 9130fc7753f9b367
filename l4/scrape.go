package l4

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/metric"
	"github.com/edgeproxy/edgeproxy/internal/portlist"
)

// liveFlows are the connections in the flow table when it is scraped,
// counted on their server halves: the key of a server half is member →
// SNAT address:port, so one pass gives the flows per virtual, per member
// and the SNAT ports in use. It reads the table with the GC's batch
// lookups into fixed buffers and keeps no per-flow state: its cost is one
// pass over the table (both halves of every flow).
type liveFlows struct {
	byVirtual map[uint32]int
	byMember  map[memberFlows]int
	snat      map[netip.Addr]int
}

type memberFlows struct {
	vid    uint32
	member netip.Addr
}

// countLive counts the connections in the flow table now; the half-open
// table is left out during a flood, as the GC leaves it.
func (f *FastPath) countLive() (liveFlows, error) {
	c := liveFlows{byVirtual: map[uint32]int{}, byMember: map[memberFlows]int{}, snat: map[netip.Addr]int{}}
	t := f.flows
	if f.flood.isActive() {
		t.half = nil
	}
	err := t.each(func(k bpf.FastL4FlowKey, v *bpf.FastL4FlowVal) {
		if v.Dir != dirServer {
			return
		}
		c.byVirtual[uint32(v.Vid)]++
		c.byMember[memberFlows{uint32(v.Vid), addrFromBPF(k.Saddr, k.Family)}]++
		c.snat[addrFromBPF(k.Daddr, k.Family)]++
	})
	return c, err
}

var (
	descVirtualFlows = prometheus.NewDesc(metric.Name("virtual_flows"),
		"Connections of the fastl4 virtual in the flow table, counted at scrape time.",
		[]string{"virtual"}, nil)
	descMemberFlows = prometheus.NewDesc(metric.Name("member_flows"),
		"Connections of the fastl4 virtual to the pool member (address) in the flow table, counted at scrape time.",
		[]string{"virtual", "member"}, nil)
	descSNATInUse = prometheus.NewDesc(metric.Name("snat_ports_in_use"),
		"SNAT source ports held by connections in the flow table, by SNAT address, counted at scrape time.",
		[]string{"address"}, nil)
	descSNATPorts = prometheus.NewDesc(metric.Name("snat_ports"),
		"SNAT source ports each SNAT address has (fastpath.snat_ports).", nil, nil)
)

func describeLive(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descVirtualFlows, descMemberFlows, descSNATInUse, descSNATPorts} {
		ch <- d
	}
}

// collectLive exports the scrape-time counts; a failed read is reported,
// and its metrics are left out rather than exported short.
func (f *FastPath) collectLive(ch chan<- prometheus.Metric, names [maxVirtuals]string) {
	f.mu.Lock()
	ports := f.ports
	f.mu.Unlock()
	if ports != (portlist.Range{}) {
		ch <- prometheus.MustNewConstMetric(descSNATPorts, prometheus.GaugeValue, float64(int(ports.Last)-int(ports.First)+1))
	}
	c, err := f.countLive()
	f.scrapeErrs.Report("read the flow table", err)
	if err != nil {
		return
	}
	name := func(vid uint32) string {
		if vid < maxVirtuals {
			return names[vid]
		}
		return ""
	}
	for vid, n := range c.byVirtual {
		ch <- prometheus.MustNewConstMetric(descVirtualFlows, prometheus.GaugeValue, float64(n), name(vid))
	}
	for k, n := range c.byMember {
		ch <- prometheus.MustNewConstMetric(descMemberFlows, prometheus.GaugeValue, float64(n), name(k.vid), k.member.String())
	}
	for a, n := range c.snat {
		ch <- prometheus.MustNewConstMetric(descSNATInUse, prometheus.GaugeValue, float64(n), a.String())
	}
}
