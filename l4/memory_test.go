package l4

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// TestPrivilegedFlowMemory opens the fast path with max_flows 1048576 and
// one IPv4 TCP virtual, and reads what the kernel accounts to its flow
// tables (the memlock bpftool map show reports): it matches FlowMemory,
// the figure check prints, within 10 %, and the tables no virtual uses
// take next to nothing.
func TestPrivilegedFlowMemory(t *testing.T) {
	const maxFlows = 1 << 20
	tables := FlowTables{TCP4: true}
	e := newEnv(t, func(lab *testnet.Lab) *Spec {
		return testSpec(lab, fastl4("web", "198.18.0.10:443", "fe4", 4443))
	}, func(o *Options) { o.MaxFlows = maxFlows; o.Tables = tables })
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, m := range []struct {
		name string
		m    *ebpf.Map
	}{{"flows4_tcp", e.fp.objs.Flows4Tcp}, {"flows4_udp", e.fp.objs.Flows4Udp}, {"flows6", e.fp.objs.Flows6}, {"half_open", e.fp.objs.HalfOpen}} {
		n, err := mapMemlock(m.m)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d entries, %.1f MiB", m.name, m.m.MaxEntries(), float64(n)/(1<<20))
		if (m.name == "flows4_udp" || m.name == "flows6") && n > 1<<20 {
			t.Errorf("%s, which no virtual uses, pins %d bytes", m.name, n)
		}
		total += n
	}
	want := FlowMemory(maxFlows, tables, cpus)
	t.Logf("flow tables pin %.1f MiB; FlowMemory says %.1f MiB", float64(total)/(1<<20), float64(want)/(1<<20))
	if d := float64(total) - float64(want); d > 0.1*float64(want) || -d > 0.1*float64(want) {
		t.Errorf("flow tables pin %d bytes, FlowMemory says %d: more than 10 %% apart", total, want)
	}
}

// mapMemlock is the memory the kernel accounts to a map (memlock in its
// fdinfo, as bpftool map show reports it).
func mapMemlock(m *ebpf.Map) (uint64, error) {
	fh, err := os.Open(fmt.Sprintf("/proc/self/fdinfo/%d", m.FD()))
	if err != nil {
		return 0, fmt.Errorf("read map memory: %w", err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "memlock:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("read map memory: no memlock in the fdinfo of map %s", m)
}
