package l4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// reapStates names the program's pair states (bpf/reap.h, enum
// reap_state), in its order.
var reapStates = [...]string{StateHandshake, StateEstablished, StateFinWait, StateClosing, StateReset, StateUDP}

// The tables the reaper walks (bpf/reap.h, enum reap_table).
const (
	reapTCP4 = iota
	reapUDP4
	reapFlows6
	reapHalfOpen
)

const (
	// reapBudget is how many reports one run of the program may write:
	// what the reap_events ring holds, with room to spare.
	reapBudget = 512
	// reapMaxPeriod bounds the time between passes, so that the flow
	// gauges stay fresh when every timeout is long.
	reapMaxPeriod = 10 * time.Second
)

// reaper is the control plane's side of the program's reaper: the ring
// reader and the buffers a pass reuses.
type reaper struct {
	mu     sync.Mutex
	rd     *ringbuf.Reader
	rec    ringbuf.Record
	counts []bpf.FastL4ReapCount
	zero   []bpf.FastL4ReapCount
	keys   []uint32
	last   uint64 // when the last pass ran (monoNow)
	next   uint64 // the earliest deadline it left, 0: none
}

func (r *reaper) close() {
	if r.rd != nil {
		r.rd.Close()
	}
}

// collect is one GC pass, run in the kernel (bpf/reap.h): it reaps
// expired pairs, repairs pairs missing a half and counts the rest. The
// pairs whose virtual resets on timeout or logs its flows come back
// through a ring, for the resets and the close records.
func (f *FastPath) collect() error {
	if !f.acquire() {
		return ErrClosed
	}
	defer f.life.RUnlock()
	f.reap.mu.Lock()
	defer f.reap.mu.Unlock()
	f.mu.Lock()
	kn := f.knobs
	f.mu.Unlock()
	if err := f.reapStart(); err != nil {
		return err
	}
	now := monoNow()
	run := bpf.FastL4ReapRun{
		Now:           now,
		Budget:        reapBudget,
		DefIdleS:      uint32(defaultKnobs.idle / time.Second),
		DefHandshakeS: uint32(defaultKnobs.handshake / time.Second),
		DefCloseS:     uint32(defaultKnobs.closing / time.Second),
		DefFlags:      defaultKnobs.flags,
	}
	tables := []uint32{reapTCP4, reapUDP4, reapFlows6, reapHalfOpen}
	if f.flood.isActive() {
		// During a flood the half-open table is the flood's: the LRU
		// evicts it, and reaping it would cost a pass over the whole
		// table and send resets to spoofed sources.
		tables = tables[:3]
	}
	for _, t := range tables {
		if err := f.reapTable(&run, t, &kn); err != nil {
			return err
		}
	}
	f.reap.last, f.reap.next = now, run.NextNs
	f.stats.repaired(uint64(run.Repaired))
	if run.Lost > 0 {
		f.limiter.log(f.log, "reap-lost", slog.LevelWarn, "reaper reports lost: no resets or close records for some reaped flows", "lost", run.Lost)
	}
	return f.reapCounts(&kn)
}

// reapStart opens the ring reader once and zeroes the pass's counts.
func (f *FastPath) reapStart() error {
	r := &f.reap
	if r.rd == nil {
		rd, err := ringbuf.NewReader(f.objs.ReapEvents)
		if err != nil {
			return fmt.Errorf("open reaper ring: %w", err)
		}
		r.rd = rd
		n := int(f.objs.ReapCounts.MaxEntries())
		r.counts = make([]bpf.FastL4ReapCount, n)
		r.zero = make([]bpf.FastL4ReapCount, n)
		r.keys = make([]uint32, n)
		for i := range r.keys {
			r.keys[i] = uint32(i)
		}
	}
	if _, err := f.objs.ReapCounts.BatchUpdate(r.keys, r.zero, nil); err != nil {
		return fmt.Errorf("zero reaper counts: %w", err)
	}
	var k bpf.FastL4ReapMember
	var v uint32
	it := f.objs.ReapMembers.Iterate()
	var members []bpf.FastL4ReapMember
	for it.Next(&k, &v) {
		members = append(members, k)
	}
	for i := range members {
		_ = f.objs.ReapMembers.Delete(&members[i])
	}
	return nil
}

