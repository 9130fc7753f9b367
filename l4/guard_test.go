package l4

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// expectNotForwarded runs a frame on nic and checks the verdict and the
// counter, and that the frame left the program untouched when passed.
func expectNotForwarded(t *testing.T, e *env, in []byte, nic string, virtual string, want uint32, r bpf.FastL4Reason) {
	t.Helper()
	d := e.delta(virtual, r)
	ret, out := e.runOn(in, nic)
	if ret != want {
		t.Fatalf("verdict %d, want %d", ret, want)
	}
	if want == xdpPass && !bytes.Equal(out, in) {
		t.Errorf("passed frame was changed:\n in  %x\n out %x", in, out)
	}
	if n := d(); n != 1 {
		t.Errorf("%s grew by %d, want 1", reasonNames[r], n)
	}
}

func TestPrivilegedProgramMartians(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, _ := e.hops()
	lab := e.lab
	for i, src := range []netip.Addr{
		netip.MustParseAddr("0.1.2.3"),
		netip.MustParseAddr("127.0.0.1"),
		netip.MustParseAddr("169.254.10.1"),
		netip.MustParseAddr("224.0.0.5"),
		netip.MustParseAddr("240.0.0.1"),
		netip.MustParseAddr("255.255.255.255"),
		lab.ExtAddr4,                        // the host itself
		netip.MustParseAddr("198.18.0.255"), // the external subnet's broadcast
		vip4,                                // a VIP
		snat4,                               // a SNAT address (the internal NIC's)
		netip.MustParseAddr("198.19.0.77"),  // the internal subnet
		lab.Members4[0],                     // the members' subnet
		netip.MustParseAddr("::"),
		netip.MustParseAddr("::1"),
		netip.MustParseAddr("::ffff:198.18.0.1"),
		netip.MustParseAddr("fe80::1"),
		netip.MustParseAddr("ff02::1"),
		lab.ExtAddr6,
		vip6,
		snat6,
		netip.MustParseAddr("2001:db8:2::77"),
		lab.Members6[0],
	} {
		t.Run(src.String(), func(t *testing.T) {
			vip, virtual := vip4, "web"
			if src.Is6() && !src.Is4In6() {
				vip, virtual = vip6, "web6"
			}
			client := ap(src, uint16(51000+i))
			f := frame{src: client, dst: ap(vip, 443), proto: protoTCP, flags: flagSYN}
			if src.Is4In6() {
				// An IPv4-mapped source in an IPv6 header.
				f.src = netip.AddrPortFrom(src, client.Port())
				f.dst = ap(vip6, 443)
				virtual = "web6"
			}
			expectNotForwarded(t, e, e.toNIC(f.bytes(), testnet.ExtIf), testnet.ExtIf, virtual, xdpDrop, bpf.FastL4ReasonREASON_DROP_MARTIAN)
			if _, ok := e.lookupFlow(f.src, f.dst, protoTCP); ok {
				t.Error("a martian source opened a flow")
			}
		})
	}
	if n := e.flowEntries(); n != 0 {
		t.Errorf("martians left %d flow entries", n)
	}
	// A client of the Internet gets through.
	expectRedirect(t, e, frame{src: ap(client4, 51100), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN}.bytes(), toMember)
	expectRedirect(t, e, frame{src: ap(client6, 51100), dst: ap(vip6, 443), proto: protoTCP, flags: flagSYN}.bytes(), toMember)
}

func TestPrivilegedProgramWrongIngress(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) {
			client, vip, virtual := ap(client4, 52000), ap(vip4, 443), "web"
			if fam == "ipv6" {
				client, vip, virtual = ap(client6, 52000), ap(vip6, 443), "web6"
			}
			// A new client on the internal NIC.
			syn := frame{src: ap(client.Addr(), 52001), dst: vip, proto: protoTCP, flags: flagSYN}.bytes()
			expectNotForwarded(t, e, e.toNIC(syn, testnet.IntIf), testnet.IntIf, virtual, xdpDrop, bpf.FastL4ReasonREASON_DROP_INGRESS)
			if _, ok := e.lookupFlow(ap(client.Addr(), 52001), vip, protoTCP); ok {
				t.Error("a client on the internal NIC opened a flow")
			}

			member, snat := establish(t, e, client, vip)
			// The client's packet on the internal NIC, the member's on
			// the external one.
			data := frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901, payload: []byte("x")}.bytes()
			expectNotForwarded(t, e, e.toNIC(data, testnet.IntIf), testnet.IntIf, virtual, xdpDrop, bpf.FastL4ReasonREASON_DROP_INGRESS)
			reply := frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 102, payload: []byte("y")}.bytes()
			expectNotForwarded(t, e, e.toNIC(reply, testnet.ExtIf), testnet.ExtIf, virtual, xdpDrop, bpf.FastL4ReasonREASON_DROP_INGRESS)

			// On their own NICs they go through.
			expectRedirect(t, e, data, toMember)
			expectRedirect(t, e, reply, toClient)
		})
	}
}

