// Package metric names the daemon's Prometheus metrics: every name
// carries the edgeproxy_ prefix, added here and nowhere else, so the
// /metrics page is one namespace whichever package exports a metric.
package metric

// Namespace is the prefix of every metric name, without its underscore.
const Namespace = "edgeproxy"

// Name is the full name of a metric: Name("member_up") is
// "edgeproxy_member_up".
func Name(name string) string {
	return Namespace + "_" + name
}
