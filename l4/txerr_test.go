package l4

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// txErrors reads edgeproxy_xdp_tx_errors_total of iface from c (0 when
// it is not reported).
func txErrors(t *testing.T, c prometheus.Collector, iface string) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 4096)
	c.Collect(ch)
	close(ch)
	v := 0.0
	for m := range ch {
		if m.Desc() != descTxErrors {
			continue
		}
		var pb dto.Metric
		if err := m.Write(&pb); err != nil {
			t.Fatal(err)
		}
		for _, l := range pb.GetLabel() {
			if l.GetName() == "interface" && l.GetValue() == iface {
				v = pb.GetCounter().GetValue()
			}
		}
	}
	return v
}

// TestPrivilegedTxErrors takes the member side's veth peer down under an
// open connection through the sink virtual: from then on every segment
// the program redirects towards the member is refused by the veth, whose
// peer takes no frames. edgeproxy_xdp_tx_errors_total of the internal
// NIC counts them, the external NIC's stays 0, and the virtual's
// forwarded count (fwd_client) does not grow: each refused frame is
// counted as drop_tx_refused instead.
func TestPrivilegedTxErrors(t *testing.T) {
	x := newE2E(t)
	lab := x.lab
	c, err := lab.Client.Dial("tcp", "198.18.0.10:5001")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("through the fast path")); err != nil {
		t.Fatal(err)
	}
	col := x.fp.Collector()
	if n := txErrors(t, col, testnet.IntIf) + txErrors(t, col, testnet.ExtIf); n != 0 {
		t.Fatalf("%v frames refused with both links up", n)
	}

	// Carrier loss flushes the neighbours learnt on int0, and a flow whose
	// next hop is looked up again finds none (drop_no_neigh): the frames
	// must keep reaching the egress to be refused there.
	keepNeighbours(t, lab.Proxy, testnet.IntIf)
	lab.Backend.Run(t, "ip", "link", "set", testnet.BackendIf, "down")
	defer lab.Backend.Run(t, "ip", "link", "set", testnet.BackendIf, "up")
	fwd := x.delta("sink", bpf.FastL4ReasonREASON_FWD_CLIENT)
	moved := x.delta("sink", bpf.FastL4ReasonREASON_DROP_TX_REFUSED)
	before := txErrors(t, col, testnet.IntIf)
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(make([]byte, 32<<10)); err != nil {
		t.Fatal(err)
	}
	// Counted when the devmap is flushed, after the program returned:
	// wait for the retransmissions to be refused, and the counts to agree.
	var refused float64
	var sent, dropped uint64
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		refused, sent, dropped = txErrors(t, col, testnet.IntIf)-before, fwd(), moved()
		if refused >= 3 && float64(dropped) == refused && sent == 0 {
			break
		}
	}
	t.Logf("with %s down: %v segments refused on %s, %d counted as drop_tx_refused, %d as forwarded", testnet.BackendIf, refused, testnet.IntIf, dropped, sent)
	if refused == 0 {
		t.Fatalf("with %s down: no segment refused on %s", testnet.BackendIf, testnet.IntIf)
	}
	if sent != 0 {
		t.Errorf("with %s down: fwd_client grew by %d, want 0 (every segment was refused)", testnet.BackendIf, sent)
	}
	if float64(dropped) != refused {
		t.Errorf("with %s down: drop_tx_refused grew by %d, want %v", testnet.BackendIf, dropped, refused)
	}
	if n := txErrors(t, col, testnet.ExtIf); n != 0 {
		t.Errorf("%v frames refused on %s", n, testnet.ExtIf)
	}
}

// keepNeighbours makes the neighbours resolved on dev in ns permanent, so
// that the kernel keeps them when dev loses its carrier.
func keepNeighbours(t *testing.T, ns *testnet.NS, dev string) {
	t.Helper()
	var neigh []struct {
		Dst    string `json:"dst"`
		Lladdr string `json:"lladdr"`
	}
	if err := json.Unmarshal([]byte(ns.Run(t, "ip", "-j", "neigh", "show", "dev", dev)), &neigh); err != nil {
		t.Fatalf("read the neighbours on %s: %v", dev, err)
	}
	for _, n := range neigh {
		if n.Lladdr != "" {
			ns.Run(t, "ip", "neigh", "replace", n.Dst, "lladdr", n.Lladdr, "dev", dev, "nud", "permanent")
		}
	}
}
