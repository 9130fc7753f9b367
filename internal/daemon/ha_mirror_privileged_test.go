package daemon_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/l4"
)

// startMirrorPair is startPair with flow mirroring over the internal
// network and a fastl4 virtual without loose_init: a connection that
// survives a failover there was mirrored, not recreated. mirror is the
// virtual's mirror setting; extra are more virtuals (%[1]s: the fastl4
// VIP).
func startMirrorPair(t *testing.T, mirror bool, extra ...string) (*pairRun, [2]string) {
	t.Helper()
	key := filepath.Join(t.TempDir(), "mirror.key")
	if err := os.WriteFile(key, []byte(strings.Repeat("mirror-key-", 4)), 0o600); err != nil {
		t.Fatal(err)
	}
	return startPairEdited(t, func(i int, r *pairRun, c string) string {
		// Without loose_init: a flow survives a failover only by being
		// mirrored.
		c = strings.ReplaceAll(c, "    loose_init: true\n", fmt.Sprintf("    mirror: %v\n", mirror))
		for _, e := range extra {
			c += fmt.Sprintf(e, r.l4VIP)
		}
		return strings.Replace(c, "pools:\n", fmt.Sprintf("  mirror: {listen: '%s:7400', peer: '%s:7400', key_file: %s}\npools:\n",
			r.p.IntAddrs[i], r.p.IntAddrs[1-i], key), 1)
	})
}

