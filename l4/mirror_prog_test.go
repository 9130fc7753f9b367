package l4

import (
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/bpf"
)

func mirrored(v *Virtual) { v.Mirror = true }

// TestPrivilegedMirrorInstall: a flow record taken from a connection the
// program opened, installed on a passive node after the flow left its
// tables, forwards the connection's next segments both ways as before
// (no SYN, no loose_init), with the node-local next hop left for the
// program to resolve; ending a full copy removes the flow of a mirrored
// virtual that the copy did not carry.
func TestPrivilegedMirrorInstall(t *testing.T) {
	e := progEnv(t, nil, fastl4("mirrored", "198.18.0.10:9443", "fe4", 4443, mirrored),
		fastl4("mirrored6", "[2001:db8:1::10]:9443", "fe6", 4443, mirrored))
	e.resolve()
	for _, tc := range []struct {
		name               string
		client, stale, vip netip.AddrPort
	}{
		{"ipv4", ap(client4, 41000), ap(client4, 41001), ap(vip4, 9443)},
		{"ipv6", ap(client6, 41000), ap(client6, 41001), ap(vip6, 9443)},
	} {
		t.Run(tc.name, func(t *testing.T) { mirrorInstall(t, e, tc.client, tc.stale, tc.vip) })
	}
}

func mirrorInstall(t *testing.T, e *env, client, stale, vip netip.AddrPort) {
	var all []bpf.FastL4FlowKey
	e.fp.flows.each(func(k bpf.FastL4FlowKey, _ *bpf.FastL4FlowVal) { all = append(all, k) })
	e.fp.flows.deleteKeys(all) // the previous case's flows
	toMember, toClient := e.hops()
	member, snat, _ := handshake(t, e, client, vip)
	ck, sk := flowKey(client, vip, protoTCP), flowKey(member, snat, protoTCP)
	c, _ := e.lookupFlow(client, vip, protoTCP)
	s, _ := e.lookupFlow(member, snat, protoTCP)
	rec := encodeFlow(&half{key: ck, val: c}, &half{key: sk, val: s}, monoNow())
	handshake(t, e, stale, vip) // in the table, not in the copy

	e.fp.flows.deleteKeys([]bpf.FastL4FlowKey{ck, sk})
	data := frame{src: client, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901, payload: []byte("after")}.bytes()
	expectVerdict(t, e, data, xdpDrop) // no flow, no loose_init

	e.fp.SetPassive(true)
	defer e.fp.SetPassive(false)
	e.fp.BeginMirrorCopy()
	if ok, err := e.fp.InstallMirrored(rec); !ok || err != nil {
		t.Fatalf("install the record: %v %v", ok, err)
	}
	if n, err := e.fp.EndMirrorCopy(true); n != 1 || err != nil {
		t.Errorf("end of the copy removed %d flows (%v), want the 1 it did not carry", n, err)
	}
	if _, ok := e.lookupFlow(stale, vip, protoTCP); ok {
		t.Error("the flow the copy did not carry is still in the table")
	}
	got, ok := e.lookupFlow(client, vip, protoTCP)
	if !ok || got.TxSlot != 0 || got.Dmac != [6]byte{} || got.Vid != c.Vid || got.SeqNext != c.SeqNext || got.Seen != c.Seen {
		t.Errorf("installed client half %+v\nfrom %+v", got, c)
	}

	p := expectRedirect(t, e, data, toMember)
	if p.src != snat || p.dst != member {
		t.Errorf("client segment after the install went %s -> %s, want %s -> %s", p.src, p.dst, snat, member)
	}
	reply := frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 106, payload: []byte("ok")}.bytes()
	if p := expectRedirect(t, e, reply, toClient); p.src != vip || p.dst != client {
		t.Errorf("member segment after the install went %s -> %s, want %s -> %s", p.src, p.dst, vip, client)
	}
}
