package l4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// The program against random and mutated frames: whatever it forwards is
// well formed, with the checksums the frame came with still right (they
// are checked here by a checksum implementation of the test's own), and
// nothing outside the datagram's headers changed; what it passes is
// untouched; what it sends back is a correct ICMP error. One run in a
// hundred is a connection's opening instead (fuzzHandshake): half-open,
// promoted, reset, its frames mutated too.
//
//	EDGEPROXY_FUZZ_SEED=n reruns one sequence, EDGEPROXY_FUZZ_FRAMES=n
//	sets how many frames (default 1,000,000).

// onesSum is the Internet checksum's one's complement sum of the parts,
// each an even number of bytes but the last, folded to 16 bits.
func onesSum(parts ...[]byte) uint16 {
	var s uint32
	for _, p := range parts {
		for i := 0; i < len(p); i += 2 {
			w := uint32(p[i]) << 8
			if i+1 < len(p) {
				w |= uint32(p[i+1])
			}
			s += w
			s = s&0xffff + s>>16
		}
	}
	return uint16(s)
}

// wire is a frame as the fuzz checks see it.
type wire struct {
	v6        bool
	hl        int // IP header and IPv6 extension headers
	ipLen     int // the datagram's length
	ttl       byte
	proto     byte
	src, dst  []byte
	l4        []byte
	ipCsumOK  bool
	fragment  bool
	authentic bool // IPv6 AH
}

var errWire = errors.New("malformed")

// parseWire parses an untagged IPv4/IPv6 frame, checking every length.
func parseWire(b []byte) (wire, error) {
	var w wire
	if len(b) < 14 {
		return w, errWire
	}
	ip := b[14:]
	switch binary.BigEndian.Uint16(b[12:]) {
	case 0x0800:
		if len(ip) < 20 || ip[0]>>4 != 4 || ip[0]&0xf < 5 {
			return w, errWire
		}
		w.hl = int(ip[0]&0xf) * 4
		w.ipLen = int(binary.BigEndian.Uint16(ip[2:]))
		if w.ipLen < w.hl || w.ipLen > len(ip) {
			return w, errWire
		}
		w.ttl, w.proto = ip[8], ip[9]
		w.src, w.dst = ip[12:16], ip[16:20]
		w.ipCsumOK = onesSum(ip[:w.hl]) == 0xffff
		w.fragment = binary.BigEndian.Uint16(ip[6:])&0x3fff != 0
	case 0x86dd:
		w.v6 = true
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return w, errWire
		}
		w.ipLen = 40 + int(binary.BigEndian.Uint16(ip[4:]))
		if w.ipLen > len(ip) {
			return w, errWire
		}
		w.ttl, w.proto = ip[7], ip[6]
		w.src, w.dst = ip[8:24], ip[24:40]
		w.ipCsumOK = true
		w.hl = 40
		for n := 0; n < 8; n++ {
			var l int
			switch w.proto {
			case 0, 43, 60:
				if w.hl+8 > w.ipLen {
					return w, errWire
				}
				l = (int(ip[w.hl+1]) + 1) * 8
			case 44:
				if w.hl+8 > w.ipLen {
					return w, errWire
				}
				l = 8
				// Offset 0 without more fragments is an atomic
				// fragment: a whole packet (RFC 6946).
				w.fragment = w.fragment || binary.BigEndian.Uint16(ip[w.hl+2:])&0xfff9 != 0
			case 51:
				if w.hl+8 > w.ipLen {
					return w, errWire
				}
				l = (int(ip[w.hl+1]) + 2) * 4
				w.authentic = true
			default:
				n = 8
				continue
			}
			if w.hl+l > w.ipLen {
				return w, errWire
			}
			w.proto = ip[w.hl]
			w.hl += l
		}
	default:
		return w, errWire
	}
	w.l4 = ip[w.hl:w.ipLen]
	return w, nil
}

