package l4

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// TestPrivilegedProgramHalfOpenGuarded checks a half-open flow as the
// established ones are checked: each half records the NIC its side
// arrives on, a packet on the other NIC, to a foreign MAC or with its TTL
// run out never promotes the flow, a blind RST is dropped, and promotion
// keeps the directions (and so the NICs each half is taken on).
func TestPrivilegedProgramHalfOpenGuarded(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) {
			client, vip, virtual := ap(client4, 57000), ap(vip4, 443), "web"
			if fam == "ipv6" {
				client, vip, virtual = ap(client6, 57000), ap(vip6, 443), "web6"
			}
			p := expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagSYN, seq: 100}.bytes(), toMember)
			member, snat := p.dst, p.src
			halves := []struct {
				src, dst netip.AddrPort
				dir      uint8
			}{{client, vip, dirClient}, {member, snat, dirServer}}
			for _, h := range halves {
				v, ok := e.lookupHalfOpen(h.src, h.dst, protoTCP)
				if !ok || v.Dir != h.dir {
					t.Errorf("half-open %s -> %s: found %v, direction %d, want %d", h.src, h.dst, ok, v.Dir, h.dir)
				}
			}

			// A RST from the member that does not acknowledge the SYN.
			blind := e.delta(virtual, bpf.FastL4ReasonREASON_DROP_RST_WINDOW)
			expectVerdict(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagRST | flagACK, seq: 900, ack: 101 + 1<<31}.bytes(), xdpDrop)
			if n := blind(); n != 1 {
				t.Errorf("blind RST on a half-open flow: drop_rst_window grew by %d, want 1", n)
			}

			synack := frame{src: member, dst: snat, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 101}.bytes()
			expectNotForwarded(t, e, e.toNIC(synack, testnet.ExtIf), testnet.ExtIf, virtual, xdpDrop, bpf.FastL4ReasonREASON_DROP_INGRESS)
			expectRedirect(t, e, synack, toClient)

			// The ACK that completes the handshake, where it cannot come
			// from: not forwarded, the flow not promoted.
			promoted := e.delta(virtual, bpf.FastL4ReasonREASON_EVENT_PROMOTED)
			ack := frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}
			expectNotForwarded(t, e, e.toNIC(ack.bytes(), testnet.IntIf), testnet.IntIf, virtual, xdpDrop, bpf.FastL4ReasonREASON_DROP_INGRESS)
			foreign := ack.bytes()
			copy(foreign, []byte{0x02, 0, 0, 0, 0, 0x99})
			expectNotForwarded(t, e, foreign, testnet.ExtIf, virtual, xdpPass, bpf.FastL4ReasonREASON_PASS_FOREIGN_MAC)
			last := ack
			last.ttl = 1
			expectVerdict(t, e, last.bytes(), xdpTX)
			if n := promoted(); n != 0 {
				t.Errorf("promoted by an ACK the flow does not take (%d)", n)
			}

			expectRedirect(t, e, ack.bytes(), toMember)
			if n := promoted(); n != 1 {
				t.Errorf("promoted grew by %d on the handshake's ACK, want 1", n)
			}
			for _, h := range halves {
				v, ok := e.lookupFlow(h.src, h.dst, protoTCP)
				if !ok || v.HalfOpen != 0 || v.Dir != h.dir {
					t.Errorf("promoted %s -> %s: found %v, half_open %d, direction %d, want %d", h.src, h.dst, ok, v.HalfOpen, v.Dir, h.dir)
				}
				if _, ok := e.lookupHalfOpen(h.src, h.dst, protoTCP); ok {
					t.Errorf("%s -> %s still in half_open after promotion", h.src, h.dst)
				}
			}
		})
	}
}

// TestPrivilegedProgramBlindACK checks that a half-open flow is promoted
// only by the client's ACK of the member's SYN-ACK: an ACK before the
// SYN-ACK, or one acknowledging anything but the member's ISN + 1 (what a
// spoofed source, which never sees the SYN-ACK, has to guess), is dropped
// and counted as drop_handshake, and never enters the flow tables. The
// real ACK then promotes the flow.
func TestPrivilegedProgramBlindACK(t *testing.T) {
	const pairs = 1000
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) {
			client, vip, virtual := ap(client4, 58000), ap(vip4, 443), "web"
			if fam == "ipv6" {
				client, vip, virtual = ap(client6, 58000), ap(vip6, 443), "web6"
			}
			promoted := e.delta(virtual, bpf.FastL4ReasonREASON_EVENT_PROMOTED)
			blind := e.delta(virtual, bpf.FastL4ReasonREASON_DROP_HANDSHAKE)
			p := expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagSYN, seq: 100}.bytes(), toMember)
			member, snat := p.dst, p.src
			ack := frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}
			expectVerdict(t, e, ack.bytes(), xdpDrop) // before the SYN-ACK
			expectRedirect(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 101}.bytes(), toClient)
			for _, guess := range []uint32{0, 900, 902, 101, 901 + 1<<31} {
				a := ack
				a.ack = guess
				expectVerdict(t, e, a.bytes(), xdpDrop)
			}
			if n := blind(); n != 6 {
				t.Errorf("drop_handshake grew by %d, want 6", n)
			}
			if n := promoted(); n != 0 {
				t.Errorf("promoted by a blind ACK (%d)", n)
			}
			if _, ok := e.lookupFlow(client, vip, protoTCP); ok {
				t.Errorf("%s -> %s in the flow tables before the handshake's ACK", client, vip)
			}
			expectRedirect(t, e, ack.bytes(), toMember)
			if n := promoted(); n != 1 {
				t.Errorf("promoted grew by %d on the handshake's ACK, want 1", n)
			}
		})
	}

	// Spoofed SYNs answered by the member, then blind ACKs.
	rng := rand.New(rand.NewPCG(14, 3))
	vip := ap(vip4, 443)
	before := e.establishedEntries()
	promoted := e.delta("web", bpf.FastL4ReasonREASON_EVENT_PROMOTED)
	forwarded := 0
	e.do(func() {
		for range pairs {
			src, isn := randomSource(rng), rng.Uint32()
			_, out := e.runRaw(t, frame{src: src, dst: vip, proto: protoTCP, flags: flagSYN, seq: 7}.bytes())
			p, err := parseFrame(out)
			if err != nil {
				t.Fatalf("spoofed SYN not forwarded: %v", err)
			}
			e.runRaw(t, frame{src: p.dst, dst: p.src, proto: protoTCP, flags: flagSYN | flagACK, seq: isn, ack: 8}.bytes())
			guess := rng.Uint32()
			if guess == isn+1 {
				guess++
			}
			if ret, _ := e.runRaw(t, frame{src: src, dst: vip, proto: protoTCP, flags: flagACK, seq: 8, ack: guess}.bytes()); ret != xdpDrop {
				forwarded++
			}
		}
	})
	if forwarded != 0 {
		t.Errorf("%d of %d blind ACKs forwarded", forwarded, pairs)
	}
	if n := promoted(); n != 0 {
		t.Errorf("%d of %d blind ACKs promoted their flow", n, pairs)
	}
	if n := e.establishedEntries() - before; n != 0 {
		t.Errorf("the flow tables grew by %d entries during the blind ACKs", n)
	}
}
