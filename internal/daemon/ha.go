package daemon

import (
	"context"
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

func (p *pairNode) set(r ha.Role) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r != p.role {
		p.role, p.since = r, time.Now()
	}
}

// state returns the role and the shared addresses held. Before keepalived
// has said anything, a node holding every shared address is active and
// one holding none standby.
func (p *pairNode) state() *admin.HA {
	p.mu.Lock()
	role, since, shared := p.role, p.since, p.shared
	p.mu.Unlock()
	var held []netip.Addr
	for _, ifname := range []string{p.ext, p.in} {
		h, _ := ha.Held(ifname, shared) // a missing NIC holds nothing
		held = append(held, h...)
	}
	if role == ha.RoleUnknown && len(shared) > 0 {
		switch len(held) {
		case len(shared):
			role = ha.RoleActive
		case 0:
			role = ha.RoleStandby
		}
	}
	out := &admin.HA{Role: string(role), Since: since, Held: []string{}, Shared: len(shared)}
	for _, a := range held {
		out.Held = append(out.Held, a.String())
	}
	return out
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