// reapTable runs the program over one table until it has walked all of
// it, acting on its reports between runs.
func (f *FastPath) reapTable(run *bpf.FastL4ReapRun, table uint32, kn *[maxVirtuals]knobs) error {
	run.Table, run.Skip = table, 0
	for {
		if err := f.objs.ReapCtl.Put(uint32(0), run); err != nil {
			return fmt.Errorf("write reaper orders: %w", err)
		}
		if _, err := f.objs.Reap.Run(&ebpf.RunOptions{}); err != nil {
			return fmt.Errorf("run reaper: %w", err)
		}
		if err := f.objs.ReapCtl.Lookup(uint32(0), run); err != nil {
			return fmt.Errorf("read reaper results: %w", err)
		}
		if err := f.reapReports(kn); err != nil {
			return err
		}
		if run.More == 0 {
			return nil
		}
		run.Skip, run.Reported = run.Visited, 0
	}
}

// reapReports sends the resets and writes the close records of the pairs
// the last run reported.
func (f *FastPath) reapReports(kn *[maxVirtuals]knobs) error {
	r := &f.reap
	r.rd.SetDeadline(time.Now())
	for {
		err := r.rd.ReadInto(&r.rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read reaper ring: %w", err)
		}
		var ev bpf.FastL4ReapEvent
		if _, err := binary.Decode(r.rec.RawSample, binary.NativeEndian, &ev); err != nil {
			continue
		}
		f.reapReported(&ev, kn)
	}
}

func (f *FastPath) reapReported(ev *bpf.FastL4ReapEvent, kn *[maxVirtuals]knobs) {
	p := &pair{}
	if ev.HasC != 0 {
		p.c = &half{key: ev.Ckey, val: ev.C}
	}
	if ev.HasS != 0 {
		p.s = &half{key: ev.Skey, val: ev.S}
	}
	if p.c == nil && p.s == nil || int(ev.State) >= len(reapStates) {
		return
	}
	r := reapedFlow{p: p, state: reapStates[ev.State], k: knobsOf(kn, uint32(p.any().val.Vid)), half: ev.Half != 0}
	f.logClosed([]reapedFlow{r}, "")
	if r.k.flags&svcResetOnTimeout != 0 {
		f.resetFlow(r)
	}
}

// reapCounts publishes the pass's counts: pairs by virtual, state and
// member, and those reaped.
func (f *FastPath) reapCounts(kn *[maxVirtuals]knobs) error {
	r := &f.reap
	var cursor ebpf.MapBatchCursor
	if _, err := f.objs.ReapCounts.BatchLookup(&cursor, r.keys, r.counts, nil); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("read reaper counts: %w", err)
	}
	counts := newFlowCounts()
	for vid := range r.counts {
		name := knobsOf(kn, uint32(vid)).name
		for st, n := range r.counts[vid].Live {
			if n > 0 {
				counts.total += int(n)
				counts.byVirtual[name] += int(n)
				counts.byState[[2]string{name, reapStates[st]}] += int(n)
			}
		}
		for st, n := range r.counts[vid].Reaped {
			if n > 0 {
				f.stats.reaped(name, reapStates[st], uint64(n))
			}
		}
	}
	var k bpf.FastL4ReapMember
	var n uint32
	it := f.objs.ReapMembers.Iterate()
	for it.Next(&k, &n) {
		counts.byMember[addrFromBPF(k.Addr, uint8(k.Family))] += int(n)
	}
	f.stats.setCounts(counts)
	return nil
}

// knobsOf are the knobs of a virtual id, the defaults for one not known.
func knobsOf(kn *[maxVirtuals]knobs, vid uint32) knobs {
	if vid < maxVirtuals && kn[vid].idle > 0 {
		return kn[vid]
	}
	return defaultKnobs
}

// reapDue tells whether a pass is due: the earliest deadline the last
// pass left has come, or a pair that changed since may have expired (it
// cannot before the shortest timeout in force), or reapMaxPeriod passed.
func (f *FastPath) reapDue(now uint64) bool {
	f.reap.mu.Lock()
	last, next := f.reap.last, f.reap.next
	f.reap.mu.Unlock()
	if last == 0 || next != 0 && now >= next {
		return true
	}
	f.mu.Lock()
	kn := f.knobs
	f.mu.Unlock()
	shortest := min(reapMaxPeriod, defaultKnobs.idle, defaultKnobs.handshake, defaultKnobs.closing)
	for _, k := range kn {
		if k.idle > 0 {
			shortest = min(shortest, k.idle, k.handshake, k.closing)
		}
	}
	return now >= last+uint64(shortest)
}
