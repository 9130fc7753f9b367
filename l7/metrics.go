package l7

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/metric"
)

// durationBuckets reach past the 1800 s of the longest UCWA long poll.
var durationBuckets = []float64{
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
	120, 300, 600, 960, 1800, 3600,
}

type metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	active    *prometheus.GaugeVec
	pinned    *prometheus.GaugeVec
	tlsErrors *prometheus.CounterVec
	denied    *prometheus.CounterVec
	refused   *prometheus.CounterVec
	certs     *certCollector

	connections    *prometheus.CounterVec
	pinnedTotal    *prometheus.CounterVec
	bytes          *prometheus.CounterVec
	memberRequests *prometheus.CounterVec
	memberDuration *prometheus.HistogramVec
}

func newMetrics(p *Proxy) *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metric.Name("http_requests_total"),
			Help: "HTTP requests answered, by virtual, site (its first host) and status code.",
		}, []string{"virtual", "site", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metric.Name("http_request_duration_seconds"),
			Help:    "Time from the request head to the end of the response, by virtual and site.",
			Buckets: durationBuckets,
		}, []string{"virtual", "site"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metric.Name("http_active_connections"),
			Help: "Client connections open, by virtual.",
		}, []string{"virtual"}),
		pinned: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metric.Name("http_pinned_connections"),
			Help: "Client connections with their own pinned upstream (NTLM/Negotiate), by virtual.",
		}, []string{"virtual"}),
		tlsErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metric.Name("tls_handshake_errors_total"),
			Help: "Failed TLS handshakes with clients, by reason.",
		}, []string{"reason"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metric.Name("http_denied_requests_total"),
			Help: "Requests refused because their path is denied, by virtual and site.",
		}, []string{"virtual", "site"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metric.Name("http_connections_refused_total"),
			Help: "Client connections closed on accept because a limit was reached, by virtual and limit.",
		}, []string{"virtual", "limit"}),
		connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metric.Name("http_connections_total"),
			Help: "Client connections accepted and handed to the HTTP server, by virtual.",
		}, []string{"virtual"}),
		pinnedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metric.Name("http_pinned_connections_total"),
			Help: "Upstream connections pinned to one client connection (NTLM/Negotiate), by virtual.",
		}, []string{"virtual"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metric.Name("http_bytes_total"),
			Help: "Body bytes of requests (direction in: read from clients) and responses (out: written to clients), by virtual.",
		}, []string{"virtual", "direction"}),
		memberRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metric.Name("member_http_requests_total"),
			Help: "HTTP requests forwarded to the pool member (address:port), by the class of the status answered (2xx, 3xx, 4xx, 5xx).",
		}, []string{"pool", "member", "class"}),
		memberDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    metric.Name("member_response_duration_seconds"),
			Help:    "Time from sending the request to the pool member to its response headers, by pool and member (address:port).",
			Buckets: durationBuckets,
		}, []string{"pool", "member"}),
		certs: &certCollector{p: p, desc: prometheus.NewDesc(
			metric.Name("certificate_expiry_seconds"),
			"Seconds until the certificate expires (negative: expired), by certificate file (acme:NAME for ACME ones).",
			[]string{"cert"}, nil),
			acmeOK: prometheus.NewDesc(metric.Name("acme_last_order_success"),
				"1 when the last order or renewal of the ACME certificate succeeded, 0 when it failed, by first name.",
				[]string{"cert"}, nil),
			acmeAt: prometheus.NewDesc(metric.Name("acme_last_order_timestamp_seconds"),
				"When the last order or renewal of the ACME certificate ended (Unix time), by first name.",
				[]string{"cert"}, nil)},
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.duration, m.active, m.pinned, m.tlsErrors, m.denied, m.refused, m.certs,
		m.connections, m.pinnedTotal, m.bytes, m.memberRequests, m.memberDuration}
}

// certCollector reports the expiry of the certificates in service, read
// at scrape time.
type certCollector struct {
	p      *Proxy
	desc   *prometheus.Desc
	acmeOK *prometheus.Desc
	acmeAt *prometheus.Desc
}

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.acmeOK
	ch <- c.acmeAt
}

// collectACME reports the outcome of each ACME certificate's last order.
func (c *certCollector) collectACME(ch chan<- prometheus.Metric) {
	for _, st := range c.p.ACMEStatus() {
		if st.LastOutcome == "" || st.LastOutcome == ACMELoaded {
			continue // no order of this node's
		}
		ok := 1.0
		if st.LastOutcome == "failed" {
			ok = 0
		}
		name := "acme:" + st.Names[0]
		ch <- prometheus.MustNewConstMetric(c.acmeOK, prometheus.GaugeValue, ok, name)
		ch <- prometheus.MustNewConstMetric(c.acmeAt, prometheus.GaugeValue, float64(st.LastAt.Unix()), name)
	}
}

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	c.collectACME(ch)
	now := time.Now()
	seen := map[string]bool{}
	for _, vh := range c.p.vhosts() {
		if vh.certs == nil {
			continue
		}
		for path, na := range vh.certs.expiry() {
			if seen[path] {
				continue
			}
			seen[path] = true
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, na.Sub(now).Seconds(), path)
		}
	}
}

// zero creates the series of the virtuals in service at 0, so that a
// dashboard or an alert sees 0 rather than no data before the first event.
func (m *metrics) zero(gen []*vhost) {
	for _, vh := range gen {
		m.active.WithLabelValues(vh.name)
		m.pinned.WithLabelValues(vh.name)
		m.connections.WithLabelValues(vh.name)
		m.pinnedTotal.WithLabelValues(vh.name)
		for _, dir := range []string{"in", "out"} {
			m.bytes.WithLabelValues(vh.name, dir)
		}
		for _, limit := range []string{refuseMaxConns, refusePerSource, refuseHandshakes, refuseFDLimit} {
			m.refused.WithLabelValues(vh.name, limit)
		}
		for _, s := range vh.sites {
			m.denied.WithLabelValues(vh.name, s.name)
		}
	}
	for _, reason := range []string{"timeout", "not_tls", "client_closed", "protocol_version", "no_shared_cipher", "alpn", "client_alert", "other"} {
		m.tlsErrors.WithLabelValues(reason)
	}
}

// codeClass is the class of an HTTP status: "2xx" for 204.
func codeClass(status int) string {
	if status < 100 || status > 599 {
		return "other"
	}
	return strconv.Itoa(status/100) + "xx"
}
