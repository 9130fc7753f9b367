package l4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// structOf lays members out in order, without padding.
func structOf(name string, ms ...btf.Member) *btf.Struct {
	off := uint32(0)
	for i := range ms {
		ms[i].Offset = btf.Bits(off * 8)
		n, _ := btf.Sizeof(ms[i].Type)
		off += uint32(n)
	}
	return &btf.Struct{Name: name, Size: off, Members: ms}
}

var (
	u8  = &btf.Int{Name: "u8", Size: 1}
	u16 = &btf.Int{Name: "u16", Size: 2}
	u32 = &btf.Int{Name: "u32", Size: 4}
	s16 = &btf.Int{Name: "s16", Size: 2, Encoding: btf.Signed}
	s32 = &btf.Int{Name: "s32", Size: 4, Encoding: btf.Signed}
)

func TestConversionByName(t *testing.T) {
	mac := &btf.Array{Type: u8, Nelems: 6}
	from := structOf("flow_val",
		btf.Member{Name: "vid", Type: u32},
		btf.Member{Name: "gone", Type: u16},
		btf.Member{Name: "mss", Type: u16},
		btf.Member{Name: "delta", Type: s16},
		btf.Member{Name: "mac", Type: mac},
	)
	to := structOf("flow_val",
		btf.Member{Name: "mac", Type: mac},
		btf.Member{Name: "added", Type: u32},
		btf.Member{Name: "delta", Type: s32},
		btf.Member{Name: "mss", Type: u32},
		btf.Member{Name: "vid", Type: &btf.Typedef{Name: "__u32", Type: u32}},
	)
	c, err := newConversion(from, to, from.Size, to.Size)
	if err != nil {
		t.Fatal(err)
	}
	src := []byte{7, 0, 0, 0, 0xee, 0xee, 0xdc, 0x05, 0xfe, 0xff, 1, 2, 3, 4, 5, 6}
	want := []byte{1, 2, 3, 4, 5, 6, 0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xdc, 0x05, 0, 0, 7, 0, 0, 0}
	if got := c.apply(src); !bytes.Equal(got, want) {
		t.Errorf("converted\n%v, want\n%v", got, want)
	}
	if c, err := newConversion(from, from, from.Size, from.Size); err != nil || !c.identity {
		t.Errorf("the same layout is not copied as it is (%v)", err)
	}
}

func TestConversionRefusesIncompatible(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from, to btf.Type
		path     string
	}{
		{"narrowed", structOf("v", btf.Member{Name: "n", Type: u32}), structOf("v", btf.Member{Name: "n", Type: u16}), "value.n"},
		{"integer to array", structOf("v", btf.Member{Name: "n", Type: u32}), structOf("v", btf.Member{Name: "n", Type: &btf.Array{Type: u8, Nelems: 4}}), "value.n"},
		{"struct to integer", structOf("v", btf.Member{Name: "k", Type: structOf("k", btf.Member{Name: "a", Type: u32})}),
			structOf("v", btf.Member{Name: "k", Type: u32}), "value.k"},
	} {
		_, err := newConversion(tc.from, tc.to, 4, 4)
		if !errors.Is(err, errLayoutIncompatible) || !strings.Contains(err.Error(), tc.path) {
			t.Errorf("%s: %v, want %v naming %s", tc.name, err, errLayoutIncompatible, tc.path)
		}
	}
}

// newTypedMap creates a map whose key and value carry BTF.
func newTypedMap(t *testing.T, typ ebpf.MapType, key, value btf.Type) *ebpf.Map {
	t.Helper()
	ks, _ := btf.Sizeof(key)
	vs, _ := btf.Sizeof(value)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: typ, KeySize: uint32(ks), ValueSize: uint32(vs), MaxEntries: 8, Key: key, Value: value})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// migrationOf plans the copy of old into a map of layout like new, from
// the BTF the kernel holds for old.
func migrationOf(t *testing.T, old, new *ebpf.Map, key, value btf.Type) *mapMigration {
	t.Helper()
	ok, ov, err := kernelMapTypes(old)
	if err != nil || ok == nil || ov == nil {
		t.Fatalf("read the old map's BTF: %v", err)
	}
	mm := &mapMigration{old: old}
	if mm.key, err = newConversion(ok, key, old.KeySize(), new.KeySize()); err == nil {
		mm.val, err = newConversion(ov, value, old.ValueSize(), new.ValueSize())
	}
	if err != nil {
		t.Fatal(err)
	}
	return mm
}

func TestPrivilegedMigrationCopiesEntries(t *testing.T) {
	testnet.RequireRoot(t)
	oldVal := structOf("val", btf.Member{Name: "a", Type: u32}, btf.Member{Name: "b", Type: u32})
	newVal := structOf("val", btf.Member{Name: "x", Type: u32}, btf.Member{Name: "b", Type: u32}, btf.Member{Name: "a", Type: u32}, btf.Member{Name: "y", Type: u32})
	le := binary.LittleEndian

	// A hash: every entry converted; the late pass adds the keys the new
	// map lacks and keeps those it has.
	old := newTypedMap(t, ebpf.Hash, u32, oldVal)
	for k := range uint32(3) {
		if err := old.Put(k, []byte{byte(k), 0, 0, 0, byte(10 + k), 0, 0, 0}); err != nil {
			t.Fatal(err)
		}
	}
	nw := newTypedMap(t, ebpf.Hash, u32, newVal)
	mm := migrationOf(t, old, nw, u32, newVal)
	if n, err := mm.copy(nw, false); err != nil || n != 3 {
		t.Fatalf("copied %d entries (%v), want 3", n, err)
	}
	var v []byte
	if err := nw.Lookup(uint32(2), &v); err != nil || le.Uint32(v[0:]) != 0 || le.Uint32(v[4:]) != 12 || le.Uint32(v[8:]) != 2 || le.Uint32(v[12:]) != 0 {
		t.Fatalf("entry 2 became %v (%v), want b=12 a=2 and the new members zero", v, err)
	}
	if err := old.Put(uint32(5), make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	if err := nw.Put(uint32(1), bytes.Repeat([]byte{0xaa}, 16)); err != nil {
		t.Fatal(err)
	}
	if n, err := mm.copy(nw, true); err != nil || n != 1 {
		t.Fatalf("the late pass copied %d entries (%v), want the one added meanwhile", n, err)
	}
	if err := nw.Lookup(uint32(1), &v); err != nil || v[0] != 0xaa {
		t.Errorf("the late pass overwrote an entry the new map had: %v (%v)", v, err)
	}

	// A per-CPU array: each CPU's value converted.
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	pold := newTypedMap(t, ebpf.PerCPUArray, u32, oldVal)
	vals := make([][]byte, cpus)
	for i := range vals {
		vals[i] = []byte{byte(i + 1), 0, 0, 0, 7, 0, 0, 0}
	}
	if err := pold.Put(uint32(4), vals); err != nil {
		t.Fatal(err)
	}
	pnew := newTypedMap(t, ebpf.PerCPUArray, u32, newVal)
	if _, err := migrationOf(t, pold, pnew, u32, newVal).copy(pnew, false); err != nil {
		t.Fatal(err)
	}
	got := make([][]byte, cpus)
	if err := pnew.Lookup(uint32(4), got); err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if le.Uint32(v[8:]) != uint32(i+1) || le.Uint32(v[4:]) != 7 {
			t.Errorf("CPU %d: %v, want a=%d b=7", i, v, i+1)
		}
	}
}
