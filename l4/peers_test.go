package l4

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// Second chance: a segment of a connection a peer owns goes to the peer,
// once; everything else is served as before.
func TestPrivilegedProgramSecondChance(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, _ := e.hops()
	peer := net.HardwareAddr{0x02, 0xee, 0, 0, 0, 0x07}
	if err := e.fp.SetPeers([]net.HardwareAddr{peer}); err != nil {
		t.Fatal(err)
	}
	fastVIP, l7VIP := ap(vip4, 443), ap(vip4, 80) // a fastl4 virtual's port, a port the L7 proxy listens on
	local := ap(client4, 50004)
	establish(t, e, local, fastVIP)
	for _, c := range []uint16{50000, 50001, 50002, 50004} {
		vip := fastVIP
		if c == 50001 {
			vip = l7VIP
		}
		if err := e.fp.SetOwner(ap(client4, c), vip, peer); err != nil {
			t.Fatal(err)
		}
	}
	ack := func(c uint16, vip uint16) []byte {
		return e.toNIC(frame{src: ap(client4, c), dst: ap(vip4, vip), proto: protoTCP, flags: flagACK | flagPSH, seq: 101, ack: 901, payload: []byte("GET /")}.bytes(), testnet.ExtIf)
	}
	fromPeer := func(b []byte) []byte { copy(b[6:12], peer); return b }
	toMAC := func(b []byte, mac net.HardwareAddr) []byte { copy(b, mac); return b }
	ext := e.nic(testnet.ExtIf).mac
	// The L7 proxy's listener, and a connection it holds: the kernel
	// knows that one, not the tuples no node announced.
	est := localConn(t, e, l7VIP)
	for _, tc := range []struct {
		name string
		in   []byte
		want uint32
		to   net.HardwareAddr // XDP_TX: the destination MAC
		stat func(PeerStats) uint64
	}{
		{"fastl4 segment of a peer's connection goes to the peer", ack(50000, 443), xdpTX, peer, func(s PeerStats) uint64 { return s.Forwarded }},
		{"L7 segment of a peer's connection goes to the peer", ack(50001, 80), xdpTX, peer, func(s PeerStats) uint64 { return s.Forwarded }},
		{"a segment a peer forwarded is not forwarded again", fromPeer(ack(50001, 80)), xdpPass, nil, func(s PeerStats) uint64 { return s.FromPeer }},
		{"a frame the switch flooded to this node is not forwarded", toMAC(ack(50001, 80), net.HardwareAddr{0x02, 0xee, 0, 0, 0, 0x09}), xdpPass, nil, nil},
		{"unknown tuple to a fastl4 virtual: dropped as before", ack(50003, 443), xdpDrop, nil, nil},
		// A connection younger than its announcement's trip: held, the
		// client retransmits by when its owner is known (a RST otherwise).
		{"unknown tuple to the L7 proxy: held", ack(50003, 80), xdpDrop, nil, func(s PeerStats) uint64 { return s.Held }},
		{"unknown tuple to a port nothing listens on: passed as before", ack(50003, 81), xdpPass, nil, nil},
		{"a SYN to the L7 proxy is passed", e.toNIC(frame{src: ap(client4, 50003), dst: l7VIP, proto: protoTCP, flags: flagSYN, seq: 5}.bytes(), testnet.ExtIf), xdpPass, nil, nil},
		{"a connection the L7 proxy holds is passed", ack(est.Port(), 80), xdpPass, nil, nil},
		{"SYN for a peer's tuple opens the connection here", e.toNIC(frame{src: ap(client4, 50002), dst: fastVIP, proto: protoTCP, flags: flagSYN, seq: 5}.bytes(), testnet.ExtIf), xdpRedirect, nil, func(s PeerStats) uint64 { return s.SYNLocal }},
		// Its half-open flow here holds the client's next segment (the
		// member has not answered yet): not sent to the peer.
		{"its next segment stays here", ack(50002, 443), xdpDrop, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := e.fp.PeerStats()
			if err != nil {
				t.Fatal(err)
			}
			in := bytes.Clone(tc.in)
			ret, out := e.runOn(tc.in, testnet.ExtIf)
			if ret != tc.want {
				t.Fatalf("verdict %d, want %d", ret, tc.want)
			}
			if tc.to != nil {
				p, err := parseFrame(out)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(p.dstMAC, tc.to) || !bytes.Equal(p.srcMAC, ext) || !bytes.Equal(out[12:len(in)], in[12:]) {
					t.Errorf("sent %s -> %s, want %s -> %s and the packet untouched", p.srcMAC, p.dstMAC, ext, tc.to)
				}
			}
			after, err := e.fp.PeerStats()
			if err != nil {
				t.Fatal(err)
			}
			if tc.stat != nil && tc.stat(after)-tc.stat(before) != 1 {
				t.Errorf("counter grew by %d, want 1 (%+v -> %+v)", tc.stat(after)-tc.stat(before), before, after)
			}
		})
	}
	// A connection with a flow here is this node's, whoever claims it.
	expectRedirect(t, e, frame{src: local, dst: fastVIP, proto: protoTCP, flags: flagACK, seq: 101, ack: 901, payload: []byte("x")}.bytes(), toMember)

	// Without peers, second chance is off.
	if err := e.fp.SetPeers(nil); err != nil {
		t.Fatal(err)
	}
	noFlow := e.delta("web", bpf.FastL4ReasonREASON_DROP_NO_FLOW)
	if ret, _ := e.runOn(ack(50000, 443), testnet.ExtIf); ret != xdpDrop || noFlow() != 1 {
		t.Errorf("without peers: verdict %d, drop_no_flow grew by %d; want XDP_DROP, 1", ret, noFlow())
	}
	if ret, _ := e.runOn(ack(50003, 80), testnet.ExtIf); ret != xdpPass {
		t.Errorf("without peers: unknown tuple to the L7 proxy: verdict %d, want XDP_PASS", ret)
	}
}

// localConn opens a listener on vip in the proxy namespace and a
// connection to it from the client namespace, closed at the end of the
// test; it returns the client's side.
func localConn(t *testing.T, e *env, vip netip.AddrPort) netip.AddrPort {
	t.Helper()
	ln, err := e.lab.Proxy.Listen("tcp", vip.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c, err := e.lab.Client.Dial("tcp", vip.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return netip.MustParseAddrPort(c.LocalAddr().String())
}
