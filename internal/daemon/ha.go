package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/ha"
	"github.com/edgeproxy/edgeproxy/internal/metric"
)

// pairNode is the daemon's view of its role in an HA pair.
type pairNode struct {
	ext, in string // interfaces
	mu      sync.Mutex
	role    ha.Role
	since   time.Time
	shared  []netip.Addr // VIPs and floating addresses
	desc    *prometheus.Desc
	// hold is the file keepalived tracks (ha standby), advert its
	// advertisement interval; handing serialises hand-overs.
	hold    string
	advert  time.Duration
	handing sync.Mutex
	// serveErr is the last answer of the check keepalived runs (ha
	// check) as the daemon computed it for a status, serving since when
	// it has been nil (zero: not yet).
	serveErr error
	serving  time.Time
}

// startHA follows keepalived's notifications when the file makes this
// host a pair node; the role shows in status and a metric, and decides
// whether this node orders ACME certificates.
func (d *Daemon) startHA(cfg *config.Config) {
	if cfg.HA == nil {
		return
	}
	p := &pairNode{ext: cfg.Network.External.Interface, in: cfg.Network.Internal.Interface, role: ha.RoleUnknown, since: time.Now(),
		desc: prometheus.NewDesc(metric.Name("ha_role"),
			"This node's role in the HA pair (1 for the current role): keepalived's last word, or active while the node holds every shared address.",
			[]string{"role"}, nil)}
	p.hold, p.advert = cfg.HA.HoldFile(), cfg.HA.AdvertInterval.D()
	// A hold left by a daemon that stopped in a hand-over ends here.
	if err := ha.SetHold(p.hold, false); err != nil {
		d.log.Error("keepalived may keep this node from the active role", "err", err)
	}
	d.pair = p
	d.reg.MustRegister(p)
	fifo := cfg.HA.Fifo
	d.spawn("keepalived notifications", func(ctx context.Context) error {
		return ha.Follow(ctx, fifo, func(r ha.Role) {
			d.log.Info("ha role", "role", r)
			p.set(r)
			d.l7.SetACMEActive(r == ha.RoleActive) // only the active node orders
		})
	})
}

// setShared records the addresses keepalived moves, on start and reload.
func (d *Daemon) setShared(cfg *config.Config) {
	if d.pair == nil || cfg.HA == nil {
		return
	}
	shared := cfg.VIPs()
	for _, f := range cfg.HA.Floating() {
		shared = append(shared, f.Addr())
	}
	d.pair.mu.Lock()
	d.pair.shared = shared
	d.pair.mu.Unlock()
}

// observe records whether the node can serve, as the check keepalived
// runs answers from the same status.
func (p *pairNode) observe(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case err != nil:
		p.serving = time.Time{}
	case p.serving.IsZero():
		p.serving = time.Now()
	}
	p.serveErr = err
}

func (p *pairNode) set(r ha.Role) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r != p.role {
		p.role, p.since = r, time.Now()
	}
}

// state returns the role and the shared addresses held. Before keepalived
// has said anything since the daemon started (it says nothing again
// after a daemon restart), a node holding every shared address is
// active, and one holding none is in fault while keepalived keeps it
// there (faultCause), standby otherwise.
func (p *pairNode) state() *admin.HA {
	p.mu.Lock()
	role, since, shared := p.role, p.since, p.shared
	serveErr, serving := p.serveErr, p.serving
	p.mu.Unlock()
	var held []netip.Addr
	for _, ifname := range []string{p.ext, p.in} {
		h, _ := ha.Held(ifname, shared) // a missing NIC holds nothing
		held = append(held, h...)
	}
	var cause string
	if role == ha.RoleUnknown && len(shared) > 0 {
		switch len(held) {
		case len(shared):
			role = ha.RoleActive
		case 0:
			role = ha.RoleStandby
			if cause = p.faultCause(serveErr, serving); cause != "" {
				role = ha.RoleFault
			}
		}
	}
	out := &admin.HA{Role: string(role), Since: since, Held: []string{}, Shared: len(shared), Cause: cause}
	for _, a := range held {
		out.Held = append(out.Held, a.String())
	}
	return out
}

