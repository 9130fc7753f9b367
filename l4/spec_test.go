package l4

import (
	"testing"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// max_flows counts connections in Go and in C: the program's flow maps
// hold two entries (one per direction) for each of DefaultMaxFlows
// connections, and its half-open table DefaultMaxFlows entries.
func TestMaxFlowsUnit(t *testing.T) {
	spec, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{bpf.FastL4MapFlows4Tcp, bpf.FastL4MapFlows4Udp, bpf.FastL4MapFlows6} {
		if got := spec.Maps[name].MaxEntries; got != 2*DefaultMaxFlows {
			t.Errorf("map %s: %d entries compiled in, want 2 × %d connections", name, got, DefaultMaxFlows)
		}
	}
	if got := spec.Maps[bpf.FastL4MapHalfOpen].MaxEntries; got != uint32(halfOpenEntries(DefaultMaxFlows)) {
		t.Errorf("half_open: %d entries compiled in, want %d", got, halfOpenEntries(DefaultMaxFlows))
	}
}
