package l4

import (
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/metric"
)

// floodWatch tells, once per GC pass, whether a flood of new flows is
// under way: more half-open connections left unfinished in the last pass
// than a quarter of the half-open table holds, or SNAT ports taken back
// from half-open flows (bpf/flood.h). Established flows are safe either
// way; during a flood a half-open connection lives shorter.
type floodWatch struct {
	mu     sync.Mutex
	seen   bool
	last   floodCounts
	active bool
}

// floodCounts are the program's half-open counters, summed over the
// virtuals.
type floodCounts struct {
	opened, promoted, reclaimed, lost uint64
}

func sumFloodCounts(c []bpf.FastL4Stat) floodCounts {
	var fc floodCounts
	for vid := range maxVirtuals {
		at := func(r bpf.FastL4Reason) uint64 { return c[vid*reasonMax+int(r)].Packets }
		fc.opened += at(bpf.FastL4ReasonREASON_EVENT_HALF_OPEN)
		fc.promoted += at(bpf.FastL4ReasonREASON_EVENT_PROMOTED)
		fc.reclaimed += at(bpf.FastL4ReasonREASON_EVENT_SNAT_RECLAIMED)
		fc.lost += at(bpf.FastL4ReasonREASON_DROP_HALF_OPEN_LOST)
	}
	return fc
}

// update judges the pass that ended with the counters c and logs a flood
// when one starts (then at most once per log interval) and ends.
func (w *floodWatch) update(f *FastPath, c []bpf.FastL4Stat) {
	now := sumFloodCounts(c)
	w.mu.Lock()
	prev, seen := w.last, w.seen
	w.last, w.seen = now, true
	if !seen {
		w.mu.Unlock()
		return
	}
	unfinished := int64(now.opened-prev.opened) - int64(now.promoted-prev.promoted)
	active := unfinished > int64(halfOpenEntries(f.opts.MaxFlows)/2/4) || now.reclaimed > prev.reclaimed
	was := w.active
	w.active = active
	w.mu.Unlock()
	args := []any{"half_open_opened", now.opened - prev.opened, "promoted", now.promoted - prev.promoted,
		"snat_reclaimed", now.reclaimed - prev.reclaimed, "half_open_lost", now.lost - prev.lost}
	switch {
	case active:
		f.limiter.log(f.log, "flood", slog.LevelWarn, "flood of new flows: half-open flows are being evicted, established flows are kept", args...)
	case was:
		f.log.Info("flood of new flows over", args...)
	}
}

func (w *floodWatch) isActive() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.active
}

var descFloodActive = prometheus.NewDesc(metric.Name("xdp_flood_active"),
	"1 while a flood of new flows evicts half-open flows of the XDP fast path (at the last GC pass), else 0.", nil, nil)

func (w *floodWatch) collect(ch chan<- prometheus.Metric) {
	v := 0.0
	if w.isActive() {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(descFloodActive, prometheus.GaugeValue, v)
}