// faultCause says why keepalived holds the node in FAULT, from what puts
// an instance there: its interface down, or the check failing (or not yet
// passing for CheckRise); "" when nothing does. It is derived rather than
// asked of keepalived (a state dump on SIGUSR1 needs its pid, a signal
// across the daemon's sandbox and a file format of its version); the
// check is the daemon's own answer, so only its rise is estimated.
func (p *pairNode) faultCause(serveErr error, serving time.Time) string {
	for _, ifname := range []string{p.ext, p.in} {
		if up, err := ha.Running(ifname); err != nil || !up {
			return ifname + " is not running"
		}
	}
	switch {
	case serveErr != nil:
		return serveErr.Error()
	case serving.IsZero() || time.Since(serving) < ha.CheckRise:
		return "the check has not passed for " + ha.CheckRise.String() + " yet"
	}
	return ""
}

func (p *pairNode) Describe(ch chan<- *prometheus.Desc) { ch <- p.desc }

func (p *pairNode) Collect(ch chan<- prometheus.Metric) {
	cur := p.state().Role
	for _, r := range ha.Roles {
		v := 0.0
		if string(r) == cur {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(p.desc, prometheus.GaugeValue, v, string(r))
	}
}

// flushMirror sends the peer the flows opened since the mirror last
// did, before a planned switchover; a failure leaves those flows to the
// fallbacks of an unplanned one, and is logged.
func (d *Daemon) flushMirror(ctx context.Context) {
	if d.mirror == nil {
		return
	}
	if err := d.mirror.flush(ctx); err != nil {
		d.log.Warn("flow mirroring: the peer may lack the newest flows when it takes over", "err", err)
	}
}

// CmdHAStandby hands the active role over to the peer (HAStandbyResult).
const CmdHAStandby = "ha-standby"

// HAStandbyResult answers CmdHAStandby once the peer holds the role.
type HAStandbyResult struct {
	// Released is how long keepalived took to give up the shared
	// addresses after the hold was written.
	Released time.Duration `json:"released"`
}

// handOver is a planned switchover: first (flush) the peer learns the
// flows opened since the mirror last sent, then the hold file makes
// keepalived give up the active role at once (FAULT, the peer takes
// over); it stays written while the peer takes the role and advertises,
// then is cleared so that this node is a standby ready for the next
// failover. A node the peer did not relieve (down, not ready) takes the
// role back and says so.
func (p *pairNode) handOver(ctx context.Context, flush func(context.Context)) (*HAStandbyResult, error) {
	if !p.handing.TryLock() {
		return nil, errors.New("hand over the active role: a hand-over is under way already")
	}
	defer p.handing.Unlock()
	if st := p.state(); st.Role != string(ha.RoleActive) {
		return nil, fmt.Errorf("hand over the active role: this node is %s, not active: nothing to hand over", st.Role)
	}
	flush(ctx)
	start := time.Now()
	if err := ha.SetHold(p.hold, true); err != nil {
		return nil, fmt.Errorf("hand over the active role: %w", err)
	}
	released := p.await(ctx, 5*time.Second, func(st *admin.HA) bool { return st.Role != string(ha.RoleActive) && len(st.Held) == 0 })
	took := time.Since(start)
	if released {
		// The peer takes over within about three intervals.
		sleepCtx(ctx, 3*p.advert+500*time.Millisecond)
	}
	if err := ha.SetHold(p.hold, false); err != nil {
		return nil, fmt.Errorf("hand over the active role: %w", err)
	}
	if !released {
		return nil, fmt.Errorf("hand over the active role: keepalived did not give up the shared addresses within 5s: is it running with the configuration edgeproxy ha keepalived-conf prints (track_file %s)?", p.hold)
	}
	if p.await(ctx, 3*p.advert+500*time.Millisecond, func(st *admin.HA) bool { return st.Role == string(ha.RoleActive) }) {
		return nil, errors.New("hand over the active role: no peer took it, so this node took it back: check that the peer runs and is ready (edgeproxy status there)")
	}
	return &HAStandbyResult{Released: took}, nil
}

// await polls the node's state until ok or timeout; it says whether ok
// came.
func (p *pairNode) await(ctx context.Context, timeout time.Duration, ok func(*admin.HA) bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if ok(p.state()) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		sleepCtx(ctx, 10*time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
