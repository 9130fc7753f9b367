package l4

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// lookupHalfOpen reads a half-open entry by its tuple.
func (e *env) lookupHalfOpen(src, dst netip.AddrPort, proto uint8) (bpf.FastL4FlowVal, bool) {
	e.t.Helper()
	k := flowKey(src, dst, proto)
	var v bpf.FastL4FlowVal
	err := e.fp.objs.HalfOpen.Lookup(&k, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return v, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return v, true
}

// establishedEntries counts the entries of the established flow tables.
func (e *env) establishedEntries() int {
	e.t.Helper()
	t := e.fp.flows
	t.half = nil
	n := 0
	if err := t.each(func(bpf.FastL4FlowKey, *bpf.FastL4FlowVal) { n++ }); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// runRaw runs the program once on in; the caller is in the proxy
// namespace (inside e.do).
func (e *env) runRaw(t testing.TB, in []byte) (uint32, []byte) {
	buf := make([]byte, len(in)+256)
	opts := ebpf.RunOptions{Data: in, DataOut: buf}
	r, err := e.fp.objs.EdgeproxyFastl4.Run(&opts)
	if err != nil {
		t.Fatalf("run program: %v", err)
	}
	return r, opts.DataOut
}

// randomSource is a random address in 198.18.0.0/15 and a random port.
func randomSource(rng *rand.Rand) netip.AddrPort {
	v := rng.Uint32()
	a := netip.AddrFrom4([4]byte{198, 18 | byte(v>>24&1), byte(v >> 16), byte(v >> 8)})
	return ap(a, uint16(1024+rng.IntN(64511)))
}

// TestPrivilegedProgramSYNFlood sends 1,000,000 SYNs from random sources
// to a virtual whose flow table holds 65,536 connections. A legitimate
// handshake is interleaved every 1,000 packets, its SYN-ACK 500 flood
// packets after the SYN and its ACK 500 after that: every one completes.
// Connections established before the flood all survive it.
func TestPrivilegedProgramSYNFlood(t *testing.T) {
	const (
		flood  = 1_000_000
		every  = 1000
		before = 500
	)
	e := progEnv(t, "", func(o *Options) { o.MaxFlows = 65536 })
	e.resolve()
	toMember, toClient := e.hops()
	vip := ap(vip4, 443)

	type conn struct{ client, member, snat netip.AddrPort }
	var established []conn
	for i := range before {
		c := ap(netip.AddrFrom4([4]byte{198, 18, 1, byte(i % 250)}), uint16(20000+i))
		m, s := establish(t, e, c, vip)
		established = append(established, conn{c, m, s})
	}

	rng := rand.New(rand.NewPCG(14, 1))
	t.Logf("seed 14/1: %d spoofed SYNs, a handshake every %d", flood, every)
	promoted := e.delta("web", bpf.FastL4ReasonREASON_EVENT_PROMOTED)
	var done, failed int
	e.do(func() {
		var legit conn
		for i := range flood {
			switch i % every {
			case 0: // a client's SYN
				legit = conn{client: ap(client4, uint16(10000+i/every))}
				ret, out := e.runRaw(t, frame{src: legit.client, dst: vip, proto: protoTCP, flags: flagSYN, seq: 100}.bytes())
				p, err := parseFrame(out)
				if ret != xdpRedirect || err != nil {
					failed++
					legit = conn{}
					continue
				}
				legit.member, legit.snat = p.dst, p.src
			case every / 2: // the member's SYN-ACK
				if legit.member.IsValid() {
					ret, _ := e.runRaw(t, frame{src: legit.member, dst: legit.snat, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 101}.bytes())
					if ret != xdpRedirect {
						failed++
						legit = conn{}
					}
				}
			case every - 1: // the client's ACK
				if legit.member.IsValid() {
					ret, _ := e.runRaw(t, frame{src: legit.client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes())
					if ret != xdpRedirect {
						failed++
					} else {
						done++
					}
				}
			}
			e.runRaw(t, frame{src: randomSource(rng), dst: vip, proto: protoTCP, flags: flagSYN, seq: rng.Uint32()}.bytes())
		}
	})
	if want := flood / every; done != want || failed != 0 {
		t.Errorf("%d of %d handshakes completed during the flood (%d failed)", done, want, failed)
	}
	if n := promoted(); n != uint64(done) {
		t.Errorf("promoted grew by %d, want %d", n, done)
	}
	t.Logf("counters: half_open %d, snat_reclaimed %d, drop_half_open_lost %d, drop_table_full %d, drop_snat_exhausted %d",
		e.counter("web", bpf.FastL4ReasonREASON_EVENT_HALF_OPEN), e.counter("web", bpf.FastL4ReasonREASON_EVENT_SNAT_RECLAIMED),
		e.counter("web", bpf.FastL4ReasonREASON_DROP_HALF_OPEN_LOST), e.counter("web", bpf.FastL4ReasonREASON_DROP_TABLE_FULL),
		e.counter("web", bpf.FastL4ReasonREASON_DROP_SNAT_EXHAUSTED))

	lost := 0
	for _, c := range established {
		ret, out := e.run(frame{src: c.client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes())
		p, err := parseFrame(out)
		if ret != xdpRedirect || err != nil || p.src != c.snat || p.dst != c.member {
			lost++
			continue
		}
		expectRedirect(t, e, frame{src: c.member, dst: c.snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 101}.bytes(), toClient)
	}
	if lost != 0 {
		t.Errorf("%d of %d connections established before the flood lost", lost, len(established))
	}
	// A new client still gets through after the flood.
	establish(t, e, ap(client4, 9999), vip)
	_ = toMember
}

// TestPrivilegedProgramSNATNearExhaustion fills 90 % of a virtual's SNAT
// tuples (one address, one member, 1,000 ports) with established flows
// at random ports, then opens 10,000 new flows one at a time (each closed
// again, so the range stays 90 % used): at least 99.9 % are placed, and
// each refusal is counted as drop_snat_exhausted.
func TestPrivilegedProgramSNATNearExhaustion(t *testing.T) {
	const (
		ports  = 1000
		used   = 900
		trials = 10000
	)
	e := progEnv(t, "snat_ports: 40000-40999", nil,
		`name: one, mode: fastl4, listen: "198.18.0.10:7443", pool: one4, port: 4443`)
	e.resolve()
	vip := ap(vip4, 7443)
	member := ap(e.lab.Members4[0], 4443)
	rng := rand.New(rand.NewPCG(14, 2))
	vid := uint32(e.fp.virtuals["one"].id)
	for _, i := range rng.Perm(ports)[:used] {
		snat := ap(snat4, uint16(40000+i))
		client := ap(netip.AddrFrom4([4]byte{198, 18, 2, byte(i % 250)}), uint16(30000+i))
		sk, ck := flowKey(member, snat, protoTCP), flowKey(client, vip, protoTCP)
		for _, h := range []struct {
			key, peer bpf.FastL4FlowKey
			dir       uint8
		}{{sk, ck, dirServer}, {ck, sk, dirClient}} {
			v := bpf.FastL4FlowVal{Self: h.key, Peer: h.peer, CreatedNs: monoNow(), LastNs: monoNow(), Vid: vid, Dir: h.dir, Seen: seenAny | seenACK}
			if err := e.fp.flows.Update(h.key, &v, ebpf.UpdateNoExist); err != nil {
				t.Fatal(err)
			}
		}
	}

	exhausted := e.delta("one", bpf.FastL4ReasonREASON_DROP_SNAT_EXHAUSTED)
	placed := 0
	e.do(func() {
		for i := range trials {
			// Client ports below the range: never kept, always probed.
			client := ap(client4, uint16(10000+i))
			ret, out := e.runRaw(t, frame{src: client, dst: vip, proto: protoTCP, flags: flagSYN, seq: 1}.bytes())
			if ret != xdpRedirect {
				continue
			}
			placed++
			p, err := parseFrame(out)
			if err != nil {
				t.Fatal(err)
			}
			if p.src.Port() < 40000 || p.src.Port() > 40999 || p.dst != member {
				t.Fatalf("new flow %s -> %s", p.src, p.dst)
			}
			for _, k := range []bpf.FastL4FlowKey{flowKey(client, vip, protoTCP), flowKey(p.dst, p.src, protoTCP)} {
				if err := e.fp.objs.HalfOpen.Delete(&k); err != nil {
					t.Fatalf("close the new flow: %v", err)
				}
			}
		}
	})
	t.Logf("%d of %d new flows placed with %d of %d SNAT ports used", placed, trials, used, ports)
	if placed*1000 < trials*999 {
		t.Errorf("%d of %d new flows placed, want at least 99.9 %%", placed, trials)
	}
	if n := exhausted(); n != uint64(trials-placed) {
		t.Errorf("drop_snat_exhausted grew by %d, want %d", n, trials-placed)
	}
}
