package metric

import (
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// ScrapeErrors reports the errors a collector meets reading its source
// at scrape time (a BPF map, a file): it counts them in
// edgeproxy_scrape_errors_total{collector} and logs the first one, and
// the first after a successful read, so a failing source neither hides
// nor floods the log.
type ScrapeErrors struct {
	desc   *prometheus.Desc
	log    *slog.Logger
	source string

	mu      sync.Mutex
	n       uint64
	failing map[string]bool // by what was read
}

// NewScrapeErrors returns the reporter of the collector named source;
// nil log means slog.Default().
func NewScrapeErrors(source string, log *slog.Logger) *ScrapeErrors {
	if log == nil {
		log = slog.Default()
	}
	return &ScrapeErrors{
		desc: prometheus.NewDesc(Name("scrape_errors_total"),
			"Errors met reading a collector's source at scrape time; the metrics of that source are missing from the scrape.",
			nil, prometheus.Labels{"collector": source}),
		log:     log,
		source:  source,
		failing: map[string]bool{},
	}
}

// Report records the outcome of one read of the source (what: "read the
// flow table"): err nil is a successful read.
func (e *ScrapeErrors) Report(what string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err == nil {
		delete(e.failing, what)
		return
	}
	e.n++
	if !e.failing[what] {
		e.failing[what] = true
		e.log.Warn("scrape: "+what+" failed; its metrics are missing until it succeeds", "collector", e.source, "err", err)
	}
}

// Describe implements prometheus.Collector.
func (e *ScrapeErrors) Describe(ch chan<- *prometheus.Desc) { ch <- e.desc }

// Collect implements prometheus.Collector.
func (e *ScrapeErrors) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	n := e.n
	e.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(e.desc, prometheus.CounterValue, float64(n))
}
