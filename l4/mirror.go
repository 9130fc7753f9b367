package l4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// Flow mirroring: the active node of an HA pair reports the flows of
// its virtuals with Mirror as records (MirrorRecord), the standby
// installs them in its own tables (InstallMirrored), so that they are
// there when it takes over. A record carries no node-local state: the
// times are ages, the virtual is found by its VIP, port and protocol,
// and the next hop, egress slot and ICMP rate state start empty (the
// program resolves them on the first packet).
//
// What reaches the sink, on the active node only (not passive):
//   - a flow's record when it is established (the program's open event);
//   - its record again at each GC pass it has had packets since the
//     previous one (counters, last seen, TCP state such as closing),
//     from the pass after the one it opened in;
//   - its removal when the GC, flows kill or a drain removes it, or the
//     program replaces a closing pair.

// Record operations, the first byte of a record.
const (
	mirrorFlow   = 1
	mirrorRemove = 2
)

// MirrorPassiveGrace is added to a flow's timeouts on a passive
// (standby) node: its flows are refreshed by the active one at each of
// its GC passes, so they expire no earlier than on the active node.
const MirrorPassiveGrace = 5 * time.Second

var errBadRecord = errors.New("malformed mirror record")

const svcMirror = uint32(bpf.FastL4SvcFlagsSVC_MIRROR)

// mirrorState is the fast path's side of mirroring.
type mirrorState struct {
	mu      sync.Mutex
	sink    func(rec []byte)
	passive bool
	mark    uint64 // monoNow of the previous refresh pass
	flows   int    // pairs of mirrored virtuals at the last GC pass
	// copied are the client keys of the flows installed since a full
	// copy began (nil: none under way), under copyMu: a flow record is
	// noted before it is installed, and the prune at the copy's end
	// holds copyMu from its choice to its deletes, so a record applied
	// meanwhile is either kept or installed after them.
	copyMu sync.Mutex
	copied map[bpf.FastL4FlowKey]struct{}
}

// BeginMirrorCopy notes that a full copy from the peer begins: the flows
// installed from now on are kept by EndMirrorCopy.
func (f *FastPath) BeginMirrorCopy() {
	f.mirror.copyMu.Lock()
	defer f.mirror.copyMu.Unlock()
	f.mirror.copied = map[bpf.FastL4FlowKey]struct{}{}
}

// mirrorPruneRead, when set, runs as EndMirrorCopy begins to read the
// tables: what a record installed then does is tested with it.
var mirrorPruneRead func()

// EndMirrorCopy ends a full copy. With prune, the flows of mirrored
// virtuals that neither the copy nor a live record installed meanwhile
// are removed: the peer no longer has them (this node kept them in its
// pins while it was away). It returns how many were removed.
func (f *FastPath) EndMirrorCopy(prune bool) (int, error) {
	f.mirror.copyMu.Lock()
	under := f.mirror.copied != nil
	if !prune {
		f.mirror.copied = nil
	}
	f.mirror.copyMu.Unlock()
	if !prune || !under {
		return 0, nil
	}
	return f.pruneMirrored()
}

// pruneMirrored removes the flows of mirrored virtuals that a full copy
// did not install (f.mirror.copied), and ends the copy.
func (f *FastPath) pruneMirrored() (int, error) {
	if !f.acquire() {
		f.mirror.copyMu.Lock()
		f.mirror.copied = nil
		f.mirror.copyMu.Unlock()
		return 0, ErrClosed
	}
	defer f.life.RUnlock()
	f.mu.Lock()
	kn := f.knobs
	f.mu.Unlock()
	t := f.flows
	t.half = nil
	if mirrorPruneRead != nil {
		mirrorPruneRead()
	}
	pairs, err := t.readPairs()
	f.mirror.copyMu.Lock()
	defer f.mirror.copyMu.Unlock()
	keep := f.mirror.copied
	f.mirror.copied = nil
	if err != nil {
		return 0, err
	}
	var dead [][2]bpf.FastL4FlowKey
	for _, p := range pairs {
		h := p.any()
		ck, sk := p.keys()
		if _, ok := keep[ck]; ok || h.val.Vid >= maxVirtuals || kn[h.val.Vid].flags&svcMirror == 0 {
			continue
		}
		dead = append(dead, [2]bpf.FastL4FlowKey{ck, sk})
	}
	if err := f.flows.deletePairs(dead, false); err != nil {
		return len(dead), fmt.Errorf("prune mirrored flows: %w", err)
	}
	return len(dead), nil
}

