package l4

import (
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// flows kill reads the tables, then deletes what it selected. Between
// the two, the selected pair, reset, gave its SNAT tuple to a new
// client's flow (snat_take): the delete must leave that flow's server
// half alone. Deleted, the new connection's client half would forward
// on while the member's answers were dropped, unmarked for the
// program's repair, until the reaper's exact walk.
func TestPrivilegedKillLeavesTheTupleItsNewFlow(t *testing.T) {
	e := progEnv(t, snatPorts(40000, 40000),
		fastl4("rst", "198.18.0.10:7445", "one4", 4445))
	e.resolve()
	toMember, _ := e.hops()
	vip := ap(vip4, 7445)
	old := ap(client4, 2001)
	member, snat := establish(t, e, old, vip)
	expectRedirect(t, e, frame{src: old, dst: vip, proto: protoTCP, flags: flagRST, seq: 101}.bytes(), toMember)

	sel, err := e.fp.selectFlows(FlowFilter{Virtual: "rst", ClientPort: old.Port()})
	if err != nil || len(sel.killed) != 1 {
		t.Fatalf("selected %d flows (%v), want the reset one", len(sel.killed), err)
	}
	reused := e.delta("rst", bpf.FastL4ReasonREASON_EVENT_SNAT_REUSED)
	client := ap(client4, 2002)
	if m, s := establish(t, e, client, vip); m != member || s != snat || reused() != 1 {
		t.Fatalf("new flow %s -> %s (%d reused), want the reset flow's tuple %s -> %s", s, m, reused(), snat, member)
	}
	e.do(func() { e.fp.endSelected(sel, EndKilled) })

	ret, out := e.run(frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 101}.bytes())
	if ret != xdpRedirect {
		t.Fatalf("the member's answer to %s dropped (verdict %d) after flows kill of the flow that had its tuple before", client, ret)
	}
	if p, err := parseFrame(out); err != nil || p.dst != client {
		t.Errorf("the member's answer goes to %v (%v), want %s", p.dst, err, client)
	}
	expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes(), toMember)
}

// The standby's side of the same race: the removal record of the
// killed pair arrives after the record of the new flow that took its
// SNAT tuple. It removes what is still the killed pair's, never the new
// flow's half.
func TestPrivilegedMirrorRemoveLeavesTheTupleItsNewFlow(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, _ := e.hops()
	vip := ap(vip4, 443)
	client := ap(client4, 2102)
	member, snat := establish(t, e, client, vip)
	killed := flowKey(ap(client4, 2101), vip, protoTCP)
	if _, err := e.fp.InstallMirrored(encodeRemove(killed, flowKey(member, snat, protoTCP))); err != nil {
		t.Fatal(err)
	}
	ret, out := e.run(frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 101}.bytes())
	if ret != xdpRedirect {
		t.Fatalf("the member's answer to %s dropped (verdict %d) after the removal record of another flow that had its tuple", client, ret)
	}
	if p, err := parseFrame(out); err != nil || p.dst != client {
		t.Errorf("the member's answer goes to %v (%v), want %s", p.dst, err, client)
	}
	expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes(), toMember)
}

// A standby gets a GC pass's record of a flow after the record of a
// younger flow that took its SNAT tuple (the records of the GC pass and
// of the program's events go out from two readers). The stale record
// leaves the younger flow as it is: installed, it would send the
// member's answers to the gone client.
func TestPrivilegedMirrorStaleRecordLeavesTheYoungerFlow(t *testing.T) {
	e := progEnv(t, nil, fastl4("mirrored", "198.18.0.10:9443", "fe4", 4443, mirrored))
	e.resolve()
	vip := ap(vip4, 9443)
	client := ap(client4, 2202)
	member, snat := establish(t, e, client, vip)
	now := monoNow()
	ck, sk := flowKey(ap(client4, 2201), vip, protoTCP), flowKey(member, snat, protoTCP)
	old := func(self, peer bpf.FastL4FlowKey, dir uint8) *half {
		h := &half{key: self, val: bpf.FastL4FlowVal{CreatedNs: now - 10e9, LastNs: now - 1e9, Dir: dir, Seen: seenAny | seenACK}}
		setKeys(&h.val, self, peer)
		return h
	}
	e.fp.SetPassive(true)
	defer e.fp.SetPassive(false)
	e.fp.InstallMirrored(encodeFlow(old(ck, sk, dirClient), old(sk, ck, dirServer), now))

	ret, out := e.run(frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 101}.bytes())
	p, err := parseFrame(out)
	if ret != xdpRedirect || err != nil || p.dst != client {
		t.Fatalf("the member's answer to %s: verdict %d, to %v (%v), after a stale record of an older flow with its tuple", client, ret, p.dst, err)
	}
}

