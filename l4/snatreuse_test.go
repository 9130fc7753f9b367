package l4

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// tsOpt is a TCP timestamp option (NOP, NOP, kind 8) carrying tsval.
func tsOpt(tsval uint32) []byte {
	o := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(o[4:], tsval)
	return o
}

// closedPair opens a connection from client through the one-port virtual
// and closes it with FIN both ways, the member first, as a server closing
// a `Connection: close` exchange does: the member ends in TIME_WAIT, its
// last ack 102. ts: the client's timestamps (0: none), 1000 on its FIN
// and 1001 on its last ACK. beforeLastACK, if any, runs before the
// member's ACK of the client's FIN.
func closedPair(t *testing.T, e *env, client, vip netip.AddrPort, ts bool, beforeLastACK func()) {
	t.Helper()
	toMember, toClient := e.hops()
	opt := func(v uint32) []byte {
		if ts {
			return tsOpt(v)
		}
		return nil
	}
	member, snat := establish(t, e, client, vip)
	expectRedirect(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagFIN | flagACK, seq: 901, ack: 101}.bytes(), toClient)
	expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagFIN | flagACK, seq: 101, ack: 902, tcpOpts: opt(1000)}.bytes(), toMember)
	if beforeLastACK != nil {
		beforeLastACK()
	}
	expectRedirect(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 902, ack: 102}.bytes(), toClient)
	expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 102, ack: 902, tcpOpts: opt(1001)}.bytes(), toMember)
}

// A closed flow's SNAT port goes to a new SYN only when the member's
// TIME_WAIT would take it (tcp_timewait_state_process): a sequence number
// after the member's last ack, or a TSval newer than the client's last,
// and never an older TSval (PAWS). A RST leaves nothing behind.
func TestPrivilegedProgramSNATReuse(t *testing.T) {
	// One virtual per case: each member port has its own SNAT ports.
	e := progEnv(t, snatPorts(40000, 40000),
		fastl4("ts", "198.18.0.10:7443", "one4", 4443, logged),
		fastl4("seq", "198.18.0.10:7444", "one4", 4444),
		fastl4("rst", "198.18.0.10:7445", "one4", 4445),
		fastl4("half", "198.18.0.10:7446", "one4", 4446))
	e.resolve()
	rd := eventReader(t, e)
	toMember, toClient := e.hops()
	snat := ap(snat4, 40000)
	port := uint16(2000)
	var vip netip.AddrPort
	syn := func(seq uint32, opts []byte) (netip.AddrPort, []byte) {
		port++
		c := ap(client4, port)
		return c, frame{src: c, dst: vip, proto: protoTCP, flags: flagSYN, seq: seq, tcpOpts: opts}.bytes()
	}
	var reused, exhausted func() uint64
	virtual := func(name string, p uint16) {
		vip = ap(vip4, p)
		reused = e.delta(name, bpf.FastL4ReasonREASON_EVENT_SNAT_REUSED)
		exhausted = e.delta(name, bpf.FastL4ReasonREASON_DROP_SNAT_EXHAUSTED)
	}
	refused := func(what string, seq uint32, opts []byte) {
		t.Helper()
		before := exhausted()
		_, in := syn(seq, opts)
		expectVerdict(t, e, in, xdpDrop)
		if exhausted()-before != 1 {
			t.Errorf("%s: not refused as drop_snat_exhausted", what)
		}
	}
	taken := func(what string, seq uint32, opts []byte) netip.AddrPort {
		t.Helper()
		before := reused()
		c, in := syn(seq, opts)
		ret, out := e.run(in)
		if ret != xdpRedirect {
			t.Fatalf("%s: verdict %d, want the SYN forwarded (XDP_REDIRECT)", what, ret)
		}
		p, err := parseFrame(out)
		if err != nil {
			t.Fatal(err)
		}
		if p.src != snat {
			t.Errorf("%s: SNAT source %s, want %s", what, p.src, snat)
		}
		if reused()-before != 1 {
			t.Errorf("%s: snat_reused grew by %d, want 1", what, reused()-before)
		}
		return c
	}

	// With timestamps: the old client's last TSval was 1001, the
	// member's last ack 102.
	virtual("ts", 7443)
	old := ap(client4, 1000)
	closedPair(t, e, old, vip, true, func() {
		refused("the client's FIN not acknowledged", 5000, tsOpt(2000))
	})
	refused("an earlier sequence number, no timestamp", 50, nil)
	refused("an earlier sequence number, the same TSval", 50, tsOpt(1001))
	refused("a later sequence number, an older TSval (PAWS)", 5000, tsOpt(1000))
	c := taken("an earlier sequence number, a newer TSval", 50, tsOpt(1002))
	if st := e.flowState(old); st != "" {
		t.Errorf("the closed pair is still there (%s)", st)
	}
	if st := e.flowState(c); st != StateHandshake {
		t.Errorf("the new flow is in state %q, want handshake", st)
	}
	if _, ok := e.lookupFlow(old, vip, protoTCP); ok {
		t.Error("the closed pair's client half is still in the flow table")
	}
	// The connection log has the old connection's close.
	closed := false
	for ev, ok := nextEvent(t, rd, time.Second); ok && !closed; ev, ok = nextEvent(t, rd, time.Second) {
		closed = ev.Kind == uint8(bpf.FastL4FlowEventKindFLOW_EVENT_CLOSE) && ev.Client == flowKey(old, vip, protoTCP) &&
			ev.End == uint8(bpf.FastL4FlowEndFLOW_END_FIN)
	}
	if !closed {
		t.Error("no close record (fin) for the connection whose port was reused")
	}
	expectRedirect(t, e, frame{src: c, dst: vip, proto: protoTCP, flags: flagSYN, seq: 50, tcpOpts: tsOpt(1002)}.bytes(), toMember)

	// Without timestamps: the sequence number alone.
	virtual("seq", 7444)
	closedPair(t, e, ap(client4, 1001), vip, false, nil)
	refused("the member's last ack itself", 102, nil)
	refused("a newer TSval, the old flow had none", 50, tsOpt(5000))
	taken("a later sequence number", 103, nil)

	// Reset: any SYN.
	virtual("rst", 7445)
	rst := ap(client4, 1002)
	establish(t, e, rst, vip)
	expectRedirect(t, e, frame{src: rst, dst: vip, proto: protoTCP, flags: flagRST, seq: 101}.bytes(), toMember)
	taken("after a reset", 7, nil)

	// Half closed, or the last FIN not yet acknowledged (the member in
	// LAST_ACK): the port stays with its flow.
	virtual("half", 7446)
	half := ap(client4, 1003)
	member, hsnat := establish(t, e, half, vip)
	expectRedirect(t, e, frame{src: half, dst: vip, proto: protoTCP, flags: flagFIN | flagACK, seq: 101, ack: 901, tcpOpts: tsOpt(1000)}.bytes(), toMember)
	refused("a connection closed one way", 5000, tsOpt(2000))
	expectRedirect(t, e, frame{src: member, dst: hsnat, proto: protoTCP, flags: flagFIN | flagACK, seq: 901, ack: 102}.bytes(), toClient)
	refused("the member's FIN not acknowledged", 5000, tsOpt(2000))
	expectRedirect(t, e, frame{src: half, dst: vip, proto: protoTCP, flags: flagACK, seq: 102, ack: 902, tcpOpts: tsOpt(1001)}.bytes(), toMember)
	taken("the member's FIN acknowledged", 5000, tsOpt(2000))
}

