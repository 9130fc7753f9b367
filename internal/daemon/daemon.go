// Package daemon is `edgeproxy run`: it joins the host network
// configuration, the XDP fast path, the L7 proxy, the health monitors and
// the admin endpoint, reloads them atomically on SIGHUP and drains them on
// SIGTERM.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/bgp"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/health"
	"github.com/edgeproxy/edgeproxy/internal/cluster"
	"github.com/edgeproxy/edgeproxy/internal/control"
	"github.com/edgeproxy/edgeproxy/internal/hostprobe"
	"github.com/edgeproxy/edgeproxy/internal/member"
	"github.com/edgeproxy/edgeproxy/internal/plan"
	"github.com/edgeproxy/edgeproxy/internal/sdnotify"
	"github.com/edgeproxy/edgeproxy/l4"
	"github.com/edgeproxy/edgeproxy/l7"
	"github.com/edgeproxy/edgeproxy/netcfg"
	"github.com/prometheus/client_golang/prometheus"
)

// Sentinel errors.
var (
	// ErrHost: the host lacks a kernel feature or privilege run needs.
	ErrHost = errors.New("host cannot run edgeproxy")
	// ErrReload: the new configuration was rejected; the old one serves.
	ErrReload = errors.New("reload rejected")
)

// Options configure a Daemon.
type Options struct {
	ConfigPath string
	Version    string
	Logger     *slog.Logger
	// AccessLog receives the L7 access log (nil: Logger).
	AccessLog *slog.Logger
	// FlowLog receives the fastl4 connection log (nil: Logger).
	FlowLog *slog.Logger
	// Cleanup removes the pinned XDP state on exit instead of leaving it
	// for the next start.
	Cleanup bool
	// NetcfgState is the netcfg journal path ("" default, "-" none).
	NetcfgState string
	// MemberState is the file keeping the members' runtime state
	// ("" DefaultMemberState, "-" none).
	MemberState string
	// ControlSocket overrides the file's control.socket ("-": none).
	ControlSocket string
	// ApplyLog, when set, applies the log section of a reloaded file
	// (log.level, log.access: redirected or reopened).
	ApplyLog func(config.Log) error
	// Reload receives a value for every reload request (SIGHUP).
	Reload <-chan struct{}
	// Ready, when set, is closed once everything serves.
	Ready chan<- struct{}
}

// Daemon is a running edgeproxy.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	started time.Time

	// planeMu orders health changes and configuration changes to the
	// data planes.
	planeMu sync.Mutex

	mu     sync.Mutex
	cfg    *config.Config
	loaded time.Time
	// rejected is why the last reload was refused, at rejectedAt.
	rejected   string
	rejectedAt time.Time

	host    *netcfg.Host
	recon   *netcfg.Reconciler
	checker *health.Checker
	adm     *admin.Server
	reloads *admin.Reloads
	reg     prometheus.Registerer
	l4      *fastPath // nil until the first fastl4 virtual; read under mu
	// mirror streams the fastl4 flows to the HA peer (nil: ha.mirror unset).
	mirror  *flowMirror
	pins    *l4.PinLock
	retired *admin.FastPath // a pinned fast path being retired; read under mu
	l7      *l7.Proxy
	plan    *plan.Plan
	// spawn runs a component until the daemon stops.
	spawn func(name string, run func(context.Context) error)
	// inPlanes is whether each member takes new traffic in the data
	// planes, updated after both applied a health change, so /status
	// never runs ahead of what the packets see.
	inPlanes map[memberKey]bool
	// members are the runtime states set with `edgeproxy member`, read
	// under mu; the plan compiles them in.
	members map[poolMember]memberEntry

	ctl      *control.Server
	requests chan request
	// speaker announces the VIPs over BGP (nil without a bgp section);
	// draining withdraws them. Both under mu.
	speaker  *bgp.Speaker
	draining bool
	// stopping is closed by `edgeproxy drain` to end the serve loop.
	stopping chan struct{}
	stopOnce sync.Once
	// pair is the node's role in an HA pair (nil: single host).
	pair *pairNode
	// cluster tells the peers of this node's connections (nil: no
	// cluster section, or not synced with the peers yet).
	cluster atomic.Pointer[cluster.Node]
}