// The same for a handshake: between the read and the delete, the
// selected half-open flow's SNAT tuple was reclaimed for a new client's
// SYN (snat_alloc). The delete leaves the new flow's server half, so the
// member's SYN-ACK reaches the new client.
func TestPrivilegedKillLeavesTheReclaimedTuple(t *testing.T) {
	e := progEnv(t, snatPorts(40000, 40000), fastl4("one", "198.18.0.10:7443", "one4", 4443))
	e.resolve()
	toMember, _ := e.hops()
	vip := ap(vip4, 7443)
	old := ap(client4, 3001)
	expectRedirect(t, e, frame{src: old, dst: vip, proto: protoTCP, flags: flagSYN, seq: 100}.bytes(), toMember)
	sel, err := e.fp.selectFlows(FlowFilter{Virtual: "one", ClientPort: old.Port()})
	if err != nil || len(sel.killed) != 1 {
		t.Fatalf("selected %d flows (%v), want the handshake", len(sel.killed), err)
	}
	reclaimed := e.delta("one", bpf.FastL4ReasonREASON_EVENT_SNAT_RECLAIMED)
	client := ap(client4, 3002)
	p := expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagSYN, seq: 100}.bytes(), toMember)
	if reclaimed() != 1 {
		t.Fatalf("%d SNAT tuples reclaimed, want the handshake's", reclaimed())
	}
	e.do(func() { e.fp.endSelected(sel, EndKilled) })

	synAck := frame{src: p.dst, dst: p.src, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 101}.bytes()
	ret, out := e.run(synAck)
	q, err := parseFrame(out)
	if ret != xdpRedirect || err != nil || q.dst != client {
		t.Fatalf("the member's SYN-ACK to %s: verdict %d, to %v (%v), after flows kill of the handshake whose tuple it took", client, ret, q.dst, err)
	}
}

// A re-created NIC drops every cached next hop in one pass over the
// tables (followNICs). A connection that restarted on its client port
// while the pass read and wrote must keep its new state: written back,
// the read one (reset) would have the reaper end the live connection at
// its close timeout.
func TestPrivilegedNICMoveKeepsARestartedFlow(t *testing.T) {
	e := progEnv(t, nil, fastl4("short", "198.18.0.10:9443", "fe4", 4443, func(v *Virtual) {
		v.CloseTimeout = time.Second
		v.ResetOnTimeout = false
	}))
	e.resolve()
	toMember, _ := e.hops()
	vip := ap(vip4, 9443)
	client := ap(client4, 46100)
	establish(t, e, client, vip)
	expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagRST, seq: 101}.bytes(), toMember)
	var read []half
	if err := e.fp.flows.each(func(k bpf.FastL4FlowKey, v *bpf.FastL4FlowVal) { read = append(read, half{k, *v}) }); err != nil {
		t.Fatal(err)
	}
	establish(t, e, client, vip) // a new SYN on the reset connection
	if err := e.fp.dropNextHops(read); err != nil {
		t.Fatal(err)
	}
	if st := e.flowState(client); st != StateEstablished {
		t.Errorf("the restarted connection is %q after the next hops were dropped, want established", st)
	}
	time.Sleep(1500 * time.Millisecond) // past the close timeout, not the idle one
	e.do(func() {
		if err := e.fp.collect(); err != nil {
			t.Fatal(err)
		}
	})
	expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes(), toMember)
}

// A half whose other half's key holds another pair's half (a pair broken
// behind the program's back, its peer key taken since) is judged alone by
// the reaper's walk: expired, it goes, and the pair whose half sits under
// its peer key stays whole. Judged with that half, the two went, and the
// member's answers of that live connection were dropped.
func TestPrivilegedReapLeavesThePairUnderABrokenPeerKey(t *testing.T) {
	e := progEnv(t, nil, fastl4("quiet", "198.18.0.10:9443", "fe4", 4443, func(v *Virtual) { v.ResetOnTimeout = false }))
	e.resolve()
	_, toClient := e.hops()
	vip := ap(vip4, 9443)
	client := ap(client4, 46400)
	member, snat := establish(t, e, client, vip)
	sk := flowKey(member, snat, protoTCP)
	// The member has been silent for an hour; its client speaks.
	var sv bpf.FastL4FlowVal
	if err := e.fp.flows.Lookup(sk, &sv); err != nil {
		t.Fatal(err)
	}
	hourAgo := monoNow() - uint64(time.Hour)
	sv.LastNs = hourAgo
	if err := e.fp.flows.Update(sk, &sv, 0); err != nil {
		t.Fatal(err)
	}
	broken := flowKey(ap(client4, 46401), vip, protoTCP)
	bv := bpf.FastL4FlowVal{CreatedNs: hourAgo, LastNs: hourAgo, Vid: sv.Vid, Dir: dirClient, Seen: seenAny | seenACK}
	setKeys(&bv, broken, sk)
	if err := e.fp.flows.Update(broken, &bv, 0); err != nil {
		t.Fatal(err)
	}

	e.pass(t, func() error { return e.fp.reapRun(monoNow(), true, true, true, false) })
	if _, ok := e.lookupFlow(ap(client4, 46401), vip, protoTCP); ok {
		t.Errorf("the expired broken half is left after the walk")
	}
	expectRedirect(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 101}.bytes(), toClient)
}

