package l4

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
)

func mirrorPair(client, vip, member, snat netip.AddrPort) (c, s half) {
	key := func(src, dst netip.AddrPort) bpf.FastL4FlowKey {
		return bpf.FastL4FlowKey{Saddr: addrToBPF(src.Addr()), Daddr: addrToBPF(dst.Addr()), Sport: htons(src.Port()), Dport: htons(dst.Port()),
			Proto: unix.IPPROTO_TCP, Family: family(src.Addr())}
	}
	c.key, s.key = key(client, vip), key(member, snat)
	for i, h := range []*half{&c, &s} {
		v := &h.val
		v.Dir, v.Vid, v.Mss = uint8(i), 7, 1400
		v.CreatedNs, v.LastNs = 1_000_000_000, 5_000_000_000+uint64(i)*1e8
		v.Bytes, v.Packets, v.Ack, v.SeqNext = 1000*uint64(i+1), 10, 0xdead0000+uint32(i), 0xbeef0000+uint32(i)
		v.Win, v.SynWin, v.Seen, v.Wscale = 500, 64240, seenACK|seenAny, 7|0x40|0x80
		// Node-local: the next hop, the egress slot, the ICMP rate state.
		v.Dmac, v.TxSlot, v.IcmpMs = [6]byte{2, 0, 0, 0, 0, 1}, 2, 99
	}
	c.val.Closing, s.val.Closing = closeFinClient, closeFinClient
	setKeys(&c.val, c.key, s.key)
	setKeys(&s.val, s.key, c.key)
	return c, s
}

// A flow record carries the pair's tracking to the peer, with the times
// as ages and without the node-local next hop, egress slot and ICMP
// state; the peer's virtual id comes from its own services.
func TestMirrorRecordRoundTrip(t *testing.T) {
	for _, fam := range []struct{ client, vip, member, snat string }{
		{"198.18.0.7:51544", "198.18.0.20:443", "198.19.0.11:4443", "198.19.0.10:51544"},
		{"[2001:db8::7]:51544", "[2001:db8::20]:443", "[2001:db8:1::11]:4443", "[2001:db8:1::10]:51544"},
	} {
		c, s := mirrorPair(netip.MustParseAddrPort(fam.client), netip.MustParseAddrPort(fam.vip),
			netip.MustParseAddrPort(fam.member), netip.MustParseAddrPort(fam.snat))
		rec := encodeFlow(&c, &s, 6_000_000_000)
		if rec[0] != mirrorFlow || len(rec) > 150 {
			t.Errorf("%s: record of %d bytes, op %d", fam.client, len(rec), rec[0])
		}
		// The peer's clock reads 100 s, its virtual of that VIP is 3.
		gc, gs, err := decodeFlow(rec[1:], 100_000_000_000, func(k bpf.FastL4FlowKey) (uint8, bool) { return 3, k == c.key })
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []struct{ got, want *half }{{&gc, &c}, {&gs, &s}} {
			want := w.want.val
			want.Vid, want.Dmac, want.TxSlot, want.IcmpMs = 3, [6]byte{}, 0, 0
			want.CreatedNs = 100_000_000_000 - 5_000_000_000
			want.LastNs = 100_000_000_000 - (6_000_000_000 - w.want.val.LastNs)
			if w.got.key != w.want.key || w.got.val != want {
				t.Errorf("%s dir %d:\n got %+v\nwant %+v", fam.client, want.Dir, w.got.val, want)
			}
		}
		if _, _, err := decodeFlow(rec[1:len(rec)-1], 1, func(bpf.FastL4FlowKey) (uint8, bool) { return 3, true }); err == nil {
			t.Errorf("%s: a truncated record decoded", fam.client)
		}
		ck, sk, rest, err := readMirrorKeys(encodeRemove(c.key, s.key)[1:])
		if err != nil || ck != c.key || sk != s.key || len(rest) != 0 {
			t.Errorf("%s: removal record: %v %v %v", fam.client, ck, sk, err)
		}
	}
}