func TestPrivilegedProgramForeignMAC(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	client, vip := ap(client4, 53000), ap(vip4, 443)
	member, snat := establish(t, e, client, vip)
	withMAC := func(b []byte, mac net.HardwareAddr) []byte {
		out := bytes.Clone(b)
		copy(out, mac)
		return out
	}
	data := frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901, payload: []byte("x")}.bytes()
	reply := frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 102, payload: []byte("y")}.bytes()
	for _, mac := range []struct {
		name string
		addr net.HardwareAddr
	}{
		{"another host", net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}},
		{"broadcast", net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"multicast", net.HardwareAddr{0x01, 0x00, 0x5e, 0, 0, 0x01}},
	} {
		t.Run(mac.name, func(t *testing.T) {
			syn := frame{src: ap(client4, 53001), dst: vip, proto: protoTCP, flags: flagSYN}.bytes()
			expectNotForwarded(t, e, withMAC(syn, mac.addr), testnet.ExtIf, "web", xdpPass, bpf.FastL4ReasonREASON_PASS_FOREIGN_MAC)
			if _, ok := e.lookupFlow(ap(client4, 53001), vip, protoTCP); ok {
				t.Error("a frame for another MAC opened a flow")
			}
			expectNotForwarded(t, e, withMAC(data, mac.addr), testnet.ExtIf, "web", xdpPass, bpf.FastL4ReasonREASON_PASS_FOREIGN_MAC)
			expectNotForwarded(t, e, withMAC(reply, mac.addr), testnet.IntIf, "web", xdpPass, bpf.FastL4ReasonREASON_PASS_FOREIGN_MAC)
		})
	}
	expectRedirect(t, e, data, toMember)
	expectRedirect(t, e, reply, toClient)
}

// icmpQuote checks an ICMP error the program sent back for the frame in:
// from in's destination to its source, out of the same NIC (MACs
// swapped), quoting in's IP header and 8 bytes. It returns the type, code
// and the 4 bytes after the checksum.
func icmpQuote(t *testing.T, in, out []byte) (typ, code uint8, rest uint32) {
	t.Helper()
	p, err := parseFrame(out)
	if err != nil {
		t.Fatalf("ICMP frame: %v", err)
	}
	q, err := parseFrame(in)
	if err != nil {
		t.Fatalf("input frame: %v", err)
	}
	if !bytes.Equal(p.dstMAC, q.srcMAC) || !bytes.Equal(p.srcMAC, q.dstMAC) {
		t.Errorf("MACs %s -> %s, want %s -> %s", p.srcMAC, p.dstMAC, q.dstMAC, q.srcMAC)
	}
	if p.src.Addr() != q.dst.Addr() || p.dst.Addr() != q.src.Addr() {
		t.Errorf("ICMP %s -> %s, want %s -> %s", p.src.Addr(), p.dst.Addr(), q.dst.Addr(), q.src.Addr())
	}
	want := protoICMP
	hl := 20
	if q.src.Addr().Is6() {
		want, hl = protoICMPv6, 40
	}
	if int(p.proto) != want {
		t.Fatalf("protocol %d, want %d", p.proto, want)
	}
	if !bytes.Equal(p.l4[8:], in[14:14+hl+8]) {
		t.Errorf("quote % x, want % x", p.l4[8:], in[14:14+hl+8])
	}
	return p.l4[0], p.l4[1], binary.BigEndian.Uint32(p.l4[4:])
}

