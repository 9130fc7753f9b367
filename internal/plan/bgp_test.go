package plan

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
)

// One host route per VIP, listing every virtual on it with the pools it
// sends to; the hold time defaults to 3 s.
func TestCompileBGP(t *testing.T) {
	cfg := testConfig()
	cfg.BGP = &config.BGP{LocalAS: 65100, RouterID: netip.MustParseAddr("198.18.2.2"),
		Neighbors: []config.Neighbor{{Address: netip.MustParseAddr("198.18.2.254"), AS: 65000, BFD: true}}}
	cfg.Virtuals[0].Announce = config.Announce{Communities: []string{"65100:100"}, LocalPref: 150}
	p, err := Compile(context.Background(), cfg, (&roundRobin{calls: map[string]int{}}).resolve)
	if err != nil {
		t.Fatal(err)
	}
	s := p.BGP
	if s == nil || s.LocalAS != 65100 || len(s.Neighbors) != 1 || s.Neighbors[0].HoldTime != 3*time.Second || !s.Neighbors[0].BFD {
		t.Fatalf("bgp spec %+v", s)
	}
	if len(s.Routes) != 1 {
		t.Fatalf("routes %+v, want one /32 for the VIP both virtuals share", s.Routes)
	}
	r := s.Routes[0]
	if r.Prefix != netip.MustParsePrefix("198.18.2.1/32") || len(r.Virtuals) != 2 ||
		!slices.Equal(r.Virtuals[0].Pools, []string{"sfb-fe"}) || !slices.Equal(r.Virtuals[1].Pools, []string{"sfb-tcp"}) {
		t.Errorf("route %+v", r)
	}
	if !slices.Equal(r.Communities, []uint32{65100<<16 | 100}) || r.LocalPref != 150 {
		t.Errorf("route attributes %v %d, want [65100:100] 150", r.Communities, r.LocalPref)
	}
	cfg.BGP = nil
	if p, _ := Compile(context.Background(), cfg, (&roundRobin{calls: map[string]int{}}).resolve); p.BGP != nil {
		t.Error("without a bgp section the plan has a bgp spec")
	}
}
