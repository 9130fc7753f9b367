package l4

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/bpf"
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
// and 1001 on its last ACK.
func closedPair(t *testing.T, e *env, client, vip netip.AddrPort, ts bool) {
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
	expectRedirect(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 902, ack: 102}.bytes(), toClient)
	expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 102, ack: 902, tcpOpts: opt(1001)}.bytes(), toMember)
}

// A closed flow's SNAT port goes to a new SYN only when the member's
// TIME_WAIT would take it (tcp_timewait_state_process): a sequence number
// after the member's last ack, or a TSval newer than the client's last,
// and never a TSval more than 1 older (PAWS). A RST leaves nothing behind.
func TestPrivilegedProgramSNATReuse(t *testing.T) {
	// One virtual per case: each member port has its own SNAT ports.
	e := progEnv(t, snatPorts(40000, 40000),
		fastl4("ts", "198.18.0.10:7443", "one4", 4443),
		fastl4("seq", "198.18.0.10:7444", "one4", 4444),
		fastl4("rst", "198.18.0.10:7445", "one4", 4445),
		fastl4("half", "198.18.0.10:7446", "one4", 4446))
	e.resolve()
	toMember, _ := e.hops()
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
	closedPair(t, e, old, vip, true)
	refused("an earlier sequence number, no timestamp", 50, nil)
	refused("an earlier sequence number, the same TSval", 50, tsOpt(1001))
	refused("a later sequence number, a TSval 2 older (PAWS)", 5000, tsOpt(999))
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
	expectRedirect(t, e, frame{src: c, dst: vip, proto: protoTCP, flags: flagSYN, seq: 50, tcpOpts: tsOpt(1002)}.bytes(), toMember)

	// Without timestamps: the sequence number alone.
	virtual("seq", 7444)
	closedPair(t, e, ap(client4, 1001), vip, false)
	refused("the member's last ack itself", 102, nil)
	refused("a newer TSval, the old flow had none", 50, tsOpt(5000))
	taken("a later sequence number", 103, nil)

	// Reset: any SYN.
	virtual("rst", 7445)
	rst := ap(client4, 1002)
	establish(t, e, rst, vip)
	expectRedirect(t, e, frame{src: rst, dst: vip, proto: protoTCP, flags: flagRST, seq: 101}.bytes(), toMember)
	taken("after a reset", 7, nil)

	// Half closed: the port stays with its flow.
	virtual("half", 7446)
	half := ap(client4, 1003)
	establish(t, e, half, vip)
	expectRedirect(t, e, frame{src: half, dst: vip, proto: protoTCP, flags: flagFIN | flagACK, seq: 101, ack: 901}.bytes(), toMember)
	refused("a connection closed one way", 5000, nil)
}