// shortConnections opens `Connection: close` exchanges to vip from
// workers goroutines for d (at most limit in all): each sends a request,
// reads the answer to the member's close and closes. Returns the
// exchanges completed and the first failures.
func shortConnections(ctx context.Context, x *e2eEnv, vip netip.AddrPort, workers int, d time.Duration, limit int64) (done int64, errs []error) {
	var n, started atomic.Int64
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && started.Add(1) <= limit {
				if err := exchange(x, vip); err != nil {
					mu.Lock()
					if len(errs) < 5 {
						errs = append(errs, err)
					}
					mu.Unlock()
					continue
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load(), errs
}

// exchange is one request and its answer on a new connection.
func exchange(x *e2eEnv, vip netip.AddrPort) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := x.lab.Client.DialContext(ctx, "tcp", vip.String())
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: fe.test\r\nConnection: close\r\n\r\n"); err != nil {
		return err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(b), "HTTP/1.1 200 ") {
		return fmt.Errorf("answer %q", b)
	}
	return nil
}

// New connections as fast as a bounded generator opens them for 10 s
// through one virtual to one member, each closed by the member first
// (its TIME_WAIT holds the tuple): with 2,000 SNAT ports and at most 16
// connections open at once, no SYN is refused for want of a port. Each
// closed connection used to hold its port for the close timeout (5 s), so
// a few hundred connections a second ran the range out.
func TestPrivilegedSNATShortConnections(t *testing.T) {
	e := newEnv(t, func(lab *testnet.Lab) *Spec {
		return testSpec(lab, fastl4("short", "198.18.0.10:7200", "one4", 7200))
	}, func(o *Options) {
		o.MaxFlows = 1 << 16
		snatPorts(40000, 41999)(o)
	})
	x := &e2eEnv{env: e}
	x.serve(t, e.lab.Members4[0], 7200, func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if l == "\r\n" {
				break
			}
		}
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	x.start()
	e.resolve()

	exhausted := e.delta("short", bpf.FastL4ReasonREASON_DROP_SNAT_EXHAUSTED)
	reused := e.delta("short", bpf.FastL4ReasonREASON_EVENT_SNAT_REUSED)
	defer func() {
		// What the member's TIME_WAIT refused (each costs the client a
		// SYN retransmission): ports freed without the reuse check, by
		// a client reusing its own port or the reaper.
		out, _ := e.lab.Backend.Output("nstat", "-az", "TcpExtPAWSTimewait")
		t.Logf("member: %s", strings.Join(strings.Fields(out), " "))
	}()
	const d = 10 * time.Second
	start := time.Now()
	n, errs := shortConnections(context.Background(), x, ap(vip4, 7200), 16, d, 500_000)
	el := time.Since(start)
	t.Logf("%d connections in %v (%.0f/s), %d SNAT ports reused, drop_snat_exhausted %d, failures %v",
		n, el.Round(time.Millisecond), float64(n)/el.Seconds(), reused(), exhausted(), errs)
	if exhausted() != 0 {
		t.Errorf("drop_snat_exhausted grew by %d with at most 16 of 2000 ports' connections open", exhausted())
	}
	if len(errs) > 0 {
		t.Errorf("connections failed: %v", errs)
	}
	if n < 2000 {
		t.Errorf("%d connections in %v: fewer than the range holds, the test proves nothing", n, d)
	}
}
