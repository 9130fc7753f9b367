package l4

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// flowTable is the program's flow table: IPv4 TCP flows in flows4_tcp
// and IPv4 UDP flows in flows4_udp, whose short keys (without the
// protocol) hash faster on the established path, IPv6 flows in flows6.
// Keys are handled in their full form (bpf.FastL4FlowKey) here. half
// holds the half-open flows (bpf/flood.h) under full keys; Lookup,
// Update and Delete are about the established tables only.
type flowTable struct {
	v4tcp, v4udp, v6 *ebpf.Map
	half             *ebpf.Map // nil: pinned state of a build without it
}

func key4(k *bpf.FastL4FlowKey) bpf.FastL4FlowKey4 {
	return bpf.FastL4FlowKey4{Saddr: k.Saddr.W[0], Daddr: k.Daddr.W[0], Sport: k.Sport, Dport: k.Dport}
}

// flowSelf4 is what a flow value keeps of its own key (bpf/maps.h,
// flow_self4): an IPv4 key as it is, an IPv6 key folded.
func flowSelf4(k bpf.FastL4FlowKey) bpf.FastL4FlowKey4 {
	if k.Family == 4 {
		return key4(&k)
	}
	fold := func(a bpf.FastL4Addr) uint32 { return a.W[0] ^ a.W[1] ^ a.W[2] ^ a.W[3] }
	return bpf.FastL4FlowKey4{Saddr: fold(k.Saddr), Daddr: fold(k.Daddr) ^ uint32(k.Proto), Sport: k.Sport, Dport: k.Dport}
}

// setKeys sets the keys of a flow value: its own and its peer's, in the
// forms the program reads (bpf/maps.h, flow_set_keys).
func setKeys(v *bpf.FastL4FlowVal, self, peer bpf.FastL4FlowKey) {
	v.Self4 = flowSelf4(self)
	v.Peer = peer
	v.Peer4 = key4(&peer)
}

func keyFrom4(k *bpf.FastL4FlowKey4, proto uint8) bpf.FastL4FlowKey {
	var out bpf.FastL4FlowKey
	out.Saddr.W[0], out.Daddr.W[0] = k.Saddr, k.Daddr
	out.Sport, out.Dport, out.Proto, out.Family = k.Sport, k.Dport, proto, 4
	return out
}

// table4 is the IPv4 table of a protocol: every flow is TCP or UDP (the
// program opens no other), so what is not UDP is TCP, as in the program.
func (t flowTable) table4(proto uint8) *ebpf.Map {
	if proto == unix.IPPROTO_UDP {
		return t.v4udp
	}
	return t.v4tcp
}

func (t flowTable) Lookup(k bpf.FastL4FlowKey, v *bpf.FastL4FlowVal) error {
	if k.Family == 4 {
		k4 := key4(&k)
		return t.table4(k.Proto).Lookup(&k4, v)
	}
	return t.v6.Lookup(&k, v)
}

func (t flowTable) Update(k bpf.FastL4FlowKey, v *bpf.FastL4FlowVal, flags ebpf.MapUpdateFlags) error {
	if k.Family == 4 {
		k4 := key4(&k)
		return t.table4(k.Proto).Update(&k4, v, flags)
	}
	return t.v6.Update(&k, v, flags)
}

func (t flowTable) Delete(k bpf.FastL4FlowKey) error {
	if k.Family == 4 {
		k4 := key4(&k)
		return t.table4(k.Proto).Delete(&k4)
	}
	return t.v6.Delete(&k)
}

// deleteKeys deletes with batch operations, one by one where a batch
// stops on a key that is already gone.
func (t flowTable) deleteKeys(keys []bpf.FastL4FlowKey) {
	var tcp4, udp4 []bpf.FastL4FlowKey4
	var k6s []bpf.FastL4FlowKey
	for i := range keys {
		switch {
		case keys[i].Family != 4:
			k6s = append(k6s, keys[i])
		case keys[i].Proto == unix.IPPROTO_UDP:
			udp4 = append(udp4, key4(&keys[i]))
		default:
			tcp4 = append(tcp4, key4(&keys[i]))
		}
	}
	batchDelete(t.v4tcp, tcp4)
	batchDelete(t.v4udp, udp4)
	batchDelete(t.v6, k6s)
}

