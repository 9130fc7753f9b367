package l4

import (
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cilium/ebpf/btf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// valueHook converts the members of a value that the member-by-member
// plan cannot carry from one layout version to another: the plan leaves
// the members it writes alone, fill writes them once the plan is applied.
type valueHook struct {
	members []string
	fill    func(src, dst []byte) error
}

func (h *valueHook) writes(member string) bool { return slices.Contains(h.members, member) }

// valueHookFor is the hook converting values of type from, pinned under
// layout version version, to type to, or nil when the plan alone carries
// them.
func valueHookFor(version uint32, from, to btf.Type) (*valueHook, error) {
	f, ok1 := btf.UnderlyingType(from).(*btf.Struct)
	t, ok2 := btf.UnderlyingType(to).(*btf.Struct)
	if !ok1 || !ok2 || version > 1 || f.Name != "flow_val" || t.Name != "flow_val" {
		return nil, nil
	}
	if _, compact := memberNamed(f, "self4"); compact {
		return nil, nil
	}
	return flowValHook1(f, t)
}

// flow_val.wscale (enum flow_wscale, bpf/common.h).
const (
	wscaleSent = 1 << 6
	wscaleBoth = 1 << 7
)

// layout1Window is what the window check of layout 2 (ct_window) accepts
// of a flow carried from layout 1, which held RSTs and ICMP errors to
// 2^24 past the last ack: 0xffff scaled by 2^8 as both sides' shift.
const (
	layout1Win    = 0xffff
	layout1WScale = 8 | wscaleSent | wscaleBoth
)

// flowValHook1 converts a flow value of layout 1 (full keys, 32-bit vid
// and tx_slot) to the compact one: the short keys the established path
// compares (setKeys), vid narrowed (refused when it does not fit), no
// cached next hop (the next packet resolves it), the window layout 1
// accepted, ICMP rate limiting restarted. The counters start at zero.
func flowValHook1(from, to *btf.Struct) (*valueHook, error) {
	var (
		self, peer, vid    field
		self4, peer4, vid2 field
		win, wscale        field
	)
	for _, f := range []struct {
		s    *btf.Struct
		name string
		out  *field
		size int
	}{
		{from, "self", &self, binary.Size(bpf.FastL4FlowKey{})}, {from, "peer", &peer, binary.Size(bpf.FastL4FlowKey{})},
		{from, "vid", &vid, 4}, {to, "self4", &self4, binary.Size(bpf.FastL4FlowKey4{})},
		{to, "peer4", &peer4, binary.Size(bpf.FastL4FlowKey4{})}, {to, "vid", &vid2, 1},
		{to, "win", &win, 2}, {to, "wscale", &wscale, 1},
	} {
		var err error
		if *f.out, err = fieldOf(f.s, f.name); err != nil {
			return nil, err
		}
		if f.out.size != f.size {
			return nil, fmt.Errorf("%w: value.%s is %d bytes, want %d", errLayoutIncompatible, f.name, f.out.size, f.size)
		}
	}
	le := binary.LittleEndian
	fill := func(src, dst []byte) error {
		var v bpf.FastL4FlowVal
		var s, p bpf.FastL4FlowKey
		if _, err := binary.Decode(src[self.off:self.end()], le, &s); err != nil {
			return fmt.Errorf("read value.self: %w", err)
		}
		if _, err := binary.Decode(src[peer.off:peer.end()], le, &p); err != nil {
			return fmt.Errorf("read value.peer: %w", err)
		}
		setKeys(&v, s, p)
		if _, err := binary.Encode(dst[self4.off:self4.end()], le, v.Self4); err != nil {
			return fmt.Errorf("write value.self4: %w", err)
		}
		if _, err := binary.Encode(dst[peer4.off:peer4.end()], le, v.Peer4); err != nil {
			return fmt.Errorf("write value.peer4: %w", err)
		}
		id := le.Uint32(src[vid.off:])
		if id > 0xff {
			return fmt.Errorf("value.vid %d does not fit in a byte", id)
		}
		dst[vid2.off] = byte(id)
		le.PutUint16(dst[win.off:], layout1Win)
		dst[wscale.off] = layout1WScale
		return nil
	}
	// tx_slot and icmp_ms stay zero: no cached next hop, no ICMP error
	// translated lately.
	return &valueHook{members: []string{"self4", "peer4", "vid", "tx_slot", "icmp_ms", "win", "wscale"}, fill: fill}, nil
}

// field is where a member lies in a value.
type field struct{ off, size int }

func (f field) end() int { return f.off + f.size }

// fieldOf finds the member name of s.
func fieldOf(s *btf.Struct, name string) (field, error) {
	m, ok := memberNamed(s, name)
	if !ok {
		return field{}, fmt.Errorf("%w: %s has no member %s", errLayoutIncompatible, s.Name, name)
	}
	n, err := btf.Sizeof(m.Type)
	if err != nil || m.BitfieldSize != 0 {
		return field{}, fmt.Errorf("%w: %s.%s has no size", errLayoutIncompatible, s.Name, name)
	}
	return field{int(m.Offset.Bytes()), n}, nil
}