// l4CsumOK checks the TCP, UDP or ICMP checksum.
func (w wire) l4CsumOK() bool {
	if w.proto == protoICMP {
		return onesSum(w.l4) == 0xffff
	}
	if w.proto == protoUDP && !w.v6 && len(w.l4) >= 8 && binary.BigEndian.Uint16(w.l4[6:]) == 0 {
		return true // no checksum
	}
	ph := binary.BigEndian.AppendUint32(nil, uint32(len(w.l4)))
	ph = append(ph, 0, 0, 0, w.proto)
	return onesSum(w.src, w.dst, ph, w.l4) == 0xffff
}

// checkOutput judges the program's verdict and output frame for in.
func checkOutput(ret uint32, in, out []byte) error {
	switch ret {
	case xdpDrop:
		return nil
	case xdpPass:
		if !bytes.Equal(in, out) {
			return errors.New("passed frame changed")
		}
		return nil
	case xdpTX:
		return checkReply(in, out)
	case xdpRedirect:
		return checkForwarded(in, out)
	}
	return fmt.Errorf("verdict %d", ret)
}

// checkReply checks an ICMP error the program sent back.
func checkReply(in, out []byte) error {
	w, err := parseWire(out)
	if err != nil {
		return fmt.Errorf("ICMP reply: %w", err)
	}
	wi, err := parseWire(in)
	if err != nil {
		return fmt.Errorf("ICMP reply to a malformed frame: %w", err)
	}
	if !w.ipCsumOK || !w.l4CsumOK() {
		return errors.New("ICMP reply with a bad checksum")
	}
	if (!w.v6 && (len(out) != 70 || w.proto != protoICMP)) || (w.v6 && (len(out) != 110 || w.proto != protoICMPv6)) {
		return fmt.Errorf("ICMP reply of %d bytes, protocol %d", len(out), w.proto)
	}
	if !bytes.Equal(w.l4[8:], in[14:14+len(w.l4)-8]) {
		return errors.New("ICMP reply does not quote the frame")
	}
	if !bytes.Equal(w.src, wi.dst) || !bytes.Equal(w.dst, wi.src) {
		return errors.New("ICMP reply not sent back to the frame's source")
	}
	return nil
}

// checkForwarded checks a redirected frame against the frame it came
// from.
func checkForwarded(in, out []byte) error {
	wi, err := parseWire(in)
	if err != nil {
		return fmt.Errorf("forwarded a malformed frame: %w", err)
	}
	wo, err := parseWire(out)
	if err != nil {
		return fmt.Errorf("forwarded frame: %w", err)
	}
	if wi.fragment || wi.authentic {
		return errors.New("forwarded a fragment or an AH packet")
	}
	if wi.ttl <= 1 || wo.ttl != wi.ttl-1 {
		return fmt.Errorf("TTL %d forwarded as %d", wi.ttl, wo.ttl)
	}
	if wo.proto == protoICMP || wo.proto == protoICMPv6 {
		// A translated error: rebuilt whole, from a valid message.
		if !wo.ipCsumOK || !wi.l4CsumOK() || !wo.l4CsumOK() {
			return errors.New("ICMP error translated from or to a bad checksum")
		}
		if (!wo.v6 && len(out) != 70) || (wo.v6 && len(out) != 110) {
			return fmt.Errorf("translated ICMP error of %d bytes", len(out))
		}
		return nil
	}
	if len(out) != len(in) || wo.hl != wi.hl || wo.ipLen != wi.ipLen || wo.proto != wi.proto {
		return errors.New("forwarded frame changed shape")
	}
	// The rewrite updates checksums incrementally: a right one stays
	// right, a wrong one (the frame came damaged) stays wrong.
	if wo.l4CsumOK() != wi.l4CsumOK() || wo.ipCsumOK != wi.ipCsumOK {
		return fmt.Errorf("checksums right before: IP %v, L4 %v; after: IP %v, L4 %v", wi.ipCsumOK, wi.l4CsumOK(), wo.ipCsumOK, wo.l4CsumOK())
	}
	end := 14 + wi.ipLen
	if !bytes.Equal(out[end:], in[end:]) {
		return errors.New("bytes past the datagram changed")
	}
	if wi.v6 && !bytes.Equal(out[14+40:14+wi.hl], in[14+40:14+wi.hl]) {
		return errors.New("IPv6 extension headers changed")
	}
	hdr := 8
	switch wi.proto {
	case protoTCP:
		if len(wi.l4) < 20 {
			return errors.New("forwarded a truncated TCP header")
		}
		hdr = int(wi.l4[12]>>4) * 4
		if hdr < 20 || hdr > len(wi.l4) {
			return fmt.Errorf("forwarded a TCP data offset of %d in %d bytes", hdr, len(wi.l4))
		}
	case protoUDP:
		if len(wi.l4) < 8 || int(binary.BigEndian.Uint16(wi.l4[4:])) != len(wi.l4) {
			return errors.New("forwarded a UDP length other than the datagram's")
		}
	default:
		return fmt.Errorf("forwarded protocol %d", wi.proto)
	}
	if !bytes.Equal(wo.l4[hdr:], wi.l4[hdr:]) {
		return errors.New("payload changed")
	}
	return nil
}

