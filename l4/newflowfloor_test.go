package l4

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// BenchmarkNewFlowFloor is what the machine itself allows the first
// packet of a flow, with BenchmarkProgramNewFlow's harness (one
// BPF_PROG_TEST_RUN call per packet, a new tuple each, the maps cleared
// every 10,000 runs) and its table sizes (benchMaxFlows): a program built
// here (no C) looks the packet's key up in a hash made from flows4_tcp's
// spec, which must miss, and inserts it into an LRU hash made from
// half_open's (insert), or inserts both halves of the pair as the fast
// path does (pair); call does nothing, the harness's own time per call,
// as BenchmarkProgramPassSingle is the program's. Run them together:
//
//	sudo go test ./l4 -run '^$' -bench 'NewFlowFloor|ProgramNewFlow$|ProgramPassSingle$' -benchtime 20000x
func BenchmarkNewFlowFloor(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	spec, err := loadSpec()
	if err != nil {
		b.Fatal(err)
	}
	tcp4, _, _, half := FlowTables{}.entries(benchMaxFlows)
	flows := spec.Maps[bpf.FastL4MapFlows4Tcp].Copy()
	flows.Name, flows.Pinning, flows.MaxEntries = "floor_flows", ebpf.PinNone, uint32(tcp4)
	lru := spec.Maps[bpf.FastL4MapHalfOpen].Copy()
	lru.Name, lru.Pinning, lru.MaxEntries = "floor_half", ebpf.PinNone, uint32(half)
	if lru.ValueSize != newFlowFloorVal {
		b.Fatalf("the half-open value is %d bytes, the floor's %d", lru.ValueSize, newFlowFloorVal)
	}
	for _, tc := range []struct {
		name    string
		inserts int
	}{{"call", -1}, {"insert", 1}, {"pair", 2}} {
		b.Run(tc.name, func(b *testing.B) {
			fm, err := ebpf.NewMap(flows)
			if err != nil {
				b.Fatalf("create %s: %v", flows.Name, err)
			}
			defer fm.Close()
			hm, err := ebpf.NewMap(lru)
			if err != nil {
				b.Fatalf("create %s: %v", lru.Name, err)
			}
			defer hm.Close()
			prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "floor_new", Type: ebpf.XDP, License: "GPL",
				Instructions: newFlowFloorProg(fm, hm, tc.inserts)})
			if err != nil {
				b.Fatalf("load the new flow floor program: %v", err)
			}
			defer prog.Close()
			holdInDispatcher(b, prog)
			d := newFlowFloorRun(b, prog, hm, tc.inserts)
			b.ReportMetric(float64(d.Nanoseconds())/float64(b.N), "ns/packet")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// The floor's frame: the IPv4 key (looked up) at floorKeyOff, then the
// pair's keys (inserted), then the value.
const (
	newFlowFloorKey  = floorKeyOff + int(unsafe.Sizeof(bpf.FastL4FlowKey4{}))
	newFlowFloorKey2 = newFlowFloorKey + int(unsafe.Sizeof(bpf.FastL4FlowKey{}))
	newFlowFloorV    = newFlowFloorKey2 + int(unsafe.Sizeof(bpf.FastL4FlowKey{}))
	newFlowFloorVal  = uint32(unsafe.Sizeof(bpf.FastL4FlowVal{}))
	newFlowFloorLen  = newFlowFloorV + int(newFlowFloorVal)
)

// newFlowFloorRun sends b.N frames of new tuples, each its own call, and
// returns the kernel's time summed over them.
func newFlowFloorRun(b *testing.B, prog *ebpf.Program, hm *ebpf.Map, inserts int) time.Duration {
	in := make([]byte, newFlowFloorLen)
	var keys []bpf.FastL4FlowKey
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		if i%10000 == 0 && i > 0 {
			b.StopTimer()
			for j := range keys { // some may have been evicted
				if err := hm.Delete(&keys[j]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
					b.Fatalf("empty the half-open map: %v", err)
				}
			}
			keys = keys[:0]
			b.StartTimer()
		}
		// The program's benchmark's tuples: client address and port.
		c := [4]byte{198, 18, byte(1 + i/20000%200), byte(1 + i/100%250)}
		port := uint16(40000 + i%20000)
		k4 := bpf.FastL4FlowKey4{Saddr: binary.NativeEndian.Uint32(c[:]), Daddr: 0x0a0012c6, Sport: port, Dport: 443}
		k := bpf.FastL4FlowKey{Sport: port, Dport: 443, Proto: protoTCP, Family: 4}
		k.Saddr.W[0], k.Daddr.W[0] = k4.Saddr, k4.Daddr
		k2 := bpf.FastL4FlowKey{Sport: 4443, Dport: port, Proto: protoTCP, Family: 4}
		k2.Saddr.W[0], k2.Daddr.W[0] = 0x0b0113c6, 0x010012c6
		*(*bpf.FastL4FlowKey4)(unsafe.Pointer(&in[floorKeyOff])) = k4
		*(*bpf.FastL4FlowKey)(unsafe.Pointer(&in[newFlowFloorKey])) = k
		*(*bpf.FastL4FlowKey)(unsafe.Pointer(&in[newFlowFloorKey2])) = k2
		if inserts > 0 {
			keys = append(keys, k)
		}
		if inserts == 2 {
			keys = append(keys, k2)
		}
		ret, d := testRuns(b, prog.FD(), in, xdpMD{DataEnd: uint32(len(in))}, 1)
		if ret != xdpDrop {
			b.Fatalf("new flow floor: verdict %d at run %d, want drop (a miss, then inserts)", ret, i)
		}
		total += d
	}
	b.StopTimer()
	return total
}

// newFlowFloorProg looks the frame's IPv4 key up in flows, which must
// miss, then inserts the frame's first key (and, for inserts 2, its
// second) into half with the frame's value, as new entries; anything else
// aborts. With inserts below 0 it only checks the frame's length.
func newFlowFloorProg(flows, half *ebpf.Map, inserts int) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R7, asm.R1, 0, asm.Word), // data
		asm.LoadMem(asm.R3, asm.R1, 4, asm.Word), // data_end
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, int32(newFlowFloorLen)),
		asm.JGT.Reg(asm.R2, asm.R3, "abort"),
	}
	if inserts >= 0 {
		insns = append(insns, newFlowFloorWork(flows, half, inserts)...)
	}
	return append(insns,
		asm.Mov.Imm(asm.R0, xdpDrop),
		asm.Return(),
		asm.Mov.Imm(asm.R0, xdpAborted).WithSymbol("abort"),
		asm.Return(),
	)
}

// newFlowFloorWork is the floor's map work, r7 the frame's start.
func newFlowFloorWork(flows, half *ebpf.Map, inserts int) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMapPtr(asm.R1, flows.FD()),
		asm.Mov.Reg(asm.R2, asm.R7),
		asm.Add.Imm(asm.R2, floorKeyOff),
		asm.FnMapLookupElem.Call(),
		asm.JNE.Imm(asm.R0, 0, "abort"),
	}
	for j := range inserts {
		insns = append(insns,
			asm.LoadMapPtr(asm.R1, half.FD()),
			asm.Mov.Reg(asm.R2, asm.R7),
			asm.Add.Imm(asm.R2, int32(newFlowFloorKey+j*(newFlowFloorKey2-newFlowFloorKey))),
			asm.Mov.Reg(asm.R3, asm.R7),
			asm.Add.Imm(asm.R3, int32(newFlowFloorV)),
			asm.Mov.Imm(asm.R4, int32(ebpf.UpdateNoExist)),
			asm.FnMapUpdateElem.Call(),
			asm.JNE.Imm(asm.R0, 0, "abort"),
		)
	}
	return insns
}
