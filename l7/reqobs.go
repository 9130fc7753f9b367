package l7

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// reqObservers caches a virtual's request counters and duration
// histograms by site and status code, so that a request hashes and
// looks up no label values. Label values are never deleted, so a cached
// child stays the one the registry exports.
type reqObservers struct {
	sites   sync.Map // site name → *siteObservers
	members sync.Map // memberLabels → *memberObservers

	bytesOnce         sync.Once
	bytesIn, bytesOut prometheus.Counter
}

type memberLabels struct{ pool, member string }

// memberObservers are a member's response time histogram and its request
// counters by code class (codeClass; index status/100, 0 for "other").
type memberObservers struct {
	duration prometheus.Observer
	classes  [6]atomic.Pointer[prometheus.Counter]
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

// bytes counts a request's body bytes read from the client and the
// response's written to it.
func (o *reqObservers) bytes(m *metrics, virtual string, in, out int64) {
	o.bytesOnce.Do(func() {
		o.bytesIn, o.bytesOut = m.bytes.WithLabelValues(virtual, "in"), m.bytes.WithLabelValues(virtual, "out")
	})
	o.bytesIn.Add(float64(in))
	o.bytesOut.Add(float64(out))
}

// member returns the observers of a member of pool.
func (o *reqObservers) member(m *metrics, pool, member string) *memberObservers {
	key := memberLabels{pool, member}
	v, ok := o.members.Load(key)
	if !ok {
		v, _ = o.members.LoadOrStore(key, &memberObservers{duration: m.memberDuration.WithLabelValues(pool, member)})
	}
	return v.(*memberObservers)
}

// request counts one of the member's answers by the class of status.
func (mo *memberObservers) request(m *metrics, pool, member string, status int) {
	i := 0
	if status >= 100 && status <= 599 {
		i = status / 100
	}
	c := mo.classes[i].Load()
	if c == nil {
		v := m.memberRequests.WithLabelValues(pool, member, codeClass(status))
		c = &v
		mo.classes[i].Store(c)
	}
	(*c).Inc()
}
