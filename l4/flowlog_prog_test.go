package l4

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/edgeproxy/edgeproxy/bpf"
)

func logged(v *Virtual) { v.Log = true }

// eventReader reads the program's flow events (the fast path's own
// reader, Run, is not running in the program's table tests).
func eventReader(t *testing.T, e *env) *ringbuf.Reader {
	t.Helper()
	rd, err := ringbuf.NewReader(e.fp.objs.FlowEvents)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	return rd
}

// nextEvent is the next event in the ring, false when there is none
// within wait.
func nextEvent(t *testing.T, rd *ringbuf.Reader, wait time.Duration) (bpf.FastL4FlowEvent, bool) {
	t.Helper()
	var ev bpf.FastL4FlowEvent
	rd.SetDeadline(time.Now().Add(wait))
	rec, err := rd.Read()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ev, false
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &ev); err != nil {
		t.Fatalf("decode flow event of %d bytes: %v", len(rec.RawSample), err)
	}
	return ev, true
}

// handshake runs a TCP three-way handshake from client to vip through
// the program and returns the member and SNAT tuple it chose and the
// three frames.
func handshake(t *testing.T, e *env, client, vip netip.AddrPort) (member, snat netip.AddrPort, frames [3][]byte) {
	t.Helper()
	toMember, toClient := e.hops()
	frames[0] = frame{src: client, dst: vip, proto: protoTCP, flags: flagSYN, seq: 100}.bytes()
	p := expectRedirect(t, e, frames[0], toMember)
	member, snat = p.dst, p.src
	frames[1] = frame{src: member, dst: snat, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 101, payload: []byte("syn-ack")}.bytes()
	expectRedirect(t, e, frames[1], toClient)
	frames[2] = frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes()
	expectRedirect(t, e, frames[2], toMember)
	return member, snat, frames
}

// TestPrivilegedProgramFlowEventOpen checks the open event a virtual
// with Log reports when a connection becomes established: its tuples,
// virtual, times and what each side sent so far, for IPv4 and IPv6; the
// close event of a closing pair the program replaces on a new SYN; a
// virtual without Log reports nothing; the flow table counts every
// forwarded packet per direction.
func TestPrivilegedProgramFlowEventOpen(t *testing.T) {
	e := progEnv(t, nil,
		fastl4("logged", "198.18.0.10:9443", "fe4", 4443, logged),
		fastl4("logged6", "[2001:db8:1::10]:9443", "fe6", 4443, logged))
	e.resolve()
	rd := eventReader(t, e)
	for _, tc := range []struct {
		name, virtual, quiet string
		client, vip, plain   netip.AddrPort
	}{
		{"ipv4", "logged", "web", ap(client4, 41000), ap(vip4, 9443), ap(vip4, 443)},
		{"ipv6", "logged6", "web6", ap(client6, 41000), ap(vip6, 9443), ap(vip6, 443)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := monoNow()
			member, snat, frames := handshake(t, e, tc.client, tc.vip)
			ev, ok := nextEvent(t, rd, 2*time.Second)
			if !ok {
				t.Fatal("no event for a connection established through a virtual with log")
			}
			want := bpf.FastL4FlowEvent{
				TsNs: ev.TsNs, CreatedNs: ev.CreatedNs,
				Client:  flowKey(tc.client, tc.vip, protoTCP),
				Server:  flowKey(member, snat, protoTCP),
				Bytes:   [2]uint64{uint64(len(frames[0])), uint64(len(frames[1]))},
				Packets: [2]uint64{1, 1},
				Vid:     uint32(e.fp.virtuals[tc.virtual].id),
				Kind:    eventOpen,
			}
			tracking(&want, &ev)
			if ev != want {
				t.Errorf("open event\n got  %+v\n want %+v", ev, want)
			}
			// The coarse clock lags by a tick or two.
			if ev.CreatedNs == 0 || ev.CreatedNs > ev.TsNs || ev.TsNs+50*uint64(time.Millisecond) < before {
				t.Errorf("times: created %d, event %d, test started at %d", ev.CreatedNs, ev.TsNs, before)
			}
			if ev, ok := nextEvent(t, rd, 100*time.Millisecond); ok {
				t.Errorf("a second event for one connection: %+v", ev)
			}
			c, _ := e.lookupFlow(tc.client, tc.vip, protoTCP)
			s, _ := e.lookupFlow(member, snat, protoTCP)
			// The open event carries the halves' tracking, for mirroring.
			if ev.SeqNext != [2]uint32{c.SeqNext, s.SeqNext} || ev.SynWin != [2]uint16{c.SynWin, s.SynWin} ||
				ev.Wscale != [2]uint8{c.Wscale, s.Wscale} || ev.SeqNext[0] != 101 || ev.SeqNext[1] != 901 {
				t.Errorf("open event tracking: seq_next %v syn_win %v wscale %v; flow table %d/%d %d/%d %d/%d",
					ev.SeqNext, ev.SynWin, ev.Wscale, c.SeqNext, s.SeqNext, c.SynWin, s.SynWin, c.Wscale, s.Wscale)
			}
			if c.Packets != 2 || c.Bytes != uint64(len(frames[0])+len(frames[2])) || s.Packets != 1 || s.Bytes != uint64(len(frames[1])) {
				t.Errorf("flow counters: client %d packets %d bytes, member %d packets %d bytes; want 2 %d, 1 %d",
					c.Packets, c.Bytes, s.Packets, s.Bytes, len(frames[0])+len(frames[2]), len(frames[1]))
			}

			// The client closes, then opens a new connection from the
			// same tuple: the program deletes the closing pair itself
			// and reports its close.
			toMember, _ := e.hops()
			fin := frame{src: tc.client, dst: tc.vip, proto: protoTCP, flags: flagFIN | flagACK, seq: 101, ack: 901}.bytes()
			expectRedirect(t, e, fin, toMember)
			expectRedirect(t, e, frame{src: tc.client, dst: tc.vip, proto: protoTCP, flags: flagSYN, seq: 7000}.bytes(), toMember)
			ev, ok = nextEvent(t, rd, 2*time.Second)
			want.Kind, want.End, want.TsNs, want.CreatedNs = eventClose, endCodes[EndFIN], ev.TsNs, ev.CreatedNs
			want.Bytes[0], want.Packets[0] = uint64(len(frames[0])+len(frames[2])+len(fin)), 3
			tracking(&want, &ev)
			if !ok || ev != want {
				t.Errorf("close event of the pair a new SYN replaced (%v)\n got  %+v\n want %+v", ok, ev, want)
			}

			handshake(t, e, tc.client, tc.plain)
			if ev, ok := nextEvent(t, rd, 200*time.Millisecond); ok {
				t.Errorf("virtual %s without log reported %+v", tc.quiet, ev)
			}
		})
	}
}

