package lab

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
)

// NetworkOptions shape the description of the proxy host's network that
// Lab.Network and Lab.NetworkYAML return.
type NetworkOptions struct {
	// Hosts is the hosts table: backend names and their addresses
	// (MemberHosts names the members). Empty: no hosts table.
	Hosts map[string]netip.Addr
	// Unmanaged sets manage: false, so that edgeproxy checks the host's
	// network without changing it.
	Unmanaged bool
	// NoGateway6 leaves out the external NIC's IPv6 default gateway.
	NoGateway6 bool
	// IntExtra are more addresses of the internal NIC, after the lab's.
	IntExtra []netip.Prefix
}

// MemberHosts returns a hosts table naming the IPv4 members in order:
// names[i] resolves to Members4[i]. Extra names are ignored.
func (l *Lab) MemberHosts(names ...string) map[string]netip.Addr {
	h := make(map[string]netip.Addr, len(names))
	for i, n := range names[:min(len(names), len(l.Members4))] {
		h[n] = l.Members4[i]
	}
	return h
}

func (l *Lab) extPrefixes() []netip.Prefix {
	return []netip.Prefix{netip.PrefixFrom(l.ExtAddr4, 24), netip.PrefixFrom(l.ExtAddr6, 64)}
}

func (l *Lab) intPrefixes() []netip.Prefix {
	return []netip.Prefix{netip.PrefixFrom(l.IntAddr4, 24), netip.PrefixFrom(l.IntAddr6, 64)}
}

// Network returns the lab's proxy host as edgeproxy's configuration
// describes it: ext0 and int0 with their addresses, the default route
// through the client side, the members' subnets through the internal
// next hop, and the hosts table.
func (l *Lab) Network(opts NetworkOptions) config.Network {
	n := config.Network{
		External: config.NIC{Interface: ExtIf, Addresses: l.extPrefixes(), Gateway: l.ClientAddr4},
		Internal: config.NIC{Interface: IntIf, Addresses: append(l.intPrefixes(), opts.IntExtra...), Routes: []config.Route{
			{To: l.MemberNet4, Via: l.RouterAddr4},
			{To: l.MemberNet6, Via: l.RouterAddr6},
		}},
	}
	if !opts.NoGateway6 {
		n.External.Gateway6 = l.ClientAddr6
	}
	if len(opts.Hosts) > 0 {
		n.Hosts = maps.Clone(opts.Hosts)
	}
	if opts.Unmanaged {
		n.Manage = new(bool)
	}
	return n
}

// NetworkYAML returns Network(opts) as the network section of a
// configuration file ("network:" and its lines, each ending in a
// newline), with comments for the reader. Hosts are in name order.
func (l *Lab) NetworkYAML(opts NetworkOptions) string {
	n := l.Network(opts)
	var y yamlLines
	line := y.line
	list := func(ps []netip.Prefix) string {
		s := make([]string, len(ps))
		for i, p := range ps {
			s[i] = p.String()
		}
		return "[" + strings.Join(s, ", ") + "]"
	}
	line(0, "network:", "")
	if n.Manage != nil {
		line(1, fmt.Sprintf("manage: %t", *n.Manage), "only check the host's network, never change it")
	}
	line(1, "external:", "")
	line(2, "interface: "+n.External.Interface, "")
	line(2, "addresses: "+list(n.External.Addresses), "")
	line(2, "gateway: "+n.External.Gateway.String(), "default route: on the external NIC only")
	if n.External.Gateway6.IsValid() {
		line(2, "gateway6: "+n.External.Gateway6.String(), "")
	}
	line(1, "internal:", "")
	line(2, "interface: "+n.Internal.Interface, "")
	line(2, "addresses: "+list(n.Internal.Addresses), "")
	line(2, "routes:", "static routes to the pool; no default gateway here")
	for _, r := range n.Internal.Routes {
		line(3, fmt.Sprintf("- {to: %s, via: %s}", r.To, r.Via), "")
	}
	if len(n.Hosts) > 0 {
		line(1, "hosts:", "backend names, resolved without the internal DNS")
		for _, name := range slices.Sorted(maps.Keys(n.Hosts)) {
			line(2, fmt.Sprintf("%s: %s", name, n.Hosts[name]), "")
		}
	}
	return y.b.String()
}