func TestPrivilegedProgramTTL(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) {
			client, vip, virtual := ap(client4, 54000), ap(vip4, 443), "web"
			wantType := uint8(11) // time exceeded
			if fam == "ipv6" {
				client, vip, virtual, wantType = ap(client6, 54000), ap(vip6, 443), "web6", 3
			}
			// A SYN with TTL 1 (and 0) opens no flow: time exceeded.
			for _, ttl := range []uint8{1, 0} {
				in := frame{src: ap(client.Addr(), 54001), dst: vip, proto: protoTCP, flags: flagSYN, ttl: ttl}.bytes()
				if ttl == 0 { // frame{} takes 0 as 64: patch it
					if fam == "ipv4" {
						in[14+8] = 0
						binary.BigEndian.PutUint16(in[14+10:], 0)
						binary.BigEndian.PutUint16(in[14+10:], ^foldSum(sum16(in[14:34])))
					} else {
						in[14+7] = 0
					}
				}
				in = e.toNIC(in, testnet.ExtIf)
				sent := e.delta(virtual, bpf.FastL4ReasonREASON_TX_TIME_EXCEEDED)
				ret, out := e.runOn(in, testnet.ExtIf)
				if ret != xdpTX {
					t.Fatalf("TTL %d: verdict %d, want XDP_TX", ttl, ret)
				}
				if typ, code, _ := icmpQuote(t, in, out); typ != wantType || code != 0 {
					t.Errorf("TTL %d: ICMP type %d code %d, want %d/0", ttl, typ, code, wantType)
				}
				if sent() != 1 {
					t.Errorf("TTL %d: tx_time_exceeded not counted", ttl)
				}
				if _, ok := e.lookupFlow(ap(client.Addr(), 54001), vip, protoTCP); ok {
					t.Errorf("TTL %d: a flow was opened", ttl)
				}
			}

			// Forwarded packets lose one hop, with valid checksums
			// (parseFrame checks them).
			p := expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagSYN, seq: 100, ttl: 2}.bytes(), toMember)
			if p.ttl != 1 {
				t.Errorf("SYN with TTL 2 forwarded with %d, want 1", p.ttl)
			}
			r := expectRedirect(t, e, frame{src: p.dst, dst: p.src, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 101, ttl: 64}.bytes(), toClient)
			if r.ttl != 63 {
				t.Errorf("SYN-ACK with TTL 64 forwarded with %d, want 63", r.ttl)
			}
			d := expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901, ttl: 255, payload: []byte("data")}.bytes(), toMember)
			if d.ttl != 254 {
				t.Errorf("TTL 255 forwarded with %d, want 254", d.ttl)
			}
			// Established: TTL 1 from either side is answered, not forwarded.
			for _, tc := range []struct {
				f   frame
				nic string
			}{
				{frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 105, ack: 901, ttl: 1, payload: []byte("x")}, testnet.ExtIf},
				{frame{src: p.dst, dst: p.src, proto: protoTCP, flags: flagACK, seq: 901, ack: 105, ttl: 1, payload: []byte("y")}, testnet.IntIf},
			} {
				in := e.toNIC(tc.f.bytes(), tc.nic)
				ret, out := e.runOn(in, tc.nic)
				if ret != xdpTX {
					t.Fatalf("TTL 1 on %s: verdict %d, want XDP_TX", tc.nic, ret)
				}
				if typ, _, _ := icmpQuote(t, in, out); typ != wantType {
					t.Errorf("TTL 1 on %s: ICMP type %d", tc.nic, typ)
				}
			}
		})
	}
}

// setMTU sets the MTU of a NIC of the proxy namespace.
func (e *env) setMTU(nic string, mtu int) {
	e.t.Helper()
	e.lab.Proxy.Run(e.t, "ip", "link", "set", "dev", nic, "mtu", fmt.Sprint(mtu))
}

