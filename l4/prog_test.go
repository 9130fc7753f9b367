package l4

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// XDP actions.
const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

var (
	vip4    = netip.MustParseAddr("198.18.0.10")
	vip6    = netip.MustParseAddr("2001:db8:1::10")
	client4 = netip.MustParseAddr("198.18.0.1")
	client6 = netip.MustParseAddr("2001:db8:1::1")
	snat4   = netip.MustParseAddr("198.19.0.2")
	snat6   = netip.MustParseAddr("2001:db8:2::2")
)

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

// progEnv is the lab used by the program's table tests.
func progEnv(t *testing.T, tune func(*Options), extra ...Virtual) *env {
	return newEnv(t, func(lab *testnet.Lab) *Spec {
		vs := []Virtual{
			fastl4("web", "198.18.0.10:443", "fe4", 4443, func(v *Virtual) { v.IdleTimeout = 60 * time.Second }),
			fastl4("web6", "[2001:db8:1::10]:443", "fe6", 4443, func(v *Virtual) { v.MSSOverride = 1200 }),
			fastl4("loose", "198.18.0.10:8443", "fe4", 4443, func(v *Virtual) { v.LooseInit = true }),
			fastl4("dns", "198.18.0.10:53", "fe4", 5353, func(v *Virtual) { v.Proto = UDP }),
			fastl4("dns6", "[2001:db8:1::10]:53", "fe6", 5353, func(v *Virtual) { v.Proto = UDP }),
		}
		return testSpec(lab, append(vs, extra...)...)
	}, tune)
}

// fwd checks a redirected frame: valid checksums, the expected tuple and
// MACs of the egress next hop.
type hop struct{ src, dst net.HardwareAddr }

func (e *env) hops() (toMember, toClient hop) {
	lab := e.lab
	toMember = hop{linkMAC(e.t, lab.Proxy, testnet.IntIf), linkMAC(e.t, lab.Backend, testnet.BackendIf)}
	toClient = hop{linkMAC(e.t, lab.Proxy, testnet.ExtIf), linkMAC(e.t, lab.Client, testnet.ClientIf)}
	return
}

func expectRedirect(t *testing.T, e *env, in []byte, h hop) parsed {
	t.Helper()
	ret, out := e.run(in)
	if ret != xdpRedirect {
		t.Fatalf("verdict %d, want XDP_REDIRECT (%d)", ret, xdpRedirect)
	}
	p, err := parseFrame(out)
	if err != nil {
		t.Fatalf("output frame: %v", err)
	}
	if !bytes.Equal(p.srcMAC, h.src) || !bytes.Equal(p.dstMAC, h.dst) {
		t.Errorf("MACs %s -> %s, want %s -> %s", p.srcMAC, p.dstMAC, h.src, h.dst)
	}
	return p
}

func expectVerdict(t *testing.T, e *env, in []byte, want uint32) []byte {
	t.Helper()
	ret, out := e.run(in)
	if ret != want {
		t.Fatalf("verdict %d, want %d", ret, want)
	}
	return out
}

func expectPassUntouched(t *testing.T, e *env, in []byte) {
	t.Helper()
	nic := e.ingressOf(in)
	in = e.toNIC(in, nic)
	ret, out := e.runOn(in, nic)
	if ret != xdpPass {
		t.Fatalf("verdict %d, want XDP_PASS (%d)", ret, xdpPass)
	}
	if !bytes.Equal(out, in) {
		t.Errorf("passed frame was changed:\n in  %x\n out %x", in, out)
	}
}

func (e *env) isMember(a netip.AddrPort, port uint16) bool {
	ms := e.lab.Members4
	if a.Addr().Is6() {
		ms = e.lab.Members6
	}
	return a.Port() == port && slices.Contains(ms, a.Addr())
}

// delta returns a function reporting how much a counter grew.
func (e *env) delta(virtual string, r bpf.FastL4Reason) func() uint64 {
	before := e.counter(virtual, r)
	return func() uint64 { return e.counter(virtual, r) - before }
}

