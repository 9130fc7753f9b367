package l4

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// halfOpenEntries sizes the half-open table (bpf/flood.h): as many
// entries as the flow table has connections, so half as many half-open
// connections, at least 1024 entries (an LRU needs room per CPU).
func halfOpenEntries(maxFlows int) int { return max(maxFlows, 1024) }

// loadSpec returns the program's collection spec (benchmarks compare
// other builds through it).
var loadSpec = bpf.LoadFastL4

// load loads the collection with its maps pinned under PinPath.
func (f *FastPath) load() error {
	spec, err := loadSpec()
	if err != nil {
		return fmt.Errorf("load fast path spec: %w", err)
	}
	if done, err := finishRepin(f.opts.PinPath); err != nil {
		return fmt.Errorf("finish the re-pinning of an interrupted migration: %w", err)
	} else if done {
		f.log.Warn("finished the re-pinning of an interrupted migration: every pinned map has the layout it was migrated to", "pin_path", f.opts.PinPath)
	}
	if err := f.sizeFlowTables(spec); err != nil {
		return err
	}
	f.maglevSize = f.opts.MaglevSize
	if size, ok := pinnedMaglevSize(f.opts.PinPath); ok && size != f.maglevSize {
		f.log.Warn("keeping the Maglev table size of the pinned state", "pinned", size, "asked", f.maglevSize)
		f.maglevSize = size
	}
	spec.Maps[bpf.FastL4MapMaglev].InnerMap.MaxEntries = uint32(f.maglevSize)
	if err := setNetnsCookie(spec); err != nil {
		return err
	}
	if err := os.MkdirAll(f.opts.PinPath, 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w (is the BPF file system mounted on /sys/fs/bpf?)", err)
	}
	to, err := specLayout(spec)
	if err != nil {
		return err
	}
	reasons, err := specReasons(spec)
	if err != nil {
		return err
	}
	mg, err := planMigration(spec, f.opts.PinPath, to, reasons)
	if err != nil {
		return err
	}
	err = spec.LoadAndAssign(&f.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: f.opts.PinPath}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		mg.close()
		return fmt.Errorf("%w: %w: remove %s (edgeproxy flows -cleanup) to start afresh, which drops the established flows", ErrIncompatible, err, f.opts.PinPath)
	}
	if err != nil {
		mg.close()
		return fmt.Errorf("load fast path: %w", err)
	}
	if mg != nil {
		if err := f.migrate(mg); err != nil {
			return err
		}
	}
	if err := f.writeLayout(to, reasons); err != nil {
		return err
	}
	f.flows = flowTable{v4tcp: f.objs.Flows4Tcp, v4udp: f.objs.Flows4Udp, v6: f.objs.Flows6, half: f.objs.HalfOpen}
	return nil
}

// pinnedMaglevSize reads the table size from pinned settings.
func pinnedMaglevSize(pinPath string) (int, bool) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinPath, bpf.FastL4MapSettings), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return 0, false
	}
	defer m.Close()
	var s bpf.FastL4Config
	if err := m.Lookup(uint32(0), &s); err != nil || s.MaglevSize == 0 {
		return 0, false
	}
	return int(s.MaglevSize), true
}

// adopt reads the pinned settings, virtual and pool names, or writes
// fresh settings.
func (f *FastPath) adopt() error {
	var s bpf.FastL4Config
	if err := f.objs.Settings.Lookup(uint32(0), &s); err != nil {
		return fmt.Errorf("read fast path settings: %w", err)
	}
	if s.MaglevSize == 0 {
		var seed [4]byte
		if _, err := rand.Read(seed[:]); err != nil {
			return fmt.Errorf("seed flow hash: %w", err)
		}
		s = bpf.FastL4Config{
			MaglevSize: uint32(f.maglevSize),
			HashSeed:   binary.LittleEndian.Uint32(seed[:]),
		}
	} else {
		f.log.Info("adopting pinned fast path state", "pin_path", f.opts.PinPath)
	}
	s.SnatPortMin, s.SnatPortMax = f.opts.SNATPorts.First, f.opts.SNATPorts.Last
	// bpf_fib_lookup runs against the loopback device (see
	// enableFIBLookups).
	s.FibIfindex = 1
	if err := f.objs.Settings.Put(uint32(0), &s); err != nil {
		return fmt.Errorf("write fast path settings: %w", err)
	}
	f.ports = f.opts.SNATPorts

	for id := 1; id < maxVirtuals; id++ {
		var vi bpf.FastL4Vinfo
		if err := f.objs.Virtuals.Lookup(uint32(id), &vi); err != nil {
			return fmt.Errorf("read virtual names: %w", err)
		}
		if name := cString(vi.Name[:]); name != "" {
			f.vnames[id] = name
			f.knobs[id] = knobsFromVinfo(name, &vi)
		}
	}
	for i := range maxPools {
		var pi bpf.FastL4Pinfo
		if err := f.objs.Pools.Lookup(uint32(i), &pi); err != nil {
			return fmt.Errorf("read pool names: %w", err)
		}
		f.pnames[i] = cString(pi.Name[:])
	}
	return nil
}

// Cleanup detaches the program from every NIC it is pinned to and removes
// the pinned state under pinPath: established flows stop. It refuses,
// touching nothing, while another process holds the pin directory's lock.
func Cleanup(pinPath string) error {
	if pinPath == "" {
		pinPath = DefaultPinPath
	}
	if _, err := os.Stat(pinPath); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	l, err := LockPins(pinPath)
	if err != nil {
		return fmt.Errorf("clean up fast path: %w", err)
	}
	defer l.Release()
	return l.Cleanup()
}

// Cleanup is Cleanup for the lock's holder.
func (l *PinLock) Cleanup() error {
	pinPath := l.dir
	entries, err := os.ReadDir(pinPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clean up fast path: %w", err)
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(pinPath, e.Name())
		if l, err := link.LoadPinnedLink(p, nil); err == nil {
			if err := l.Unpin(); err != nil {
				errs = append(errs, err)
			}
			l.Close()
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(pinPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up fast path: %w", err)
	}
	return nil
}

func cString(b []int8) string {
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	out := make([]byte, n)
	for i := range n {
		out[i] = byte(b[i])
	}
	return string(out)
}

func putCString(dst []int8, s string) {
	for i := range dst {
		dst[i] = 0
	}
	for i := 0; i < len(s) && i < len(dst)-1; i++ {
		dst[i] = int8(s[i])
	}
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}