// SetMirrorSink sets the function that receives the records of the
// mirrored flows (nil: mirroring off). It is called from the GC and the
// event reader; it must not block.
func (f *FastPath) SetMirrorSink(fn func(rec []byte)) {
	f.mirror.mu.Lock()
	defer f.mirror.mu.Unlock()
	f.mirror.sink = fn
}

// SetPassive tells the fast path whether this node is a standby: a
// passive node reports nothing to the sink, gives its flows
// MirrorPassiveGrace more before they expire, and neither resets nor
// logs those that expire (the active node does, for the same flows).
func (f *FastPath) SetPassive(p bool) {
	f.mirror.mu.Lock()
	defer f.mirror.mu.Unlock()
	f.mirror.passive = p
}

// MirroredFlows is the number of established flows of mirrored
// virtuals in the tables at the last GC pass: on a standby, the active
// node's flows it holds.
func (f *FastPath) MirroredFlows() int {
	f.mirror.mu.Lock()
	defer f.mirror.mu.Unlock()
	return f.mirror.flows
}

func (f *FastPath) passive() bool {
	f.mirror.mu.Lock()
	defer f.mirror.mu.Unlock()
	return f.mirror.passive
}

// mirrorSink is the sink while the node is active, else nil.
func (f *FastPath) mirrorSink() func([]byte) {
	f.mirror.mu.Lock()
	defer f.mirror.mu.Unlock()
	if f.mirror.passive {
		return nil
	}
	return f.mirror.sink
}

// mirrorKeys appends the two keys of a pair: family, protocol, then each
// key's addresses and ports.
func mirrorKeys(b []byte, ck, sk bpf.FastL4FlowKey) []byte {
	b = append(b, ck.Family, ck.Proto)
	n := 4
	if ck.Family != 4 {
		n = 16
	}
	for _, k := range []bpf.FastL4FlowKey{ck, sk} {
		for _, a := range []bpf.FastL4Addr{k.Saddr, k.Daddr} {
			for i := range n / 4 {
				b = binary.NativeEndian.AppendUint32(b, a.W[i])
			}
		}
		b = binary.NativeEndian.AppendUint16(b, k.Sport)
		b = binary.NativeEndian.AppendUint16(b, k.Dport)
	}
	return b
}

// readMirrorKeys reads what mirrorKeys wrote.
func readMirrorKeys(b []byte) (ck, sk bpf.FastL4FlowKey, rest []byte, err error) {
	if len(b) < 2 || (b[0] != 4 && b[0] != 6) {
		return ck, sk, nil, errBadRecord
	}
	n := 4
	if b[0] != 4 {
		n = 16
	}
	if len(b) < 2+2*(2*n+4) {
		return ck, sk, nil, errBadRecord
	}
	fam, proto := b[0], b[1]
	b = b[2:]
	for _, k := range []*bpf.FastL4FlowKey{&ck, &sk} {
		k.Family, k.Proto = fam, proto
		for _, a := range []*bpf.FastL4Addr{&k.Saddr, &k.Daddr} {
			for i := range n / 4 {
				a.W[i] = binary.NativeEndian.Uint32(b)
				b = b[4:]
			}
		}
		k.Sport = binary.NativeEndian.Uint16(b)
		k.Dport = binary.NativeEndian.Uint16(b[2:])
		b = b[4:]
	}
	return ck, sk, b, nil
}

