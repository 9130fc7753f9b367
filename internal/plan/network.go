package plan

import (
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/member"
	"github.com/edgeproxy/edgeproxy/l4"
	"github.com/edgeproxy/edgeproxy/netcfg"
)

// Network is netcfg's spec with the members that network.hosts and
// literal addresses give: what brings the host network up before a name
// can be asked of the DMZ resolver (which may be reachable only through
// it). Compile's Plan.Network is the same with every member resolved.
func Network(cfg *config.Config) *netcfg.Spec {
	members := map[string][]Member{}
	for name, p := range cfg.Pools {
		if p == nil {
			continue
		}
		for _, m := range p.Members {
			if a, ok := cfg.MemberAddr(m); ok {
				members[name] = append(members[name], Member{Name: m.Address, ID: member.New(name, a)})
			}
		}
	}
	return compileNetwork(cfg, members, compileL4(cfg, nil))
}

// compileNetwork builds netcfg's spec; the fast path's sysctls come from
// its spec (nil: no fast path).
func compileNetwork(cfg *config.Config, members map[string][]Member, fast *l4.Spec) *netcfg.Spec {
	n := cfg.Network
	spec := &netcfg.Spec{External: netcfgNIC(n.External), Internal: netcfgNIC(n.Internal), Managed: n.Managed()}
	for _, v := range cfg.Virtuals {
		if v == nil || cfg.HA != nil {
			continue // in an HA pair keepalived holds the VIPs and SNAT addresses
		}
		spec.VIPs = append(spec.VIPs, v.Listen.Addr())
		if v.Mode == config.ModeFastL4 {
			spec.SNAT = append(spec.SNAT, v.SNAT.Addresses...)
		}
	}
	for _, pool := range poolNames(members) {
		for _, m := range members[pool] {
			spec.Members = append(spec.Members, m.Addr)
		}
	}
	if fast != nil {
		for _, s := range fast.Sysctls() {
			spec.Sysctls = append(spec.Sysctls, netcfg.Sysctl{Key: s.Key, Value: s.Value, Why: s.Why, Optional: s.Optional, Merge: s.Merge})
		}
	}
	return spec
}

func netcfgNIC(nic config.NIC) netcfg.NIC {
	out := netcfg.NIC{Interface: nic.Interface, Addresses: nic.Addresses, Gateway: nic.Gateway, Gateway6: nic.Gateway6}
	for _, r := range nic.Routes {
		out.Routes = append(out.Routes, netcfg.StaticRoute{To: r.To, Via: r.Via})
	}
	return out
}
