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
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/health"
	"github.com/edgeproxy/edgeproxy/internal/hostprobe"
	"github.com/edgeproxy/edgeproxy/internal/member"
	"github.com/edgeproxy/edgeproxy/internal/plan"
	"github.com/edgeproxy/edgeproxy/l7"
	"github.com/edgeproxy/edgeproxy/netcfg"
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
	// Cleanup removes the pinned XDP state on exit instead of leaving it
	// for the next start.
	Cleanup bool
	// NetcfgState is the netcfg journal path ("" default, "-" none).
	NetcfgState string
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

	host     *netcfg.Host
	recon    *netcfg.Reconciler
	resolver *netcfg.Resolver
	checker  *health.Checker
	adm      *admin.Server
	l4       *fastPath
	l7       *l7.Proxy
	plan     *plan.Plan
	// inPlanes is whether each member takes new traffic in the data
	// planes, updated after both applied a health change, so /status
	// never runs ahead of what the packets see.
	inPlanes map[memberKey]bool
}

// Run runs the daemon until ctx is done, then drains and returns.
func Run(ctx context.Context, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AccessLog == nil {
		opts.AccessLog = opts.Logger
	}
	d := &Daemon{opts: opts, log: opts.Logger, started: time.Now()}
	cfg, err := config.Load(opts.ConfigPath)
	if err != nil {
		return fmt.Errorf("load configuration: %w", err)
	}
	if err := probeHost(cfg); err != nil {
		return err
	}
	return d.run(ctx, cfg)
}

// probeHost says exactly what the host lacks for the configuration.
func probeHost(cfg *config.Config) error {
	var missing []string
	k, err := hostprobe.KernelVersion()
	if err != nil {
		missing = append(missing, err.Error())
	} else {
		for _, f := range k.Missing() {
			missing = append(missing, fmt.Sprintf("kernel %s lacks %s (needs %s)", k, f.Name, f.Version()))
		}
	}
	caps, err := hostprobe.EffectiveCaps()
	if err == nil && !caps.CanLoadBPF() && cfg.NeedsXDP() {
		missing = append(missing, "no CAP_BPF/CAP_SYS_ADMIN: run as root or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (see examples/edgeproxy.service)")
	}
	if cfg.NeedsXDP() {
		if err := hostprobe.CheckBTF(hostprobe.BTFPath); err != nil {
			missing = append(missing, err.Error())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrHost, joinLines(missing))
	}
	return nil
}

func joinLines(s []string) string {
	out := ""
	for i, l := range s {
		if i > 0 {
			out += "; "
		}
		out += l
	}
	return out
}

func (d *Daemon) run(ctx context.Context, cfg *config.Config) (err error) {
	defer func() {
		if cerr := d.close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if err := d.startNetwork(cfg); err != nil {
		return err
	}
	pl, err := plan.Compile(ctx, cfg, d.resolver.Resolve)
	if err != nil {
		return fmt.Errorf("compile configuration: %w", err)
	}
	d.adm = admin.New(admin.Options{
		Listen:  cfg.Admin.Listen,
		Version: d.opts.Version,
		Ready:   d.ready,
		Status:  d.status,
		Logger:  d.log,
	})
	reg := d.adm.Registry()
	d.checker = health.New(health.Options{Logger: d.log, OnChange: d.onHealth})
	reg.MustRegister(d.checker)
	if d.recon != nil {
		reg.MustRegister(d.recon)
	}

	if d.l4, err = openFastPath(pl.L4, d.log, reg); err != nil {
		return err
	}
	d.l7 = l7.New(l7.Options{
		Logger:    d.log,
		AccessLog: d.opts.AccessLog,
		Registry:  reg,
	})
	if err := d.apply(ctx, cfg, pl); err != nil {
		return err
	}
	if cfg.Admin.Listen != "" {
		if _, err := d.adm.Listen(); err != nil {
			return fmt.Errorf("open admin endpoint: %w", err)
		}
	}

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 8)
	spawn := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(runCtx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	spawn("health", d.checker.Run)
	if d.recon != nil {
		spawn("netcfg", d.recon.Run)
	}
	if d.l4 != nil {
		spawn("fast path", d.l4.run)
	}
	if cfg.Admin.Listen != "" {
		spawn("admin", d.adm.Serve)
	}
	d.log.Info("edgeproxy running", "config", d.opts.ConfigPath, "virtuals", len(cfg.Virtuals), "version", d.opts.Version)
	if d.opts.Ready != nil {
		close(d.opts.Ready)
	}

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-d.opts.Reload:
			if err := d.Reload(ctx); err != nil {
				d.log.Error("reload rejected; the running configuration keeps serving", "err", err)
			}
		case runErr = <-errc:
			d.log.Error("component failed", "err", runErr)
			break loop
		}
	}
	d.drain()
	cancel()
	wg.Wait()
	return runErr
}