func TestPrivilegedProgramPathMTU(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	e.setMTU(testnet.IntIf, 1400)
	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) {
			client, vip, virtual, hl := ap(client4, 55000), ap(vip4, 443), "web", 20
			if fam == "ipv6" {
				client, vip, virtual, hl = ap(client6, 55000), ap(vip6, 443), "web6", 40
			}
			member, snat := establish(t, e, client, vip)
			big := func(ipLen int, df bool) []byte {
				return frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901, df: df, payload: make([]byte, ipLen-hl-20)}.bytes()
			}
			check := func(t *testing.T, in []byte) {
				t.Helper()
				sent := e.delta(virtual, bpf.FastL4ReasonREASON_TX_TOO_BIG)
				fwd := e.delta(virtual, bpf.FastL4ReasonREASON_FWD_CLIENT)
				in = e.toNIC(in, testnet.ExtIf)
				ret, out := e.runOn(in, testnet.ExtIf)
				if ret != xdpTX {
					t.Fatalf("verdict %d, want XDP_TX", ret)
				}
				typ, code, rest := icmpQuote(t, in, out)
				if fam == "ipv4" && (typ != 3 || code != 4 || rest&0xffff != 1400) {
					t.Errorf("ICMP %d/%d MTU %d, want frag-needed (3/4) with MTU 1400", typ, code, rest&0xffff)
				}
				if fam == "ipv6" && (typ != 2 || rest != 1400) {
					t.Errorf("ICMPv6 %d MTU %d, want packet too big (2) with MTU 1400", typ, rest)
				}
				if sent() != 1 || fwd() != 0 {
					t.Errorf("tx_too_big grew by %d, fwd_client by %d", sent(), fwd())
				}
			}
			// The next hop cached by the handshake.
			t.Run("cached next hop", func(t *testing.T) { check(t, big(1500, true)) })
			// A next hop looked up again.
			e.forgetNextHop(client, vip)
			t.Run("fresh next hop", func(t *testing.T) { check(t, big(1500, true)) })

			if fam == "ipv4" {
				dropped := e.delta(virtual, bpf.FastL4ReasonREASON_DROP_FRAG_NEEDED)
				expectVerdict(t, e, big(1500, false), xdpDrop)
				if dropped() != 1 {
					t.Error("too big without DF: drop_frag_needed not counted")
				}
			}
			// What fits goes through, both ways.
			p := expectRedirect(t, e, big(1400, true), toMember)
			if p.ipLen != 1400 {
				t.Errorf("forwarded %d bytes, want 1400", p.ipLen)
			}
			expectRedirect(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 101 + 1400, payload: make([]byte, 1400)}.bytes(), toClient)
		})
	}
}

// forgetNextHop clears the next hop cached in a flow's client half.
func (e *env) forgetNextHop(client, vip netip.AddrPort) {
	e.t.Helper()
	v, ok := e.lookupFlow(client, vip, protoTCP)
	if !ok {
		e.t.Fatalf("no flow %s -> %s", client, vip)
	}
	v.TxSlot = 0
	if err := e.fp.flows.Update(flowKey(client, vip, protoTCP), &v, 0); err != nil {
		e.t.Fatal(err)
	}
}

// icmpTooBig is the error a router on the member side sends about the
// segment seq from the SNAT address to the member: frag-needed (IPv4) or
// packet too big (IPv6) with mtu.
func icmpTooBig(from netip.Addr, snat, member netip.AddrPort, seq uint32, mtu uint16) []byte {
	inner := frame{src: snat, dst: member, proto: protoTCP, flags: flagACK, seq: seq, ack: 901, payload: make([]byte, 200)}.bytes()[14:]
	if from.Is4() {
		msg := append([]byte{3, 4, 0, 0, 0, 0, byte(mtu >> 8), byte(mtu)}, inner...)
		binary.BigEndian.PutUint16(msg[2:], ^foldSum(sum16(msg)))
		return frame{src: ap(from, 0), dst: ap(snat.Addr(), 0), proto: protoICMP, rawL4: msg}.bytes()
	}
	msg := append([]byte{2, 0, 0, 0, 0, 0, byte(mtu >> 8), byte(mtu)}, inner...)
	binary.BigEndian.PutUint16(msg[2:], ^foldSum(pseudo(from, snat.Addr(), protoICMPv6, len(msg))+sum16(msg)))
	return frame{src: ap(from, 0), dst: ap(snat.Addr(), 0), proto: protoICMPv6, rawL4: msg}.bytes()
}

// retarget changes the IP destination of an ICMP error frame, its
// checksums made right again.
func retarget(b []byte, dst netip.Addr) {
	if dst.Is4() {
		d := dst.As4()
		copy(b[14+16:], d[:])
		binary.BigEndian.PutUint16(b[14+10:], 0)
		binary.BigEndian.PutUint16(b[14+10:], ^foldSum(sum16(b[14:34])))
		return
	}
	d := dst.As16()
	copy(b[14+24:], d[:])
	l4 := b[14+40:]
	binary.BigEndian.PutUint16(l4[2:], 0)
	src := netip.AddrFrom16([16]byte(b[14+8:]))
	binary.BigEndian.PutUint16(l4[2:], ^foldSum(pseudo(src, dst, protoICMPv6, len(l4))+sum16(l4)))
}

