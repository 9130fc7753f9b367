package admin

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/metric"
)

// recentReloads is how many reloads Reloads keeps for the status page.
const recentReloads = 10

// Reload is one attempt to apply the configuration file (the first at
// start).
type Reload struct {
	Time time.Time `json:"time"`
	// Hash identifies the file's content (ConfigHash).
	Hash string `json:"hash,omitempty"`
	// Error is why it was rejected; "" when it applied.
	Error string `json:"error,omitempty"`
}

// Reloads records the outcome of every load of the configuration and
// exports it: edgeproxy_config_last_reload_successful,
// edgeproxy_config_last_reload_success_timestamp_seconds,
// edgeproxy_config_info{hash} (the running file) and
// edgeproxy_config_reloads_total{result}.
type Reloads struct {
	mu        sync.Mutex
	recent    []Reload // newest last
	lastOK    bool
	successAt time.Time
	hash      string // of the running configuration
	ok, fail  uint64
}

// NewReloads returns an empty record.
func NewReloads() *Reloads { return &Reloads{} }

// ConfigHash is the first 16 hex digits of the SHA-256 of the file at
// path, or "" when it cannot be read.
func ConfigHash(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Record adds one load of the file whose content has hash: err nil when
// it applied, else why it was rejected.
func (r *Reloads) Record(hash string, err error) {
	now := time.Now()
	rl := Reload{Time: now, Hash: hash}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		rl.Error = err.Error()
		r.lastOK = false
		r.fail++
	} else {
		r.lastOK, r.successAt, r.hash = true, now, hash
		r.ok++
	}
	r.recent = append(r.recent, rl)
	if len(r.recent) > recentReloads {
		r.recent = slices.Delete(r.recent, 0, len(r.recent)-recentReloads)
	}
}

// Recent returns the last reloads, newest first.
func (r *Reloads) Recent() []Reload {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	out := slices.Clone(r.recent)
	r.mu.Unlock()
	slices.Reverse(out)
	return out
}

var (
	descReloadOK = prometheus.NewDesc(metric.Name("config_last_reload_successful"),
		"Whether the last load of the configuration file applied (1) or was rejected (0: the previous one serves).", nil, nil)
	descReloadAt = prometheus.NewDesc(metric.Name("config_last_reload_success_timestamp_seconds"),
		"When the configuration file was last applied, in seconds since the epoch.", nil, nil)
	descConfigInfo = prometheus.NewDesc(metric.Name("config_info"),
		"The running configuration: hash is the start of the SHA-256 of its file; always 1.", []string{"hash"}, nil)
	descReloads = prometheus.NewDesc(metric.Name("config_reloads_total"),
		"Loads of the configuration file, at start and on reload, by result (success or failure).", []string{"result"}, nil)
)

// Describe implements prometheus.Collector.
func (r *Reloads) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReloadOK, descReloadAt, descConfigInfo, descReloads} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (r *Reloads) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ok := 0.0
	if r.lastOK {
		ok = 1
	}
	ch <- prometheus.MustNewConstMetric(descReloadOK, prometheus.GaugeValue, ok)
	if !r.successAt.IsZero() {
		ch <- prometheus.MustNewConstMetric(descReloadAt, prometheus.GaugeValue, float64(r.successAt.UnixMilli())/1000)
		ch <- prometheus.MustNewConstMetric(descConfigInfo, prometheus.GaugeValue, 1, r.hash)
	}
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(r.ok), "success")
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(r.fail), "failure")
}
