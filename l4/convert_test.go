package l4

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
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