// fixChecksums recomputes the IPv4 header and L4 checksums of a frame,
// when its lengths allow.
func fixChecksums(b []byte) {
	w, err := parseWire(b)
	if err != nil || w.fragment {
		return
	}
	ip := b[14:]
	if !w.v6 {
		binary.BigEndian.PutUint16(ip[10:], 0)
		binary.BigEndian.PutUint16(ip[10:], ^onesSum(ip[:w.hl]))
	}
	at := map[uint8]int{protoTCP: 16, protoUDP: 6, protoICMP: 2, protoICMPv6: 2}
	off, ok := at[w.proto]
	if !ok || len(w.l4) < off+2 || (w.proto == protoICMP) == w.v6 {
		return
	}
	binary.BigEndian.PutUint16(w.l4[off:], 0)
	var c uint16
	if w.proto == protoICMP {
		c = ^onesSum(w.l4)
	} else {
		ph := binary.BigEndian.AppendUint32(nil, uint32(len(w.l4)))
		ph = append(ph, 0, 0, 0, w.proto)
		c = ^onesSum(w.src, w.dst, ph, w.l4)
		if c == 0 && w.proto == protoUDP {
			c = 0xffff
		}
	}
	binary.BigEndian.PutUint16(w.l4[off:], c)
}

var interesting = []byte{0, 1, 2, 4, 5, 6, 0x11, 0x1f, 0x20, 0x3a, 0x40, 0x45, 0x46, 0x4f, 0x50, 0x60, 0x7f, 0x80, 0x83, 0x89, 0xf0, 0xfe, 0xff}

// mutate returns a changed copy of b.
func mutate(r *rand.Rand, b []byte) []byte {
	out := bytes.Clone(b)
	head := func() int { return r.IntN(min(len(out), 100)) }
	for range 1 + r.IntN(4) {
		if len(out) == 0 {
			break
		}
		switch r.IntN(7) {
		case 0:
			out[head()] ^= 1 << r.IntN(8)
		case 1:
			out[head()] = interesting[r.IntN(len(interesting))]
		case 2: // the kernel runs frames of an Ethernet header at least
			if len(out) > 14 {
				out = out[:14+r.IntN(len(out)-13)]
			}
		case 3:
			extra := make([]byte, r.IntN(64))
			for i := range extra {
				extra[i] = byte(r.Uint32())
			}
			out = append(out, extra...)
		case 4:
			out[r.IntN(len(out))] = byte(r.Uint32())
		case 5:
			if i := head(); i+1 < len(out) {
				binary.BigEndian.PutUint16(out[i:], uint16(r.Uint32()))
			}
		case 6:
			// Lengths: the IP total/payload length or the UDP length.
			for _, i := range []int{16, 18, 14 + 20 + 4, 14 + 40 + 4} {
				if i+1 < len(out) && r.IntN(2) == 0 {
					binary.BigEndian.PutUint16(out[i:], uint16(r.IntN(2000)))
				}
			}
		}
	}
	if r.IntN(2) == 0 {
		fixChecksums(out)
	}
	return out
}

