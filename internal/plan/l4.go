package plan

import (
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/portlist"
	"github.com/edgeproxy/edgeproxy/l4"
)

// compileL4 builds the fast path's spec: nil when the file runs no XDP
// (config.NeedsXDP).
func compileL4(cfg *config.Config, members map[string][]Member) *l4.Spec {
	if !cfg.NeedsXDP() {
		return nil
	}
	n, fp := cfg.Network, cfg.FastPath
	spec := &l4.Spec{
		Options: l4.Options{
			PinPath: fp.PinPath, MaxFlows: fp.MaxFlows, GCInterval: fp.GCInterval.D(),
			SNATPorts: portlist.Range{First: fp.SNATPorts.First, Last: fp.SNATPorts.Last},
		},
		Pools:   map[string][]l4.Member{},
		Host:    l4Host(cfg),
		LogRate: cfg.Log.FastL4.Rate,
	}
	spec.ExtIf, spec.XDPMode = nicXDP(n.External)
	spec.IntIf, spec.IntXDPMode = nicXDP(n.Internal)
	for _, v := range cfg.Virtuals {
		if v == nil || v.Mode != config.ModeFastL4 {
			continue
		}
		spec.Virtuals = append(spec.Virtuals, l4Virtual(cfg, v))
		if _, done := spec.Pools[v.Pool]; done {
			continue
		}
		ms := []l4.Member{}
		for _, m := range members[v.Pool] {
			ms = append(ms, l4.Member{Name: m.Name, Addr: m.Addr, Up: true, Disabled: m.Disabled})
		}
		spec.Pools[v.Pool] = ms
	}
	spec.Tables = l4.TablesFor(spec.Virtuals)
	return spec
}

// nicXDP is a NIC's interface and attach mode; no interface when its
// xdp_mode is off.
func nicXDP(nic config.NIC) (string, l4.XDPMode) {
	switch nic.XDPMode {
	case config.XDPOff:
		return "", ""
	case config.XDPGeneric:
		return nic.Interface, l4.XDPGeneric
	}
	return nic.Interface, l4.XDPNative
}

func l4Virtual(cfg *config.Config, v *config.Virtual) l4.Virtual {
	out := l4.Virtual{
		Name: v.Name, Listen: v.Listen, Proto: l4.TCP, Pool: v.Pool, Port: v.Port,
		SNAT: cfg.SNATAddresses(v), Automap: v.SNAT.Automap,
		IdleTimeout: v.IdleTimeout.D(), HandshakeTimeout: v.HandshakeTimeout.D(), CloseTimeout: v.CloseTimeout.D(),
		ResetOnTimeout: v.ResetsOnTimeout(), LooseInit: v.LooseInit, LooseClose: v.LooseClose,
		MSSOverride: v.MSSOverride, Log: v.Log,
		Mirror: cfg.HA != nil && cfg.HA.Mirror != nil && v.Mirrors(),
	}
	if v.Proto == config.ProtoUDP {
		out.Proto = l4.UDP
	}
	return out
}

// l4Host is the host's addressing as the fast path's martian filter
// needs it.
func l4Host(cfg *config.Config) l4.Host {
	var h l4.Host
	n := cfg.Network
	h.Addresses = append(append(h.Addresses, n.External.Addresses...), n.Internal.Addresses...)
	h.Internal = append(h.Internal, n.Internal.Addresses...)
	for _, r := range n.Internal.Routes {
		h.Internal = append(h.Internal, r.To)
	}
	for _, v := range cfg.Virtuals {
		if v != nil && v.Listen.IsValid() {
			h.VIPs = append(h.VIPs, v.Listen.Addr())
		}
	}
	return h
}
