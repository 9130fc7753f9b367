package netcfg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	metricname "github.com/edgeproxy/edgeproxy/internal/metric"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ReconcilerOptions tune a Reconciler.
type ReconcilerOptions struct {
	// Settle is how long events are collected before the host is checked
	// (default 50ms): a burst of changes costs one check.
	Settle time.Duration
	// Resync is the interval of a full check without events; sysctls
	// change without netlink events (default 10s).
	Resync time.Duration
	// Retry is the delay before checking again after a failed repair
	// (default 1s).
	Retry time.Duration
	// Watch is the interval at which the sysctls other planes need are
	// read (default 200ms): one that someone changed (a write to
	// all/forwarding resets lo/forwarding) is restored without waiting
	// for Resync.
	Watch time.Duration
	// Budget is how many times an object is restored at once before
	// another party fighting over it is given Backoff between repairs
	// (default 10 and 5s); Quiet without a repair ends the fight
	// (default 1m).
	Budget  int
	Backoff time.Duration
	Quiet   time.Duration
}

// Reconciler keeps the host as the file says: it listens to netlink link,
// address, route and neighbour events in the Host's namespace and
// restores whatever contradicts the state of the last Apply (or
// SetSpec), logging the first repair of an object and counting every one
// in edgeproxy_netcfg_repairs_total{kind}. Another party that keeps
// changing an object gets Budget repairs, then at most one per Backoff
// (counted in edgeproxy_netcfg_conflicts_total{kind}). With
// network.manage false it logs the drift and changes nothing; every
// finding is logged once and counted in edgeproxy_netcfg_drift{kind}.
//
// A Reconciler is a prometheus.Collector.
type Reconciler struct {
	h    *Host
	opts ReconcilerOptions
	log  *slog.Logger

	mu     sync.Mutex
	count  map[Kind]int
	fights map[string]*fight
	said   map[string]bool // findings logged, while they last

	kick      chan struct{}
	repairs   *prometheus.CounterVec
	conflicts *prometheus.CounterVec
	failures  *prometheus.CounterVec
	drift     *prometheus.GaugeVec
	checks    prometheus.Counter
}

// NewReconciler returns a Reconciler for spec on h: spec is the state it
// keeps until the next Apply or SetSpec.
func NewReconciler(h *Host, spec *Spec, opts ReconcilerOptions) (*Reconciler, error) {
	st, err := Desired(spec)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.setDesired(st)
	h.mu.Unlock()
	r := &Reconciler{
		h: h, opts: opts.withDefaults(), log: h.log,
		kick: make(chan struct{}, 1), count: map[Kind]int{}, fights: map[string]*fight{}, said: map[string]bool{},
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricname.Name("netcfg_repairs_total"),
			Help: "Host network changes that contradicted the configuration and were restored, by kind (link, address, route, sysctl, neighbour).",
		}, []string{"kind"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricname.Name("netcfg_conflicts_total"),
			Help: "Contradictions of an object netcfg had already restored (another party fighting over it), by kind; past the repair budget they are restored at most once per backoff.",
		}, []string{"kind"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: metricname.Name("netcfg_repair_failures_total"),
			Help: "Repairs of the host network that failed (retried), by kind.",
		}, []string{"kind"}),
		drift: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: metricname.Name("netcfg_drift"),
			Help: "Differences between the host and the file that netcfg reports and does not change (plan lists them with !, or all with network.manage false), by kind.",
		}, []string{"kind"}),
		checks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricname.Name("netcfg_checks_total"),
			Help: "Comparisons of the host network with the configuration.",
		}),
	}
	for _, k := range []Kind{KindLink, KindAddress, KindRoute, KindSysctl, KindNeighbour} {
		r.repairs.WithLabelValues(string(k))
		r.conflicts.WithLabelValues(string(k))
		r.failures.WithLabelValues(string(k))
		r.drift.WithLabelValues(string(k))
	}
	return r, nil
}

func (o ReconcilerOptions) withDefaults() ReconcilerOptions {
	if o.Settle <= 0 {
		o.Settle = 50 * time.Millisecond
	}
	if o.Resync <= 0 {
		o.Resync = 10 * time.Second
	}
	if o.Retry <= 0 {
		o.Retry = time.Second
	}
	if o.Watch <= 0 {
		o.Watch = 200 * time.Millisecond
	}
	if o.Budget <= 0 {
		o.Budget = 10
	}
	if o.Backoff <= 0 {
		o.Backoff = 5 * time.Second
	}
	if o.Quiet <= 0 {
		o.Quiet = time.Minute
	}
	return o
}

// SetSpec switches to a new spec (the compiled one after a reload)
// without changing the host, waiting for an Apply or repair under way,
// and checks the host against it.
func (r *Reconciler) SetSpec(spec *Spec) error {
	st, err := Desired(spec)
	if err != nil {
		return err
	}
	r.h.mu.Lock()
	r.h.setDesired(st)
	r.h.mu.Unlock()
	r.Trigger()
	return nil
}

// Trigger asks for a check of the host soon.
func (r *Reconciler) Trigger() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Describe implements prometheus.Collector.
func (r *Reconciler) Describe(ch chan<- *prometheus.Desc) {
	r.repairs.Describe(ch)
	r.conflicts.Describe(ch)
	r.failures.Describe(ch)
	r.drift.Describe(ch)
	r.checks.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *Reconciler) Collect(ch chan<- prometheus.Metric) {
	r.repairs.Collect(ch)
	r.conflicts.Collect(ch)
	r.failures.Collect(ch)
	r.drift.Collect(ch)
	r.checks.Collect(ch)
}

