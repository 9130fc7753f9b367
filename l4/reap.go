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
	reapWatch
)

const (
	// reapBudget is how many reports one run of the program may write:
	// what the reap_events ring holds (4 MiB of 352-byte records), with
	// room to spare.
	reapBudget = 10000
	// reapMaxPeriod bounds the time between walks of the flow tables,
	// so that the flow gauges stay fresh when every timeout is long...
	reapMaxPeriod = 30 * time.Second
	// reapWalkShare: ...unless the tables are so large that walks that
	// often would cost more than 1/reapWalkShare of a core: a walk that
	// took d is then repeated for freshness reapWalkShare·d later (about
	// 45 s for 1 M pairs on a 2-CPU VM). Expiry does not wait for it: a
	// deadline the last walk found, or the shortest timeout, comes first.
	reapWalkShare = 50
	// reapWatchPeriod is how often the closing pairs are judged: within
	// this of their close timeout.
	reapWatchPeriod = 500 * time.Millisecond
	// reapExactEvery: every so many walks of the flow tables look up the
	// other half of every entry (bpf/reap.h); the others only that of
	// the entries idle past their idle timeout.
	reapExactEvery = 8
)

// reaper is the control plane's side of the program's reaper: the ring
// reader, the buffers a pass reuses and the schedule (monoNow times).
type reaper struct {
	mu       sync.Mutex
	rd       *ringbuf.Reader
	rec      ringbuf.Record
	counts   []bpf.FastL4ReapCount
	zero     []bpf.FastL4ReapCount
	keys     []uint32
	walked   uint64 // the flow tables' last walk
	walkNext uint64 // the earliest deadline it left, 0: none
	halfed   uint64 // the half-open table's last walk
	halfNext uint64
	watched  uint64        // the watch's last run
	walks    int           // walks of the flow tables so far
	walkCost time.Duration // the last walk's duration, not exact
}

func (r *reaper) close() {
	if r.rd != nil {
		r.rd.Close()
	}
}

// reapTimes are the shortest idle and handshake timeouts in force.
func reapTimes(kn *[maxVirtuals]knobs) (idle, handshake time.Duration) {
	idle, handshake = defaultKnobs.idle, defaultKnobs.handshake
	for _, k := range kn {
		if k.idle > 0 {
			idle, handshake = min(idle, k.idle), min(handshake, k.handshake)
		}
	}
	return idle, handshake
}

// due is when a table group is walked next: at the earliest deadline its
// last walk left, or when a pair that changed since may have expired (it
// cannot before the shortest timeout that applies to it), or after
// period (for the flow tables: their walk's, reapMaxPeriod or longer).
func due(last, next uint64, shortest, period time.Duration) uint64 {
	at := last + uint64(min(shortest, period))
	if next != 0 && next < at {
		at = next
	}
	return at
}

// collect is one full GC pass, run in the kernel (bpf/reap.h): it reaps
// expired pairs, repairs pairs missing a half and counts the rest. The
// pairs whose virtual resets on timeout or logs its flows come back
// through a ring, for the resets and the close records.
func (f *FastPath) collect() error {
	return f.reapRun(monoNow(), true, true, true, true)
}

// reapTick runs what is due: the flow tables' walk (then everything),
// the half-open table's, the watch of the closing pairs.
func (f *FastPath) reapTick() error {
	now := monoNow()
	f.mu.Lock()
	kn := f.knobs
	f.mu.Unlock()
	idle, handshake := reapTimes(&kn)
	r := &f.reap
	r.mu.Lock()
	walk := r.walked == 0 || now >= due(r.walked, r.walkNext, idle, r.walkPeriod())
	half := now >= due(r.halfed, r.halfNext, handshake, reapMaxPeriod)
	watch := now >= r.watched+uint64(reapWatchPeriod)
	exact := r.walks%reapExactEvery == 0
	r.mu.Unlock()
	if !walk && !half && !watch {
		return nil
	}
	return f.reapRun(now, walk, walk || half, true, exact)
}

// reapRun runs the program over the groups of tables asked: the flow
// tables (walk, which publishes the counts), the half-open table, the
// watch; exact walks look every other half up.
func (f *FastPath) reapRun(now uint64, walk, half, watch, exact bool) error {
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
	run := bpf.FastL4ReapRun{
		Now:           now,
		Budget:        reapBudget,
		DefIdleS:      uint32(defaultKnobs.idle / time.Second),
		DefHandshakeS: uint32(defaultKnobs.handshake / time.Second),
		DefCloseS:     uint32(defaultKnobs.closing / time.Second),
		DefFlags:      defaultKnobs.flags,
	}
	if f.passive() {
		run.GraceS = uint32(MirrorPassiveGrace / time.Second)
	}
	if err := f.reapGroups(&run, &kn, walk, half, watch, exact); err != nil {
		return err
	}
	f.stats.repaired(uint64(run.Repaired))
	if run.Lost > 0 {
		f.limiter.log(f.log, "reap-lost", slog.LevelWarn, "reaper reports lost: no resets or close records for some reaped flows", "lost", run.Lost)
	}
	return f.reapCounts(&kn, walk)
}

// reapGroups runs the groups asked and notes their schedule.
func (f *FastPath) reapGroups(run *bpf.FastL4ReapRun, kn *[maxVirtuals]knobs, walk, half, watch, exact bool) error {
	r := &f.reap
	group := func(tables ...uint32) (uint64, error) {
		run.NextNs = 0
		for _, t := range tables {
			if err := f.reapTable(run, t, kn); err != nil {
				return 0, err
			}
		}
		return run.NextNs, nil
	}
	var err error
	if walk {
		if exact {
			run.Exact = 1
		}
		r.walks++
		start := time.Now()
		if r.walkNext, err = group(reapTCP4, reapUDP4, reapFlows6); err != nil {
			return err
		}
		r.walked = run.Now
		if !exact { // the exact walks (one in reapExactEvery) cost more
			r.walkCost = time.Since(start)
		}
		run.Exact = 0
	}
	// During a flood the half-open table is the flood's: the LRU evicts
	// it, and reaping it would cost a pass over the whole table and send
	// resets to spoofed sources.
	if half && !f.flood.isActive() {
		if r.halfNext, err = group(reapHalfOpen); err != nil {
			return err
		}
		r.halfed = run.Now
	}
	if watch {
		idle, _ := reapTimes(kn)
		run.WalkNs = due(r.walked, r.walkNext, idle, r.walkPeriod())
		if _, err = group(reapWatch); err != nil {
			return err
		}
		r.watched = run.Now
	}
	return nil
}

// walkPeriod is the longest time between walks of the flow tables.
func (r *reaper) walkPeriod() time.Duration {
	return max(reapMaxPeriod, reapWalkShare*r.walkCost)
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
		reaped := run.Reaped
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
		// The entries deleted may have stood before the stop: skip
		// fewer, so that none is passed over (bpf/reap.h).
		deleted := 2 * (run.Reaped - reaped)
		run.Skip, run.Reported = run.Visited-min(deleted, run.Visited), 0
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
	f.mirrorClosed([]reapedFlow{r})
	if f.passive() { // a standby's flows are the active node's: logged and reset there
		return
	}
	f.logClosed([]reapedFlow{r}, "")
	if r.k.flags&svcResetOnTimeout != 0 {
		f.resetFlow(r)
	}
}

// reapCounts publishes the pass's counts: pairs by virtual, state and
// member, and those reaped.
func (f *FastPath) reapCounts(kn *[maxVirtuals]knobs, publish bool) error {
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
	if !publish {
		return nil
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
