package bgp

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// A reload's neighbours replace the running ones without a restart;
// changing the local AS is refused. No router answers here, so the
// sessions stay down and nothing is announced.
func TestSpeakerNeighboursFollowSpec(t *testing.T) {
	ctx := context.Background()
	sp := New(nil)
	t.Cleanup(func() { _ = sp.Stop(ctx) })
	a, b := netip.MustParseAddr("198.18.50.1"), netip.MustParseAddr("198.18.50.2")
	spec := Spec{LocalAS: 65100, RouterID: netip.MustParseAddr("198.18.50.10"),
		Neighbors: []Neighbor{{Address: a, AS: 65000, HoldTime: 3 * time.Second}},
		Routes:    []Route{{Prefix: HostRoute(netip.MustParseAddr("198.18.100.10")), Virtuals: []Virtual{{Name: "web", Pools: []string{"p"}}}}},
	}
	if err := sp.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if got := neighbours(sp.Status(ctx)); !slices.Equal(got, []string{a.String()}) {
		t.Fatalf("neighbours %v, want [%s]", got, a)
	}
	spec.Neighbors = []Neighbor{{Address: b, AS: 65001, BFD: true, HoldTime: 9 * time.Second}}
	if err := sp.Apply(ctx, spec); err != nil {
		t.Fatal(err)
	}
	st := sp.Status(ctx)
	if got := neighbours(st); !slices.Equal(got, []string{b.String()}) || st.Sessions[0].AS != 65001 {
		t.Fatalf("after the change, sessions %+v, want only %s AS 65001", st.Sessions, b)
	}
	if st.Routes[0].Announced || st.Routes[0].Why != "withdrawn: the daemon is not ready" {
		t.Errorf("route %+v before the daemon is ready, want withdrawn saying so", st.Routes[0])
	}
	if err := sp.Update(State{Ready: true, Up: map[string]int{"p": 1}}); err != nil {
		t.Fatal(err)
	}
	if got := sp.Announced(); len(got) != 1 {
		t.Errorf("announced %v once ready with a member up, want the VIP", got)
	}
	spec.LocalAS = 65200
	if err := sp.Apply(ctx, spec); err == nil {
		t.Error("a new local AS was applied to the running speaker; want it refused until a restart")
	}
}

func neighbours(st *Status) []string {
	var out []string
	for _, s := range st.Sessions {
		out = append(out, s.Neighbor)
	}
	return out
}
