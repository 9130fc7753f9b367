package l4

import (
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/lab"
)

// BenchmarkLookupFloor is what the machine itself allows the established
// path over BenchmarkProgramEstablished's working sets: a program built
// here (no C) takes a key from the frame, makes one map lookup, writes one
// word of the value and rewrites the frame's key into the next entry's of
// a cycle (the value holds it), so that each run hits another entry in
// turn, with the same harness (testRuns, chainRun, benchKeys). The map is
// laid out as the IPv4 TCP flow table for 1 M connections: hash, the
// table's own spec (key, 128-byte value, flags) and entries; array: as
// many 128-byte values indexed by a number in the frame, the memory and
// TLB cost without hashing. ratio is each working set's time over one
// entry's, in the same run (bpf/README.md, "Compact flows").
//
//	sudo go test ./l4 -run '^$' -bench 'LookupFloor|ProgramEstablished/ipv4' -benchtime 2000000x
func BenchmarkLookupFloor(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	spec, err := loadSpec()
	if err != nil {
		b.Fatal(err)
	}
	table := spec.Maps[bpf.FastL4MapFlows4Tcp]
	if table.ValueSize != uint32(unsafe.Sizeof(floorVal{})) {
		b.Fatalf("the flow value is %d bytes, the floor's %d", table.ValueSize, unsafe.Sizeof(floorVal{}))
	}
	const flows = 1 << 20
	for _, kind := range []string{"hash", "array"} {
		ms := &ebpf.MapSpec{Name: "floor_" + kind, Type: ebpf.Array, KeySize: 4, ValueSize: table.ValueSize}
		if kind == "hash" {
			ms = table.Copy()
			ms.Name, ms.Pinning = "floor_hash", ebpf.PinNone
		}
		ms.MaxEntries = 2 * flows // two halves per connection, as FlowTables sizes it
		f := newFloor(b, ms)
		var one float64
		for _, n := range []int{1, 1 << 10, 1 << 16, flows} {
			b.Run(fmt.Sprintf("%s/%d", kind, n), func(b *testing.B) {
				f.fill(b, n)
				f.run(b, n) // as the program's benchmark: every entry once
				b.ResetTimer()
				d := f.run(b, b.N)
				b.StopTimer()
				reportPacket(b, d, n, &one)
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

// floorVal is the value of the floor's map, the flow value's size: the
// cycle's next entry (the array's index in Next.Saddr), then the word the
// program writes.
type floorVal struct {
	Next  bpf.FastL4FlowKey4
	_     uint32
	Count uint64
	_     [unsafe.Sizeof(bpf.FastL4FlowVal{}) - 24]byte
}

// floorKeyOff is where the key is in the frame: after an Ethernet header
// and two bytes, aligned.
const floorKeyOff = 16

// floor is BenchmarkLookupFloor's map and program over a cycle of keys.
type floor struct {
	m      *ebpf.Map
	prog   *ebpf.Program
	keys4  []bpf.FastL4FlowKey4 // hash: the cycle's keys in order
	idx    []uint32             // array: the cycle's indexes in order
	filled int
	start  int
}

func newFloor(b *testing.B, ms *ebpf.MapSpec) *floor {
	m, err := ebpf.NewMap(ms)
	if err != nil {
		b.Fatalf("create %s: %v", ms.Name, err)
	}
	b.Cleanup(func() { m.Close() })
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: ms.Name, Type: ebpf.XDP, License: "GPL", Instructions: floorProg(m)})
	if err != nil {
		b.Fatalf("load the %s floor program: %v", ms.Name, err)
	}
	b.Cleanup(func() { prog.Close() })
	holdInDispatcher(b, prog)
	return &floor{m: m, prog: prog}
}

// holdInDispatcher attaches prog (generic XDP) to the loopback of a fresh
// namespace: a test run of a program no device runs adds it to the
// kernel's XDP dispatcher and removes it after, waiting for RCU each
// time, as the program BenchmarkProgramEstablished runs never does.
func holdInDispatcher(b *testing.B, prog *ebpf.Program) {
	ns, err := lab.NewNS(fmt.Sprintf("epfloor%d", time.Now().UnixNano()%1e6))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(ns.Close)
	if err := ns.Do(func() error {
		lk, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: 1, Flags: link.XDPGenericMode})
		if err == nil {
			b.Cleanup(func() { lk.Close() })
		}
		return err
	}); err != nil {
		b.Fatalf("attach the floor program to lo: %v", err)
	}
}

// floorProg looks up the key at floorKeyOff in m, adds one to the value's
// Count, copies its Next over the key and drops the frame; a key m lacks
// aborts it (and every later run of the call, the frame unchanged).
func floorProg(m *ebpf.Map) asm.Instructions {
	ks := int16(m.KeySize())
	insns := asm.Instructions{
		asm.LoadMem(asm.R7, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, int32(floorKeyOff+ks)),
		asm.JGT.Reg(asm.R2, asm.R3, "abort"),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, floorKeyOff),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "abort"),
		asm.LoadMem(asm.R1, asm.R0, int16(unsafe.Offsetof(floorVal{}.Count)), asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, int16(unsafe.Offsetof(floorVal{}.Count)), asm.R1, asm.DWord),
	}
	for off := int16(0); off < ks; {
		size, n := asm.DWord, int16(8)
		if ks-off < 8 {
			size, n = asm.Word, 4
		}
		insns = append(insns, asm.LoadMem(asm.R1, asm.R0, off, size), asm.StoreMem(asm.R7, floorKeyOff+off, asm.R1, size))
		off += n
	}
	return append(insns,
		asm.Mov.Imm(asm.R0, xdpDrop),
		asm.Return(),
		asm.Mov.Imm(asm.R0, xdpAborted).WithSymbol("abort"),
		asm.Return(),
	)
}