// mirrorHalfLen is the size of one half's state in a record.
const mirrorHalfLen = 4 + 8 + 4 + 4 + 4 + 2 + 2 + 1 + 1

// encodeFlow is the record of a pair with both halves, at now.
func encodeFlow(c, s *half, now uint64) []byte {
	b := make([]byte, 0, 128)
	b = append(b, mirrorFlow)
	b = mirrorKeys(b, c.key, s.key)
	b = binary.BigEndian.AppendUint32(b, ageMs(now, c.val.CreatedNs))
	b = append(b, uint8(c.val.Closing|s.val.Closing))
	b = binary.BigEndian.AppendUint16(b, c.val.Mss)
	for _, h := range []*half{c, s} {
		v := &h.val
		b = binary.BigEndian.AppendUint32(b, ageMs(now, v.LastNs))
		b = binary.BigEndian.AppendUint64(b, v.Bytes)
		b = binary.BigEndian.AppendUint32(b, v.Packets)
		b = binary.BigEndian.AppendUint32(b, v.Ack)
		b = binary.BigEndian.AppendUint32(b, v.SeqNext)
		b = binary.BigEndian.AppendUint16(b, v.Win)
		b = binary.BigEndian.AppendUint16(b, v.SynWin)
		b = append(b, v.Seen&^seenRepair, v.Wscale)
	}
	return b
}

// encodeRemove is the removal record of a pair.
func encodeRemove(ck, sk bpf.FastL4FlowKey) []byte {
	return mirrorKeys([]byte{mirrorRemove}, ck, sk)
}

func ageMs(now, t uint64) uint32 {
	if t == 0 || now <= t {
		return 0
	}
	return uint32(min((now-t)/1e6, 1<<32-1))
}

// decodeFlow makes the two halves of a flow record for this node, at
// now, in the virtual vid.
func decodeFlow(b []byte, now uint64, vidOf func(ck bpf.FastL4FlowKey) (uint8, bool)) (c, s half, err error) {
	ck, sk, b, err := readMirrorKeys(b)
	if err != nil || len(b) != 4+1+2+2*mirrorHalfLen {
		return c, s, errBadRecord
	}
	vid, ok := vidOf(ck)
	if !ok {
		return c, s, errUnknownVirtual
	}
	created := now - min(now, uint64(binary.BigEndian.Uint32(b))*1e6)
	closing, mss := uint32(b[4]), binary.BigEndian.Uint16(b[5:])
	b = b[7:]
	c.key, s.key = ck, sk
	for i, h := range []*half{&c, &s} {
		v := &h.val
		v.Dir = uint8(i)
		v.Vid, v.Closing, v.Mss, v.CreatedNs = vid, closing, mss, created
		v.LastNs = now - min(now, uint64(binary.BigEndian.Uint32(b))*1e6)
		v.Bytes = binary.BigEndian.Uint64(b[4:])
		v.Packets = binary.BigEndian.Uint32(b[12:])
		v.Ack = binary.BigEndian.Uint32(b[16:])
		v.SeqNext = binary.BigEndian.Uint32(b[20:])
		v.Win = binary.BigEndian.Uint16(b[24:])
		v.SynWin = binary.BigEndian.Uint16(b[26:])
		v.Seen, v.Wscale = b[28]&^seenRepair, b[29]
		b = b[mirrorHalfLen:]
	}
	setKeys(&c.val, ck, sk)
	setKeys(&s.val, sk, ck)
	return c, s, nil
}

var errUnknownVirtual = errors.New("mirror record of a virtual this node does not have")

// errStaleRecord: records from the peer's GC pass, its event reader and
// its flows kill come in no set order; one read before its flow ended
// may come after the record of a younger flow that took a key of it.
var errStaleRecord = errors.New("mirror record of a flow older than the one holding its key")