// Run runs the daemon until ctx is done, then drains and returns.
func Run(ctx context.Context, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AccessLog == nil {
		opts.AccessLog = opts.Logger
	}
	if opts.FlowLog == nil {
		opts.FlowLog = opts.Logger
	}
	if opts.MemberState == "" {
		opts.MemberState = DefaultMemberState
	}
	d := &Daemon{opts: opts, log: opts.Logger, started: time.Now(), stopping: make(chan struct{})}
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil {
		return fmt.Errorf("load configuration: %w", err)
	}
	if d.members, err = loadMemberState(opts.MemberState); err != nil {
		return err
	}
	if err := probeHost(plan.HostNeeds(cfg), d.log); err != nil {
		return err
	}
	if err := d.ownPins(cfg); err != nil {
		return err
	}
	return d.run(ctx, cfg)
}

// probeHost runs the host probe `check` shows and says exactly what the
// host lacks for what the configuration needs; warnings are logged.
func probeHost(needs hostprobe.Needs, log *slog.Logger) error {
	var missing []string
	for _, c := range hostprobe.Probe(needs) {
		switch c.Status {
		case hostprobe.StatusError:
			missing = append(missing, c.Name+": "+c.Detail)
		case hostprobe.StatusWarning:
			log.Warn("host check", "check", c.Name, "detail", c.Detail)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrHost, strings.Join(missing, "; "))
	}
	return nil
}

func (d *Daemon) run(ctx context.Context, cfg *config.Config) (err error) {
	defer func() {
		if cerr := d.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if err := d.openControl(cfg); err != nil {
		return err
	}
	d.adm = admin.New(admin.Options{
		Listen:  cfg.Admin.Listen,
		Version: d.opts.Version,
		Ready:   d.ready,
		Status:  d.status,
		Logger:  d.log,
	})
	d.reg = d.adm.Registry()
	d.reloads = admin.NewReloads()
	d.reg.MustRegister(d.reloads)
	d.checker = health.New(health.Options{Logger: d.log, OnChange: d.onHealth})
	d.reg.MustRegister(d.checker, newMemberStateMetric(d))
	l7opts := l7.Options{
		Logger:    d.log,
		AccessLog: d.opts.AccessLog,
		Registry:  d.reg,
		FreeBind:  cfg.HA != nil, // a standby listens on the VIPs it does not hold
	}
	if cfg.Cluster != nil {
		l7opts.OnConn = d.onConn
	}
	d.l7 = l7.New(l7opts)

	// Components run until the daemon has drained, whatever ctx says.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	d.spawn = func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(runCtx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	defer wg.Wait()
	defer cancel()
	d.startHA(cfg)
	if err := d.switchTo(ctx, cfg); err != nil {
		return err
	}
	if cfg.HA != nil && cfg.HA.Mirror != nil {
		if err := d.startMirror(cfg); err != nil {
			return err
		}
	}
	if err := d.startCluster(ctx, cfg); err != nil {
		return err
	}
	if d.fastPath() == nil && d.pins != nil {
		d.spawn("fast path retirement", d.retireFastPath)
	}
	if d.ctl != nil {
		d.spawn("control socket", d.ctl.Serve)
	}
	d.resumeDrains(cfg)
	d.reloads.Record(admin.ConfigHash(d.opts.ConfigPath), nil)
	if cfg.Admin.Listen != "" {
		if _, err := d.adm.Listen(); err != nil {
			return fmt.Errorf("open admin endpoint: %w", err)
		}
		d.spawn("admin", d.adm.Serve)
	}
	d.spawn("health", d.checker.Run)
	d.log.Info("edgeproxy running", "config", d.opts.ConfigPath, "virtuals", len(cfg.Virtuals), "version", d.opts.Version)
	d.notify(sdnotify.Ready, sdnotify.Status("serving "+d.opts.ConfigPath))
	if d.opts.Ready != nil {
		close(d.opts.Ready)
	}
	return d.serve(ctx, errc)
}

// serve reloads on request until ctx is done or a component fails, then
// drains.
func (d *Daemon) serve(ctx context.Context, errc <-chan error) error {
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-d.stopping:
			break loop
		case <-d.opts.Reload:
			_ = d.reloadRecorded(ctx)
		case r := <-d.requests:
			res, err := r.run(ctx)
			r.done <- reply{res, err}
		case runErr = <-errc:
			d.log.Error("component failed", "err", runErr)
			break loop
		}
	}
	d.notify(sdnotify.Stopping, sdnotify.Status("draining"))
	d.drain(ctx)
	return runErr
}