func TestPrivilegedProgramNewAndEstablished(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()

	for _, tc := range []struct {
		name    string
		virtual string
		client  netip.AddrPort
		vip     netip.AddrPort
		snat    netip.Addr
		proto   uint8
	}{
		{"tcp4", "web", ap(client4, 40001), ap(vip4, 443), snat4, protoTCP},
		{"tcp6", "web6", ap(client6, 40001), ap(vip6, 443), snat6, protoTCP},
		{"udp4", "dns", ap(client4, 40053), ap(vip4, 53), snat4, protoUDP},
		{"udp6", "dns6", ap(client6, 40053), ap(vip6, 53), snat6, protoUDP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := uint16(4443)
			if tc.proto == protoUDP {
				port = 5353
			}
			newFlows := e.delta(tc.virtual, bpf.FastL4ReasonREASON_FWD_NEW)
			first := frame{src: tc.client, dst: tc.vip, proto: tc.proto, flags: flagSYN, seq: 1000, payload: []byte("q")}
			if tc.proto == protoTCP {
				first.payload = nil
			}
			p := expectRedirect(t, e, first.bytes(), toMember)
			// The client port is in the SNAT range and free: kept.
			if p.src != ap(tc.snat, tc.client.Port()) {
				t.Errorf("source %s, want %s", p.src, ap(tc.snat, tc.client.Port()))
			}
			if !e.isMember(p.dst, port) {
				t.Errorf("destination %s is not a member on port %d", p.dst, port)
			}
			if n := newFlows(); n != 1 {
				t.Errorf("fwd_new grew by %d", n)
			}
			// Both halves are half-open, pointing at each other.
			c, ok := e.lookupHalfOpen(tc.client, tc.vip, tc.proto)
			s, ok2 := e.lookupHalfOpen(p.dst, p.src, tc.proto)
			if !ok || !ok2 {
				t.Fatalf("half-open pair: client half %v, server half %v", ok, ok2)
			}
			if _, ok := e.lookupFlow(tc.client, tc.vip, tc.proto); ok {
				t.Error("a new flow is in the established table before both sides talked")
			}
			if c.Dir != dirClient || s.Dir != dirServer || c.Peer != flowKey(p.dst, p.src, tc.proto) || s.Peer != flowKey(tc.client, tc.vip, tc.proto) {
				t.Errorf("pair does not link up: client %+v server %+v", c, s)
			}

			// The member answers: back to the client, from the VIP.
			reply := frame{src: p.dst, dst: p.src, proto: tc.proto, flags: flagSYN | flagACK, seq: 5000, ack: 1001, payload: []byte("answer")}
			if tc.proto == protoTCP {
				reply.payload = nil
			}
			fromServer := e.delta(tc.virtual, bpf.FastL4ReasonREASON_FWD_SERVER)
			r := expectRedirect(t, e, reply.bytes(), toClient)
			if r.src != tc.vip || r.dst != tc.client {
				t.Errorf("reply %s -> %s, want %s -> %s", r.src, r.dst, tc.vip, tc.client)
			}
			if n := fromServer(); n != 1 {
				t.Errorf("fwd_server grew by %d", n)
			}

			// Established: data from the client goes the same way.
			data := frame{src: tc.client, dst: tc.vip, proto: tc.proto, flags: flagACK | flagPSH, seq: 1001, ack: 5001, payload: []byte("GET / HTTP/1.1\r\n\r\n")}
			fromClient := e.delta(tc.virtual, bpf.FastL4ReasonREASON_FWD_CLIENT)
			d := expectRedirect(t, e, data.bytes(), toMember)
			if d.src != p.src || d.dst != p.dst || !bytes.Equal(d.payload, data.payload) {
				t.Errorf("data %s -> %s %q, want %s -> %s", d.src, d.dst, d.payload, p.src, p.dst)
			}
			if n := fromClient(); n != 1 {
				t.Errorf("fwd_client grew by %d", n)
			}
			// Both sides talked: the pair is established, no longer
			// half-open.
			c, ok = e.lookupFlow(tc.client, tc.vip, tc.proto)
			s, ok2 = e.lookupFlow(p.dst, p.src, tc.proto)
			if !ok || !ok2 || c.Peer != flowKey(p.dst, p.src, tc.proto) || s.Peer != flowKey(tc.client, tc.vip, tc.proto) {
				t.Fatalf("established pair: client half %v, server half %v", ok, ok2)
			}
			if _, ok := e.lookupHalfOpen(tc.client, tc.vip, tc.proto); ok {
				t.Error("the client half is still half-open")
			}
			if tc.proto == protoTCP {
				c, _ = e.lookupFlow(tc.client, tc.vip, tc.proto)
				// The ack a reset must carry to be accepted, and the
				// SYN's ISN + 1.
				if c.Seen&seenACK == 0 || c.Ack != 5001 || c.SeqNext != 1001 {
					t.Errorf("client half tracks seen %#x ack %d seq_next %d", c.Seen, c.Ack, c.SeqNext)
				}
			}
		})
	}

	t.Run("client port outside the range", func(t *testing.T) {
		client := ap(client4, 33000)
		p := expectRedirect(t, e, frame{src: client, dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN}.bytes(), toMember)
		if p.src.Addr() != snat4 || p.src.Port() < 40000 || p.src.Port() > 59999 {
			t.Errorf("SNAT source %s, want %s with a port in 40000-59999", p.src, snat4)
		}
	})

	t.Run("udp without checksum", func(t *testing.T) {
		p := expectRedirect(t, e, frame{src: ap(client4, 40054), dst: ap(vip4, 53), proto: protoUDP, noUDPCsum: true, payload: []byte("q")}.bytes(), toMember)
		if p.udpCsum != 0 {
			t.Errorf("UDP checksum %#04x, want 0 (none) kept", p.udpCsum)
		}
	})

	t.Run("ipv4 options", func(t *testing.T) {
		// Router alert (4 bytes): the rewrite keeps the options.
		f := frame{src: ap(client4, 40002), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN, ipOpts: []byte{0x94, 4, 0, 0}}
		p := expectRedirect(t, e, f.bytes(), toMember)
		if p.src.Addr() != snat4 || !e.isMember(p.dst, 4443) {
			t.Errorf("%s -> %s", p.src, p.dst)
		}
	})
}

// Frames whose TCP or UDP checksum a sender in the same kernel left
// partial (a veth peer or a bridge offloading checksums) leave the
// program, both ways, with the checksum complete: the member and the
// client would drop them otherwise.
func TestPrivilegedProgramPartialChecksum(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	for _, tc := range []struct {
		name        string
		client, vip netip.AddrPort
		proto       uint8
	}{
		{"tcp4", ap(client4, 41001), ap(vip4, 443), protoTCP},
		{"tcp6", ap(client6, 41001), ap(vip6, 443), protoTCP},
		{"udp4", ap(client4, 41053), ap(vip4, 53), protoUDP},
		{"udp6", ap(client6, 41053), ap(vip6, 53), protoUDP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var q, a []byte // TCP: a handshake without data
			if tc.proto == protoUDP {
				q, a = []byte("q"), []byte("answer")
			}
			// expectRedirect parses the output, every checksum verified.
			p := expectRedirect(t, e, frame{src: tc.client, dst: tc.vip, proto: tc.proto, flags: flagSYN, seq: 1000, payload: q, partial: true}.bytes(), toMember)
			r := expectRedirect(t, e, frame{src: p.dst, dst: p.src, proto: tc.proto, flags: flagSYN | flagACK, seq: 5000, ack: 1001, payload: a, partial: true}.bytes(), toClient)
			d := expectRedirect(t, e, frame{src: tc.client, dst: tc.vip, proto: tc.proto, flags: flagACK | flagPSH, seq: 1001, ack: 5001, payload: []byte("GET / HTTP/1.1\r\n\r\n"), partial: true}.bytes(), toMember)
			if r.src != tc.vip || r.dst != tc.client || d.src != p.src || d.dst != p.dst {
				t.Errorf("tuples: reply %s -> %s, data %s -> %s", r.src, r.dst, d.src, d.dst)
			}
		})
	}
}

// A member's segment to a SNAT port that no flow owns (the flow lives on
// the node of a pair that was active, or expired) is dropped, not handed
// to the stack, which would reset the member's side of a connection the
// client's next segment can still pick up (loose_init). A SYN to such a
// port, a connection to the host, still goes to the stack.
func TestPrivilegedProgramMemberSegmentWithoutFlow(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	member := ap(e.lab.Members4[0], 4443)
	noFlow := e.delta("", bpf.FastL4ReasonREASON_DROP_NO_FLOW)
	expectVerdict(t, e, frame{src: member, dst: ap(snat4, 45000), proto: protoTCP, flags: flagACK | flagPSH, seq: 7, ack: 9, payload: []byte("late")}.bytes(), xdpDrop)
	if n := noFlow(); n != 1 {
		t.Errorf("drop_no_flow grew by %d, want 1", n)
	}
	expectPassUntouched(t, e, frame{src: member, dst: ap(snat4, 45001), proto: protoTCP, flags: flagSYN}.bytes())
}

