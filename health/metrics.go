package health

import (
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
)

// Describe implements prometheus.Collector.
func (c *Checker) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMemberUp
	ch <- descChecks
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
}
