package netcfg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// ErrUnresolved: a backend name resolves to nothing.
var ErrUnresolved = errors.New("backend name does not resolve")

// Resolver resolves backend names the way the DMZ host must: from
// network.hosts first, then, when network.resolver is set, from that DNS
// server alone. The host's DNS configuration (the internal DNS, in the
// seeds' setups) is never asked.
type Resolver struct {
	hosts  map[string]netip.Addr
	server string
	dns    *net.Resolver
	// Timeout bounds one DNS lookup (default 3s).
	Timeout time.Duration
}

// NewResolver returns the Resolver of network.hosts and network.resolver
// (an address with an optional port; "" for none).
func NewResolver(hosts map[string]netip.Addr, server string) (*Resolver, error) {
	r := &Resolver{hosts: make(map[string]netip.Addr, len(hosts)), Timeout: 3 * time.Second}
	for name, a := range hosts {
		if !a.IsValid() {
			return nil, fmt.Errorf("%w: network.hosts[%s] has no address: write it as %s: 10.10.0.11", ErrBadNetwork, name, name)
		}
		r.hosts[canonical(name)] = a.Unmap()
	}
	if server == "" {
		return r, nil
	}
	server, err := dnsServer(server)
	if err != nil {
		return nil, err
	}
	r.server = server
	r.dns = &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		},
	}
	return r, nil
}

// dnsServer checks network.resolver: an address with an optional port.
func dnsServer(s string) (string, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return "", fmt.Errorf("%w: network.resolver %q is not an address and port: write it as 10.20.0.53:53 (an address, not a name)", ErrBadNetwork, s)
	}
	return ap.String(), nil
}

func canonical(name string) string { return strings.TrimSuffix(strings.ToLower(name), ".") }

// Resolve returns the address of a backend: an address is returned as it
// is, a name from network.hosts, then from the DMZ resolver.
func (r *Resolver) Resolve(ctx context.Context, name string) (netip.Addr, error) {
	as, err := r.ResolveAll(ctx, name)
	if err != nil {
		return netip.Addr{}, err
	}
	return as[0], nil
}

// ResolveAll is Resolve with every address the DMZ resolver returns.
func (r *Resolver) ResolveAll(ctx context.Context, name string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(name); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	if a, ok := r.hosts[canonical(name)]; ok {
		return []netip.Addr{a}, nil
	}
	if r.dns == nil {
		return nil, fmt.Errorf("resolve %s: %w: it is not in network.hosts and no network.resolver is set: add \"%s: <address>\" to network.hosts", name, ErrUnresolved, name)
	}
	if name == "" || strings.ContainsAny(name, " /:") {
		return nil, fmt.Errorf("resolve %q: %w: not a host name", name, ErrUnresolved)
	}
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Timeout)
		defer cancel()
	}
	// The trailing dot keeps the host's search domains out of the query.
	as, err := r.dns.LookupNetIP(ctx, "ip", canonical(name)+".")
	if err == nil && len(as) == 0 {
		err = errors.New("no addresses")
	}
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w: not in network.hosts, and the DMZ resolver %s answered: %v: add \"%s: <address>\" to network.hosts or the name to that DNS server", name, ErrUnresolved, r.server, err, name)
	}
	for i := range as {
		as[i] = as[i].Unmap()
	}
	return as, nil
}
