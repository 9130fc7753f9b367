package l4

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// FlowTables are the flow tables the fastl4 virtuals use: IPv4 TCP, IPv4
// UDP and IPv6 (both protocols). A table no virtual uses is created with
// one entry. The zero value (nothing said) sizes all three.
type FlowTables struct {
	TCP4, UDP4, IP6 bool
}

// TablesFor returns the flow tables the virtuals use.
func TablesFor(vs []Virtual) FlowTables {
	var t FlowTables
	for _, v := range vs {
		switch {
		case v.Listen.Addr().Is6() && !v.Listen.Addr().Is4In6():
			t.IP6 = true
		case v.Proto == UDP:
			t.UDP4 = true
		default:
			t.TCP4 = true
		}
	}
	return t
}

// entries is how many entries each flow table gets for maxFlows
// connections (two entries each, one per direction).
func (t FlowTables) entries(maxFlows int) (tcp4, udp4, ip6, half int) {
	all := t == FlowTables{}
	size := func(used bool) int {
		if used || all {
			return 2 * maxFlows
		}
		return 1
	}
	return size(t.TCP4), size(t.UDP4), size(t.IP6), halfOpenEntries(maxFlows)
}

// The kernel's hash map element: a 48-byte header (struct htab_elem),
// then key and value, each rounded up to 8 bytes; 16 bytes per bucket
// (a power of two at least the entries); per possible CPU, a spare
// element (preallocated maps) and 8 lock words.
const (
	htabElemHeader = 48
	htabBucket     = 16
)

func htabBytes(entries, keySize, valueSize, cpus int, lru bool) uint64 {
	round8 := func(n int) int { return (n + 7) &^ 7 }
	elem := uint64(htabElemHeader + round8(keySize) + round8(valueSize))
	buckets := uint64(1) << bits.Len(uint(entries-1))
	n := uint64(entries)
	extra := uint64(0)
	if !lru {
		n += uint64(cpus)
		extra = 8 * uint64(cpus)
	}
	return buckets*htabBucket + n*elem + extra + 4*8*uint64(cpus)
}

// FlowMemory is the map memory the flow tables pin for maxFlows
// connections of the tables t, as the kernel accounts it (the memlock of
// bpftool map show): the preallocated IPv4 TCP table and the half-open
// table from the start, the IPv4 UDP and IPv6 tables once full.
func FlowMemory(maxFlows int, t FlowTables, cpus int) uint64 {
	tcp4, udp4, ip6, half := t.entries(maxFlows)
	key4 := int(unsafe.Sizeof(bpf.FastL4FlowKey4{}))
	key := int(unsafe.Sizeof(bpf.FastL4FlowKey{}))
	val := int(unsafe.Sizeof(bpf.FastL4FlowVal{}))
	// The tables allocated as they fill add an 8-byte list node per
	// element.
	return htabBytes(tcp4, key4, val, cpus, false) +
		htabBytes(udp4, key4, val+8, cpus, false) +
		htabBytes(ip6, key, val+8, cpus, false) +
		htabBytes(half, key, val, cpus, true)
}

// sizeFlowTables sets the flow tables' entries in spec. A table pinned by
// an earlier run keeps its size while it holds flows (a resize would
// lose them); an empty one of another size is unpinned, to be created
// afresh.
func (f *FastPath) sizeFlowTables(spec *ebpf.CollectionSpec) error {
	tcp4, udp4, ip6, half := f.opts.Tables.entries(f.opts.MaxFlows)
	for name, n := range map[string]int{
		bpf.FastL4MapFlows4Tcp: tcp4, bpf.FastL4MapFlows4Udp: udp4,
		bpf.FastL4MapFlows6: ip6, bpf.FastL4MapHalfOpen: half,
	} {
		spec.Maps[name].MaxEntries = uint32(n)
		pin := filepath.Join(f.opts.PinPath, name)
		m, err := ebpf.LoadPinnedMap(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("open pinned flow table %s: %w", name, err)
		}
		pinned := int(m.MaxEntries())
		empty := m.NextKey(nil, make([]byte, m.KeySize())) != nil
		m.Close()
		switch {
		case pinned == n:
		case empty:
			if err := os.Remove(pin); err != nil {
				return fmt.Errorf("replace empty flow table %s: %w", name, err)
			}
		default:
			f.log.Warn("keeping the size of a pinned flow table that holds flows", "table", name, "pinned", pinned, "asked", n)
			spec.Maps[name].MaxEntries = uint32(pinned)
		}
	}
	return nil
}

// tablesSized checks that the flow table of every virtual was sized for
// flows when the fast path opened (Options.Tables): a table no virtual
// used then holds one entry, and resizing it means reopening the fast
// path.
func (f *FastPath) tablesSized(vs []Virtual) error {
	for _, v := range vs {
		t := TablesFor([]Virtual{v})
		m, table := f.flows.v4tcp, "IPv4 TCP"
		switch {
		case t.IP6:
			m, table = f.flows.v6, "IPv6"
		case t.UDP4:
			m, table = f.flows.v4udp, "IPv4 UDP"
		}
		if m != nil && m.MaxEntries() < 2 && f.opts.MaxFlows > 1 {
			return fmt.Errorf("apply virtual %s: the fast path opened without an %s virtual, so its %s flow table holds no flows: restart edgeproxy to size it", v.Name, table, table)
		}
	}
	return nil
}
