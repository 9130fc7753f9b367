package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/member"
	"github.com/edgeproxy/edgeproxy/internal/plan"
	"github.com/edgeproxy/edgeproxy/l4"
)

// fastPath drives the XDP data path for the fastl4 virtuals.
type fastPath struct {
	fp   *l4.FastPath
	log  *slog.Logger
	pins *l4.PinLock
}

// fastPath returns the open fast path, nil before the first fastl4
// virtual.
func (d *Daemon) fastPath() *fastPath {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.l4
}

func (d *Daemon) setFastPath(f *fastPath) {
	d.mu.Lock()
	d.l4 = f
	d.mu.Unlock()
}

// applyFastL4 opens the fast path with the first fastl4 virtual (it stays
// open after the last one goes), then gives it the new virtuals with the
// members' current health.
func (d *Daemon) applyFastL4(c *change) func(context.Context) error {
	return func(context.Context) error {
		d.planeMu.Lock()
		defer d.planeMu.Unlock()
		f := d.fastPath()
		if f == nil {
			if c.nextPlan.L4 == nil {
				return nil
			}
			var err error
			if f, err = d.openFastPath(c.next, c.nextPlan.L4); err != nil {
				return err
			}
			d.setFastPath(f)
			c.openedFastL4 = true
			c.opened = append(c.opened, component{"fast path", f.run})
		}
		err := f.apply(c.nextPlan.L4, d.upState(c.nextPlan.Health.Targets))
		if err != nil && c.openedFastL4 {
			err = errors.Join(err, d.closeFastPath(c))
		}
		return err
	}
}

func (d *Daemon) restoreFastL4(c *change) func(context.Context) error {
	return func(context.Context) error {
		d.planeMu.Lock()
		defer d.planeMu.Unlock()
		f := d.fastPath()
		switch {
		case f == nil:
			return nil
		case c.openedFastL4:
			return d.closeFastPath(c)
		}
		return f.apply(c.prevPlan.L4, d.upState(c.prevPlan.Health.Targets))
	}
}

// closeFastPath undoes the opening of the fast path. On reload it
// detaches XDP, as the running configuration had no fast path; at start
// it leaves the pinned state for the next start, as close does.
func (d *Daemon) closeFastPath(c *change) error {
	f := d.fastPath()
	d.setFastPath(nil)
	d.reg.Unregister(f.fp.Collector())
	return f.close(c.prev != nil)
}

// openFastPath loads (or adopts the pinned) XDP program for spec, once
// the host probe finds what cfg needs (a reload may open it first).
func (d *Daemon) openFastPath(cfg *config.Config, spec *l4.Spec) (*fastPath, error) {
	if err := probeHost(plan.HostNeeds(cfg), d.log); err != nil {
		return nil, err
	}
	opts := spec.Options
	opts.Logger = d.log
	opts.FlowLog = d.opts.FlowLog
	if cfg.Cluster != nil {
		opts.OnFlow = d.onFlow
	}
	pins, err := d.lockPins(opts.PinPath)
	if err != nil {
		return nil, err
	}
	fp, err := l4.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open XDP fast path: %w", err)
	}
	if err := d.reg.Register(fp.Collector()); err != nil {
		fp.Close()
		return nil, fmt.Errorf("register fast path metrics: %w", err)
	}
	return &fastPath{fp: fp, log: d.log, pins: pins}, nil
}

// apply gives the fast path its spec (nil: no fastl4 virtual) with the
// members' current health.
func (f *fastPath) apply(spec *l4.Spec, up map[memberKey]bool) error {
	s := l4.Spec{}
	if spec != nil {
		s = *spec
	}
	pools := s.Pools
	s.Pools = map[string][]l4.Member{}
	for pool, ms := range pools {
		for _, m := range ms {
			m.Up = up[member.New(pool, m.Addr)]
			s.Pools[pool] = append(s.Pools[pool], m)
		}
	}
	return f.fp.Apply(&s)
}

func (f *fastPath) setUp(pool string, addr netip.Addr, up bool) error {
	return f.fp.SetMemberUp(pool, addr, up)
}

func (f *fastPath) run(ctx context.Context) error { return f.fp.Run(ctx) }

func (f *fastPath) close(cleanup bool) error {
	err := f.fp.Close()
	if cleanup {
		if cerr := f.pins.Cleanup(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

type fastPathStatus struct {
	*admin.FastPath
	byVirtual, dropsByVirtual, byMember map[string]uint64
}

func (f *fastPath) status() *fastPathStatus {
	s := f.fp.Status()
	st := &fastPathStatus{
		FastPath: &admin.FastPath{
			Interfaces: s.Interfaces,
			Flows:      uint64(s.Flows),
			MaxFlows:   uint64(s.Capacity),
		},
		byVirtual:      map[string]uint64{},
		dropsByVirtual: s.Drops,
		byMember:       map[string]uint64{},
	}
	for k, v := range s.ByVirtual {
		st.byVirtual[k] = uint64(v)
	}
	for k, v := range s.ByMember {
		st.byMember[k.String()] = uint64(v)
	}
	return st
}