type fuzzFrame struct {
	b   []byte
	nic string
}

// fuzzBases are well-formed frames of every kind the program handles, on
// the flows opened by fuzzFlows.
func fuzzBases(t *testing.T, e *env) []fuzzFrame {
	var out []fuzzFrame
	add := func(f frame) {
		out = append(out, fuzzFrame{e.toNIC(f.bytes(), e.ingressOf(f.bytes())), e.ingressOf(f.bytes())})
	}
	for _, c := range []struct {
		client, vip netip.AddrPort
		router      netip.Addr
	}{
		{ap(client4, 58000), ap(vip4, 443), e.lab.RouterAddr4},
		{ap(client6, 58000), ap(vip6, 443), e.lab.RouterAddr6},
	} {
		member, snat := establish(t, e, c.client, c.vip)
		add(frame{src: c.client, dst: c.vip, proto: protoTCP, flags: flagACK | flagPSH, seq: 101, ack: 901, payload: []byte("GET / HTTP/1.1\r\n\r\n")})
		add(frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 120, payload: make([]byte, 300)})
		add(frame{src: c.client, dst: c.vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901, ttl: 2})
		add(frame{src: c.client, dst: c.vip, proto: protoTCP, flags: flagRST, seq: 101 + 77})
		add(frame{src: c.client, dst: c.vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901, df: true, payload: make([]byte, 1600)})
		add(frame{src: ap(c.client.Addr(), 58001), dst: c.vip, proto: protoTCP, flags: flagSYN, tcpOpts: []byte{2, 4, 5, 0xb4, 1, 3, 3, 7}})
		add(frame{src: ap(c.client.Addr(), 58002), dst: ap(c.vip.Addr(), 53), proto: protoUDP, payload: []byte("query")})
		add(frame{src: ap(c.client.Addr(), 58003), dst: ap(c.vip.Addr(), 53), proto: protoUDP, payload: []byte("fragment"), fragMore: true, fragHeader: true})
		msg := icmpTooBig(c.router, snat, member, 101, 1400)
		out = append(out, fuzzFrame{e.toNIC(msg, testnet.IntIf), testnet.IntIf})
	}
	add(frame{src: ap(client4, 58004), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN, ipOpts: []byte{0x94, 4, 0, 0, 1, 1, 1, 0}})
	add(frame{src: ap(client6, 58004), dst: ap(vip6, 443), proto: protoTCP, flags: flagSYN, exts: []ext6{{0, make([]byte, 6)}, {60, make([]byte, 14)}}})
	add(frame{src: ap(client6, 58005), dst: ap(vip6, 443), proto: protoTCP, flags: flagSYN, tcpOpts: []byte{1, 1, 1, 2, 4, 5, 0xb4, 0}})
	return out
}

