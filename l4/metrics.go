package l4

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/metric"
)

// reasonNames are the label values of the program's reasons (enum reason
// in bpf/common.h), without their REASON_ prefix, lower case.
var reasonNames = map[bpf.FastL4Reason]string{
	bpf.FastL4ReasonREASON_PASS_NOT_IP:         "pass_not_ip",
	bpf.FastL4ReasonREASON_PASS_VLAN:           "pass_vlan",
	bpf.FastL4ReasonREASON_PASS_MALFORMED:      "pass_malformed",
	bpf.FastL4ReasonREASON_PASS_NO_SERVICE:     "pass_no_service",
	bpf.FastL4ReasonREASON_PASS_PROTO:          "pass_proto",
	bpf.FastL4ReasonREASON_PASS_FRAGMENT:       "pass_fragment",
	bpf.FastL4ReasonREASON_PASS_ICMP:           "pass_icmp",
	bpf.FastL4ReasonREASON_PASS_IPV6ROUTING:    "pass_ipv6_routing",
	bpf.FastL4ReasonREASON_FWD_NEW:             "fwd_new",
	bpf.FastL4ReasonREASON_FWD_CLIENT:          "fwd_client",
	bpf.FastL4ReasonREASON_FWD_SERVER:          "fwd_server",
	bpf.FastL4ReasonREASON_FWD_ICMP:            "fwd_icmp",
	bpf.FastL4ReasonREASON_DROP_FRAGMENT:       "drop_fragment",
	bpf.FastL4ReasonREASON_DROP_NO_FLOW:        "drop_no_flow",
	bpf.FastL4ReasonREASON_DROP_NO_MEMBER:      "drop_no_member",
	bpf.FastL4ReasonREASON_DROP_SNAT_EXHAUSTED: "drop_snat_exhausted",
	bpf.FastL4ReasonREASON_DROP_TABLE_FULL:     "drop_table_full",
	bpf.FastL4ReasonREASON_DROP_NO_NEIGH:       "drop_no_neigh",
	bpf.FastL4ReasonREASON_DROP_FIB:            "drop_fib",
	bpf.FastL4ReasonREASON_DROP_FRAG_NEEDED:    "drop_frag_needed",
	bpf.FastL4ReasonREASON_DROP_NO_TX_PORT:     "drop_no_tx_port",
	bpf.FastL4ReasonREASON_DROP_ICMP:           "drop_icmp",
	bpf.FastL4ReasonREASON_EVENT_REPAIRED:      "repaired",
	bpf.FastL4ReasonREASON_EVENT_RESTARTED:     "restarted",
	bpf.FastL4ReasonREASON_EVENT_MSS_CLAMPED:   "mss_clamped",

	// Floods: half-open flows, SNAT reclaims, entries reused.
	bpf.FastL4ReasonREASON_DROP_HALF_OPEN_LOST:  "drop_half_open_lost",
	bpf.FastL4ReasonREASON_DROP_FLOW_REUSED:     "drop_flow_reused",
	bpf.FastL4ReasonREASON_EVENT_HALF_OPEN:      "half_open",
	bpf.FastL4ReasonREASON_EVENT_PROMOTED:       "promoted",
	bpf.FastL4ReasonREASON_EVENT_SNAT_RECLAIMED: "snat_reclaimed",

	// Ingress validation, router behaviour, TCP sanity.
	bpf.FastL4ReasonREASON_DROP_INGRESS:      "drop_ingress",
	bpf.FastL4ReasonREASON_PASS_FOREIGN_MAC:  "pass_foreign_mac",
	bpf.FastL4ReasonREASON_DROP_MARTIAN:      "drop_martian",
	bpf.FastL4ReasonREASON_DROP_BAD_HEADER:   "drop_bad_header",
	bpf.FastL4ReasonREASON_TX_TIME_EXCEEDED:  "tx_time_exceeded",
	bpf.FastL4ReasonREASON_TX_TOO_BIG:        "tx_too_big",
	bpf.FastL4ReasonREASON_DROP_TTL:          "drop_ttl",
	bpf.FastL4ReasonREASON_DROP_RST_WINDOW:   "drop_rst_window",
	bpf.FastL4ReasonREASON_DROP_ICMP_INVALID: "drop_icmp_invalid",
	bpf.FastL4ReasonREASON_DROP_ICMP_RATE:    "drop_icmp_rate",
	bpf.FastL4ReasonREASON_DROP_HANDSHAKE:    "drop_handshake",
	bpf.FastL4ReasonREASON_DROP_TX_REFUSED:   "drop_tx_refused",

	// The connection log.
	bpf.FastL4ReasonREASON_EVENT_LOG_RING_FULL: "log_ring_full",

	// SNAT ports of closed flows taken by new ones.
	bpf.FastL4ReasonREASON_EVENT_SNAT_REUSED: "snat_reused",

	// Closing pairs the watch had no room for (the walk finds them).
	bpf.FastL4ReasonREASON_EVENT_REAP_WATCH_FULL: "reap_watch_full",
}

