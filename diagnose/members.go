package diagnose

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
)

// ErrNotInHosts: a backend name is neither in network.hosts nor
// resolvable through network.resolver.
var ErrNotInHosts = errors.New("name not in network.hosts and no network.resolver")

// resolveMember returns a member's address and where it came from: the
// literal address, network.hosts, or network.resolver (the proxy never
// asks the internal DNS, seed 002's hosts file).
func (e *Env) resolveMember(ctx context.Context, m string) (netip.Addr, string, error) {
	if a, err := netip.ParseAddr(m); err == nil {
		return a.Unmap(), "address", nil
	}
	name := strings.TrimSuffix(strings.ToLower(m), ".")
	for h, a := range e.Config.Network.Hosts {
		if strings.TrimSuffix(strings.ToLower(h), ".") == name {
			return a.Unmap(), "network.hosts", nil
		}
	}
	srv := e.Config.Network.Resolver
	if srv == "" {
		return netip.Addr{}, "", fmt.Errorf("resolve %s: %w", m, ErrNotInHosts)
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout())
	defer cancel()
	addrs, err := e.resolver(srv).LookupNetIP(ctx, "ip", name)
	if err != nil {
		return netip.Addr{}, "", fmt.Errorf("resolve %s through network.resolver %s: %w", m, srv, err)
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) }) // IPv4 first
	return addrs[0].Unmap(), "network.resolver " + srv, nil
}

// target is one way traffic reaches a pool: a fastl4 virtual or a site.
type target struct {
	Via       string // "virtual sfb-web-l4" or "virtual sfb-web site webext.example.com"
	Virtual   *config.Virtual
	Site      *config.Site // nil for fastl4
	Pool      string
	Port      uint16
	ListenTLS bool // the client side is TLS (port 443 / https)
	// BackendTLS: the member side is TLS (fastl4 on a TLS port carries the
	// client's TLS through; https sites with backend_tls re-encrypt).
	BackendTLS bool
}

// targets lists every virtual and site that forwards to a pool.
func targets(c *config.Config) []target {
	var out []target
	for _, v := range c.Virtuals {
		switch v.Mode {
		case config.ModeFastL4:
			tlsSide := v.Listen.Port() != 80 && v.Port != 8080 && v.Port != 80
			out = append(out, target{Via: "virtual " + v.Name, Virtual: v, Pool: v.Pool, Port: v.Port,
				ListenTLS: tlsSide, BackendTLS: tlsSide})
		case config.ModeHTTPS, config.ModeHTTP:
			for _, s := range v.Sites {
				if s.Redirect != "" || s.Pool == "" {
					continue
				}
				out = append(out, target{Via: fmt.Sprintf("virtual %s site %s", v.Name, siteName(s)), Virtual: v, Site: s,
					Pool: s.Pool, Port: s.Port, ListenTLS: v.Mode == config.ModeHTTPS, BackendTLS: s.BackendTLS != nil})
			}
		}
	}
	return out
}

func siteName(s *config.Site) string {
	if len(s.Hosts) == 0 {
		return "(no hosts)"
	}
	return s.Hosts[0]
}

// skypePools returns the pools that are Skype / Lync front ends: used by
// a site with the skype profile, of kind skype-fe, or monitored on the
// External Web Site's ports.
func skypePools(c *config.Config) map[string]bool {
	out := map[string]bool{}
	for _, v := range c.Virtuals {
		for _, s := range v.Sites {
			if s.Profile == config.ProfileSkype && s.Pool != "" {
				out[s.Pool] = true
			}
		}
	}
	for name, p := range c.Pools {
		if p != nil && (p.Kind == config.PoolKindSkypeFE || p.Monitor.Port == 4443 || p.Monitor.Port == 8080) {
			out[name] = true
		}
	}
	return out
}

// sourceFor returns the local address the proxy sends from to reach dst:
// the internal NIC's (the L7 proxy's source and fastl4's automap SNAT).
func (e *Env) sourceFor(_ target, dst netip.Addr) netip.Addr {
	return e.internalAddr(dst)
}

// targetNeeds is what a finding about traffic through a virtual depends
// on: its VIP, its own forwarding and every member of its pools, by
// address and on the forwarded port.
func (e *Env) targetNeeds(ctx context.Context, v *config.Virtual) []string {
	out := []string{"virtual " + v.Name, "vip " + v.Listen.Addr().Unmap().String()}
	for _, t := range targets(e.Config) {
		if t.Virtual != v || e.Config.Pools[t.Pool] == nil {
			continue
		}
		for _, m := range e.Config.Pools[t.Pool].Members {
			if a, _, err := e.resolveMember(ctx, m.Address); err == nil {
				out = append(out, "member "+a.String(), "member "+netip.AddrPortFrom(a, t.Port).String())
			}
		}
	}
	return out
}