// deletePairs deletes the pairs named by their two keys (client side,
// server side), as read some time before, from the flow tables or (half)
// the half-open table: a key is deleted only while its entry still
// points at the pair's other key. A key whose pair ended since, and that
// another flow took meanwhile (a client's port reused, a closed pair's
// SNAT tuple given to a new flow, a half-open one's reclaimed), is put
// back as it was: deleting it would leave that live pair without a
// half, which no packet repairs (bpf/ct.h, ct_repair) and the reaper's
// exact walk only minutes later. It returns the first error putting a
// half back.
func (t flowTable) deletePairs(pairs [][2]bpf.FastL4FlowKey, half bool) error {
	if half && t.half == nil {
		return nil
	}
	var first error
	for _, p := range pairs {
		for i, k := range p {
			if err := t.deleteHalf(k, p[1-i], half); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// deleteHalf deletes the entry under k if its peer is peer, else leaves
// it (deleted and put back: one syscall for the common case).
func (t flowTable) deleteHalf(k, peer bpf.FastL4FlowKey, half bool) error {
	var v bpf.FastL4FlowVal
	var err error
	switch {
	case half:
		err = t.half.LookupAndDelete(&k, &v)
	case k.Family == 4:
		k4 := key4(&k)
		err = t.table4(k.Proto).LookupAndDelete(&k4, &v)
	default:
		err = t.v6.LookupAndDelete(&k, &v)
	}
	got := v.Peer
	got.Pad, peer.Pad = 0, 0
	if err != nil || got == peer {
		return nil
	}
	if half {
		err = t.half.Update(&k, &v, ebpf.UpdateNoExist)
	} else {
		err = t.Update(k, &v, ebpf.UpdateNoExist)
	}
	if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("put back the half of another flow: %w", err)
	}
	return nil
}

func batchDelete[K any](m *ebpf.Map, keys []K) {
	const batch = 4096
	for len(keys) > 0 {
		n := min(batch, len(keys))
		chunk := keys[:n]
		keys = keys[n:]
		done, err := m.BatchDelete(chunk, nil)
		if err == nil {
			continue
		}
		for i := range chunk[done:] {
			_ = m.Delete(&chunk[done+i])
		}
	}
}

// each calls fn for every entry, read with batch lookups.
func (t flowTable) each(fn func(k bpf.FastL4FlowKey, v *bpf.FastL4FlowVal)) error {
	const batch = 4096
	vals := make([]bpf.FastL4FlowVal, batch)
	keys4 := make([]bpf.FastL4FlowKey4, batch)
	for _, tb := range []struct {
		m     *ebpf.Map
		proto uint8
		name  string
	}{{t.v4tcp, unix.IPPROTO_TCP, "TCP"}, {t.v4udp, unix.IPPROTO_UDP, "UDP"}} {
		var cursor ebpf.MapBatchCursor
		for {
			n, err := tb.m.BatchLookup(&cursor, keys4, vals, nil)
			for i := range n {
				fn(keyFrom4(&keys4[i], tb.proto), &vals[i])
			}
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				return fmt.Errorf("read IPv4 %s flow table: %w", tb.name, err)
			}
		}
	}
	if err := eachFull(t.v6, vals, fn); err != nil {
		return fmt.Errorf("read IPv6 flow table: %w", err)
	}
	if t.half == nil {
		return nil
	}
	if err := eachFull(t.half, vals, fn); err != nil {
		return fmt.Errorf("read half-open flow table: %w", err)
	}
	return nil
}

// eachFull calls fn for every entry of a table with full keys.
func eachFull(m *ebpf.Map, vals []bpf.FastL4FlowVal, fn func(k bpf.FastL4FlowKey, v *bpf.FastL4FlowVal)) error {
	keys := make([]bpf.FastL4FlowKey, len(vals))
	var cursor ebpf.MapBatchCursor
	for {
		n, err := m.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			fn(keys[i], &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// deleteHalfOpen deletes half-open entries.
func (t flowTable) deleteHalfOpen(keys []bpf.FastL4FlowKey) {
	if t.half != nil {
		batchDelete(t.half, keys)
	}
}

// pairID tells pairs apart: their client side key, and whether they are
// half-open (a client may have a half-open and an established pair under
// one key for a moment).
type pairID struct {
	ck   bpf.FastL4FlowKey
	half bool
}

// readPairs reads the whole table and pairs the halves by their client
// side key.
func (t flowTable) readPairs() (map[pairID]*pair, error) {
	pairs := map[pairID]*pair{}
	err := t.each(func(k bpf.FastL4FlowKey, v *bpf.FastL4FlowVal) {
		h := &half{key: k, val: *v}
		ck := h.key
		if h.val.Dir == dirServer {
			ck = h.val.Peer
		}
		id := pairID{ck, h.val.HalfOpen != 0}
		p := pairs[id]
		if p == nil {
			p = &pair{}
			pairs[id] = p
		}
		if h.val.Dir == dirServer {
			p.s = h
		} else {
			p.c = h
		}
	})
	if err != nil {
		return nil, err
	}
	return pairs, nil
}