func TestPrivilegedProgramFuzz(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("EDGEPROXY_FUZZ_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("EDGEPROXY_FUZZ_SEED=%q: %v: write a decimal number", s, err)
		}
		seed = v
	}
	n := 1_000_000
	if s := os.Getenv("EDGEPROXY_FUZZ_FRAMES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			t.Fatalf("EDGEPROXY_FUZZ_FRAMES=%q: write a positive number", s)
		}
		n = v
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d: rerun with EDGEPROXY_FUZZ_SEED=%d", seed, seed)
		}
	})
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	bases := fuzzBases(t, e)
	nics := map[string]int{testnet.ExtIf: e.nic(testnet.ExtIf).ifindex, testnet.IntIf: e.nic(testnet.IntIf).ifindex}
	other := map[string]string{testnet.ExtIf: testnet.IntIf, testnet.IntIf: testnet.ExtIf}
	deadline := time.Now().Add(10 * time.Minute)
	verdicts := map[uint32]int{}
	failures := 0
	check := func(i int, nic string, in []byte) (uint32, []byte) {
		ret, out := e.runHere(in, nics[nic])
		verdicts[ret]++
		if err := checkOutput(ret, in, out); err != nil {
			failures++
			t.Errorf("seed %d frame %d on %s: %v\n in  %x\n out %x", seed, i, nic, err, in, out)
			if failures >= 10 {
				t.FailNow()
			}
		}
		return ret, out
	}
	promoted := e.delta("web", bpf.FastL4ReasonREASON_EVENT_PROMOTED)
	e.do(func() {
		for i := range n {
			if i%4096 == 0 && time.Now().After(deadline) {
				t.Fatalf("only %d of %d frames within 10 minutes", i, n)
			}
			if r.IntN(100) == 0 {
				fuzzHandshake(r, e, i, check)
				continue
			}
			base := bases[r.IntN(len(bases))]
			nic := base.nic
			var in []byte
			switch k := r.IntN(100); {
			case k < 3: // random bytes after an Ethernet header for the NIC
				in = make([]byte, 14+r.IntN(160))
				for j := range in {
					in[j] = byte(r.Uint32())
				}
				copy(in, base.b[:12])
				copy(in[12:], []byte{0x08, 0x00, 0x86, 0xdd}[2*r.IntN(2):][:2])
			case k < 6:
				in, nic = mutate(r, base.b), other[nic]
			default:
				in = mutate(r, base.b)
			}
			check(i, nic, in)
		}
	})
	np := promoted()
	t.Logf("seed %d: %d frames: %d dropped, %d passed, %d sent back, %d forwarded, %d half-open flows promoted", seed, n, verdicts[xdpDrop], verdicts[xdpPass], verdicts[xdpTX], verdicts[xdpRedirect], np)
	if verdicts[xdpRedirect] < n/100 || verdicts[xdpTX] == 0 || np < uint64(n/1000) {
		t.Errorf("too few frames forwarded (%d), answered (%d) or flows promoted (%d) to judge", verdicts[xdpRedirect], verdicts[xdpTX], np)
	}
}

// fuzzHandshake opens and resets a connection through the program, each
// frame mutated one time in four: the client's SYN (a half-open flow, or
// a new one in place of a reset connection of the same tuple), the
// member's SYN-ACK to the SNAT tuple the SYN went out with, the client's
// ACK that promotes the flow, the client's exact RST that closes it. The
// client ports repeat (within what the flow table holds), so SYNs also
// meet half-open, established and closing flows. check runs a frame.
func fuzzHandshake(r *rand.Rand, e *env, i int, check func(int, string, []byte) (uint32, []byte)) {
	client, vip := ap(client4, uint16(20000+r.IntN(256))), ap(vip4, 443)
	if r.IntN(2) == 0 {
		client, vip = ap(client6, client.Port()), ap(vip6, 443)
	}
	run := func(f frame) (uint32, []byte) {
		b := f.bytes()
		nic := e.ingressOf(b)
		in := e.toNIC(b, nic)
		if r.IntN(4) == 0 {
			in = mutate(r, in)
		}
		return check(i, nic, in)
	}
	ret, out := run(frame{src: client, dst: vip, proto: protoTCP, flags: flagSYN, seq: 100})
	w, err := parseWire(out)
	if ret != xdpRedirect || err != nil || w.proto != protoTCP || len(w.l4) < 4 {
		return
	}
	addr := func(b []byte, port []byte) netip.AddrPort {
		a, _ := netip.AddrFromSlice(b)
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(port))
	}
	snat, member := addr(w.src, w.l4[0:2]), addr(w.dst, w.l4[2:4])
	run(frame{src: member, dst: snat, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 101})
	run(frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901})
	run(frame{src: client, dst: vip, proto: protoTCP, flags: flagRST | flagACK, seq: 101, ack: 901})
}
