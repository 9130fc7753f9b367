package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// ErrIdentity is returned when a new spec changes the local AS or the
// router id of a running speaker.
var ErrIdentity = errors.New("bgp identity changed")

// BFD timers: a neighbour lost is noticed in 3 x 300 ms.
const (
	bfdInterval   = 300 * time.Millisecond
	bfdMultiplier = 3
)

// Speaker is the embedded BGP speaker.
type Speaker struct {
	log *slog.Logger

	mu      sync.Mutex
	srv     *server.BgpServer
	spec    Spec
	state   State
	peers   map[netip.Addr]Neighbor
	paths   map[netip.Prefix]uuid.UUID // announced
	reasons map[netip.Prefix]string
	changed map[netip.Prefix]time.Time
}

// New returns a speaker that is not running yet.
func New(log *slog.Logger) *Speaker {
	if log == nil {
		log = slog.Default()
	}
	return &Speaker{
		log:     log,
		peers:   map[netip.Addr]Neighbor{},
		paths:   map[netip.Prefix]uuid.UUID{},
		reasons: map[netip.Prefix]string{},
		changed: map[netip.Prefix]time.Time{},
	}
}

// Apply starts the speaker with spec, or brings a running one to it:
// neighbours are added, changed and removed, routes re-decided. The
// local AS and router id are fixed while it runs.
func (s *Speaker) Apply(ctx context.Context, spec Spec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		srv := server.NewBgpServer(server.LoggerOption(s.log.With("component", "bgp"), nil))
		go srv.Serve()
		if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
			Asn: spec.LocalAS, RouterId: spec.RouterID.String(), ListenPort: -1,
		}}); err != nil {
			srv.Stop()
			return fmt.Errorf("start bgp speaker as AS %d, router id %s: %w", spec.LocalAS, spec.RouterID, err)
		}
		s.srv = srv
	} else if spec.LocalAS != s.spec.LocalAS || spec.RouterID != s.spec.RouterID {
		return fmt.Errorf("%w: local AS %d router id %s running, %d %s asked: restart to change them", ErrIdentity, s.spec.LocalAS, s.spec.RouterID, spec.LocalAS, spec.RouterID)
	}
	if err := s.syncPeers(ctx, spec.Neighbors); err != nil {
		return err
	}
	s.spec = spec
	return s.syncRoutes()
}

// Update re-decides every route for st: announces or withdraws at once.
func (s *Speaker) Update(st State) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = st
	if s.srv == nil {
		return nil
	}
	return s.syncRoutes()
}

// Stop withdraws everything and closes the sessions.
func (s *Speaker) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return nil
	}
	srv, done := s.srv, make(chan struct{})
	go func() { srv.Stop(); close(done) }()
	s.srv = nil
	clear(s.paths)
	clear(s.peers)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop bgp speaker: %w", ctx.Err())
	}
}

func (s *Speaker) syncPeers(ctx context.Context, want []Neighbor) error {
	next := map[netip.Addr]Neighbor{}
	for _, n := range want {
		next[n.Address] = n
	}
	var errs []error
	for a := range s.peers {
		if _, keep := next[a]; !keep {
			if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
				errs = append(errs, fmt.Errorf("remove bgp neighbour %s: %w", a, err))
			}
			delete(s.peers, a)
		}
	}
	for a, n := range next {
		old, had := s.peers[a]
		if had && equalNeighbor(old, n) {
			continue
		}
		if had {
			if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
				errs = append(errs, fmt.Errorf("replace bgp neighbour %s: %w", a, err))
				continue
			}
			delete(s.peers, a)
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peerConf(n)}); err != nil {
			errs = append(errs, fmt.Errorf("add bgp neighbour %s AS %d: %w", a, n.AS, err))
			continue
		}
		s.peers[a] = n
	}
	return errors.Join(errs...)
}

func equalNeighbor(a, b Neighbor) bool { return a == b }

