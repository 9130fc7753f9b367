package plan

import (
	"slices"

	"github.com/edgeproxy/edgeproxy/bgp"
	"github.com/edgeproxy/edgeproxy/config"
)

// compileBGP builds the speaker's spec: one host route per VIP, with the
// virtuals on it, the pools they send to and their attributes (nil when
// the file has no bgp section).
func compileBGP(cfg *config.Config) *bgp.Spec {
	b := cfg.BGP
	if b == nil {
		return nil
	}
	spec := &bgp.Spec{LocalAS: b.LocalAS, RouterID: b.RouterID}
	for _, n := range b.Neighbors {
		hold := n.HoldTime
		if hold == 0 {
			hold = config.DefaultHoldTime
		}
		spec.Neighbors = append(spec.Neighbors, bgp.Neighbor{Address: n.Address, AS: n.AS, Password: n.Password, BFD: n.BFD, HoldTime: hold.D()})
	}
	byVIP := map[string]int{}
	for _, v := range cfg.Virtuals {
		if v == nil || !v.Listen.IsValid() || v.Listen.Addr().IsUnspecified() {
			continue
		}
		p := bgp.HostRoute(v.Listen.Addr())
		i, ok := byVIP[p.String()]
		if !ok {
			i = len(spec.Routes)
			byVIP[p.String()] = i
			spec.Routes = append(spec.Routes, bgp.Route{Prefix: p})
		}
		r := &spec.Routes[i]
		r.Virtuals = append(r.Virtuals, bgp.Virtual{Name: v.Name, Pools: virtualPools(v)})
		for _, c := range v.Announce.Communities {
			if x, err := config.ParseCommunity(c); err == nil && !slices.Contains(r.Communities, x) {
				r.Communities = append(r.Communities, x)
			}
		}
		r.LocalPref = max(r.LocalPref, v.Announce.LocalPref)
	}
	return spec
}

// virtualPools lists the pools a virtual forwards to.
func virtualPools(v *config.Virtual) []string {
	if v.Mode == config.ModeFastL4 {
		return []string{v.Pool}
	}
	var pools []string
	for _, s := range v.Sites {
		if s != nil && s.Pool != "" && !slices.Contains(pools, s.Pool) {
			pools = append(pools, s.Pool)
		}
	}
	return pools
}
