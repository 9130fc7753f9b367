package daemon

import (
	"errors"
	"os"

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
