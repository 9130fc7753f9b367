package netcfg

import "net/netip"

// Spec is the host network the configuration asks for, built by
// internal/plan: the network: section, the virtuals' addresses and the
// resolved pool members.
type Spec struct {
	External, Internal NIC
	// Managed is false when network.manage is false: netcfg only reports.
	Managed bool
	// VIPs are every virtual's address, put on the external NIC.
	VIPs []netip.Addr
	// SNAT are the fastl4 virtuals' SNAT pool addresses, put on the
	// internal NIC.
	SNAT []netip.Addr
	// Members are the pool members' addresses: those on a NIC's own
	// subnet become managed neighbours.
	Members []netip.Addr
	// Sysctls are the settings other planes need (the fast path's),
	// kept with netcfg's own.
	Sysctls []Sysctl
}

// NIC is one of the two interfaces.
type NIC struct {
	Interface string
	Addresses []netip.Prefix
	// Gateway and Gateway6 are the default routes' next hops, on the
	// external NIC only.
	Gateway, Gateway6 netip.Addr
	Routes            []StaticRoute
}

// StaticRoute is a persistent route through a NIC.
type StaticRoute struct {
	To  netip.Prefix
	Via netip.Addr
}
