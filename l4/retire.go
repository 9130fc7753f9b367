package l4

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// Drain takes the pinned fast path out of service when the configuration
// has no fastl4 virtual left: its services go at once, so the program
// takes no new flow; then it waits until no established flow is left or
// timeout passes (progress hears how many remain each second). Cleanup
// then detaches the program and removes the pins.
func (l *PinLock) Drain(ctx context.Context, timeout time.Duration, progress func(flows int)) error {
	if err := l.stopServices(); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		flows, err := ReadFlows(l.dir)
		if err != nil || len(flows) == 0 {
			break
		}
		progress(len(flows))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return nil
}

// stopServices empties the pinned services map.
func (l *PinLock) stopServices() error {
	m, err := ebpf.LoadPinnedMap(filepath.Join(l.dir, bpf.FastL4MapServices), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open pinned services: %w", err)
	}
	defer m.Close()
	var (
		key  bpf.FastL4SvcKey
		val  bpf.FastL4SvcVal
		keys []bpf.FastL4SvcKey
	)
	it := m.Iterate()
	for it.Next(&key, &val) {
		keys = append(keys, key)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read pinned services: %w", err)
	}
	for _, k := range keys {
		if err := m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove pinned service: %w", err)
		}
	}
	return nil
}