// TestPrivilegedProgramFlowEventRingFull fills a one-page ring that no
// one reads: the connections that find no room are still forwarded and
// established, and each event lost is counted.
func TestPrivilegedProgramFlowEventRingFull(t *testing.T) {
	load := loadSpec
	t.Cleanup(func() { loadSpec = load })
	loadSpec = func() (*ebpf.CollectionSpec, error) {
		spec, err := load()
		if err == nil {
			spec.Maps[bpf.FastL4MapFlowEvents].MaxEntries = uint32(os.Getpagesize())
		}
		return spec, err
	}
	e := progEnv(t, nil, fastl4("logged", "198.18.0.10:9443", "fe4", 4443, logged))
	e.resolve()
	room := os.Getpagesize() / (int(binary.Size(bpf.FastL4FlowEvent{})) + 8) // each record has an 8-byte header
	const conns = 40
	full := e.delta("logged", bpf.FastL4ReasonREASON_EVENT_LOG_RING_FULL)
	promoted := e.delta("logged", bpf.FastL4ReasonREASON_EVENT_PROMOTED)
	for i := range conns {
		handshake(t, e, ap(client4, uint16(42000+i)), ap(vip4, 9443))
	}
	if p, f := promoted(), full(); p != conns || f != uint64(conns-room) {
		t.Errorf("%d connections through a ring with room for %d events: %d established, %d events counted lost; want %d and %d",
			conns, room, p, f, conns, conns-room)
	}
	rd := eventReader(t, e)
	n := 0
	for n < conns {
		if _, ok := nextEvent(t, rd, 100*time.Millisecond); !ok {
			break
		}
		n++
	}
	if n != room {
		t.Errorf("ring held %d events, want %d", n, room)
	}
}

// TestPrivilegedProgramFlowEventSYNFlood sends a bounded flood of spoofed
// SYNs to a virtual with log: every SYN is forwarded, none completes a
// handshake, and none is reported.
func TestPrivilegedProgramFlowEventSYNFlood(t *testing.T) {
	e := progEnv(t, nil, fastl4("logged", "198.18.0.10:9443", "fe4", 4443, logged))
	e.resolve()
	rd := eventReader(t, e)
	toMember, _ := e.hops()
	const syns = 500
	opened := e.delta("logged", bpf.FastL4ReasonREASON_EVENT_HALF_OPEN)
	for i := range syns {
		src := ap(netip.AddrFrom4([4]byte{198, 18, byte(100 + i/250), byte(1 + i%250)}), uint16(20000+i))
		expectRedirect(t, e, frame{src: src, dst: ap(vip4, 9443), proto: protoTCP, flags: flagSYN, seq: uint32(i)}.bytes(), toMember)
	}
	if n := opened(); n != syns {
		t.Errorf("%d half-open flows for %d SYNs", n, syns)
	}
	if ev, ok := nextEvent(t, rd, 300*time.Millisecond); ok {
		t.Errorf("a SYN flood was reported: %+v", ev)
	}
}

// tracking copies the TCP tracking of got, checked apart, into want.
func tracking(want, got *bpf.FastL4FlowEvent) {
	want.Ack, want.SeqNext, want.Win, want.SynWin = got.Ack, got.SeqNext, got.Win, got.SynWin
	want.Seen, want.Wscale, want.Mss, want.Closing = got.Seen, got.Wscale, got.Mss, got.Closing
}