// waitSynced waits until node i's status says mirroring is synced.
func (r *pairRun) waitSynced(t *testing.T, i int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := r.nodes[i].daemon.Status(); err == nil && st.HA != nil && st.HA.Mirror != nil && st.HA.Mirror.Synced {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	st, err := r.nodes[i].daemon.Status()
	t.Fatalf("node %d not synced within 20s: %+v %v", i, st.HA, err)
}

// inTable waits up to timeout for a flow from client in the flow table
// pinned at pins.
func inTable(pins string, client netip.AddrPort, timeout time.Duration) (l4.Flow, bool) {
	deadline := time.Now().Add(timeout)
	for {
		flows, _ := l4.ReadFlows(pins)
		for _, f := range flows {
			if f.Client == client {
				return f, true
			}
		}
		if time.Now().After(deadline) {
			return l4.Flow{}, false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPrivilegedHAMirrorFailover: with flow mirroring, a fastl4 flow
// opened on the active node is in the standby's pinned flow table within
// 1 s; a standby restarted without its flows gets them back from a full
// copy before it is synced; and a long TCP transfer through a virtual without loose_init
// (from a client port outside the SNAT range, so the SNAT port differs
// from the client's) carries on across an unplanned failover: every byte
// echoed intact, no reset.
func TestPrivilegedHAMirrorFailover(t *testing.T) {
	r, pins := startMirrorPair(t, true)
	a := r.settled(t)
	b := 1 - a
	r.waitSynced(t, b)

	c, err := openEcho(r.p, r.l4VIP, 33001)
	if err != nil {
		t.Fatalf("fastl4 through the active node: %v", err)
	}
	defer c.c.Close()
	opened := time.Now()
	client := c.c.LocalAddr().(*net.TCPAddr).AddrPort()
	fa, ok := inTable(pins[a], client, time.Second)
	if !ok {
		t.Fatalf("the flow from %s is not in the active node's table", client)
	}
	fb, ok := inTable(pins[b], client, time.Second-time.Since(opened))
	if !ok {
		t.Fatalf("the flow from %s is not in the standby's pinned table within 1s of its opening", client)
	}
	t.Logf("flow on the standby %s after its opening: %+v", time.Since(opened).Round(time.Millisecond), fb)
	if fb.Member != fa.Member || fb.SNAT != fa.SNAT || fb.State != l4.StateEstablished {
		t.Errorf("the standby's copy %+v differs from the active's %+v", fb, fa)
	}

	// A restarted standby gets the flows it lost from a full copy
	// before it may take over: the connection is idle meanwhile, so no
	// refresh brings it back.
	wipeFlows(t, pins[b])
	if _, ok := inTable(pins[b], client, 0); ok {
		t.Fatal("the standby's flow table still holds the flow after wiping it")
	}
	r.nodes[b].restart(t, b)
	r.waitSynced(t, b)
	if _, ok := inTable(pins[b], client, 0); !ok {
		t.Fatal("the restarted standby is synced but lacks the flow: no full copy")
	}
	r.nodes[b].waitSettled(t)

	tr := c.transfer(4<<20, 4096, 5*time.Millisecond)
	time.Sleep(1500 * time.Millisecond)
	killed := time.Now()
	r.nodes[a].die(t)
	sent, err := tr.end(30 * time.Second)
	if err != nil {
		t.Fatalf("the transfer through the virtual without loose_init, after %d bytes echoed, %s after the failover: %v",
			sent, time.Since(killed).Round(time.Millisecond), err)
	}
	t.Logf("%d bytes echoed intact across the failover; longest stall %s", sent, tr.stall.Round(time.Millisecond))
	st, err := r.nodes[b].daemon.Status()
	if err != nil || st.HA == nil || st.HA.Role != "active" || st.HA.Mirror == nil {
		t.Fatalf("the surviving node's status: %+v, %v", st, err)
	}
	if m := st.HA.Mirror; m.Installed == 0 || m.Rejected != 0 || m.Flows != 1 {
		t.Errorf("the survivor's mirroring: %+v; want flows installed, 1 held, none rejected", m)
	}
}

// wipeFlows deletes every IPv4 TCP flow from the table pinned at pins.
func wipeFlows(t *testing.T, pins string) {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(pins, bpf.FastL4MapFlows4Tcp), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var keys []bpf.FastL4FlowKey4
	var k bpf.FastL4FlowKey4
	for it := m.Iterate(); it.Next(&k, new(bpf.FastL4FlowVal)); {
		keys = append(keys, k)
	}
	for i := range keys {
		if err := m.Delete(&keys[i]); err != nil {
			t.Fatal(err)
		}
	}
}

// transfer streams n bytes in chunks every gap through an echo
// connection and checks what comes back, in the background.
type transfer struct {
	done  chan error
	got   int
	stall time.Duration
}

func (e *echoConn) transfer(n, chunk int, gap time.Duration) *transfer {
	tr := &transfer{done: make(chan error, 2)}
	pattern := func(off int) byte { return byte(off*7 + off/251) }
	go func() {
		buf := make([]byte, chunk)
		for off := 0; off < n; off += chunk {
			for i := range buf {
				buf[i] = pattern(off + i)
			}
			e.c.SetWriteDeadline(time.Now().Add(20 * time.Second))
			if _, err := e.c.Write(buf[:min(chunk, n-off)]); err != nil {
				tr.done <- fmt.Errorf("write: %w", err)
				return
			}
			time.Sleep(gap)
		}
	}()
	go func() {
		buf := make([]byte, 64<<10)
		last := time.Now()
		for tr.got < n {
			e.c.SetReadDeadline(time.Now().Add(20 * time.Second))
			k, err := e.r.Read(buf)
			if err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				tr.done <- fmt.Errorf("read: %w", err)
				return
			}
			want := make([]byte, k)
			for i := range want {
				want[i] = pattern(tr.got + i)
			}
			if !bytes.Equal(buf[:k], want) {
				tr.done <- fmt.Errorf("bytes %d-%d differ from what was sent", tr.got, tr.got+k)
				return
			}
			tr.got += k
			tr.stall = max(tr.stall, time.Since(last))
			last = time.Now()
		}
		tr.done <- nil
	}()
	return tr
}

// end waits for the transfer up to timeout: the bytes echoed, and the
// first error.
func (tr *transfer) end(timeout time.Duration) (int, error) {
	select {
	case err := <-tr.done:
		return tr.got, err
	case <-time.After(timeout):
		return tr.got, fmt.Errorf("not done within %s", timeout)
	}
}

// TestPrivilegedHAMirrorCost measures what mirroring costs, in one run on
// one pair: new connections a second through a mirrored fastl4 virtual
// against the same virtual with mirror: false (phases interleaved), and
// the bytes the mirror link sent per 1,000 new flows a second. It logs
// the figures (the ratio is a measurement: the two nodes, the load and
// the rest of the machine share the cores) and fails when a connection
// fails or a flow costs the mirror link more than a record and its share
// of a datagram's framing (256 bytes).
func TestPrivilegedHAMirrorCost(t *testing.T) {
	r, _ := startMirrorPair(t, true, costVirtuals)
	a := r.settled(t)
	r.waitSynced(t, 1-a)
	r.p.Backend.Run(t, "sysctl", "-qw", "net.ipv4.tcp_max_tw_buckets=64")
	answerOnce(t, r.p)
	if perFlow := mirrorCost(t, r, a); perFlow > 256 {
		t.Errorf("the mirror link sent %.0f bytes per new flow, want at most 256", perFlow)
	}
}

// mirrorCost measures new connections/s through the mirrored and the
// plain virtual in interleaved rounds and logs the figures; it returns
// the mirror link's bytes per new flow.
func mirrorCost(t *testing.T, r *pairRun, a int) float64 {
	var conns [2]int
	var took [2]time.Duration
	var mirrorBytes float64
	for round := range 3 {
		for i, port := range []int{5301, 5302} { // mirrored, not
			before := mirrorTx(t, r.nodes[a])
			start := time.Now()
			n, failed := connLoop(r.p, r.l4VIP, port, 2*time.Second)
			took[i] += time.Since(start)
			conns[i] += n
			if i == 0 {
				mirrorBytes += mirrorTx(t, r.nodes[a]) - before
			}
			t.Logf("round %d, port %d: %d connections in 2s (%d failed)", round, port, n, failed)
			if failed > 0 {
				t.Errorf("round %d, port %d: %d of %d connections failed", round, port, failed, n+failed)
			}
			time.Sleep(1500 * time.Millisecond) // closing flows expire
		}
	}
	if conns[0] == 0 || conns[1] == 0 || mirrorBytes == 0 {
		t.Fatalf("no measurement: %v connections, %.0f mirror bytes", conns, mirrorBytes)
	}
	rate := func(i int) float64 { return float64(conns[i]) / took[i].Seconds() }
	perFlow := mirrorBytes / float64(conns[0])
	t.Logf("new connections/s: mirrored %.0f, mirror: false %.0f (ratio %.2f); mirror link %.0f bytes per flow = %.0f kB/s per 1,000 new flows/s",
		rate(0), rate(1), rate(0)/rate(1), perFlow, perFlow)
	return perFlow
}

// costVirtuals are two fastl4 virtuals to the member's answer-once port,
// mirrored and not, with a short close timeout.
const costVirtuals = `  - name: cost-mirrored
    mode: fastl4
    listen: %[1]s:5301
    pool: web
    port: 5202
    snat: automap
    close_timeout: 1s
  - name: cost-plain
    mode: fastl4
    listen: %[1]s:5302
    pool: web
    port: 5202
    snat: automap
    close_timeout: 1s
    mirror: false
`

// answerOnce runs the member's port 5202: it answers one byte and closes
// first, so that TIME_WAIT stays on the member side.
func answerOnce(t *testing.T, p *lab.Pair) {
	ln, err := p.Backend.Listen("tcp", netip.AddrPortFrom(p.Members[0], 5202).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				b := make([]byte, 1)
				c.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := c.Read(b); err == nil {
					c.Write(b)
				}
			}()
		}
	}()
}

// connLoop opens connections through vip:port from 8 workers for d (at
// most 200,000): connect, one byte each way, close.
func connLoop(p *lab.Pair, vip netip.Addr, port int, d time.Duration) (ok, failed int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	addr := netip.AddrPortFrom(vip, uint16(port)).String()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 25000 && time.Now().Before(end); n++ {
				err := oneConn(p, addr)
				mu.Lock()
				if err == nil {
					ok++
				} else {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return ok, failed
}

func oneConn(p *lab.Pair, addr string) error {
	// 3 s: room for one SYN retransmission (1 s), so that a failure is a
	// connection lost, not a slow one.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := p.Client.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte{1}); err != nil {
		return err
	}
	b := make([]byte, 1)
	_, err = io.ReadFull(c, b)
	return err
}

// mirrorTx is the bytes the node's mirror link has sent.
func mirrorTx(t *testing.T, n *pairNodeRun) float64 {
	const name = `edgeproxy_peerlink_bytes_total{direction="tx",link="mirror"} `
	for _, line := range strings.Split(metricsText(t, n.daemon), "\n") {
		if v, ok := strings.CutPrefix(line, name); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("no %s in the metrics", name)
	return 0
}
