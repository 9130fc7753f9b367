package l4

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// flowValOf is struct flow_val of the build obj ("" the committed one).
func flowValOf(t *testing.T, obj string) (*btf.Struct, *ebpf.CollectionSpec) {
	t.Helper()
	load := bpf.LoadFastL4
	if obj != "" {
		load = func() (*ebpf.CollectionSpec, error) { return ebpf.LoadCollectionSpec(obj) }
	}
	spec, err := load()
	if err != nil {
		t.Fatal(err)
	}
	var s *btf.Struct
	if err := spec.Types.TypeByName("flow_val", &s); err != nil {
		t.Fatal(err)
	}
	return s, spec
}

// put writes v at the member name of s in b.
func put(t *testing.T, b []byte, s *btf.Struct, name string, v any) {
	t.Helper()
	f, err := fieldOf(s, name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := binary.Encode(b[f.off:f.end()], binary.LittleEndian, v); err != nil {
		t.Fatal(err)
	}
}

func TestConversionFlowValFromLayout1(t *testing.T) {
	old, _ := flowValOf(t, buildCommit(t, layout1Commit))
	now, _ := flowValOf(t, "")
	hook, err := valueHookFor(1, old, now)
	if err != nil || hook == nil {
		t.Fatalf("no conversion hook for flow_val from layout 1: %v", err)
	}
	c, err := newHookedConversion(old, now, old.Size, now.Size, hook)
	if err != nil {
		t.Fatalf("plan the conversion of flow_val from layout 1: %v", err)
	}
	// An IPv6 flow's client half, its next hop cached in tx slot 3.
	var self, peer bpf.FastL4FlowKey
	self.Saddr.W, self.Daddr.W = [4]uint32{0x20010db8, 0, 0, 1}, [4]uint32{0x20010db8, 0, 0, 0x10}
	self.Sport, self.Dport, self.Proto, self.Family = 40000, 443, 6, 6
	peer.Saddr.W, peer.Daddr.W = [4]uint32{0x20010db8, 1, 0, 0x20}, [4]uint32{0x20010db8, 1, 0, 5}
	peer.Sport, peer.Dport, peer.Proto, peer.Family = 443, 41000, 6, 6
	src := make([]byte, old.Size)
	put(t, src, old, "self", self)
	put(t, src, old, "peer", peer)
	put(t, src, old, "vid", uint32(7))
	put(t, src, old, "tx_slot", uint32(3))
	put(t, src, old, "ack", uint32(123456))
	put(t, src, old, "icmp_ms", uint32(99999))
	put(t, src, old, "last_ns", uint64(5e9))
	put(t, src, old, "closing", uint32(0))
	put(t, src, old, "seen", uint8(bpf.FastL4FlowSeenSEEN_SYN|bpf.FastL4FlowSeenSEEN_ACK))
	dst, err := c.convert(src)
	if err != nil {
		t.Fatal(err)
	}
	var got bpf.FastL4FlowVal
	if _, err := binary.Decode(dst, binary.LittleEndian, &got); err != nil {
		t.Fatal(err)
	}
	var want bpf.FastL4FlowVal
	setKeys(&want, self, peer)
	want.Vid, want.Ack, want.LastNs = 7, 123456, 5e9
	want.Seen = uint8(bpf.FastL4FlowSeenSEEN_SYN | bpf.FastL4FlowSeenSEEN_ACK)
	want.Win, want.Wscale = layout1Win, layout1WScale
	if got != want {
		t.Errorf("converted flow value\n%+v, want\n%+v", got, want)
	}
	// What the window check (ct_window) accepts: what layout 1 accepted,
	// 2^24 past the last ack, within one unscaled window.
	if w := uint32(got.Win) << (got.Wscale & 0x0f); got.Wscale&wscaleBoth == 0 || w < 1<<24-1<<16 || w > 1<<24 {
		t.Errorf("converted window %d bytes, want about 2^24", w)
	}

	// A virtual id beyond a byte is refused, naming the member.
	put(t, src, old, "vid", uint32(300))
	if _, err := c.convert(src); !errors.Is(err, errLayoutIncompatible) || !strings.Contains(err.Error(), "value.vid") {
		t.Errorf("converting vid 300: %v, want %v naming value.vid", err, errLayoutIncompatible)
	}
}