func TestPrivilegedProgramPass(t *testing.T) {
	e := progEnv(t, nil)
	noService := e.delta("", bpf.FastL4ReasonREASON_PASS_NO_SERVICE)
	arp := make([]byte, 60)
	copy(arp, frame{src: ap(client4, 1), dst: ap(vip4, 1), proto: protoUDP, etherType: 0x0806}.bytes()[:14])
	for _, tc := range []struct {
		name   string
		in     []byte
		reason bpf.FastL4Reason
	}{
		{"arp", arp, bpf.FastL4ReasonREASON_PASS_NOT_IP},
		{"host ssh", frame{src: ap(client4, 50000), dst: ap(netip.MustParseAddr("198.18.0.2"), 22), proto: protoTCP, flags: flagSYN}.bytes(), bpf.FastL4ReasonREASON_PASS_NO_SERVICE},
		{"vip port of the L7 proxy", frame{src: ap(client4, 50001), dst: ap(vip4, 80), proto: protoTCP, flags: flagSYN}.bytes(), bpf.FastL4ReasonREASON_PASS_NO_SERVICE},
		{"udp to another port", frame{src: ap(client4, 50002), dst: ap(vip4, 54), proto: protoUDP}.bytes(), bpf.FastL4ReasonREASON_PASS_NO_SERVICE},
		{"reply to the host's own connection", frame{src: ap(netip.MustParseAddr("198.19.1.11"), 4443), dst: ap(snat4, 33333), proto: protoTCP, flags: flagACK}.bytes(), bpf.FastL4ReasonREASON_PASS_NO_SERVICE},
		{"ipv6 host", frame{src: ap(client6, 50000), dst: ap(netip.MustParseAddr("2001:db8:1::2"), 22), proto: protoTCP, flags: flagSYN}.bytes(), bpf.FastL4ReasonREASON_PASS_NO_SERVICE},
		{"icmp echo to the vip", icmpEcho(client4, vip4), bpf.FastL4ReasonREASON_PASS_ICMP},
		{"vlan tagged", frame{src: ap(client4, 50003), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN, vlan: 100}.bytes(), bpf.FastL4ReasonREASON_PASS_VLAN},
		{"gre", frame{src: ap(client4, 0), dst: ap(vip4, 0), proto: 47, rawL4: make([]byte, 8)}.bytes(), bpf.FastL4ReasonREASON_PASS_PROTO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := e.delta("", tc.reason)
			expectPassUntouched(t, e, tc.in)
			if d() != 1 {
				t.Errorf("%s not counted", reasonNames[tc.reason])
			}
		})
	}
	if e.flowEntries() != 0 {
		t.Errorf("passed packets left %d flow entries", e.flowEntries())
	}
	if noService() != 5 {
		t.Errorf("pass_no_service grew by %d, want 5", noService())
	}
}

func icmpEcho(src, dst netip.Addr) []byte {
	b := []byte{8, 0, 0, 0, 0, 1, 0, 1, 'p', 'i', 'n', 'g'}
	binary.BigEndian.PutUint16(b[2:], ^foldSum(sum16(b)))
	return frame{src: ap(src, 0), dst: ap(dst, 0), proto: protoICMP, rawL4: b}.bytes()
}

func TestPrivilegedProgramMalformed(t *testing.T) {
	e := progEnv(t, nil)
	syn := frame{src: ap(client4, 41000), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN}.bytes()
	syn6 := frame{src: ap(client6, 41000), dst: ap(vip6, 443), proto: protoTCP, flags: flagSYN}.bytes()
	mod := func(b []byte, f func([]byte) []byte) []byte { return f(slices.Clone(b)) }
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"ethernet only", syn[:14]},
		{"truncated ipv4 header", syn[:14+12]},
		{"ipv4 header length below 5", mod(syn, func(b []byte) []byte { b[14] = 0x44; return b })},
		{"ipv4 header length past the frame", mod(syn, func(b []byte) []byte { b[14] = 0x4f; return b[:14+40] })},
		{"ipv4 total length past the frame", mod(syn, func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 400); return b })},
		{"ipv4 total length below the header", mod(syn, func(b []byte) []byte { binary.BigEndian.PutUint16(b[16:], 10); return b })},
		{"wrong ip version", mod(syn, func(b []byte) []byte { b[14] = 0x65; return b })},
		{"truncated tcp header", mod(syn, func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[16:], 20+10)
			return b[:14+20+10]
		})},
		{"tcp data offset below 5", mod(syn, func(b []byte) []byte { b[14+20+12] = 0x40; return b })},
		{"tcp data offset past the datagram", mod(syn, func(b []byte) []byte { b[14+20+12] = 0xf0; return b })},
		{"truncated ipv6 header", syn6[:14+30]},
		{"ipv6 payload length past the frame", mod(syn6, func(b []byte) []byte { binary.BigEndian.PutUint16(b[18:], 500); return b })},
		{"truncated ipv6 extension header", frame{src: ap(client6, 41001), dst: ap(vip6, 443), proto: protoTCP, flags: flagSYN, exts: []ext6{{typ: 0, body: make([]byte, 6)}}}.bytes()[:14+40+4]},
		{"too many ipv6 extension headers", frame{src: ap(client6, 41002), dst: ap(vip6, 443), proto: protoTCP, flags: flagSYN,
			exts: []ext6{{0, make([]byte, 6)}, {60, make([]byte, 6)}, {60, make([]byte, 6)}, {60, make([]byte, 6)}, {60, make([]byte, 6)}, {60, make([]byte, 6)}, {60, make([]byte, 6)}}}.bytes()},
		{"truncated udp header", mod(frame{src: ap(client4, 41003), dst: ap(vip4, 53), proto: protoUDP}.bytes(), func(b []byte) []byte {
			binary.BigEndian.PutUint16(b[16:], 20+4)
			return b[:14+20+4]
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := e.delta("", bpf.FastL4ReasonREASON_PASS_MALFORMED)
			expectPassUntouched(t, e, tc.in)
			if d() != 1 {
				t.Errorf("pass_malformed grew by %d", d())
			}
		})
	}
	if n := e.flowEntries(); n != 0 {
		t.Errorf("malformed packets opened %d flow entries", n)
	}
}