// heldByYounger tells whether k holds the half of another pair (its peer
// is not peer) opened after created: a stale record must not take it,
// which would leave that pair short or its answers sent to a gone client.
func (f *FastPath) heldByYounger(k, peer bpf.FastL4FlowKey, created uint64) bool {
	var v bpf.FastL4FlowVal
	if f.flows.Lookup(k, &v) != nil {
		return false
	}
	got := v.Peer
	got.Pad, peer.Pad = 0, 0
	return got != peer && v.CreatedNs > created
}

// vidOf finds this node's virtual of a client key (its VIP, port and
// protocol): virtual ids are the node's own.
func (f *FastPath) vidOf(ck bpf.FastL4FlowKey) (uint8, bool) {
	sk := bpf.FastL4SvcKey{Vip: ck.Daddr, Port: ck.Dport, Proto: ck.Proto, Family: ck.Family}
	var sv bpf.FastL4SvcVal
	if err := f.objs.Services.Lookup(&sk, &sv); err != nil || sv.Vid == 0 || sv.Vid >= maxVirtuals {
		return 0, false
	}
	return uint8(sv.Vid), true
}

// InstallMirrored applies a record from the peer: it installs or
// refreshes a flow in this node's tables, or removes one. The result
// tells which (installed: a flow record applied).
func (f *FastPath) InstallMirrored(rec []byte) (installed bool, err error) {
	if !f.acquire() {
		return false, ErrClosed
	}
	defer f.life.RUnlock()
	if len(rec) == 0 {
		return false, errBadRecord
	}
	switch rec[0] {
	case mirrorRemove:
		ck, sk, rest, err := readMirrorKeys(rec[1:])
		if err != nil || len(rest) != 0 {
			return false, errBadRecord
		}
		// Records from the kill, the GC and the event reader may come
		// out of order: a key that a newer flow holds stays its own.
		if err := f.flows.deletePairs([][2]bpf.FastL4FlowKey{{ck, sk}}, false); err != nil {
			return false, fmt.Errorf("remove mirrored flow: %w", err)
		}
		return false, nil
	case mirrorFlow:
		c, s, err := decodeFlow(rec[1:], monoNow(), f.vidOf)
		if err != nil {
			return false, err
		}
		if f.heldByYounger(s.key, c.key, s.val.CreatedNs) || f.heldByYounger(c.key, s.key, c.val.CreatedNs) {
			return false, errStaleRecord
		}
		f.mirror.copyMu.Lock()
		if f.mirror.copied != nil {
			f.mirror.copied[c.key] = struct{}{}
		}
		f.mirror.copyMu.Unlock()
		if err := f.flows.Update(s.key, &s.val, ebpf.UpdateAny); err != nil {
			return false, fmt.Errorf("install mirrored flow: %w", err)
		}
		if err := f.flows.Update(c.key, &c.val, ebpf.UpdateAny); err != nil {
			f.flows.Delete(s.key)
			return false, fmt.Errorf("install mirrored flow: %w", err)
		}
		return true, nil
	}
	return false, errBadRecord
}