// Repairs returns the number of repairs of a kind so far.
func (r *Reconciler) Repairs(k Kind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count[k]
}

// Run watches the host until ctx is done. It checks the host once at
// start, then on every relevant netlink event (after Settle), every
// Resync, and Retry after a failed repair.
func (r *Reconciler) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan struct{}, 1)
	subErr := make(chan error, 1)
	go r.watch(ctx, events, subErr)

	settle := time.NewTimer(0) // first check at once
	defer settle.Stop()
	resync := time.NewTicker(r.opts.Resync)
	defer resync.Stop()
	watch := time.NewTicker(r.opts.Watch)
	defer watch.Stop()
	pending := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-subErr:
			return err
		case <-events:
			if !pending {
				pending = true
				settle.Reset(r.opts.Settle)
			}
		case <-r.kick:
			if !pending {
				pending = true
				settle.Reset(r.opts.Settle)
			}
		case <-resync.C:
			if !pending {
				pending = true
				settle.Reset(0)
			}
		case <-watch.C:
			if !pending && r.requiredDrift() {
				pending = true
				settle.Reset(0)
			}
		case <-settle.C:
			pending = false
			if !r.check() {
				pending = true
				settle.Reset(r.opts.Retry)
			}
		}
	}
}

// requiredDrift reports whether a sysctl another plane needs differs
// from what it wants.
func (r *Reconciler) requiredDrift() bool {
	st := r.h.desiredState()
	if st == nil {
		return false
	}
	var req []Sysctl
	var keys []string
	for _, s := range st.Sysctls {
		if s.required {
			req, keys = append(req, s), append(keys, s.Key)
		}
	}
	if len(req) == 0 {
		return false
	}
	cur, err := r.h.readSysctls(keys)
	if err != nil {
		return true // the check says what is wrong
	}
	cs, err := sysctlChanges(req, cur)
	return err != nil || len(Changes(cs)) > 0
}

// watch subscribes to netlink events and signals relevant ones; it
// resubscribes when a subscription breaks.
func (r *Reconciler) watch(ctx context.Context, events chan<- struct{}, fatal chan<- error) {
	signal := func() {
		select {
		case events <- struct{}{}:
		default:
		}
	}
	backoff := 100 * time.Millisecond
	for first := true; ctx.Err() == nil; first = false {
		err := r.subscribe(ctx, signal)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errSubscribe) && (first || backoff >= 30*time.Second) {
			fatal <- err
			return
		}
		r.log.Warn("netcfg: netlink subscription ended, resubscribing", "err", err)
		signal() // something may have been missed
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

var errSubscribe = errors.New("subscribe to netlink events")

// subscribe runs one set of subscriptions until one of them breaks or ctx
// is done.
func (r *Reconciler) subscribe(ctx context.Context, signal func()) error {
	done := make(chan struct{})
	defer close(done)
	broken := make(chan error, 4)
	onErr := func(err error) {
		select {
		case broken <- err:
		default:
		}
	}
	ns := r.h.nsHandle()
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	routes := make(chan netlink.RouteUpdate, 64)
	neighs := make(chan netlink.NeighUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: ns, ErrorCallback: onErr, ListExisting: true}); err != nil {
		return fmt.Errorf("%w (links): %v", errSubscribe, err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: ns, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("%w (addresses): %v", errSubscribe, err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: ns, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("%w (routes): %v", errSubscribe, err)
	}
	if err := netlink.NeighSubscribeWithOptions(neighs, done, netlink.NeighSubscribeOptions{Namespace: ns, ErrorCallback: onErr}); err != nil {
		return fmt.Errorf("%w (neighbours): %v", errSubscribe, err)
	}
	// names maps the indexes of links to their names, from the link
	// updates (the first ones list the existing links).
	names := map[int32]string{}
	mine := func(index int) bool {
		name, ok := names[int32(index)]
		if !ok {
			return false
		}
		st := r.h.desiredState()
		if st == nil {
			return false
		}
		for _, l := range st.Links {
			if l == name {
				return true
			}
		}
		return false
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-broken:
			return err
		case u, ok := <-links:
			if !ok {
				return errors.New("link updates closed")
			}
			if u.Header.Type == unix.RTM_DELLINK {
				delete(names, u.Index)
			} else if u.Link != nil {
				names[u.Index] = u.Link.Attrs().Name
			}
			if mine(int(u.Index)) || u.Header.Type == unix.RTM_DELLINK {
				signal()
			}
		case u, ok := <-addrs:
			if !ok {
				return errors.New("address updates closed")
			}
			if mine(u.LinkIndex) {
				signal()
			}
		case u, ok := <-routes:
			if !ok {
				return errors.New("route updates closed")
			}
			if u.Table == unix.RT_TABLE_MAIN || u.Table == 0 {
				signal()
			}
		case u, ok := <-neighs:
			if !ok {
				return errors.New("neighbour updates closed")
			}
			if u.Type == unix.RTM_DELNEIGH && mine(u.LinkIndex) {
				signal()
			}
		}
	}
}