func TestPrivilegedProgramIPv6ExtensionHeaders(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	client := ap(client6, 42000)
	exts := []ext6{{typ: 0, body: []byte{1, 4, 0, 0, 0, 0}}, {typ: 60, body: make([]byte, 14)}}
	p := expectRedirect(t, e, frame{src: client, dst: ap(vip6, 443), proto: protoTCP, flags: flagSYN, exts: exts, seq: 7}.bytes(), toMember)
	if p.src.Addr() != snat6 || !e.isMember(p.dst, 4443) || p.seq != 7 {
		t.Fatalf("%s -> %s seq %d", p.src, p.dst, p.seq)
	}
	r := expectRedirect(t, e, frame{src: p.dst, dst: p.src, proto: protoTCP, flags: flagSYN | flagACK, exts: exts[:1]}.bytes(), toClient)
	if r.src != ap(vip6, 443) || r.dst != client {
		t.Errorf("reply %s -> %s", r.src, r.dst)
	}

	// An authentication header: a rewrite would break it.
	ah := e.delta("", bpf.FastL4ReasonREASON_PASS_PROTO)
	expectPassUntouched(t, e, frame{src: ap(client6, 42003), dst: ap(vip6, 443), proto: protoTCP, flags: flagSYN, exts: append(exts, ext6{typ: 51, body: make([]byte, 10)})}.bytes())
	if ah() != 1 {
		t.Error("AH not counted as pass_proto")
	}

	routing := e.delta("", bpf.FastL4ReasonREASON_PASS_IPV6ROUTING)
	// Type 4 routing header with one segment left: not the final
	// destination.
	rh := []byte{4, 1, 0, 0, 0, 0}
	rh = append(rh, make([]byte, 16)...)
	expectPassUntouched(t, e, frame{src: ap(client6, 42001), dst: ap(vip6, 443), proto: protoTCP, flags: flagSYN, exts: []ext6{{typ: 43, body: rh}}}.bytes())
	if routing() != 1 {
		t.Error("routing header not counted")
	}
	// Segments left 0: this is the destination.
	rh[1] = 0
	expectRedirect(t, e, frame{src: ap(client6, 42002), dst: ap(vip6, 443), proto: protoTCP, flags: flagSYN, exts: []ext6{{typ: 43, body: rh}}}.bytes(), toMember)
}

func TestPrivilegedProgramLooseInit(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	ack := func(port, vport uint16, flags uint8) []byte {
		return frame{src: ap(client4, port), dst: ap(vip4, vport), proto: protoTCP, flags: flags, seq: 10, ack: 20, payload: []byte("mid-stream")}.bytes()
	}

	noFlow := e.delta("web", bpf.FastL4ReasonREASON_DROP_NO_FLOW)
	expectVerdict(t, e, ack(43000, 443, flagACK), xdpDrop)
	expectVerdict(t, e, ack(43001, 443, flagACK|flagPSH), xdpDrop)
	if noFlow() != 2 {
		t.Errorf("loose_init off: drop_no_flow grew by %d, want 2", noFlow())
	}
	if _, ok := e.lookupFlow(ap(client4, 43000), ap(vip4, 443), protoTCP); ok {
		t.Error("loose_init off: a non-SYN opened a flow")
	}

	p := expectRedirect(t, e, ack(43002, 8443, flagACK), toMember)
	if p.src.Addr() != snat4 || !e.isMember(p.dst, 4443) {
		t.Errorf("loose_init on: %s -> %s", p.src, p.dst)
	}
	if _, ok := e.lookupHalfOpen(ap(client4, 43002), ap(vip4, 8443), protoTCP); !ok {
		t.Error("loose_init on: no flow opened")
	}
	// Picked up mid-stream, it is established on the member's answer.
	r := expectRedirect(t, e, frame{src: p.dst, dst: p.src, proto: protoTCP, flags: flagACK, seq: 20, ack: 20}.bytes(), toClient)
	if r.dst != ap(client4, 43002) {
		t.Errorf("answer to %s", r.dst)
	}
	if _, ok := e.lookupFlow(ap(client4, 43002), ap(vip4, 8443), protoTCP); !ok {
		t.Error("loose_init on: the flow is not established after the member's answer")
	}
	// Never on a RST or FIN.
	looseNoFlow := e.delta("loose", bpf.FastL4ReasonREASON_DROP_NO_FLOW)
	expectVerdict(t, e, ack(43003, 8443, flagRST), xdpDrop)
	expectVerdict(t, e, ack(43004, 8443, flagFIN|flagACK), xdpDrop)
	if looseNoFlow() != 2 {
		t.Errorf("loose_init on: RST/FIN: drop_no_flow grew by %d", looseNoFlow())
	}
}

func TestPrivilegedProgramFragments(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, _ := e.hops()

	dropped := e.delta("dns", bpf.FastL4ReasonREASON_DROP_FRAGMENT)
	first := frame{src: ap(client4, 44000), dst: ap(vip4, 53), proto: protoUDP, payload: make([]byte, 64), fragMore: true}
	expectVerdict(t, e, first.bytes(), xdpDrop)
	if dropped() != 1 {
		t.Error("first fragment to a fastl4 virtual: not counted as drop_fragment")
	}
	if _, ok := e.lookupFlow(ap(client4, 44000), ap(vip4, 53), protoUDP); ok {
		t.Error("a fragment opened a flow")
	}

	later := e.delta("", bpf.FastL4ReasonREASON_PASS_FRAGMENT)
	expectPassUntouched(t, e, frame{src: ap(client4, 0), dst: ap(vip4, 0), proto: protoUDP, fragOff: 3, rawL4: make([]byte, 32)}.bytes())
	if later() != 1 {
		t.Error("later fragment: not counted as pass_fragment")
	}
	// First fragments elsewhere are the host's business.
	expectPassUntouched(t, e, frame{src: ap(client4, 44001), dst: ap(netip.MustParseAddr("198.18.0.2"), 53), proto: protoUDP, payload: make([]byte, 64), fragMore: true}.bytes())

	// A fragment of an open flow is dropped too.
	expectRedirect(t, e, frame{src: ap(client4, 44002), dst: ap(vip4, 53), proto: protoUDP, payload: []byte("q")}.bytes(), toMember)
	expectVerdict(t, e, frame{src: ap(client4, 44002), dst: ap(vip4, 53), proto: protoUDP, payload: make([]byte, 64), fragMore: true}.bytes(), xdpDrop)

	dropped6 := e.delta("dns6", bpf.FastL4ReasonREASON_DROP_FRAGMENT)
	expectVerdict(t, e, frame{src: ap(client6, 44000), dst: ap(vip6, 53), proto: protoUDP, payload: make([]byte, 64), fragHeader: true, fragMore: true}.bytes(), xdpDrop)
	if dropped6() != 1 {
		t.Error("IPv6 first fragment: not counted")
	}
	later6 := e.delta("", bpf.FastL4ReasonREASON_PASS_FRAGMENT)
	expectPassUntouched(t, e, frame{src: ap(client6, 0), dst: ap(vip6, 0), proto: protoUDP, fragHeader: true, fragOff: 8, rawL4: make([]byte, 32)}.bytes())
	if later6() != 1 {
		t.Error("IPv6 later fragment: not counted")
	}
}