// isEvent tells reasons that count events on the way, not verdicts.
func isEvent(r bpf.FastL4Reason) bool {
	switch r {
	case bpf.FastL4ReasonREASON_EVENT_REPAIRED, bpf.FastL4ReasonREASON_EVENT_RESTARTED, bpf.FastL4ReasonREASON_EVENT_MSS_CLAMPED,
		bpf.FastL4ReasonREASON_EVENT_HALF_OPEN, bpf.FastL4ReasonREASON_EVENT_PROMOTED, bpf.FastL4ReasonREASON_EVENT_SNAT_RECLAIMED,
		bpf.FastL4ReasonREASON_EVENT_LOG_RING_FULL, bpf.FastL4ReasonREASON_EVENT_SNAT_REUSED,
		bpf.FastL4ReasonREASON_EVENT_REAP_WATCH_FULL:
		return true
	}
	return false
}

// readCounters sums the per-CPU counters (index: virtual id * reasons +
// reason), never lower than they were last read (counterFloor).
func (f *FastPath) readCounters() ([]bpf.FastL4Stat, error) {
	c, err := sumStats(f.objs.Stats)
	if err != nil {
		return nil, err
	}
	f.floor.apply(c)
	return c, nil
}

// counterFloor keeps the counters monotonic. A frame the egress refuses
// is counted as forwarded by the program and moved to drop_tx_refused by
// the tracepoint that sees it refused, microseconds later (bpf/txerr.h):
// a read in between sees the forwarded count one higher than the next
// read does, which Prometheus would take for a counter reset. Each
// counter is reported at least at its last reported value.
type counterFloor struct {
	mu sync.Mutex
	v  []bpf.FastL4Stat
}

func (c *counterFloor) apply(s []bpf.FastL4Stat) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.v) != len(s) {
		c.v = make([]bpf.FastL4Stat, len(s))
	}
	for i := range s {
		if s[i].Packets < c.v[i].Packets {
			s[i] = c.v[i]
		}
		c.v[i] = s[i]
	}
}

// reset forgets the counters of a virtual id, zeroed for a new virtual.
func (c *counterFloor) reset(id int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for r := range reasonMax {
		if i := id*reasonMax + r; i < len(c.v) {
			c.v[i] = bpf.FastL4Stat{}
		}
	}
}

// zeroCounters clears the counters of a virtual id on every CPU.
func (f *FastPath) zeroCounters(id int) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("zero counters of virtual id %d: %w", id, err)
	}
	zero := make([]bpf.FastL4Stat, cpus)
	for r := range reasonMax {
		if err := f.objs.Stats.Put(uint32(id*reasonMax+r), zero); err != nil {
			return fmt.Errorf("zero counters of virtual id %d: %w", id, err)
		}
	}
	f.floor.reset(id)
	return nil
}

func sumStats(m *ebpf.Map) ([]bpf.FastL4Stat, error) {
	n := int(m.MaxEntries())
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, err
	}
	out := make([]bpf.FastL4Stat, n)
	keys := make([]uint32, n)
	vals := make([]bpf.FastL4Stat, n*cpus)
	var cursor ebpf.MapBatchCursor
	got, err := m.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && got == 0 {
		// No batch support: one lookup per key.
		per := make([]bpf.FastL4Stat, cpus)
		for k := range n {
			if err := m.Lookup(uint32(k), per); err != nil {
				return nil, err
			}
			for _, v := range per {
				out[k].Packets += v.Packets
				out[k].Bytes += v.Bytes
			}
		}
		return out, nil
	}
	for i := range got {
		for c := range cpus {
			v := vals[i*cpus+c]
			out[keys[i]].Packets += v.Packets
			out[keys[i]].Bytes += v.Bytes
		}
	}
	return out, nil
}

// flowCounts are the flows counted by a GC pass.
type flowCounts struct {
	total     int
	byVirtual map[string]int
	byState   map[[2]string]int // virtual, state
	byMember  map[netip.Addr]int
}