// notify tells systemd (under Type=notify) the daemon's state.
func (d *Daemon) notify(lines ...string) {
	if err := sdnotify.Notify(lines...); err != nil {
		d.log.Warn("tell systemd the daemon's state", "err", err)
	}
}

// upState says which members take traffic now: a member not yet checked
// does (as a new proxy should serve at once); one known down or disabled
// does not.
func (d *Daemon) upState(members []health.Target) map[memberKey]bool {
	up := map[memberKey]bool{}
	state := map[memberKey]health.State{}
	if d.checker != nil {
		for _, s := range d.checker.Snapshot() {
			state[member.New(s.Pool, s.Addr)] = s.State
		}
	}
	for _, m := range members {
		k := m.ID()
		st := state[k]
		up[k] = !m.Disabled && st != health.StateDown && st != health.StateDisabled
	}
	return up
}

type memberKey = member.ID

// onHealth fans a member's change out to both data planes.
func (d *Daemon) onHealth(ev health.Event) {
	if ev.State == health.StateRemoved {
		return
	}
	d.planeMu.Lock()
	defer d.planeMu.Unlock()
	if l4 := d.fastPath(); l4 != nil {
		if err := l4.setUp(ev.Pool, ev.Addr, ev.Up); err != nil {
			d.log.Error("update fast path member", "pool", ev.Pool, "member", ev.Member, "err", err)
		}
	}
	if d.l7 != nil {
		d.l7.SetMemberUp(ev.Pool, ev.Addr, ev.Up)
	}
	d.mu.Lock()
	d.inPlanes[member.New(ev.Pool, ev.Addr)] = ev.Up
	d.mu.Unlock()
	d.updateRoutes()
}

// Reload reads the configuration file again and applies it atomically;
// on any error the running configuration keeps serving. A change to a
// key only a restart applies refuses the whole reload.
func (d *Daemon) Reload(ctx context.Context) error {
	cfg, err := config.Load(d.opts.ConfigPath)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	d.mu.Lock()
	prev := d.cfg
	d.mu.Unlock()
	if err := restartKeys(prev, cfg, running{fastPath: d.fastPath() != nil}); err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	if err := d.switchTo(ctx, cfg); err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	if d.opts.ApplyLog != nil {
		if err := d.opts.ApplyLog(cfg.Log); err != nil {
			d.log.Error("reload: the log settings keep their previous values", "err", err)
		}
	}
	d.log.Info("configuration reloaded", "config", d.opts.ConfigPath, "virtuals", len(cfg.Virtuals))
	return nil
}

func (d *Daemon) ready() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg == nil {
		return errors.New("starting")
	}
	return nil
}

// drain stops accepting, lets L7 connections finish for the largest
// drain_timeout of the L7 virtuals and leaves the XDP state pinned
// (unless Cleanup).
func (d *Daemon) drain(ctx context.Context) {
	d.log.Info("draining")
	d.withdrawRoutes()
	if d.l7 != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.drainTimeout())
		defer cancel()
		if err := d.l7.Shutdown(ctx); err != nil {
			d.log.Warn("drain: connections cut at the drain timeout", "err", err)
		}
	}
}

// drainTimeout is the largest drain_timeout of the running L7 virtuals,
// so that none is cut before its own (the default without any).
func (d *Daemon) drainTimeout() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	var t time.Duration
	if d.cfg != nil {
		for _, v := range d.cfg.Virtuals {
			if v.IsL7() {
				t = max(t, v.DrainTimeout.D())
			}
		}
	}
	if t == 0 {
		t = config.DefaultDrainTimeout.D()
	}
	return t
}

func (d *Daemon) close() error {
	errs := []error{d.stopBGP()}
	if d.ctl != nil {
		errs = append(errs, d.ctl.Close())
	}
	if d.adm != nil {
		errs = append(errs, d.adm.Close())
	}
	if l4 := d.fastPath(); l4 != nil {
		errs = append(errs, l4.close(d.opts.Cleanup))
	}
	if d.host != nil {
		errs = append(errs, d.host.Close())
	}
	errs = append(errs, d.pins.Release())
	return errors.Join(errs...)
}

// pidFile writes the daemon's pid for `edgeproxy reload`.
func WritePIDFile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	if err := os.WriteFile(path, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o644); err != nil {
		return nil, fmt.Errorf("write pid file: %w", err)
	}
	return func() { _ = os.Remove(path) }, nil
}
