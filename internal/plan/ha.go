package plan

import (
	"fmt"
	"net/netip"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/ha"
)

// HA returns this node's part in the pair (nil without an ha section).
// check is the command keepalived runs to ask whether the node can serve.
func HA(cfg *config.Config, check []string) (*ha.Spec, error) {
	h := cfg.HA
	if h == nil {
		return nil, nil
	}
	n := cfg.Network
	s := &ha.Spec{
		Source: cfg.File, Priority: h.Priority, AdvertInterval: h.AdvertInterval.D(), Check: check, Fifo: h.Fifo, Hold: h.HoldFile(),
		External: ha.Instance{Interface: n.External.Interface, VRID: h.External.VRID, Peer: h.External.Peer, Addresses: hostPrefixes(cfg.VIPs())},
		Internal: ha.Instance{Interface: n.Internal.Interface, VRID: h.Internal.VRID, Peer: h.Internal.Peer, Addresses: haInternal(cfg)},
	}
	var ok bool
	if s.External.Source, ok = ownAddr(n.External.Addresses, h.External.Peer); !ok {
		return nil, fmt.Errorf("plan ha: network.external.addresses has no address of the family of the peer %s: add one", h.External.Peer)
	}
	if s.Internal.Source, ok = ownAddr(n.Internal.Addresses, h.Internal.Peer); !ok {
		return nil, fmt.Errorf("plan ha: network.internal.addresses has no address of the family of the peer %s: add one", h.Internal.Peer)
	}
	return s, nil
}

// haInternal is what the internal instance moves: the floating addresses
// and the fastl4 virtuals' SNAT pool addresses, which only the active
// node may answer for.
func haInternal(cfg *config.Config) []netip.Prefix {
	out := append([]netip.Prefix(nil), cfg.HA.Floating()...)
	seen := map[netip.Addr]bool{}
	for _, p := range out {
		seen[p.Addr()] = true
	}
	for _, v := range cfg.Virtuals {
		if v == nil || v.Mode != config.ModeFastL4 {
			continue
		}
		for _, a := range v.SNAT.Addresses {
			if !seen[a] {
				seen[a] = true
				out = append(out, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	return out
}

func hostPrefixes(addrs []netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, len(addrs))
	for i, a := range addrs {
		out[i] = netip.PrefixFrom(a, a.BitLen())
	}
	return out
}

// ownAddr returns this node's first address of peer's family.
func ownAddr(own []netip.Prefix, peer netip.Addr) (netip.Addr, bool) {
	for _, p := range own {
		if p.Addr().Is4() == peer.Is4() {
			return p.Addr(), true
		}
	}
	return netip.Addr{}, false
}
