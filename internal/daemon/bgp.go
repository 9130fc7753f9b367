package daemon

import (
	"context"
	"time"

	"github.com/edgeproxy/edgeproxy/bgp"
	"github.com/edgeproxy/edgeproxy/internal/metric"
	"github.com/prometheus/client_golang/prometheus"
)

// Drain waits, after the routes are withdrawn, until no new request has
// arrived for drainQuiet (the routers have moved new flows away), for at
// most drainSettleMax.
const (
	drainQuiet     = 500 * time.Millisecond
	drainSettleMax = 10 * time.Second
)

// applyBGP starts the speaker or brings it to the new neighbours; the
// routes follow once the configuration runs (updateRoutes).
func (d *Daemon) applyBGP(c *change) func(context.Context) error {
	return func(ctx context.Context) error {
		spec := c.nextPlan.BGP
		if spec == nil {
			return nil
		}
		d.mu.Lock()
		sp := d.speaker
		if sp == nil {
			sp = bgp.New(d.log)
			d.speaker = sp
			d.reg.MustRegister(&bgpCollector{sp: sp})
		}
		d.mu.Unlock()
		return sp.Apply(ctx, *spec)
	}
}

// restoreBGP brings the speaker back to the running configuration's
// neighbours when a later step of a reload fails.
func (d *Daemon) restoreBGP(c *change) func(context.Context) error {
	return func(ctx context.Context) error {
		d.mu.Lock()
		sp := d.speaker
		d.mu.Unlock()
		if sp == nil || c.prevPlan == nil || c.prevPlan.BGP == nil {
			return nil
		}
		return sp.Apply(ctx, *c.prevPlan.BGP)
	}
}

// updateRoutes announces each VIP the node can serve now and withdraws
// the others: called whenever readiness, a member's state in the data
// planes or draining changes.
func (d *Daemon) updateRoutes() {
	ready := d.ready() == nil
	d.mu.Lock()
	sp := d.speaker
	ready = ready && d.clusterReady(d.cfg)
	st := bgp.State{Ready: ready, Draining: d.draining, Up: map[string]int{}}
	for k, up := range d.inPlanes {
		if up {
			st.Up[k.Pool]++
		}
	}
	d.mu.Unlock()
	if sp == nil {
		return
	}
	if err := sp.Update(st); err != nil {
		d.log.Error("update bgp routes", "err", err)
	}
}

// withdrawRoutes is the first step of a drain: the routes go, then new
// flows stop arriving as the routers converge. It returns how long
// that took (0 when already drained or without bgp).
func (d *Daemon) withdrawRoutes() time.Duration {
	d.mu.Lock()
	was := d.draining
	d.draining = true
	sp := d.speaker
	d.mu.Unlock()
	if sp == nil || was {
		return 0
	}
	d.updateRoutes()
	start, last, seen := time.Now(), time.Now(), d.requestsServed()
	for time.Since(start) < drainSettleMax && time.Since(last) < drainQuiet {
		time.Sleep(50 * time.Millisecond)
		if n := d.requestsServed(); n != seen {
			seen, last = n, time.Now()
		}
	}
	took := time.Since(start)
	d.log.Info("drain: routes withdrawn, new requests stopped", "after", took.Round(time.Millisecond))
	return took
}

// requestsServed counts the L7 requests answered so far.
func (d *Daemon) requestsServed() uint64 {
	var n uint64
	if d.l7 != nil {
		for _, s := range d.l7.Stats() {
			n += s.Requests
		}
	}
	return n
}

func (d *Daemon) stopBGP() error {
	d.mu.Lock()
	sp := d.speaker
	d.mu.Unlock()
	if sp == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return sp.Stop(ctx)
}

func (d *Daemon) bgpStatus(ctx context.Context) *bgp.Status {
	d.mu.Lock()
	sp := d.speaker
	d.mu.Unlock()
	if sp == nil {
		return nil
	}
	return sp.Status(ctx)
}

// bgpCollector exports the sessions and the routes.
type bgpCollector struct{ sp *bgp.Speaker }

var (
	bgpSessionDesc = prometheus.NewDesc(metric.Name("bgp_session_established"),
		"1 while the BGP session with the neighbour is established.", []string{"neighbor"}, nil)
	bgpRouteDesc = prometheus.NewDesc(metric.Name("bgp_route_announced"),
		"1 while the VIP's route is announced (route health injection).", []string{"prefix"}, nil)
)

func (c *bgpCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- bgpSessionDesc
	ch <- bgpRouteDesc
}

func (c *bgpCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.sp.Status(context.Background())
	if st == nil {
		return
	}
	for _, s := range st.Sessions {
		ch <- prometheus.MustNewConstMetric(bgpSessionDesc, prometheus.GaugeValue, b2f(s.Established()), s.Neighbor)
	}
	for _, r := range st.Routes {
		ch <- prometheus.MustNewConstMetric(bgpRouteDesc, prometheus.GaugeValue, b2f(r.Announced), r.Prefix)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// CmdDrain stops the daemon gracefully: routes withdrawn, new requests
// waited out, open connections finished up to drain_timeout. Its answer
// (DrainResult) comes once the routes are withdrawn and new requests
// have stopped; the daemon then finishes the drain and exits.
const CmdDrain = "drain"

// DrainResult answers CmdDrain.
type DrainResult struct {
	// Withdrawn lists the VIP routes taken back (none without bgp).
	Withdrawn []string `json:"withdrawn"`
	// Settled is how long new requests took to stop after that.
	Settled time.Duration `json:"settled"`
	// DrainTimeout bounds the open connections from now.
	DrainTimeout time.Duration `json:"drain_timeout"`
}

// drainNow withdraws the routes, waits for new requests to stop and asks
// the serve loop to finish the drain.
func (d *Daemon) drainNow() (DrainResult, error) {
	var res DrainResult
	d.mu.Lock()
	sp := d.speaker
	d.mu.Unlock()
	if sp != nil {
		for _, p := range sp.Announced() {
			res.Withdrawn = append(res.Withdrawn, p.String())
		}
	}
	res.Settled = d.withdrawRoutes()
	res.DrainTimeout = d.drainTimeout()
	d.stopOnce.Do(func() { close(d.stopping) })
	return res, nil
}
