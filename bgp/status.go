package bgp

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/osrg/gobgp/v4/api"
)

// Status is what the speaker shows: its sessions and, for each VIP,
// whether it is announced and why.
type Status struct {
	LocalAS  uint32          `json:"local_as"`
	RouterID string          `json:"router_id"`
	Sessions []SessionStatus `json:"sessions"`
	Routes   []RouteStatus   `json:"routes"`
}

// SessionStatus is one neighbour's session.
type SessionStatus struct {
	Neighbor string `json:"neighbor"`
	AS       uint32 `json:"as"`
	State    string `json:"state"` // idle, connect, active, opensent, openconfirm, established
	BFD      string `json:"bfd,omitempty"`
	// Reason is why the last session ended, when it is not established.
	Reason string `json:"reason,omitempty"`
}

// RouteStatus is one VIP's route.
type RouteStatus struct {
	Prefix    string    `json:"prefix"`
	Announced bool      `json:"announced"`
	Why       string    `json:"why"`
	Since     time.Time `json:"since,omitzero"`
}

// Established reports whether the session state is up.
func (s SessionStatus) Established() bool { return s.State == "established" }

// Status returns the speaker's state (nil when it does not run).
func (s *Speaker) Status(ctx context.Context) *Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return nil
	}
	st := &Status{LocalAS: s.spec.LocalAS, RouterID: s.spec.RouterID.String()}
	_ = s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		ps := p.GetState()
		ss := SessionStatus{
			Neighbor: p.GetConf().GetNeighborAddress(),
			AS:       p.GetConf().GetPeerAsn(),
			State:    strings.ToLower(strings.TrimPrefix(ps.GetSessionState().String(), "SESSION_STATE_")),
		}
		if b := ps.GetBfdState(); b != nil && p.GetBfd().GetEnabled() {
			ss.BFD = strings.ToLower(strings.TrimPrefix(b.GetSessionState().String(), "BFD_SESSION_STATE_"))
		}
		if !ss.Established() && ps.GetDisconnectMessage() != "" {
			ss.Reason = ps.GetDisconnectMessage()
		}
		st.Sessions = append(st.Sessions, ss)
	})
	slices.SortFunc(st.Sessions, func(a, b SessionStatus) int { return strings.Compare(a.Neighbor, b.Neighbor) })
	for _, r := range s.spec.Routes {
		_, up := s.paths[r.Prefix]
		st.Routes = append(st.Routes, RouteStatus{Prefix: r.Prefix.String(), Announced: up, Why: s.reasons[r.Prefix], Since: s.changed[r.Prefix]})
	}
	return st
}

// Announced returns the prefixes announced now.
func (s *Speaker) Announced() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []netip.Prefix
	for p := range s.paths {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}