func newFlowCounts() *flowCounts {
	return &flowCounts{byVirtual: map[string]int{}, byState: map[[2]string]int{}, byMember: map[netip.Addr]int{}}
}

func (c *flowCounts) add(virtual, state string, p *pair) {
	c.total++
	c.byVirtual[virtual]++
	c.byState[[2]string{virtual, state}]++
	_, sk := p.keys()
	c.byMember[addrFromBPF(sk.Saddr, sk.Family)]++
}

// gcStats are what the GC counted, for the collector.
type gcStats struct {
	mu       sync.Mutex
	counts   *flowCounts
	reapedBy map[[2]string]uint64 // virtual, state
	resets   map[string]uint64
	resetErr map[string]uint64
	repairs  uint64
}

func newGCStats() *gcStats {
	return &gcStats{counts: newFlowCounts(), reapedBy: map[[2]string]uint64{}, resets: map[string]uint64{}, resetErr: map[string]uint64{}}
}

func (s *gcStats) setCounts(c *flowCounts) {
	s.mu.Lock()
	s.counts = c
	s.mu.Unlock()
}

func (s *gcStats) reaped(virtual, state string, n uint64) {
	s.mu.Lock()
	s.reapedBy[[2]string{virtual, state}] += n
	s.mu.Unlock()
}

func (s *gcStats) reset(virtual string, err error) {
	s.mu.Lock()
	if err != nil {
		s.resetErr[virtual]++
	} else {
		s.resets[virtual]++
	}
	s.mu.Unlock()
}

func (s *gcStats) repaired(n uint64) {
	s.mu.Lock()
	s.repairs += n
	s.mu.Unlock()
}

// Status is a summary of the fast path for the admin endpoint.
type Status struct {
	Interfaces []string
	Flows      int                // connections (pairs) at the last GC pass
	Capacity   int                // connections the table holds
	ByVirtual  map[string]int     // connections per virtual
	ByMember   map[netip.Addr]int // connections per member
	// Drops counts dropped packets per virtual since the maps were
	// created.
	Drops map[string]uint64
}

// Status reports the flow counts of the last GC pass and the drop
// counters.
func (f *FastPath) Status() Status {
	st := Status{Interfaces: f.Interfaces(), Capacity: f.opts.MaxFlows, ByVirtual: map[string]int{}, ByMember: map[netip.Addr]int{}, Drops: map[string]uint64{}}
	if !f.acquire() {
		return st
	}
	defer f.life.RUnlock()
	f.stats.mu.Lock()
	st.Flows = f.stats.counts.total
	for k, v := range f.stats.counts.byVirtual {
		st.ByVirtual[k] = v
	}
	for k, v := range f.stats.counts.byMember {
		st.ByMember[k] = v
	}
	f.stats.mu.Unlock()
	c, err := f.readCounters()
	if err != nil {
		return st
	}
	names := f.virtualNames()
	for vid := 1; vid < maxVirtuals; vid++ {
		for r := range reasonMax {
			reason := bpf.FastL4Reason(r)
			if n := c[vid*reasonMax+r].Packets; n > 0 && !isEvent(reason) && reasonNames[reason][:4] == "drop" {
				st.Drops[names[vid]] += n
			}
		}
	}
	return st
}

func (f *FastPath) virtualNames() [maxVirtuals]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.vnames
}

// virtualKnobs are the knobs of the virtual with id.
func (f *FastPath) virtualKnobs(id int) knobs {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.knobs[id]
}

// Collector exports the fast path's counters, read from the per-CPU maps
// at scrape time, and the GC's flow counts.
func (f *FastPath) Collector() prometheus.Collector { return (*collector)(f) }

type collector FastPath