func TestPrivilegedProgramTCPSanity(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) {
			client, vip, virtual, router := ap(client4, 56000), ap(vip4, 443), "web", e.lab.RouterAddr4
			mtu := uint16(1400)
			if fam == "ipv6" {
				client, vip, virtual, router, mtu = ap(client6, 56000), ap(vip6, 443), "web6", e.lab.RouterAddr6, 1280
			}
			// The client's next sequence number is 101, the member's 901.
			member, snat := establish(t, e, client, vip)
			alive := func(what string) {
				t.Helper()
				if st := e.flowState(client); st != StateEstablished {
					t.Fatalf("after %s: state %q, want established", what, st)
				}
				expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901, payload: []byte("x")}.bytes(), toMember)
			}

			// Blind RSTs 2^31 off, from either side: dropped.
			for _, f := range []frame{
				{src: client, dst: vip, proto: protoTCP, flags: flagRST, seq: 101 + 1<<31},
				{src: member, dst: snat, proto: protoTCP, flags: flagRST | flagACK, seq: 901 + 1<<31, ack: 101},
			} {
				d := e.delta(virtual, bpf.FastL4ReasonREASON_DROP_RST_WINDOW)
				expectVerdict(t, e, f.bytes(), xdpDrop)
				if d() != 1 {
					t.Error("blind RST: drop_rst_window not counted")
				}
				alive("a blind RST")
			}
			// In the window but not exact: the member's stack answers it
			// with a challenge ACK; the flow stays.
			expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagRST, seq: 101 + 5000}.bytes(), toMember)
			alive("an in-window RST")

			// ICMP errors: a foreign sequence number, a bad checksum, an
			// MTU below the minimum are not translated.
			bad := icmpTooBig(router, snat, member, 101, mtu)
			bad[len(bad)-1] ^= 0xff
			elsewhere := icmpTooBig(router, snat, member, 101, mtu)
			other := netip.MustParseAddr("198.19.0.99")
			if fam == "ipv6" {
				other = netip.MustParseAddr("2001:db8:2::99")
			}
			retarget(elsewhere, other)
			for name, in := range map[string][]byte{
				"destination other than the quoted source": elsewhere,
				"foreign sequence number":                  icmpTooBig(router, snat, member, 101+1<<31, mtu),
				"bad checksum":                             bad,
				"MTU below the minimum":                    icmpTooBig(router, snat, member, 101, map[string]uint16{"ipv4": 500, "ipv6": 1000}[fam]),
			} {
				d := e.delta(virtual, bpf.FastL4ReasonREASON_DROP_ICMP_INVALID)
				expectVerdict(t, e, in, xdpDrop)
				if d() != 1 {
					t.Errorf("ICMP with a %s: drop_icmp_invalid not counted", name)
				}
				alive("an ICMP error with a " + name)
			}
			// The genuine one is; another right after it is not (one
			// a second per flow).
			p := expectRedirect(t, e, icmpTooBig(router, snat, member, 101, mtu), toClient)
			if p.dst.Addr() != client.Addr() {
				t.Errorf("ICMP error sent to %s", p.dst.Addr())
			}
			limited := e.delta(virtual, bpf.FastL4ReasonREASON_DROP_ICMP_RATE)
			expectVerdict(t, e, icmpTooBig(router, snat, member, 101, mtu), xdpDrop)
			if limited() != 1 {
				t.Error("a second ICMP error about the flow: drop_icmp_rate not counted")
			}

			// The exact RST closes the flow.
			expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagRST, seq: 101}.bytes(), toMember)
			if st := e.flowState(client); st != StateReset {
				t.Errorf("after the exact RST: state %q, want reset", st)
			}
		})
	}

	// A member refusing a SYN: its RST must acknowledge the SYN.
	client, vip := ap(client4, 56100), ap(vip4, 443)
	s := expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagSYN, seq: 7000}.bytes(), toMember)
	expectVerdict(t, e, frame{src: s.dst, dst: s.src, proto: protoTCP, flags: flagRST}.bytes(), xdpDrop)
	expectVerdict(t, e, frame{src: s.dst, dst: s.src, proto: protoTCP, flags: flagRST | flagACK, ack: 1234}.bytes(), xdpDrop)
	if st := e.flowState(client); st != StateHandshake {
		t.Errorf("after RSTs not acknowledging the SYN: state %q, want handshake", st)
	}
	expectRedirect(t, e, frame{src: s.dst, dst: s.src, proto: protoTCP, flags: flagRST | flagACK, ack: 7001}.bytes(), toClient)
	if st := e.flowState(client); st != StateReset {
		t.Errorf("after the refusal: state %q, want reset", st)
	}
}

