package l4

import (
	"testing"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// layouts are the hashes of the pinned map layouts of every
// LAYOUT_VERSION (bpf/common.h). A build changing a pinned map's key or
// value raises LAYOUT_VERSION and adds its hash here: pins of a lower
// version are migrated, of a higher one refused, so two layouts must never
// share a version.
var layouts = map[uint32]uint64{
	1: 0x77d889d6d246e273,
	// Re-recorded when the hash came to count the counters' size too: the
	// maps themselves did not change.
	2: 0x0e7496bc6bd7c77d,
	3: 0x38a520056a678dfd, // reap_watch (bpf/maps.h), flow_val.ts_last, owners (bpf/peers.h)
	4: 0xec5dddf90e29ccfb, // reason reap_watch_full (stats one reason larger)
}

func TestLayoutVersion(t *testing.T) {
	spec, err := bpf.LoadFastL4()
	if err != nil {
		t.Fatal(err)
	}
	l, err := specLayout(spec)
	if err != nil {
		t.Fatal(err)
	}
	want, ok := layouts[l.version]
	if !ok || want != l.hash {
		t.Fatalf("the pinned maps' layout %016x is not the one recorded for LAYOUT_VERSION %d (%016x): raise LAYOUT_VERSION in bpf/common.h and record 0x%016x under it in layouts",
			l.hash, l.version, want, l.hash)
	}
}

// TestLayoutCountsReasons: a reason added to enum reason resizes the
// counters (stats, MAX_VIRTUALS * REASON_MAX), and changes the layout, so
// TestLayoutVersion asks for a new LAYOUT_VERSION.
func TestLayoutCountsReasons(t *testing.T) {
	spec, err := bpf.LoadFastL4()
	if err != nil {
		t.Fatal(err)
	}
	before, err := specLayout(spec)
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps[bpf.FastL4MapStats].MaxEntries += uint32(maxVirtuals)
	after, err := specLayout(spec)
	if err != nil {
		t.Fatal(err)
	}
	if before == after {
		t.Fatalf("one more reason leaves the layout %s as it was", before)
	}
}
