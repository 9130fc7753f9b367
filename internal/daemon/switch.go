package daemon

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/plan"
	"github.com/edgeproxy/edgeproxy/netcfg"
)

// step is one part of switching the running configuration: apply makes
// the change, restore undoes it when a later step fails.
type step struct {
	name    string
	apply   func(context.Context) error
	restore func(context.Context) error
}

// runSteps applies steps in order. When step k fails, it restores steps
// k-1 down to 0 and returns the failure joined with any restore error.
func runSteps(ctx context.Context, steps []step) error {
	for k, s := range steps {
		err := ctx.Err()
		if err == nil {
			err = s.apply(ctx)
		}
		if err == nil {
			continue
		}
		err = fmt.Errorf("%s: %w", s.name, err)
		// Restoring must finish even when the reload was cancelled.
		rctx := context.WithoutCancel(ctx)
		for j := k - 1; j >= 0; j-- {
			if steps[j].restore == nil {
				continue
			}
			if rerr := steps[j].restore(rctx); rerr != nil {
				err = errors.Join(err, fmt.Errorf("restore %s: %w", steps[j].name, rerr))
			}
		}
		return err
	}
	return nil
}

// change is a switch from the running configuration (prev, nil at
// start) to next, and what it opened on the way.
type change struct {
	prev, next         *config.Config
	prevPlan, nextPlan *plan.Plan
	// opened lists the components this change opened: they start when
	// it holds, and close when it is rolled back.
	opened                      []component
	openedNetwork, openedFastL4 bool
}

type component struct {
	name string
	run  func(context.Context) error
}

// switchTo makes cfg the running configuration, at start and on reload,
// through one ordered list of steps; a failed step rolls back the ones
// before it, so the previous configuration keeps serving.
func (d *Daemon) switchTo(ctx context.Context, cfg *config.Config) error {
	d.mu.Lock()
	c := &change{prev: d.cfg, prevPlan: d.plan, next: cfg}
	d.mu.Unlock()
	steps := []step{
		{"apply network section", d.netcfgStep(c), d.restoreNetwork(c)},
		{"compile configuration", d.compile(c), nil},
		{"apply fastl4 virtuals", d.applyFastL4(c), d.restoreFastL4(c)},
		{"apply L7 virtuals", d.applyL7(c), d.restoreL7(c)},
		{"apply monitors", d.applyMonitors(c), d.restoreMonitors(c)},
		{"apply bgp neighbours", d.applyBGP(c), d.restoreBGP(c)},
		{"update network reconciler", d.updateReconciler(c), nil},
	}
	if err := runSteps(ctx, steps); err != nil {
		return err
	}
	d.mu.Lock()
	d.cfg, d.plan, d.loaded = cfg, c.nextPlan, time.Now()
	d.mu.Unlock()
	d.setShared(cfg)
	for _, o := range c.opened {
		d.spawn(o.name, o.run)
	}
	d.updateRoutes()
	return nil
}

// compile resolves the members of the new configuration once (after the
// network section, so that a DMZ resolver is reachable).
func (d *Daemon) compile(c *change) func(context.Context) error {
	return func(ctx context.Context) error {
		r, err := netcfg.NewResolver(c.next.Network.Hosts, c.next.Network.Resolver)
		if err != nil {
			return fmt.Errorf("build hosts table: %w", err)
		}
		c.nextPlan, err = plan.Compile(ctx, withMemberState(c.next, d.memberState()), r.Resolve)
		return err
	}
}

func (d *Daemon) applyL7(c *change) func(context.Context) error {
	return func(context.Context) error { return d.setL7(c.nextPlan) }
}

func (d *Daemon) restoreL7(c *change) func(context.Context) error {
	return func(context.Context) error {
		if c.prevPlan == nil {
			return nil
		}
		return d.setL7(c.prevPlan)
	}
}

// setL7 gives pl to the L7 proxy with the members' current health.
// Health changes wait meanwhile, so none is lost between reading the
// health and the proxy taking it.
func (d *Daemon) setL7(pl *plan.Plan) error {
	d.planeMu.Lock()
	defer d.planeMu.Unlock()
	up := d.upState(pl.Health.Targets)
	if err := d.l7.Apply(pl.L7); err != nil {
		return err
	}
	for k, u := range up {
		d.l7.SetMemberUp(k.Pool, k.Addr, u)
	}
	d.mu.Lock()
	d.inPlanes = up
	d.mu.Unlock()
	return nil
}

func (d *Daemon) applyMonitors(c *change) func(context.Context) error {
	return func(context.Context) error {
		return d.checker.Update(c.nextPlan.Health.Targets, c.nextPlan.Health.Monitors)
	}
}

func (d *Daemon) restoreMonitors(c *change) func(context.Context) error {
	return func(context.Context) error {
		if c.prevPlan == nil {
			return nil
		}
		return d.checker.Update(c.prevPlan.Health.Targets, c.prevPlan.Health.Monitors)
	}
}