func TestPrivilegedProgramMSSClamp(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	mss := func(v uint16) []byte { return []byte{2, 4, byte(v >> 8), byte(v)} }
	findMSS := func(opts []byte) int {
		for i := 0; i < len(opts); {
			switch opts[i] {
			case 0:
				return -1
			case 1:
				i++
				continue
			}
			if opts[i] == 2 {
				return int(binary.BigEndian.Uint16(opts[i+2:]))
			}
			i += int(opts[i+1])
		}
		return -1
	}
	for _, tc := range []struct {
		name string
		opts []byte
		want int
	}{
		{"first option", append(mss(1460), 4, 2, 1, 3, 3, 7, 0, 0), 1200},
		{"after one NOP (odd offset)", append(append([]byte{1}, mss(1440)...), 1, 1, 1), 1200},
		{"after timestamps", append(append([]byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0}, mss(9000)...), 0, 0, 0, 0), 1200},
		{"already small", append(mss(1000), 1, 1, 1, 0), 1000},
		{"no MSS option", []byte{1, 1, 4, 2}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := uint16(45000 + len(tc.name))
			clamped := e.delta("web6", bpf.FastL4ReasonREASON_EVENT_MSS_CLAMPED)
			p := expectRedirect(t, e, frame{src: ap(client6, port), dst: ap(vip6, 443), proto: protoTCP, flags: flagSYN, tcpOpts: tc.opts}.bytes(), toMember)
			if got := findMSS(p.tcpOpts); got != tc.want {
				t.Errorf("SYN MSS %d, want %d", got, tc.want)
			}
			if len(p.tcpOpts) != len(tc.opts) {
				t.Errorf("options length changed: %d -> %d", len(tc.opts), len(p.tcpOpts))
			}
			// The member's SYN-ACK is clamped too.
			r := expectRedirect(t, e, frame{src: p.dst, dst: p.src, proto: protoTCP, flags: flagSYN | flagACK, tcpOpts: tc.opts}.bytes(), toClient)
			if got := findMSS(r.tcpOpts); got != tc.want {
				t.Errorf("SYN-ACK MSS %d, want %d", got, tc.want)
			}
			wantEvents := uint64(0)
			if tc.want == 1200 {
				wantEvents = 2
			}
			if n := clamped(); n != wantEvents {
				t.Errorf("mss_clamped grew by %d, want %d", n, wantEvents)
			}
		})
	}
	// An MSS option whose value lies past the data offset: the payload
	// is not the option's, and stays as sent.
	straddle := frame{src: ap(client6, 45200), dst: ap(vip6, 443), proto: protoTCP, flags: flagSYN, tcpOpts: []byte{1, 1, 2, 4}, payload: []byte{0x23, 0x28, 'd', 'a', 't', 'a'}}
	sp := expectRedirect(t, e, straddle.bytes(), toMember)
	if !bytes.Equal(sp.payload, straddle.payload) {
		t.Errorf("payload after an option cut by the data offset changed: % x, want % x", sp.payload, straddle.payload)
	}

	// Without mss_override nothing changes.
	opts := append(mss(1460), 1, 1, 1, 0)
	p := expectRedirect(t, e, frame{src: ap(client4, 45100), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN, tcpOpts: opts}.bytes(), toMember)
	if findMSS(p.tcpOpts) != 1460 {
		t.Errorf("MSS changed without mss_override: %d", findMSS(p.tcpOpts))
	}
}

// establish opens a TCP connection through the program (SYN, SYN-ACK,
// ACK) and returns the member side tuple (member, SNAT).
func establish(t *testing.T, e *env, client, vip netip.AddrPort) (member, snat netip.AddrPort) {
	t.Helper()
	toMember, toClient := e.hops()
	p := expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagSYN, seq: 100}.bytes(), toMember)
	expectRedirect(t, e, frame{src: p.dst, dst: p.src, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 101}.bytes(), toClient)
	expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes(), toMember)
	return p.dst, p.src
}

func (e *env) flowState(client netip.AddrPort) string {
	e.t.Helper()
	fl, err := e.fp.Flows()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, f := range fl {
		if f.Client == client {
			return f.State
		}
	}
	return ""
}

func TestPrivilegedProgramCloseAndTimers(t *testing.T) {
	e := progEnv(t, nil,
		fastl4("short", "198.18.0.10:9443", "fe4", 4443, func(v *Virtual) {
			v.IdleTimeout = 1 * time.Second
			v.HandshakeTimeout = 1 * time.Second
			v.CloseTimeout = 1 * time.Second
			v.ResetOnTimeout = false
		}))
	e.resolve()
	toMember, toClient := e.hops()
	vip := ap(vip4, 9443)

	// FIN from both sides: closing, in both halves.
	c1 := ap(client4, 46001)
	member, snat := establish(t, e, c1, vip)
	if st := e.flowState(c1); st != StateEstablished {
		t.Fatalf("state %q after the handshake, want established", st)
	}
	expectRedirect(t, e, frame{src: c1, dst: vip, proto: protoTCP, flags: flagFIN | flagACK, seq: 101, ack: 901}.bytes(), toMember)
	if st := e.flowState(c1); st != StateFinWait {
		t.Errorf("state %q after the client's FIN, want fin_wait", st)
	}
	s, _ := e.lookupFlow(member, snat, protoTCP)
	if s.Closing&closeFinClient == 0 {
		t.Error("the client's FIN is not marked in the server half")
	}
	expectRedirect(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagFIN | flagACK, seq: 901, ack: 102}.bytes(), toClient)
	if st := e.flowState(c1); st != StateClosing {
		t.Errorf("state %q after both FINs, want closing", st)
	}

	// RST: reset.
	c2 := ap(client4, 46002)
	establish(t, e, c2, vip)
	expectRedirect(t, e, frame{src: c2, dst: vip, proto: protoTCP, flags: flagRST, seq: 101}.bytes(), toMember)
	if st := e.flowState(c2); st != StateReset {
		t.Errorf("state %q after RST, want reset", st)
	}

	// A new SYN on a closing connection opens a new one.
	restarted := e.delta("short", bpf.FastL4ReasonREASON_EVENT_RESTARTED)
	expectRedirect(t, e, frame{src: c2, dst: vip, proto: protoTCP, flags: flagSYN, seq: 5000}.bytes(), toMember)
	if restarted() != 1 {
		t.Error("SYN on a reset connection did not restart it")
	}
	if st := e.flowState(c2); st != StateHandshake {
		t.Errorf("restarted connection in state %q, want handshake", st)
	}

	// An idle established connection and a handshake that never ends.
	c3 := ap(client4, 46003)
	establish(t, e, c3, vip)
	c4 := ap(client4, 46004)
	expectRedirect(t, e, frame{src: c4, dst: vip, proto: protoTCP, flags: flagSYN}.bytes(), toMember)
	// A connection of a virtual with the default 60s idle timeout stays.
	c5 := ap(client4, 46005)
	establish(t, e, c5, ap(vip4, 443))

	e.do(func() {
		if err := e.fp.collect(); err != nil {
			t.Fatal(err)
		}
	})
	for _, c := range []netip.AddrPort{c1, c2, c3, c4} {
		if e.flowState(c) == "" {
			t.Errorf("%s reaped before its timeout", c)
		}
	}
	time.Sleep(1500 * time.Millisecond) // past the 1s timeouts
	e.do(func() {
		if err := e.fp.collect(); err != nil {
			t.Fatal(err)
		}
	})
	for _, c := range []netip.AddrPort{c1, c2, c3, c4} {
		if st := e.flowState(c); st != "" {
			t.Errorf("%s still in the table (%s) after its timeout", c, st)
		}
	}
	if e.flowState(c5) != StateEstablished {
		t.Error("a connection with a longer idle timeout was reaped")
	}
	if n := e.flowEntries(); n != 2 {
		t.Errorf("%d flow entries left, want the 2 halves of one connection", n)
	}
}

