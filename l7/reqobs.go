package l7

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// reqObservers caches a virtual's request counters and duration
// histograms by site and status code, so that a request hashes and
// looks up no label values. Label values are never deleted, so a cached
// child stays the one the registry exports.
type reqObservers struct {
	sites sync.Map // site name → *siteObservers
}

type siteObservers struct {
	duration prometheus.Observer
	codes    sync.Map // status code → prometheus.Counter
}

// observe counts one answered request and its duration in seconds.
func (o *reqObservers) observe(m *metrics, virtual, site string, status int, seconds float64) {
	v, ok := o.sites.Load(site)
	if !ok {
		v, _ = o.sites.LoadOrStore(site, &siteObservers{duration: m.duration.WithLabelValues(virtual, site)})
	}
	so := v.(*siteObservers)
	c, ok := so.codes.Load(status)
	if !ok {
		c, _ = so.codes.LoadOrStore(status, m.requests.WithLabelValues(virtual, site, strconv.Itoa(status)))
	}
	c.(prometheus.Counter).Inc()
	so.duration.Observe(seconds)
}