var (
	descPackets = prometheus.NewDesc(metric.Name("xdp_packets_total"),
		"Packets seen by the XDP fast path, by verdict reason and fastl4 virtual (empty: no virtual).",
		[]string{"reason", "virtual"}, nil)
	descBytes = prometheus.NewDesc(metric.Name("xdp_bytes_total"),
		"Bytes seen by the XDP fast path, by verdict reason and fastl4 virtual (empty: no virtual).",
		[]string{"reason", "virtual"}, nil)
	descEvents = prometheus.NewDesc(metric.Name("xdp_events_total"),
		"Events in the XDP fast path: repaired flow pairs, re-balanced closing flows, clamped MSS options, half-open flows opened and promoted, SNAT ports reclaimed or reused, connection log records lost to a full ring, closing pairs the full reap_watch could not take.",
		[]string{"event", "virtual"}, nil)
	descFlows = prometheus.NewDesc(metric.Name("flows"),
		"Connections in the fast path's flow table at the last GC pass, by fastl4 virtual and state.",
		[]string{"virtual", "state"}, nil)
	descCapacity = prometheus.NewDesc(metric.Name("flows_capacity"),
		"Connections the fast path's flow table holds.", nil, nil)
	descReaped = prometheus.NewDesc(metric.Name("flows_reaped_total"),
		"Connections removed by the GC after their timeout, by fastl4 virtual and state.",
		[]string{"virtual", "state"}, nil)
	descResets = prometheus.NewDesc(metric.Name("flow_resets_total"),
		"TCP resets sent for connections that timed out (reset_on_timeout), by fastl4 virtual and result.",
		[]string{"virtual", "result"}, nil)
	descRepairs = prometheus.NewDesc(metric.Name("flows_repaired_total"),
		"Flow pairs whose missing half the GC re-inserted.", nil, nil)
	descSecondChance = prometheus.NewDesc(metric.Name("xdp_second_chance_total"),
		"Second chance between nodes (cluster): TCP segments sent to the peer owning their connection (forwarded), SYNs for a peer's tuple opened here (syn_local), segments a peer forwarded that were not forwarded again (from_peer), segments to the L7 proxy that neither a local socket nor a peer knew yet, dropped for the client to retransmit (held).",
		[]string{"what"}, nil)
	descLogDropped = prometheus.NewDesc(metric.Name("fastl4_log_dropped_total"),
		"Connection log lines not written: over log.fastl4.rate (rate), or events the program found no room for in its ring (ring_full).",
		[]string{"reason"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPackets, descBytes, descEvents, descFlows, descCapacity, descReaped, descResets, descRepairs, descFloodActive, descTxErrors, descLogDropped, descSecondChance} {
		ch <- d
	}
	describeLive(ch)
	c.scrapeErrs.Describe(ch)
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	f := (*FastPath)(c)
	if !f.acquire() {
		return
	}
	defer f.life.RUnlock()
	names := f.virtualNames()
	defer f.scrapeErrs.Collect(ch)
	f.collectLive(ch, names)
	if ps, err := f.peerStats(); err == nil {
		for what, n := range map[string]uint64{"forwarded": ps.Forwarded, "syn_local": ps.SYNLocal, "from_peer": ps.FromPeer, "held": ps.Held} {
			ch <- prometheus.MustNewConstMetric(descSecondChance, prometheus.CounterValue, float64(n), what)
		}
	}
	counters, err := f.readCounters()
	f.scrapeErrs.Report("read the packet counters", err)
	ch <- prometheus.MustNewConstMetric(descLogDropped, prometheus.CounterValue, float64(f.flowLog.dropped.Load()), "rate")
	if err == nil {
		var ringFull uint64
		for vid := range maxVirtuals {
			ringFull += counters[vid*reasonMax+int(bpf.FastL4ReasonREASON_EVENT_LOG_RING_FULL)].Packets
		}
		ch <- prometheus.MustNewConstMetric(descLogDropped, prometheus.CounterValue, float64(ringFull), "ring_full")
		for vid := range maxVirtuals {
			for r := range reasonMax {
				s := counters[vid*reasonMax+r]
				if s.Packets == 0 {
					continue
				}
				reason := bpf.FastL4Reason(r)
				if isEvent(reason) {
					ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(s.Packets), reasonNames[reason], names[vid])
					continue
				}
				ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(s.Packets), reasonNames[reason], names[vid])
				ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.Bytes), reasonNames[reason], names[vid])
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(descCapacity, prometheus.GaugeValue, float64(f.opts.MaxFlows))
	f.flood.collect(ch)
	f.collectTxErrors(ch)
	s := f.stats
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, n := range s.counts.byState {
		ch <- prometheus.MustNewConstMetric(descFlows, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
	for k, n := range s.reapedBy {
		ch <- prometheus.MustNewConstMetric(descReaped, prometheus.CounterValue, float64(n), k[0], k[1])
	}
	for v, n := range s.resets {
		ch <- prometheus.MustNewConstMetric(descResets, prometheus.CounterValue, float64(n), v, "sent")
	}
	for v, n := range s.resetErr {
		ch <- prometheus.MustNewConstMetric(descResets, prometheus.CounterValue, float64(n), v, "error")
	}
	ch <- prometheus.MustNewConstMetric(descRepairs, prometheus.CounterValue, float64(s.repairs))
}