// startNetwork applies the network section and starts its reconciler.
func (d *Daemon) startNetwork(cfg *config.Config) error {
	r, err := netcfg.NewResolver(cfg.Network.Hosts, cfg.Network.Resolver)
	if err != nil {
		return fmt.Errorf("build hosts table: %w", err)
	}
	d.resolver = r
	if cfg.Network.External.Interface == "" && cfg.Network.Internal.Interface == "" {
		return nil
	}
	h, err := netcfg.Open(netcfg.Options{StatePath: d.opts.NetcfgState, Logger: d.log})
	if err != nil {
		return fmt.Errorf("open host network: %w", err)
	}
	d.host = h
	spec := plan.Network(cfg)
	if err := applyNetwork(h, spec); err != nil {
		return fmt.Errorf("apply network section: %w", err)
	}
	d.recon, err = netcfg.NewReconciler(h, spec, netcfg.ReconcilerOptions{})
	if err != nil {
		return fmt.Errorf("start network reconciler: %w", err)
	}
	return nil
}

// applyNetwork gives netcfg its spec: all of it when the file manages the
// host, else only the sysctls the planes need (netcfg reports the rest).
func applyNetwork(h *netcfg.Host, spec *netcfg.Spec) error {
	var err error
	if spec.Managed {
		_, err = h.Apply(spec)
	} else if _, err = h.ApplyRequired(spec); errors.Is(err, netcfg.ErrNoNetwork) {
		err = nil // nothing to manage, nothing required
	}
	return err
}

// apply makes cfg the running configuration: listeners first (the step
// most likely to fail, for example an address in use), then the fast
// path, then the monitors. A failure leaves the previous configuration in
// place.
func (d *Daemon) apply(_ context.Context, cfg *config.Config, pl *plan.Plan) error {
	d.mu.Lock()
	prev, prevPlan := d.cfg, d.plan
	d.mu.Unlock()

	if err := d.applyPlanes(cfg, pl, prev, prevPlan); err != nil {
		return err
	}
	if err := d.checker.Update(pl.Health.Targets, pl.Health.Monitors); err != nil {
		err = fmt.Errorf("apply monitors: %w", err)
		if prev != nil {
			if rerr := d.applyPlanes(prev, prevPlan, nil, nil); rerr != nil {
				err = errors.Join(err, fmt.Errorf("restore the previous configuration: %w", rerr))
			}
		}
		return err
	}
	if d.recon != nil {
		// At start too: the reconciler began with the members known
		// without DNS; pl.Network has every resolved member.
		if err := d.recon.SetSpec(pl.Network); err != nil {
			return fmt.Errorf("apply network section: %w", err)
		}
	}
	d.mu.Lock()
	d.cfg, d.plan, d.loaded = cfg, pl, time.Now()
	d.mu.Unlock()
	return nil
}

