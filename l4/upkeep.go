package l4

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Run reaps expired flows, sends resets, keeps neighbours resolved,
// writes the connection log and logs table-full and SNAT-exhaustion
// conditions until ctx is done.
func (f *FastPath) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	events := make(chan error, 1)
	go func() { events <- f.readEvents(ctx) }()
	defer func() {
		cancel()
		if err := <-events; err != nil {
			f.log.Warn("connection log stopped", "err", err)
		}
	}()
	gc := time.NewTicker(f.opts.GCInterval)
	defer gc.Stop()
	reap := time.NewTicker(min(f.opts.GCInterval, reapWatchPeriod/2))
	defer reap.Stop()
	nb := time.NewTicker(200 * time.Millisecond)
	defer nb.Stop()
	f.upkeep()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reap.C:
			if err := f.reapTick(); err != nil {
				if errors.Is(err, ErrClosed) {
					return err
				}
				f.limiter.log(f.log, "gc", slog.LevelWarn, "reap flows", "err", err)
			}
		case <-gc.C:
			f.warnDrops()
			if err := f.mirrorRefresh(); err != nil && !errors.Is(err, ErrClosed) {
				f.limiter.log(f.log, "mirror", slog.LevelWarn, "refresh mirrored flows", "err", err)
			}
		case <-nb.C:
			f.upkeep()
		}
	}
}

// upkeep resolves reported and wanted next hops and keeps the program
// attached to the NICs.
func (f *FastPath) upkeep() {
	if !f.acquire() {
		return
	}
	defer f.life.RUnlock()
	f.neigh.poll(f.objs.NeighMiss)
	f.keepAttached()
}