// TestPrivilegedProgramRSTWindow holds RSTs and the sequence number an
// ICMP error quotes to the window the receiver advertised, scaled when
// both SYNs carried a window scale (RFC 5961 §3, RFC 7323): the client's
// next sequence number is 101, the member's 901; the member advertises a
// 65,535-byte window, scaled by 2^7 when both sides asked for it.
func TestPrivilegedProgramRSTWindow(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	ws7 := []byte{1, 3, 3, 7}
	const off = 1 << 20
	for i, tc := range []struct {
		name               string
		synOpts, synackOpt []byte
		rst                uint32 // the client's RST, 0: none
		icmp               uint32 // the quoted sequence number, 0: none
		want               uint32
		state              string
	}{
		{"unscaled, RST 2^20 off", nil, nil, 101 + off, 0, xdpDrop, StateEstablished},
		{"unscaled, exact RST", nil, nil, 101, 0, xdpRedirect, StateReset},
		{"unscaled, RST inside the window", nil, nil, 101 + 60000, 0, xdpRedirect, StateEstablished},
		{"wscale 7, RST 2^20 off", ws7, ws7, 101 + off, 0, xdpRedirect, StateEstablished},
		{"wscale 7, RST past the scaled window", ws7, ws7, 101 + 65535<<7, 0, xdpDrop, StateEstablished},
		{"wscale from the client only, RST 2^20 off", ws7, nil, 101 + off, 0, xdpDrop, StateEstablished},
		{"unscaled, frag-needed quoting 2^20 off", nil, nil, 0, 101 + off, xdpDrop, StateEstablished},
		{"wscale 7, frag-needed quoting 2^20 off", ws7, ws7, 0, 101 + off, xdpRedirect, StateEstablished},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, vip := ap(client4, uint16(57000+i)), ap(vip4, 443)
			p := expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagSYN, seq: 100, tcpOpts: tc.synOpts}.bytes(), toMember)
			member, snat := p.dst, p.src
			expectRedirect(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 101, tcpOpts: tc.synackOpt}.bytes(), toClient)
			expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes(), toMember)
			expectRedirect(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 101, payload: []byte("hello")}.bytes(), toClient)

			reason, in := bpf.FastL4ReasonREASON_DROP_RST_WINDOW, []byte(nil)
			if tc.rst != 0 {
				in = frame{src: client, dst: vip, proto: protoTCP, flags: flagRST, seq: tc.rst}.bytes()
			} else {
				reason = bpf.FastL4ReasonREASON_DROP_ICMP_INVALID
				in = icmpTooBig(e.lab.RouterAddr4, snat, member, tc.icmp, 1400)
			}
			dropped := e.delta("web", reason)
			if tc.want == xdpDrop {
				expectVerdict(t, e, in, xdpDrop)
			} else if tc.rst != 0 {
				expectRedirect(t, e, in, toMember)
			} else {
				expectRedirect(t, e, in, toClient)
			}
			if n, want := dropped(), map[bool]uint64{true: 1}[tc.want == xdpDrop]; n != want {
				t.Errorf("%s grew by %d, want %d", reasonNames[reason], n, want)
			}
			if st := e.flowState(client); st != tc.state {
				t.Errorf("state %q, want %q", st, tc.state)
			}
		})
	}
}