// applyPlanes gives pl to the L7 proxy and cfg to the fast path, with
// the members' current health; when the fast path refuses it, the L7
// proxy goes back to prev. Health changes wait meanwhile, so none is lost
// between reading the health and the planes taking it.
func (d *Daemon) applyPlanes(cfg *config.Config, pl *plan.Plan, prev *config.Config, prevPlan *plan.Plan) error {
	d.planeMu.Lock()
	defer d.planeMu.Unlock()
	up := d.upState(pl.Health.Targets)
	if err := d.l7.Apply(pl.L7); err != nil {
		return fmt.Errorf("apply L7 virtuals: %w", err)
	}
	for k, u := range up {
		d.l7.SetMemberUp(k.Pool, k.Addr, u)
	}
	if d.l4 != nil {
		if err := d.l4.apply(pl.L4, up); err != nil {
			err = fmt.Errorf("apply fastl4 virtuals: %w", err)
			if prev != nil {
				if rerr := d.l7.Apply(prevPlan.L7); rerr != nil {
					err = errors.Join(err, fmt.Errorf("restore L7 virtuals: %w", rerr))
				}
			}
			return err
		}
	}
	d.mu.Lock()
	d.inPlanes = up
	d.mu.Unlock()
	return nil
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
	if d.l4 != nil {
		if err := d.l4.setUp(ev.Pool, ev.Addr, ev.Up); err != nil {
			d.log.Error("update fast path member", "pool", ev.Pool, "member", ev.Member, "err", err)
		}
	}
	if d.l7 != nil {
		d.l7.SetMemberUp(ev.Pool, ev.Addr, ev.Up)
	}
	d.mu.Lock()
	d.inPlanes[member.New(ev.Pool, ev.Addr)] = ev.Up
	d.mu.Unlock()
}

// Reload reads the configuration file again and applies it atomically;
// on any error the running configuration keeps serving.
func (d *Daemon) Reload(ctx context.Context) error {
	cfg, err := config.Load(d.opts.ConfigPath)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	r, err := netcfg.NewResolver(cfg.Network.Hosts, cfg.Network.Resolver)
	if err != nil {
		return fmt.Errorf("%w: build hosts table: %w", ErrReload, err)
	}
	pl, err := plan.Compile(ctx, cfg, r.Resolve)
	if err != nil {
		return fmt.Errorf("%w: compile configuration: %w", ErrReload, err)
	}
	if d.host != nil {
		if err := applyNetwork(d.host, pl.Network); err != nil {
			return fmt.Errorf("%w: apply network section: %w", ErrReload, err)
		}
	}
	d.mu.Lock()
	old := d.resolver
	d.resolver = r
	d.mu.Unlock()
	if err := d.apply(ctx, cfg, pl); err != nil {
		d.mu.Lock()
		d.resolver = old
		d.mu.Unlock()
		if d.host != nil {
			if nerr := applyNetwork(d.host, d.plan.Network); nerr != nil {
				err = errors.Join(err, fmt.Errorf("restore network section: %w", nerr))
			}
		}
		return fmt.Errorf("%w: %w", ErrReload, err)
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

// drain stops accepting, lets L7 connections finish for the configured
// drain time and leaves the XDP state pinned (unless Cleanup).
func (d *Daemon) drain() {
	d.log.Info("draining")
	if d.l7 != nil {
		ctx, cancel := context.WithTimeout(context.Background(), d.drainTimeout())
		defer cancel()
		if err := d.l7.Shutdown(ctx); err != nil {
			d.log.Warn("drain: connections cut at the drain timeout", "err", err)
		}
	}
}

func (d *Daemon) drainTimeout() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	t := 30 * time.Second
	if d.cfg != nil {
		for _, v := range d.cfg.Virtuals {
			if v.IsL7() && v.DrainTimeout.D() > 0 {
				t = v.DrainTimeout.D()
			}
		}
	}
	return t
}

func (d *Daemon) close() error {
	var errs []error
	if d.adm != nil {
		errs = append(errs, d.adm.Close())
	}
	if d.l4 != nil {
		errs = append(errs, d.l4.close(d.opts.Cleanup))
	}
	if d.host != nil {
		errs = append(errs, d.host.Close())
	}
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
