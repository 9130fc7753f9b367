package l4

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// flowTable is the program's flow table: IPv4 flows in flows4, whose
// short keys hash faster on the established path, IPv6 flows in flows6.
// Keys are handled in their full form (bpf.FastL4FlowKey) here.
type flowTable struct {
	v4, v6 *ebpf.Map
}

func key4(k *bpf.FastL4FlowKey) bpf.FastL4FlowKey4 {
	return bpf.FastL4FlowKey4{Saddr: k.Saddr.W[0], Daddr: k.Daddr.W[0], Sport: k.Sport, Dport: k.Dport, Proto: k.Proto}
}

func keyFrom4(k *bpf.FastL4FlowKey4) bpf.FastL4FlowKey {
	var out bpf.FastL4FlowKey
	out.Saddr.W[0], out.Daddr.W[0] = k.Saddr, k.Daddr
	out.Sport, out.Dport, out.Proto, out.Family = k.Sport, k.Dport, k.Proto, 4
	return out
}

func (t flowTable) Lookup(k bpf.FastL4FlowKey, v *bpf.FastL4FlowVal) error {
	if k.Family == 4 {
		k4 := key4(&k)
		return t.v4.Lookup(&k4, v)
	}
	return t.v6.Lookup(&k, v)
}

func (t flowTable) Update(k bpf.FastL4FlowKey, v *bpf.FastL4FlowVal, flags ebpf.MapUpdateFlags) error {
	if k.Family == 4 {
		k4 := key4(&k)
		return t.v4.Update(&k4, v, flags)
	}
	return t.v6.Update(&k, v, flags)
}

func (t flowTable) Delete(k bpf.FastL4FlowKey) error {
	if k.Family == 4 {
		k4 := key4(&k)
		return t.v4.Delete(&k4)
	}
	return t.v6.Delete(&k)
}

// deleteKeys deletes with batch operations, one by one where a batch
// stops on a key that is already gone.
func (t flowTable) deleteKeys(keys []bpf.FastL4FlowKey) {
	var k4s []bpf.FastL4FlowKey4
	var k6s []bpf.FastL4FlowKey
	for i := range keys {
		if keys[i].Family == 4 {
			k4s = append(k4s, key4(&keys[i]))
		} else {
			k6s = append(k6s, keys[i])
		}
	}
	batchDelete(t.v4, k4s)
	batchDelete(t.v6, k6s)
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
	{
		keys := make([]bpf.FastL4FlowKey4, batch)
		var cursor ebpf.MapBatchCursor
		for {
			n, err := t.v4.BatchLookup(&cursor, keys, vals, nil)
			for i := range n {
				fn(keyFrom4(&keys[i]), &vals[i])
			}
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				return fmt.Errorf("read IPv4 flow table: %w", err)
			}
		}
	}
	keys := make([]bpf.FastL4FlowKey, batch)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := t.v6.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			fn(keys[i], &vals[i])
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read IPv6 flow table: %w", err)
		}
	}
}

// readPairs reads the whole table and pairs the halves by their client
// side key.
func (t flowTable) readPairs() (map[bpf.FastL4FlowKey]*pair, error) {
	pairs := map[bpf.FastL4FlowKey]*pair{}
	err := t.each(func(k bpf.FastL4FlowKey, v *bpf.FastL4FlowVal) {
		h := &half{key: k, val: *v}
		ck := h.key
		if h.val.Dir == dirServer {
			ck = h.val.Peer
		}
		p := pairs[ck]
		if p == nil {
			p = &pair{}
			pairs[ck] = p
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