func TestPrivilegedProgramBadHeaders(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	udpLen := func(b []byte, hl int, n uint16) []byte {
		binary.BigEndian.PutUint16(b[14+hl+4:], n)
		return b
	}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"udp length past the datagram", udpLen(frame{src: ap(client4, 57000), dst: ap(vip4, 53), proto: protoUDP, noUDPCsum: true, payload: []byte("query")}.bytes(), 20, 20)},
		{"udp length short of the datagram", udpLen(frame{src: ap(client4, 57001), dst: ap(vip4, 53), proto: protoUDP, noUDPCsum: true, payload: []byte("query")}.bytes(), 20, 9)},
		{"ipv6 udp without checksum", frame{src: ap(client6, 57002), dst: ap(vip6, 53), proto: protoUDP, noUDPCsum: true, payload: []byte("query")}.bytes()},
		{"ipv4 loose source route", frame{src: ap(client4, 57003), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN, ipOpts: []byte{1, 0x83, 7, 4, 198, 18, 0, 9}}.bytes()},
		{"ipv4 strict source route", frame{src: ap(client4, 57004), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN, ipOpts: []byte{0x89, 7, 4, 198, 18, 0, 9, 0}}.bytes()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := e.delta("", bpf.FastL4ReasonREASON_DROP_BAD_HEADER)
			expectVerdict(t, e, tc.in, xdpDrop)
			if d() != 1 {
				t.Error("drop_bad_header not counted")
			}
		})
	}
	// A new flow's IPv4 header with a wrong checksum.
	damaged := frame{src: ap(client4, 57005), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN}.bytes()
	damaged[14+10] ^= 0x5a
	d := e.delta("web", bpf.FastL4ReasonREASON_DROP_BAD_HEADER)
	expectVerdict(t, e, damaged, xdpDrop)
	if d() != 1 {
		t.Error("IPv4 header checksum: drop_bad_header not counted")
	}
	if n := e.flowEntries(); n != 0 {
		t.Errorf("bad headers opened %d flow entries", n)
	}
	// ESP is not translated.
	expectPassUntouched(t, e, frame{src: ap(client4, 0), dst: ap(vip4, 0), proto: 50, rawL4: make([]byte, 24)}.bytes())
}

// TestPrivilegedProgramICMPBudget sends a burst of packets with TTL 1
// from a spoofed source: the program answers the first ones only (a
// hundred per CPU at once, a thousand a second), the rest are dropped.
func TestPrivilegedProgramICMPBudget(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	const n = 2000
	in := e.toNIC(frame{src: ap(client4, 59000), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN, ttl: 1}.bytes(), testnet.ExtIf)
	sent := e.delta("web", bpf.FastL4ReasonREASON_TX_TIME_EXCEEDED)
	dropped := e.delta("web", bpf.FastL4ReasonREASON_DROP_TTL)
	ext := e.ifindex(testnet.ExtIf)
	e.do(func() {
		for range n {
			if ret, _ := e.runHere(in, ext); ret != xdpTX && ret != xdpDrop {
				t.Fatalf("verdict %d, want XDP_TX or XDP_DROP", ret)
			}
		}
	})
	t.Logf("%d of %d answered", sent(), n)
	if sent() < 100 || sent() >= n/2 || sent()+dropped() != n {
		t.Errorf("%d answered and %d dropped of %d, want 100 or more answered, most dropped", sent(), dropped(), n)
	}
}

func TestMartianPrefixes(t *testing.T) {
	lab := testnet.Plan(testnet.Options{Members: 2})
	cfg := testSpec(lab, fastl4("web", "198.18.0.10:443", "fe4", 4443))
	cfg.Host.Internal = append(cfg.Host.Internal, netip.MustParsePrefix("0.0.0.0/0"))
	got := map[netip.Prefix]bool{}
	for _, p := range martianPrefixes(cfg.Host, []netip.Addr{netip.MustParseAddr("198.19.0.50")}) {
		got[p] = true
	}
	for _, want := range []string{
		"127.0.0.0/8", "224.0.0.0/4", "fe80::/10", "::ffff:0:0/96", // bogons
		"198.18.0.2/32", "2001:db8:1::2/128", "198.19.0.2/32", // the host's addresses
		"198.18.0.255/32", "198.19.0.255/32", // their subnets' broadcast
		"198.19.0.0/24", "2001:db8:2::/64", "198.19.1.0/24", "2001:db8:3::/64", // internal subnets
		"198.18.0.10/32", // the VIP
		"198.19.0.50/32", // a SNAT address
	} {
		if !got[netip.MustParsePrefix(want)] {
			t.Errorf("%s is not a martian", want)
		}
	}
	for _, not := range []string{"0.0.0.0/0", "198.18.0.0/24", "2001:db8:1::/64"} {
		if got[netip.MustParsePrefix(not)] {
			t.Errorf("%s is a martian: clients come from there", not)
		}
	}
}