// MirrorCopy calls fn with the record of every established flow of a
// virtual with Mirror: a full copy for a peer that (re)starts. It
// returns the number of records.
func (f *FastPath) MirrorCopy(fn func(rec []byte) error) (int, error) {
	if !f.acquire() {
		return 0, ErrClosed
	}
	f.mu.Lock()
	kn := f.knobs
	f.mu.Unlock()
	t := f.flows
	t.half = nil
	pairs, err := t.readPairs()
	f.life.RUnlock()
	if err != nil {
		return 0, err
	}
	now, n := monoNow(), 0
	for _, p := range pairs {
		if p.c == nil || p.s == nil || p.c.val.Vid >= maxVirtuals || kn[p.c.val.Vid].flags&svcMirror == 0 {
			continue
		}
		if err := fn(encodeFlow(p.c, p.s, now)); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// mirrorEvent reports a program's flow event of a mirrored virtual: an
// open (the pair read from the tables) or a close.
func (f *FastPath) mirrorEvent(ev *bpf.FastL4FlowEvent, sink func([]byte)) {
	switch ev.Kind {
	case eventClose:
		sink(encodeRemove(ev.Client, ev.Server))
	case eventOpen:
		c, s := openHalves(ev)
		sink(encodeFlow(&c, &s, monoNow()))
	}
}

// openHalves are the halves an open event describes (bpf/events.h).
func openHalves(ev *bpf.FastL4FlowEvent) (c, s half) {
	c.key, s.key = ev.Client, ev.Server
	for i, h := range []*half{&c, &s} {
		v := &h.val
		v.Dir, v.CreatedNs, v.LastNs, v.Closing, v.Mss = uint8(i), ev.CreatedNs, ev.TsNs, ev.Closing, ev.Mss
		v.Bytes, v.Packets = ev.Bytes[i], uint32(ev.Packets[i])
		v.Ack, v.SeqNext, v.Win, v.SynWin = ev.Ack[i], ev.SeqNext[i], ev.Win[i], ev.SynWin[i]
		v.Seen, v.Wscale = ev.Seen[i]&^seenRepair, ev.Wscale[i]
	}
	// The event comes as the client's ACK completes the handshake,
	// before its tracking records that ACK.
	c.val.Seen |= seenACK
	return c, s
}

// mirrorPass reports, after a GC pass read the pairs at now, the
// mirrored pairs that had packets since the previous pass and the ones
// the pass removed.
func (f *FastPath) mirrorPass(pairs map[pairID]*pair, reaped []reapedFlow, kn func(uint32) knobs, now uint64) {
	gone := make(map[*pair]bool, len(reaped))
	for _, r := range reaped {
		gone[r.p] = true
	}
	n := 0
	for id, p := range pairs {
		if !id.half && !gone[p] && kn(uint32(p.any().val.Vid)).flags&svcMirror != 0 {
			n++
		}
	}
	sink := f.mirrorSink()
	f.mirror.mu.Lock()
	mark := f.mirror.mark
	f.mirror.mark, f.mirror.flows = now, n
	f.mirror.mu.Unlock()
	if sink == nil {
		return
	}
	for id, p := range pairs {
		// A pair opened since the previous pass went with its open
		// event: its refresh waits for the next pass.
		if id.half || p.c == nil || p.s == nil || kn(uint32(p.c.val.Vid)).flags&svcMirror == 0 ||
			p.last() <= mark || p.c.val.CreatedNs > mark || gone[p] {
			continue
		}
		sink(encodeFlow(p.c, p.s, now))
	}
	f.mirrorClosed(reaped)
}

// mirrorClosed reports the removal of mirrored pairs.
func (f *FastPath) mirrorClosed(gone []reapedFlow) {
	sink := f.mirrorSink()
	if sink == nil {
		return
	}
	for _, r := range gone {
		if !r.half && r.k.flags&svcMirror != 0 {
			ck, sk := r.p.keys()
			sink(encodeRemove(ck, sk))
		}
	}
}

// mirrorRefresh reads the pairs for the refresh records and the count of
// mirrored flows, on a pair node only: the reaper runs in the kernel and
// reads no table from user space, but refreshes carry each flow's last
// seen time, counters and TCP state to the peer every pass.
func (f *FastPath) mirrorRefresh() error {
	if !f.mirroring() {
		return nil
	}
	if !f.acquire() {
		return ErrClosed
	}
	defer f.life.RUnlock()
	f.mu.Lock()
	kn := f.knobs
	f.mu.Unlock()
	t := f.flows
	t.half = nil // half-open pairs are not mirrored
	pairs, err := t.readPairs()
	if err != nil {
		return fmt.Errorf("read flows for mirroring: %w", err)
	}
	f.mirrorPass(pairs, nil, func(vid uint32) knobs { return knobsOf(&kn, vid) }, monoNow())
	return nil
}

// mirroring tells whether the node mirrors flows: active with a sink, or
// passive.
func (f *FastPath) mirroring() bool {
	f.mirror.mu.Lock()
	defer f.mirror.mu.Unlock()
	return f.mirror.sink != nil || f.mirror.passive
}
