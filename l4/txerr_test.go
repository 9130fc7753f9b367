package l4

import (
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
// the program redirects towards the member (fwd_client) is refused by the
// veth, whose peer takes no frames, and edgeproxy_xdp_tx_errors_total of
// the internal NIC grows by exactly as many; the external NIC's stays 0.
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

	lab.Backend.Run(t, "ip", "link", "set", testnet.BackendIf, "down")
	defer lab.Backend.Run(t, "ip", "link", "set", testnet.BackendIf, "up")
	fwd := x.delta("sink", bpf.FastL4ReasonREASON_FWD_CLIENT)
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(make([]byte, 32<<10)); err != nil {
		t.Fatal(err)
	}
	// Counted when the devmap is flushed, after the program returned.
	var sent uint64
	var refused float64
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		refused, sent = txErrors(t, col, testnet.IntIf), fwd()
		if sent > 0 && refused == float64(sent) && refused == txErrors(t, col, testnet.IntIf) {
			break
		}
	}
	t.Logf("with %s down: %d segments redirected towards the member, %v refused", testnet.BackendIf, sent, refused)
	if sent == 0 || refused != float64(sent) {
		t.Errorf("with %s down: %d segments redirected towards the member, %v counted as refused on %s; want as many", testnet.BackendIf, sent, refused, testnet.IntIf)
	}
	if n := txErrors(t, col, testnet.ExtIf); n != 0 {
		t.Errorf("%v frames refused on %s", n, testnet.ExtIf)
	}
}
