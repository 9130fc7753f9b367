package daemon

import (
	"context"
	"errors"
	"os"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/l4"
)

// ownPins takes the pin directory's lock at start, before anything is
// changed, when the configuration has a fast path or one is pinned there:
// a second daemon on the same pins then exits naming the first.
func (d *Daemon) ownPins(cfg *config.Config) error {
	dir := cfg.FastPath.PinPath
	if dir == "" {
		dir = config.DefaultPinPath
	}
	if !cfg.NeedsXDP() {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return nil
		}
	}
	_, err := d.lockPins(dir)
	return err
}

// lockPins returns the daemon's lock on dir, taking it if needed (a reload
// may open the first fast path, or name another directory before).
func (d *Daemon) lockPins(dir string) (*l4.PinLock, error) {
	if d.pins != nil && d.pins.Dir() == dir {
		return d.pins, nil
	}
	l, err := l4.LockPins(dir)
	if err != nil {
		return nil, err
	}
	_ = d.pins.Release()
	d.pins = l
	return l, nil
}

// retireFastPath drains, detaches and removes a pinned fast path when the
// configuration at start has no fastl4 virtual; /status shows it
// "draining", then "removed". A reload that opens the fast path first
// keeps it.
func (d *Daemon) retireFastPath(ctx context.Context) error {
	d.setRetired(&admin.FastPath{State: "draining"})
	d.log.Info("draining the pinned fast path: the configuration has no fastl4 virtual", "pin_path", d.pins.Dir())
	progress := func(flows int) {
		d.setRetired(&admin.FastPath{State: "draining", Flows: uint64(flows)})
	}
	if err := d.pins.Drain(ctx, config.DefaultDrainTimeout.D(), progress); err != nil {
		return err // stopping: the pinned state stays for the next start
	}
	d.planeMu.Lock()
	defer d.planeMu.Unlock()
	if d.fastPath() != nil {
		return nil
	}
	if err := d.pins.Cleanup(); err != nil {
		// The daemon serves on; `edgeproxy flows -cleanup` finishes it.
		d.log.Error("remove the pinned fast path", "pin_path", d.pins.Dir(), "err", err)
		return nil
	}
	d.setRetired(&admin.FastPath{State: "removed"})
	d.log.Info("removed the pinned fast path: XDP detached", "pin_path", d.pins.Dir())
	return nil
}

func (d *Daemon) setRetired(fp *admin.FastPath) {
	d.mu.Lock()
	d.retired = fp
	d.mu.Unlock()
}

// retiredFastPath is a copy of the retirement's state for /status, nil
// when there is none.
func (d *Daemon) retiredFastPath() *admin.FastPath {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.retired == nil {
		return nil
	}
	r := *d.retired
	return &r
}
