package bgp

import (
	"net/netip"
	"strings"
	"testing"
)

// A VIP is announced only while the daemon is ready, the node is not
// draining and every virtual on it has a member up; the reason names
// what keeps it withdrawn.
func TestDecide(t *testing.T) {
	r := Route{Prefix: HostRoute(netip.MustParseAddr("198.18.100.10")), Virtuals: []Virtual{
		{Name: "web", Pools: []string{"a", "b"}},
		{Name: "tls", Pools: []string{"c"}},
		{Name: "redirect"},
	}}
	cases := []struct {
		name string
		st   State
		want bool
		why  string
	}{
		{"serving", State{Ready: true, Up: map[string]int{"b": 1, "c": 2}}, true, "announced"},
		{"not ready", State{Up: map[string]int{"a": 1, "c": 1}}, false, "not ready"},
		{"draining", State{Ready: true, Draining: true, Up: map[string]int{"a": 1, "c": 1}}, false, "draining"},
		{"one virtual without members", State{Ready: true, Up: map[string]int{"a": 1}}, false, "virtual tls"},
	}
	for _, c := range cases {
		got, why := Decide(r, c.st)
		if got != c.want || !strings.Contains(why, c.why) {
			t.Errorf("%s: Decide = %v %q, want %v and a reason naming %q", c.name, got, why, c.want, c.why)
		}
	}
	if p := HostRoute(netip.MustParseAddr("2001:db8::10")); p.Bits() != 128 {
		t.Errorf("HostRoute(2001:db8::10) = %s, want a /128", p)
	}
}