func peerConf(n Neighbor) *api.Peer {
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if n.Address.Is6() {
		fam.Afi = api.Family_AFI_IP6
	}
	hold := uint64(max(n.HoldTime, 3*time.Second) / time.Second)
	p := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: n.Address.String(), PeerAsn: n.AS, AuthPassword: n.Password},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime: hold, KeepaliveInterval: max(hold/3, 1), ConnectRetry: 1, IdleHoldTimeAfterReset: 1,
		}},
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{Family: fam, Enabled: true}}},
	}
	if n.BFD {
		us := uint32(bfdInterval / time.Microsecond)
		p.Bfd = &api.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: us, RequiredMinimumReceive: us, DetectionMultiplier: bfdMultiplier}
	}
	return p
}

// syncRoutes announces the routes Decide allows and withdraws the rest.
func (s *Speaker) syncRoutes() error {
	var errs []error
	want := map[netip.Prefix]bool{}
	for _, r := range s.spec.Routes {
		ok, why := Decide(r, s.state)
		want[r.Prefix] = ok
		s.reasons[r.Prefix] = why
		if _, up := s.paths[r.Prefix]; up == ok {
			continue
		}
		s.changed[r.Prefix] = time.Now()
		if ok {
			errs = append(errs, s.announce(r))
		} else {
			errs = append(errs, s.withdraw(r.Prefix))
		}
	}
	for p := range s.paths {
		if _, listed := want[p]; !listed {
			errs = append(errs, s.withdraw(p))
		}
	}
	for p := range s.reasons {
		if _, listed := want[p]; !listed {
			delete(s.reasons, p)
			delete(s.changed, p)
		}
	}
	return errors.Join(errs...)
}

func (s *Speaker) announce(r Route) error {
	path, err := routePath(r)
	if err != nil {
		return err
	}
	res, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}})
	if err != nil {
		return fmt.Errorf("announce %s: %w", r.Prefix, err)
	}
	s.paths[r.Prefix] = res[0].UUID
	s.log.Info("bgp route announced", "prefix", r.Prefix)
	return nil
}

func (s *Speaker) withdraw(p netip.Prefix) error {
	id, ok := s.paths[p]
	if !ok {
		return nil
	}
	delete(s.paths, p)
	if err := s.srv.DeletePath(apiutil.DeletePathRequest{UUIDs: []uuid.UUID{id}}); err != nil {
		return fmt.Errorf("withdraw %s: %w", p, err)
	}
	s.log.Info("bgp route withdrawn", "prefix", p, "why", s.reasons[p])
	return nil
}

// routePath builds the BGP path of a VIP with the session's own address
// as next hop (the unspecified next hop GoBGP fills in per neighbour).
func routePath(r Route) (*apiutil.Path, error) {
	nlri, err := bgppkt.NewIPAddrPrefix(r.Prefix)
	if err != nil {
		return nil, fmt.Errorf("announce %s: %w", r.Prefix, err)
	}
	attrs := []bgppkt.PathAttributeInterface{bgppkt.NewPathAttributeOrigin(bgppkt.BGP_ORIGIN_ATTR_TYPE_IGP)}
	fam := bgppkt.RF_IPv4_UC
	if r.Prefix.Addr().Is4() {
		nh, _ := bgppkt.NewPathAttributeNextHop(netip.IPv4Unspecified())
		attrs = append(attrs, nh)
	} else {
		fam = bgppkt.RF_IPv6_UC
		mp, err := bgppkt.NewPathAttributeMpReachNLRI(fam, []bgppkt.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		if err != nil {
			return nil, fmt.Errorf("announce %s: %w", r.Prefix, err)
		}
		attrs = append(attrs, mp)
	}
	if len(r.Communities) > 0 {
		attrs = append(attrs, bgppkt.NewPathAttributeCommunities(slices.Clone(r.Communities)))
	}
	if r.LocalPref > 0 {
		attrs = append(attrs, bgppkt.NewPathAttributeLocalPref(r.LocalPref))
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs}, nil
}