// The end of a full copy prunes the mirrored flows neither the copy nor
// a live record installed. A live record installed as the prune reads
// the tables is the peer's: its flow stays.
func TestPrivilegedMirrorCopyEndKeepsALiveRecord(t *testing.T) {
	e := progEnv(t, nil, fastl4("mirrored", "198.18.0.10:9443", "fe4", 4443, mirrored))
	e.resolve()
	vip, client := ap(vip4, 9443), ap(client4, 2301)
	member, snat := ap(e.lab.Members4[0], 4443), ap(snat4, 40100)
	ck, sk := flowKey(client, vip, protoTCP), flowKey(member, snat, protoTCP)
	now := monoNow()
	live := func(self, peer bpf.FastL4FlowKey, dir uint8) *half {
		h := &half{key: self, val: bpf.FastL4FlowVal{CreatedNs: now - 10e9, LastNs: now, Dir: dir, Seen: seenAny | seenACK}}
		setKeys(&h.val, self, peer)
		return h
	}
	e.fp.SetPassive(true)
	defer e.fp.SetPassive(false)
	e.fp.BeginMirrorCopy()
	mirrorPruneRead = func() {
		if _, err := e.fp.InstallMirrored(encodeFlow(live(ck, sk, dirClient), live(sk, ck, dirServer), now)); err != nil {
			t.Error(err)
		}
	}
	defer func() { mirrorPruneRead = nil }()
	if n, err := e.fp.EndMirrorCopy(true); err != nil || n != 0 {
		t.Errorf("the end of the copy pruned %d flows (%v), want none", n, err)
	}
	if _, ok := e.lookupFlow(client, vip, protoTCP); !ok {
		t.Errorf("the flow of %s, installed by a live record as the copy ended, is pruned", client)
	}
}

// A half marked for repair whose other half's key holds another pair's
// half keeps its mark: once that pair ends, its next packet repairs its
// own pair. Cleared, the member's answers were dropped until an exact
// walk.
func TestPrivilegedRepairMarkOutlivesAnotherPairsHalf(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()
	vip, client := ap(vip4, 443), ap(client4, 48100)
	member, snat := establish(t, e, client, vip)
	ck, sk := flowKey(client, vip, protoTCP), flowKey(member, snat, protoTCP)
	var cv bpf.FastL4FlowVal
	if err := e.fp.flows.Lookup(ck, &cv); err != nil {
		t.Fatal(err)
	}
	now := monoNow()
	cv.Seen |= seenRepair
	cv.LastNs = now - uint64(time.Second)
	if err := e.fp.flows.Update(ck, &cv, 0); err != nil {
		t.Fatal(err)
	}
	other := flowKey(ap(client4, 48101), vip, protoTCP)
	for _, h := range [][2]bpf.FastL4FlowKey{{other, sk}, {sk, other}} {
		v := bpf.FastL4FlowVal{CreatedNs: now, LastNs: now, Vid: cv.Vid, Dir: dirClient, Seen: seenAny | seenACK}
		if h[0] == sk {
			v.Dir = dirServer
		}
		setKeys(&v, h[0], h[1])
		if err := e.fp.flows.Update(h[0], &v, 0); err != nil {
			t.Fatal(err)
		}
	}
	expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes(), toMember)
	for _, k := range []bpf.FastL4FlowKey{other, sk} {
		if err := e.fp.flows.Delete(k); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(150 * time.Millisecond) // past the last-seen granularity
	expectRedirect(t, e, frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes(), toMember)
	if p := expectRedirect(t, e, frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 101}.bytes(), toClient); p.dst != client {
		t.Errorf("the member's answer goes to %s, want %s", p.dst, client)
	}
}
