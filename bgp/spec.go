// Package bgp announces the VIPs of this node to upstream routers with
// GoBGP embedded as a library, so that routers spread flows over several
// edgeproxy nodes with ECMP. A VIP's route is announced only while the
// node can serve it (route health injection): the daemon is ready, the
// node is not draining and every virtual on the VIP has a member up.
package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Spec is what the speaker runs: its identity, its neighbours and the
// routes it may announce.
type Spec struct {
	LocalAS   uint32
	RouterID  netip.Addr
	Neighbors []Neighbor
	Routes    []Route
}

// Neighbor is one peer: IPv4 unicast over an IPv4 session, IPv6 unicast
// over an IPv6 one.
type Neighbor struct {
	Address  netip.Addr
	AS       uint32
	Password string
	BFD      bool
	HoldTime time.Duration // whole seconds, at least 3s
}

// Route is a VIP's host route and the virtuals it serves.
type Route struct {
	Prefix      netip.Prefix // a /32 or /128
	Communities []uint32
	LocalPref   uint32 // 0: not set
	Virtuals    []Virtual
}

// Virtual is one virtual server on a VIP, with the pools it sends to
// (none for one that only redirects).
type Virtual struct {
	Name  string
	Pools []string
}

// State is what decides whether routes are announced.
type State struct {
	Ready    bool
	Draining bool
	// Up counts the members taking traffic, by pool.
	Up map[string]int
}

// Decide says whether r is announced in st, and why (or why not), in
// words for status pages.
func Decide(r Route, st State) (bool, string) {
	switch {
	case st.Draining:
		return false, "withdrawn: the node is draining"
	case !st.Ready:
		return false, "withdrawn: the daemon is not ready"
	}
	var empty []string
	for _, v := range r.Virtuals {
		// A virtual without pools (redirects only) needs no member.
		if len(v.Pools) > 0 && !slices.ContainsFunc(v.Pools, func(p string) bool { return st.Up[p] > 0 }) {
			empty = append(empty, v.Name)
		}
	}
	if len(empty) > 0 {
		return false, fmt.Sprintf("withdrawn: no member up for virtual %s", strings.Join(empty, ", "))
	}
	return true, "announced: ready, every virtual on the VIP has a member up"
}

// HostRoute is the /32 or /128 of a VIP.
func HostRoute(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
}
