package l4

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// sweepPinned removes, after the first Apply since Open, what the pinned
// maps still hold of an earlier configuration that this one no longer
// names: services of other virtuals (their VIPs take no new flow), and the
// Maglev tables and names of other pools. Their flows drain like those
// of a virtual removed on reload; the names of their virtual ids stay
// until reused, for the timeouts and labels of the draining flows.
func (f *FastPath) sweepPinned() error {
	keep := map[bpf.FastL4SvcKey]bool{}
	for _, v := range f.virtuals {
		keep[v.key] = true
	}
	var (
		key   bpf.FastL4SvcKey
		val   bpf.FastL4SvcVal
		stale []bpf.FastL4SvcKey
	)
	it := f.objs.Services.Iterate()
	for it.Next(&key, &val) {
		if !keep[key] {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read pinned services: %w", err)
	}
	for _, k := range stale {
		if err := f.objs.Services.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove pinned service no longer configured: %w", err)
		}
	}
	if len(stale) > 0 {
		f.log.Info("removed pinned services the configuration no longer names", "services", len(stale))
	}
	used := map[int]bool{}
	for _, p := range f.pools {
		used[p.index] = true
	}
	for i := range maxPools {
		if used[i] {
			continue
		}
		for fam := range 2 {
			if err := f.objs.Maglev.Delete(uint32(i*2 + fam)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("remove pinned Maglev table of pool %q: %w", f.pnames[i], err)
			}
		}
		if f.pnames[i] == "" {
			continue
		}
		if err := f.objs.Pools.Put(uint32(i), &bpf.FastL4Pinfo{}); err != nil {
			return fmt.Errorf("remove pinned pool %q: %w", f.pnames[i], err)
		}
		f.log.Info("removed pinned pool the configuration no longer names", "pool", f.pnames[i])
		f.pnames[i] = ""
	}
	return nil
}
