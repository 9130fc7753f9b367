package health

import (
	"maps"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/metric"
)

var (
	descMemberUp = prometheus.NewDesc(metric.Name("member_up"),
		"Whether the pool member takes new traffic (1) or not (0: down, unknown or disabled).",
		[]string{"pool", "member", "address"}, nil)
	descChecks = prometheus.NewDesc(metric.Name("monitor_checks_total"),
		"Health checks run against the pool member, by result (success or failure).",
		[]string{"pool", "member", "result"}, nil)
	descChanges = prometheus.NewDesc(metric.Name("member_state_changes_total"),
		"Changes of state of the pool member, by the state it entered (up, down, disabled, unknown).",
		[]string{"pool", "member", "state"}, nil)
)

// Describe implements prometheus.Collector.
func (c *Checker) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMemberUp
	ch <- descChecks
	ch <- descChanges
}

// Collect implements prometheus.Collector.
func (c *Checker) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.Snapshot() {
		up := 0.0
		if s.State == StateUp {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descMemberUp, prometheus.GaugeValue, up, s.Pool, s.Member, s.Addr.String())
		ch <- prometheus.MustNewConstMetric(descChecks, prometheus.CounterValue, float64(s.Checks-s.Failures), s.Pool, s.Member, "success")
		ch <- prometheus.MustNewConstMetric(descChecks, prometheus.CounterValue, float64(s.Failures), s.Pool, s.Member, "failure")
	}
	c.mu.Lock()
	changes := maps.Clone(c.changes)
	c.mu.Unlock()
	for k, n := range changes {
		ch <- prometheus.MustNewConstMetric(descChanges, prometheus.CounterValue, float64(n), k[0], k[1], k[2])
	}
}
