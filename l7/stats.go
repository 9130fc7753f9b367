package l7

import (
	"maps"
	"net/netip"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	memberid "github.com/edgeproxy/edgeproxy/internal/member"
)

// VirtualStats are one virtual's counters since the proxy started.
type VirtualStats struct {
	Requests    uint64 // requests answered
	Errors      uint64 // of those, answered with a 5xx status
	Connections uint64 // client connections open now
}

// Stats returns the counters of every virtual that has served, by name.
func (p *Proxy) Stats() map[string]VirtualStats {
	out := map[string]VirtualStats{}
	collect(p.metrics.requests, func(m *dto.Metric) {
		v := labelOf(m, "virtual")
		s := out[v]
		n := uint64(m.GetCounter().GetValue())
		s.Requests += n
		if code, _ := strconv.Atoi(labelOf(m, "code")); code >= 500 {
			s.Errors += n
		}
		out[v] = s
	})
	collect(p.metrics.active, func(m *dto.Metric) {
		if m.GetGauge().GetValue() <= 0 {
			return // the series every virtual has from the start
		}
		v := labelOf(m, "virtual")
		s := out[v]
		s.Connections += uint64(max(m.GetGauge().GetValue(), 0))
		out[v] = s
	})
	return out
}

// collect calls f with each series of c.
func collect(c prometheus.Collector, f func(*dto.Metric)) {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) == nil {
			f(&d)
		}
	}
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// MemberStats returns the requests forwarded to each member and how many
// were answered with a 5xx status, by pool and member address (its ports
// added up).
func (p *Proxy) MemberStats() map[memberid.ID]VirtualStats {
	out := map[memberid.ID]VirtualStats{}
	collect(p.metrics.memberRequests, func(m *dto.Metric) {
		ap, err := netip.ParseAddrPort(labelOf(m, "member"))
		if err != nil {
			return
		}
		id := memberid.New(labelOf(m, "pool"), ap.Addr())
		s := out[id]
		n := uint64(m.GetCounter().GetValue())
		s.Requests += n
		if labelOf(m, "class") == "5xx" {
			s.Errors += n
		}
		out[id] = s
	})
	return out
}

// Certificates returns the expiry of every certificate file in service.
func (p *Proxy) Certificates() map[string]time.Time {
	out := map[string]time.Time{}
	for _, vh := range p.vhosts() {
		if vh.certs != nil {
			maps.Copy(out, vh.certs.expiry())
		}
	}
	return out
}
