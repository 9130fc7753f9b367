package l4

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// reasonsOf are the reason names of the build obj ("" the committed one).
func reasonsOf(t *testing.T, obj string) []string {
	t.Helper()
	names, err := specReasons(variantSpec(t, obj))
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// pinnedCounters opens the pinned counters (stats) under dir.
func pinnedCounters(t *testing.T, dir string) (*ebpf.Map, int) {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.FastL4MapStats), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	return m, cpus
}

// TestPrivilegedUpgradeKeepsCounters: an upgrade to a build whose enum
// reason has one more reason, first, so every other is renumbered (and
// the counters resized), keeps each virtual's counters under their
// reasons' names.
func TestPrivilegedUpgradeKeepsCounters(t *testing.T) {
	testnet.RequireRoot(t)
	objB := buildVariant(t, "-DREASON_TEST_FIRST")
	namesA, namesB := reasonsOf(t, ""), reasonsOf(t, objB)
	if namesB[0] != "test_added" || !slices.Equal(namesB[1:], namesA) {
		t.Fatalf("the test build's reasons are %v, want test_added then %v", namesB, namesA)
	}
	e := newEnv(t, func(lab *testnet.Lab) *Spec {
		return testSpec(lab, fastl4("web", "198.18.0.10:443", "one4", 443))
	}, nil)
	names := e.fp.virtualNames()
	vid := slices.Index(names[:], "web")
	if vid <= 0 {
		t.Fatalf("no virtual web in %v", names)
	}
	// Nothing reaches the VIP: the counts are the test's.
	stats, cpus := pinnedCounters(t, e.opts.PinPath)
	for i := range namesA {
		v := make([]bpf.FastL4Stat, cpus)
		for c := range v {
			v[c] = bpf.FastL4Stat{Packets: uint64(1000 + i), Bytes: uint64(64 * (1000 + i))}
		}
		if err := stats.Put(uint32(vid*len(namesA)+i), v); err != nil {
			t.Fatal(err)
		}
	}

	e.fp.Close()
	useBuild(t, objB)
	e.open()
	if names = e.fp.virtualNames(); slices.Index(names[:], "web") != vid {
		t.Fatalf("virtual web is not %d after the upgrade: %v", vid, names)
	}
	stats, _ = pinnedCounters(t, e.opts.PinPath)
	if int(stats.MaxEntries()) != maxVirtuals*len(namesB) {
		t.Fatalf("the pinned counters have %d entries after the upgrade, want B's %d", stats.MaxEntries(), maxVirtuals*len(namesB))
	}
	for i, name := range namesB {
		var v []bpf.FastL4Stat
		if err := stats.Lookup(uint32(vid*len(namesB)+i), &v); err != nil {
			t.Fatal(err)
		}
		want := uint64(0)
		if j := slices.Index(namesA, name); j >= 0 {
			want = uint64(1000 + j)
		}
		for c := range v {
			if v[c].Packets != want || v[c].Bytes != 64*want {
				t.Fatalf("%s of virtual web on CPU %d is %+v after the upgrade, want %d packets", name, c, v[c], want)
			}
		}
	}
}