func TestPrivilegedProgramSNATExhaustion(t *testing.T) {
	e := progEnv(t, snatPorts(40000, 40001),
		fastl4("one", "198.18.0.10:7443", "one4", 4443))
	e.resolve()
	toMember, _ := e.hops()
	vip := ap(vip4, 7443)
	other := netip.MustParseAddr("198.18.0.77")
	// Answers to the second client need its neighbour entry.
	e.lab.Proxy.Run(t, "ip", "neigh", "replace", other.String(), "lladdr", linkMAC(t, e.lab.Client, testnet.ClientIf).String(), "dev", testnet.ExtIf, "nud", "permanent")

	// The client port 40000 is kept; another client with the same port
	// gets the other one.
	_, s1 := establish(t, e, ap(client4, 40000), vip)
	_, s2 := establish(t, e, ap(other, 40000), vip)
	if s1 != ap(snat4, 40000) || s2 != ap(snat4, 40001) {
		t.Errorf("SNAT sources %s and %s, want %s:40000 and :40001", s1, s2, snat4)
	}
	exhausted := e.delta("one", bpf.FastL4ReasonREASON_DROP_SNAT_EXHAUSTED)
	expectVerdict(t, e, frame{src: ap(client4, 1234), dst: vip, proto: protoTCP, flags: flagSYN}.bytes(), xdpDrop)
	if exhausted() != 1 {
		t.Errorf("drop_snat_exhausted grew by %d, want 1", exhausted())
	}
	if _, ok := e.lookupFlow(ap(client4, 1234), vip, protoTCP); ok {
		t.Error("a flow was opened without a SNAT port")
	}
	// The established ones keep going.
	expectRedirect(t, e, frame{src: ap(client4, 40000), dst: vip, proto: protoTCP, flags: flagACK}.bytes(), toMember)
}

func TestPrivilegedProgramTableFull(t *testing.T) {
	e := progEnv(t, func(o *Options) { o.MaxFlows = 3 })
	e.resolve()
	toMember, toClient := e.hops()
	for i := range 3 {
		establish(t, e, ap(client4, uint16(47000+i)), ap(vip4, 443))
	}
	// A fourth handshake: the SYN and SYN-ACK go through the half-open
	// table, the ACK that would establish it finds the table full.
	full := e.delta("web", bpf.FastL4ReasonREASON_DROP_TABLE_FULL)
	c := ap(client4, 47010)
	p := expectRedirect(t, e, frame{src: c, dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN, seq: 100}.bytes(), toMember)
	expectRedirect(t, e, frame{src: p.dst, dst: p.src, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 101}.bytes(), toClient)
	expectVerdict(t, e, frame{src: c, dst: ap(vip4, 443), proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes(), xdpDrop)
	if full() != 1 {
		t.Errorf("drop_table_full grew by %d, want 1", full())
	}
	if n := e.establishedEntries(); n != 6 {
		t.Errorf("%d established entries, want 6 (no half-inserted pair)", n)
	}
	// Established flows are never evicted: they keep going.
	for i := range 3 {
		expectRedirect(t, e, frame{src: ap(client4, uint16(47000+i)), dst: ap(vip4, 443), proto: protoTCP, flags: flagACK}.bytes(), toMember)
	}
}

// A half deleted behind the program's back (bpftool, say) is not looked
// for by the established path: its packets cost one table lookup, not
// two. The reaper's exact walk puts it back.
func TestPrivilegedProgramRepair(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	client := ap(client4, 48000)
	vip := ap(vip4, 443)
	member, snat := establish(t, e, client, vip)

	sk := flowKey(member, snat, protoTCP)
	if err := e.fp.flows.Delete(sk); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond) // past the last-seen granularity
	repaired := e.delta("web", bpf.FastL4ReasonREASON_EVENT_REPAIRED)
	expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes(), toMember)
	if _, ok := e.lookupFlow(member, snat, protoTCP); ok || repaired() != 0 {
		t.Fatal("the established path looked up and re-inserted an unmarked half's other half")
	}
	// A walk skips the other half of a half seen within its idle
	// timeout; the exact one (the first after a start, every 8th, and
	// collect) looks it up and repairs it.
	walk := func(exact bool) {
		e.do(func() {
			if err := e.fp.reapRun(monoNow(), true, true, true, exact); err != nil {
				t.Fatal(err)
			}
		})
	}
	walk(false)
	if _, ok := e.lookupFlow(member, snat, protoTCP); ok {
		t.Fatal("an inexact walk repaired a live half's pair")
	}
	walk(true)
	if _, ok := e.lookupFlow(member, snat, protoTCP); !ok {
		t.Fatal("missing server half not repaired by the exact walk")
	}
	r := expectRedirect(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 101}.bytes(), toClient)
	if r.dst != client {
		t.Errorf("reply after repair goes to %s", r.dst)
	}

	// The GC re-inserts a missing client half from the server side.
	ck := flowKey(client, vip, protoTCP)
	if err := e.fp.flows.Delete(ck); err != nil {
		t.Fatal(err)
	}
	e.do(func() {
		if err := e.fp.collect(); err != nil {
			t.Fatal(err)
		}
	})
	if _, ok := e.lookupFlow(client, vip, protoTCP); !ok {
		t.Fatal("missing client half not repaired by the GC")
	}
	expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes(), toMember)
}

