package l4

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

func TestPrivilegedApplyChanges(t *testing.T) {
	e := progEnv(t, nil)
	e.resolve()
	toMember, toClient := e.hops()

	// Host settings the fast path needs, in its namespace only.
	e.do(func() {
		for key, want := range map[string]string{
			"net/ipv4/ip_local_reserved_ports": "40000-59999",
			"net/ipv4/conf/lo/forwarding":      "1",
			"net/ipv6/conf/lo/forwarding":      "1",
			"net/ipv4/ip_forward":              "0",
		} {
			b, err := os.ReadFile("/proc/sys/" + key)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(b)); !strings.Contains(got, want) {
				t.Errorf("%s = %q, want %q", key, got, want)
			}
		}
	})

	// A flow to the dns virtual, then the virtual goes away: the flow
	// drains, new flows are not taken.
	client := ap(client4, 51000)
	p := expectRedirect(t, e, frame{src: client, dst: ap(vip4, 53), proto: protoUDP, payload: []byte("q")}.bytes(), toMember)
	expectRedirect(t, e, frame{src: p.dst, dst: p.src, proto: protoUDP, payload: []byte("answer")}.bytes(), toClient)
	cfg := testSpec(e.lab,
		fastl4("web", "198.18.0.10:443", "fe4", 4443),
		fastl4("web6", "[2001:db8:1::10]:443", "fe6", 4443))
	e.do(func() {
		if err := e.fp.Apply(cfg); err != nil {
			t.Fatal(err)
		}
	})
	expectRedirect(t, e, frame{src: client, dst: ap(vip4, 53), proto: protoUDP, payload: []byte("again")}.bytes(), toMember)
	expectRedirect(t, e, frame{src: p.dst, dst: p.src, proto: protoUDP, payload: []byte("answer")}.bytes(), toClient)
	expectPassUntouched(t, e, frame{src: ap(client4, 51001), dst: ap(vip4, 53), proto: protoUDP, payload: []byte("q")}.bytes())

	// A member marked down keeps its flows and takes no new ones.
	c1 := ap(client4, 51100)
	m1, _ := establish(t, e, c1, ap(vip4, 443))
	e.do(func() {
		if err := e.fp.SetMemberUp("fe4", m1.Addr(), false); err != nil {
			t.Fatal(err)
		}
	})
	expectRedirect(t, e, frame{src: c1, dst: ap(vip4, 443), proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes(), toMember)
	for i := range 20 {
		q := expectRedirect(t, e, frame{src: ap(client4, uint16(51200+i)), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN}.bytes(), toMember)
		if q.dst.Addr() == m1.Addr() {
			t.Fatalf("new flow %d went to %s, which is down", i, m1.Addr())
		}
	}
	// No member up at all: new flows are refused and counted.
	e.do(func() {
		for _, m := range e.lab.Members4 {
			if err := e.fp.SetMemberUp("fe4", m, false); err != nil {
				t.Fatal(err)
			}
		}
	})
	noMember := e.delta("web", bpf.FastL4ReasonREASON_DROP_NO_MEMBER)
	expectVerdict(t, e, frame{src: ap(client4, 51300), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN}.bytes(), xdpDrop)
	if noMember() != 1 {
		t.Error("drop_no_member not counted")
	}
	e.do(func() {
		if err := e.fp.SetMemberUp("fe4", netip.MustParseAddr("198.19.9.9"), true); err == nil {
			t.Error("an unknown member was accepted")
		}
	})
}

func TestPrivilegedSNATPool(t *testing.T) {
	e := newEnv(t, func(lab *testnet.Lab) *Spec {
		return testSpec(lab, fastl4("web", "198.18.0.10:443", "one4", 4443, func(v *Virtual) { v.SNAT = addrs("198.19.0.2", "198.19.0.3") }))
	}, snatPorts(40000, 40003))
	e.resolve()
	used := map[netip.AddrPort]bool{}
	// Two addresses of four ports each: eight connections to one member.
	for i := range 8 {
		_, snat := establish(t, e, ap(client4, uint16(1000+i)), ap(vip4, 443))
		if used[snat] {
			t.Fatalf("SNAT source %s used twice", snat)
		}
		used[snat] = true
	}
	addrs := map[netip.Addr]bool{}
	for s := range used {
		addrs[s.Addr()] = true
	}
	if len(addrs) != 2 {
		t.Errorf("SNAT addresses used: %v", addrs)
	}
	expectVerdict(t, e, frame{src: ap(client4, 2000), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN}.bytes(), xdpDrop)
}

// A new virtual that takes the id of a removed one (every other id in
// use) starts with its counters at zero, not with the removed one's.
func TestPrivilegedCountersZeroedOnIDReuse(t *testing.T) {
	virtuals := []Virtual{fastl4("old", "198.18.0.10:1000", "fe4", 4443)}
	for i := range maxVirtuals - 2 {
		virtuals = append(virtuals, fastl4(fmt.Sprintf("filler%d", i), fmt.Sprintf("198.18.0.10:%d", 1001+i), "fe4", 4443))
	}
	e := newEnv(t, func(lab *testnet.Lab) *Spec { return testSpec(lab, virtuals...) }, nil)
	e.resolve()
	toMember, _ := e.hops()
	expectRedirect(t, e, frame{src: ap(client4, 52000), dst: ap(vip4, 1000), proto: protoTCP, flags: flagSYN}.bytes(), toMember)
	if e.counter("old", bpf.FastL4ReasonREASON_FWD_NEW) != 1 {
		t.Fatal("the new flow of virtual old is not counted")
	}
	names := e.fp.virtualNames()
	oldID := slices.Index(names[:], "old")

	// old goes (its id keeps its name for draining flows), then new
	// comes.
	for _, vs := range [][]Virtual{virtuals[1:], append(virtuals[1:], fastl4("new", "198.18.0.10:2000", "fe4", 4443))} {
		spec := testSpec(e.lab, vs...)
		e.do(func() {
			if err := e.fp.Apply(spec); err != nil {
				t.Fatal(err)
			}
		})
	}
	names = e.fp.virtualNames()
	if id := slices.Index(names[:], "new"); id != oldID {
		t.Fatalf("virtual new has id %d, want the removed old's %d", id, oldID)
	}
	for r := range bpf.FastL4Reason(reasonMax) {
		if n := e.counter("new", r); n != 0 {
			t.Errorf("virtual new starts with %d packets of reason %d", n, r)
		}
	}
}
