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
	2: 0x1ae21e0ee708fc7f,
	3: 0xbdb1673bf0da7a13,
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
