package l4

import (
	"time"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// collectByScan is the reaper before reap.go, kept to compare against
// (BenchmarkReap, TestPrivilegedReapCost): one GC pass: reap expired pairs (resetting them when the
// virtual asks), repair pairs missing a half, and refresh the counts.
func (f *FastPath) collectByScan() error {
	if !f.acquire() {
		return ErrClosed
	}
	defer f.life.RUnlock()
	f.mu.Lock()
	kn := f.knobs
	f.mu.Unlock()
	knobsOf := func(vid uint32) knobs {
		if vid < maxVirtuals && kn[vid].idle > 0 {
			return kn[vid]
		}
		return defaultKnobs
	}

	t := f.flows
	if f.flood.isActive() {
		// During a flood the half-open table is the flood's: the LRU
		// evicts it, and reaping it would cost a pass over the whole
		// table and send resets to spoofed sources.
		t.half = nil
	}
	pairs, err := t.readPairs()
	if err != nil {
		return err
	}
	now := monoNow()
	counts := newFlowCounts()
	var dead, deadHalf []bpf.FastL4FlowKey
	var reaped []reapedFlow
	for id, p := range pairs {
		h := p.any()
		k := knobsOf(uint32(h.val.Vid))
		st, timeout := p.state(k)
		last := p.last()
		if now > last && time.Duration(now-last) > timeout {
			ck, sk := p.keys()
			if !id.half && !f.stillIdle(ck, sk, last) {
				counts.add(k.name, st, p)
				continue
			}
			keys := &dead
			if id.half {
				keys = &deadHalf
			}
			if p.c != nil {
				*keys = append(*keys, ck)
			}
			if p.s != nil {
				*keys = append(*keys, sk)
			}
			reaped = append(reaped, reapedFlow{p: p, state: st, k: k, half: id.half})
			continue
		}
		// A half-open pair missing a half was evicted: it is lost, not
		// repaired (bpf/flood.h).
		if !id.half && (p.c == nil || p.s == nil) {
			f.repairByScan(p)
		}
		counts.add(k.name, st, p)
	}
	f.flows.deleteKeys(dead)
	f.flows.deleteHalfOpen(deadHalf)
	f.logClosed(reaped, "")
	for _, r := range reaped {
		f.stats.reaped(r.k.name, r.state, 1)
		if r.k.flags&svcResetOnTimeout != 0 {
			f.resetFlow(r)
		}
	}
	f.stats.setCounts(counts)
	return nil
}

// stillIdle reads both halves again just before deleting them: a packet
// may have refreshed the pair since the table was read.
func (f *FastPath) stillIdle(ck, sk bpf.FastL4FlowKey, last uint64) bool {
	for _, k := range []bpf.FastL4FlowKey{ck, sk} {
		var v bpf.FastL4FlowVal
		if err := f.flows.Lookup(k, &v); err == nil && v.LastNs > last {
			return false
		}
	}
	return true
}

// repair re-inserts the missing half of a live pair (the program does it
// too, on the next packet of a half it marked, bpf/ct.h ct_repair).
func (f *FastPath) repairByScan(p *pair) {
	h := p.any()
	v := bpf.FastL4FlowVal{
		CreatedNs: h.val.CreatedNs,
		LastNs:    h.val.LastNs,
		Vid:       h.val.Vid,
		Closing:   h.val.Closing,
		Mss:       h.val.Mss,
		Seen:      seenAny | seenACK,
	}
	v.Dir = dirServer
	if h.val.Dir == dirServer {
		v.Dir = dirClient
	}
	setKeys(&v, h.val.Peer, h.key)
	if err := f.flows.Update(h.val.Peer, &v, ebpf.UpdateNoExist); err == nil {
		f.stats.repaired(1)
	}
}