// Two CPUs promote one pair (the client's ACK and its next segment):
// the first inserts the server half, the second finds it and inserts the
// client half, then the first, its own insert of the client half refused
// by a full table, takes the server half back. The test plays the first
// CPU. The client half is marked, so its next packet, at once, puts the
// server half back; while the table stays full it keeps trying. The mark
// goes once a packet a granularity (100 ms) later finds the pair whole.
func TestPrivilegedProgramRepairRacedPromotion(t *testing.T) {
	e := progEnv(t, func(o *Options) { o.MaxFlows = 2 })
	e.resolve()
	toMember, toClient := e.hops()
	vip := ap(vip4, 443)
	establish(t, e, ap(client4, 48100), vip) // 2 of the 4 entries
	client := ap(client4, 48101)
	p := expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagSYN, seq: 100}.bytes(), toMember)
	member, snat := p.dst, p.src
	expectRedirect(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 101}.bytes(), toClient)
	sk := flowKey(member, snat, protoTCP)
	var sv bpf.FastL4FlowVal
	if err := e.fp.flows.half.Lookup(&sk, &sv); err != nil {
		t.Fatalf("server half not half-open: %v", err)
	}
	sv.HalfOpen = 0
	if err := e.fp.flows.Update(sk, &sv, ebpf.UpdateNoExist); err != nil {
		t.Fatal(err)
	}
	expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes(), toMember)
	if err := e.fp.flows.Delete(sk); err != nil {
		t.Fatal(err)
	}
	// The table full again: the repair fails, the packet goes through.
	fill := flowKey(ap(client4, 48102), vip, protoTCP)
	fv := bpf.FastL4FlowVal{CreatedNs: monoNow(), LastNs: monoNow(), Vid: sv.Vid, Dir: dirClient, Seen: seenAny | seenACK}
	setKeys(&fv, fill, fill)
	if err := e.fp.flows.Update(fill, &fv, ebpf.UpdateNoExist); err != nil {
		t.Fatal(err)
	}
	repaired := e.delta("web", bpf.FastL4ReasonREASON_EVENT_REPAIRED)
	data := frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes()
	expectRedirect(t, e, data, toMember)
	if c, _ := e.lookupFlow(client, vip, protoTCP); c.Seen&seenRepair == 0 || repaired() != 0 {
		t.Errorf("with the table full: client half seen %#x, %d repaired; want it still marked", c.Seen, repaired())
	}
	if err := e.fp.flows.Delete(fill); err != nil {
		t.Fatal(err)
	}
	expectRedirect(t, e, data, toMember)
	if _, ok := e.lookupFlow(member, snat, protoTCP); !ok {
		t.Fatal("missing server half not repaired by the client's next packet: the member's answers are lost")
	}
	r := expectRedirect(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 102}.bytes(), toClient)
	if r.dst != client {
		t.Errorf("reply after repair goes to %s", r.dst)
	}
	time.Sleep(150 * time.Millisecond)
	expectRedirect(t, e, data, toMember)
	if c, _ := e.lookupFlow(client, vip, protoTCP); c.Seen&seenRepair != 0 || repaired() != 1 {
		t.Errorf("client half seen %#x, %d repaired, after a granularity with its pair whole: want the mark gone", c.Seen, repaired())
	}
}

func TestPrivilegedProgramNoNeighbour(t *testing.T) {
	e := progEnv(t, nil)
	toMember, _ := e.hops()
	e.lab.Proxy.Run(t, "ip", "neigh", "flush", "dev", testnet.IntIf)
	noNeigh := e.delta("web", bpf.FastL4ReasonREASON_DROP_NO_NEIGH)
	syn := frame{src: ap(client4, 49000), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN}.bytes()
	expectVerdict(t, e, syn, xdpDrop)
	if noNeigh() != 1 {
		t.Fatalf("drop_no_neigh grew by %d", noNeigh())
	}
	// The next hop is reported for the control plane.
	var k bpf.FastL4NeighKey
	var v uint64
	it := e.fp.objs.NeighMiss.Iterate()
	if !it.Next(&k, &v) || addrFromBPF(k.Addr, uint8(k.Family)) != e.lab.RouterAddr4 {
		t.Fatalf("next hop %s not reported", e.lab.RouterAddr4)
	}
	// The control plane resolves it; the retransmitted SYN goes through.
	e.do(e.fp.upkeep)
	eventually(t, 3*time.Second, "next hop resolved", func() bool {
		ret, _ := e.run(syn)
		return ret == xdpRedirect
	})
	expectRedirect(t, e, syn, toMember)
	out := e.lab.Proxy.Run(t, "ip", "neigh", "show", "dev", testnet.IntIf)
	t.Logf("neighbours:\n%s", out)
	if !strings.Contains(out, e.lab.RouterAddr4.String()) || !strings.Contains(out, "managed") {
		t.Errorf("the next hop is not a managed neighbour:\n%s", out)
	}
}

// TestPrivilegedProgramNoTxPort routes the members through a third NIC
// the fast path is not attached to: new flows are dropped and counted as
// drop_no_tx_port, never redirected there; with the route gone they go
// out of int0 again.
func TestPrivilegedProgramNoTxPort(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, _ := e.hops()
	p := e.lab.Proxy
	p.Run(t, "ip", "link", "add", "x0", "type", "veth", "peer", "name", "x1")
	p.Run(t, "ip", "link", "set", "x0", "up")
	p.Run(t, "ip", "link", "set", "x1", "up")
	p.Run(t, "ip", "route", "add", "198.19.1.0/25", "dev", "x0")
	for _, m := range e.lab.Members4 {
		p.Run(t, "ip", "neigh", "add", m.String(), "lladdr", "02:00:00:00:00:01", "dev", "x0", "nud", "permanent")
	}
	noTx := e.delta("web", bpf.FastL4ReasonREASON_DROP_NO_TX_PORT)
	for i := range 3 {
		expectVerdict(t, e, frame{src: ap(client4, uint16(49100+i)), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN}.bytes(), xdpDrop)
	}
	if n := noTx(); n != 3 {
		t.Fatalf("drop_no_tx_port grew by %d, want 3", n)
	}
	p.Run(t, "ip", "route", "del", "198.19.1.0/25", "dev", "x0")
	expectRedirect(t, e, frame{src: ap(client4, 49200), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN}.bytes(), toMember)
}