// fill replaces the map's cycle with one of n entries: for the hash, the
// keys of BenchmarkProgramEstablished's IPv4 flows in the same order; for
// the array, indexes in a random order (their insertion order).
func (f *floor) fill(b *testing.B, n int) {
	keys, order := benchKeys("ipv4", n, netip.MustParseAddrPort("198.18.0.100:4443"))
	vals := make([]floorVal, n)
	if f.m.Type() == ebpf.Array {
		f.idx = make([]uint32, n)
		for j := range n {
			f.idx[j] = uint32(order[j])
		}
		for j := range n {
			vals[j].Next.Saddr = f.idx[(j+1)%n]
		}
		f.update(b, f.idx, vals)
	} else {
		f.clear(b)
		k4 := make([]bpf.FastL4FlowKey4, n)
		for j := range keys {
			k4[j] = key4(&keys[j])
		}
		for j := range n {
			vals[j].Next = k4[(j+1)%n]
		}
		f.keys4 = k4
		f.update(b, k4, vals)
	}
	f.filled, f.start = n, 0
}

// update writes vals[i] under keys[i], in one batch.
func (f *floor) update(b *testing.B, keys any, vals []floorVal) {
	if _, err := f.m.BatchUpdate(keys, vals, nil); err != nil {
		b.Fatalf("fill the %s map (%d entries): %v", f.m.Type(), len(vals), err)
	}
}

// clear empties the hash map of the last cycle.
func (f *floor) clear(b *testing.B) {
	if len(f.keys4) == 0 {
		return
	}
	if _, err := f.m.BatchDelete(f.keys4, nil); err != nil {
		b.Fatalf("empty the hash map: %v", err)
	}
}

// run sends n frames around the cycle and returns the kernel's average
// time per frame; every run must find its key.
func (f *floor) run(b *testing.B, n int) time.Duration {
	in := make([]byte, 64)
	return chainRun(n, f.filled, &f.start, func(at, k int) time.Duration {
		if f.keys4 != nil {
			*(*bpf.FastL4FlowKey4)(unsafe.Pointer(&in[floorKeyOff])) = f.keys4[at]
		} else {
			*(*uint32)(unsafe.Pointer(&in[floorKeyOff])) = f.idx[at]
		}
		ret, d := testRuns(b, f.prog.FD(), in, xdpMD{DataEnd: uint32(len(in))}, k)
		if ret != xdpDrop {
			b.Fatalf("%s floor: verdict %d at entry %d of the cycle, want drop (every key found)", f.m.Type(), ret, at)
		}
		return d
	})
}