func TestPrivilegedProgramICMPErrors(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()

	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) {
			client, vip, router := ap(client4, 50100), ap(vip4, 443), e.lab.RouterAddr4
			if fam == "ipv6" {
				client, vip, router = ap(client6, 50100), ap(vip6, 443), e.lab.RouterAddr6
			}
			member, snat := establish(t, e, client, vip)
			// The packet the internal router could not forward: a big
			// segment from the SNAT address to the member.
			big := frame{src: snat, dst: member, proto: protoTCP, flags: flagACK, seq: 101, ack: 901, payload: make([]byte, 200)}.bytes()
			inner := big[14:]
			var msg []byte
			var proto uint8
			if fam == "ipv4" {
				msg = append([]byte{3, 4, 0, 0, 0, 0, 0x05, 0x78}, inner...) // frag needed, MTU 1400
				binary.BigEndian.PutUint16(msg[2:], ^foldSum(sum16(msg)))
				proto = protoICMP
			} else {
				msg = append([]byte{2, 0, 0, 0, 0, 0, 0x05, 0x00}, inner...) // packet too big, MTU 1280
				binary.BigEndian.PutUint16(msg[2:], ^foldSum(pseudo(router, snat.Addr(), protoICMPv6, len(msg))+sum16(msg)))
				proto = protoICMPv6
			}
			in := frame{src: ap(router, 0), dst: ap(snat.Addr(), 0), proto: proto, rawL4: msg}.bytes()
			virtual := "web"
			if fam == "ipv6" {
				virtual = "web6"
			}
			fwd := e.delta(virtual, bpf.FastL4ReasonREASON_FWD_ICMP)
			p := expectRedirect(t, e, in, toClient)
			if p.src.Addr() != vip.Addr() || p.dst.Addr() != client.Addr() {
				t.Errorf("outer %s -> %s, want %s -> %s", p.src.Addr(), p.dst.Addr(), vip.Addr(), client.Addr())
			}
			// The embedded packet is now what the client sent.
			var emb []byte
			if fam == "ipv4" {
				emb = p.l4[8:]
				if foldSum(sum16(emb[:20])) != 0xffff {
					t.Error("embedded IPv4 header checksum is wrong")
				}
				if s, d := netip.AddrFrom4([4]byte(emb[12:16])), netip.AddrFrom4([4]byte(emb[16:20])); s != client.Addr() || d != vip.Addr() {
					t.Errorf("embedded %s -> %s", s, d)
				}
				emb = emb[20:]
				if p.l4[0] != 3 || p.l4[1] != 4 || binary.BigEndian.Uint16(p.l4[6:]) != 1400 {
					t.Errorf("ICMP type/code/MTU changed: % x", p.l4[:8])
				}
			} else {
				emb = p.l4[8:]
				if s, d := netip.AddrFrom16([16]byte(emb[8:24])), netip.AddrFrom16([16]byte(emb[24:40])); s != client.Addr() || d != vip.Addr() {
					t.Errorf("embedded %s -> %s", s, d)
				}
				emb = emb[40:]
				if p.l4[0] != 2 || binary.BigEndian.Uint32(p.l4[4:]) != 1280 {
					t.Errorf("ICMPv6 type/MTU changed: % x", p.l4[:8])
				}
			}
			if sp, dp := binary.BigEndian.Uint16(emb[0:]), binary.BigEndian.Uint16(emb[2:]); sp != client.Port() || dp != vip.Port() {
				t.Errorf("embedded ports %d -> %d", sp, dp)
			}
			if seq := binary.BigEndian.Uint32(emb[4:]); seq != 101 {
				t.Errorf("embedded seq %d", seq)
			}
			if len(emb) != 8 {
				t.Errorf("embedded L4 bytes: %d, want 8 (cut)", len(emb))
			}
			if fwd() != 1 {
				t.Error("fwd_icmp not counted")
			}

			// An error about something else is the host's.
			other := frame{src: snat, dst: ap(member.Addr(), 4444), proto: protoTCP, flags: flagACK}.bytes()[14:]
			var m2 []byte
			if fam == "ipv4" {
				m2 = append([]byte{3, 4, 0, 0, 0, 0, 0x05, 0x78}, other...)
				binary.BigEndian.PutUint16(m2[2:], ^foldSum(sum16(m2)))
			} else {
				m2 = append([]byte{2, 0, 0, 0, 0, 0, 0x05, 0x00}, other...)
				binary.BigEndian.PutUint16(m2[2:], ^foldSum(pseudo(router, snat.Addr(), protoICMPv6, len(m2))+sum16(m2)))
			}
			expectPassUntouched(t, e, frame{src: ap(router, 0), dst: ap(snat.Addr(), 0), proto: proto, rawL4: m2}.bytes())
		})
	}

	// An error from the Internet about a reply the client could not take
	// goes to the member, as about what the member sent.
	t.Run("from the client side", func(t *testing.T) {
		client, vip := ap(client4, 50200), ap(vip4, 443)
		member, snat := establish(t, e, client, vip)
		reply := frame{src: vip, dst: client, proto: protoTCP, flags: flagACK, seq: 901, ack: 101, payload: make([]byte, 100)}.bytes()[14:]
		msg := append([]byte{3, 4, 0, 0, 0, 0, 0x04, 0x00}, reply...)
		binary.BigEndian.PutUint16(msg[2:], ^foldSum(sum16(msg)))
		in := frame{src: ap(netip.MustParseAddr("198.18.0.254"), 0), dst: ap(vip4, 0), proto: protoICMP, rawL4: msg}.bytes()
		p := expectRedirect(t, e, in, toMember)
		if p.src.Addr() != snat.Addr() || p.dst.Addr() != member.Addr() {
			t.Errorf("outer %s -> %s, want %s -> %s", p.src.Addr(), p.dst.Addr(), snat.Addr(), member.Addr())
		}
		emb := p.l4[8:]
		if s, d := netip.AddrFrom4([4]byte(emb[12:16])), netip.AddrFrom4([4]byte(emb[16:20])); s != member.Addr() || d != snat.Addr() {
			t.Errorf("embedded %s -> %s, want %s -> %s", s, d, member.Addr(), snat.Addr())
		}
		if sp, dp := binary.BigEndian.Uint16(emb[20:]), binary.BigEndian.Uint16(emb[22:]); sp != member.Port() || dp != snat.Port() {
			t.Errorf("embedded ports %d -> %d", sp, dp)
		}
	})
}

// The program's counters key is virtual id * reasons + reason: the map
// must hold every virtual's reasons.
func TestReasonNames(t *testing.T) {
	for r := range reasonMax {
		if reasonNames[bpf.FastL4Reason(r)] == "" {
			t.Errorf("reason %d has no name", r)
		}
	}
	spec, err := bpf.LoadFastL4()
	if err != nil {
		t.Fatal(err)
	}
	if n := spec.Maps[bpf.FastL4MapStats].MaxEntries; int(n) != maxVirtuals*reasonMax {
		t.Errorf("stats map has %d entries, want %d", n, maxVirtuals*reasonMax)
	}
	if n := spec.Maps[bpf.FastL4MapVirtuals].MaxEntries; int(n) != maxVirtuals {
		t.Errorf("virtuals map has %d entries, want %d", n, maxVirtuals)
	}
	if n := spec.Maps[bpf.FastL4MapPools].MaxEntries; int(n) != maxPools {
		t.Errorf("pools map has %d entries, want %d", n, maxPools)
	}
	if n := spec.Maps[bpf.FastL4MapSnatAddrs].MaxEntries; int(n) != maxVirtuals*maxSNAT*2 {
		t.Errorf("snat map has %d entries", n)
	}
	_ = ebpf.Array
}
