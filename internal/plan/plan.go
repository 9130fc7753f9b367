// Package plan compiles a loaded configuration into the plain specs the
// planes run: every default applied, every pool member resolved once
// and shared by all of them, so that two planes never bind one name to
// two addresses. Each plane's spec is built in its own file (l7.go,
// health.go, l4.go, network.go); a new plane adds its own file and a
// field of Plan.
package plan

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/edgeproxy/edgeproxy/bgp"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/health"
	"github.com/edgeproxy/edgeproxy/internal/member"
	"github.com/edgeproxy/edgeproxy/l4"
	"github.com/edgeproxy/edgeproxy/l7"
	"github.com/edgeproxy/edgeproxy/netcfg"
)

// ErrUnresolved is returned for a member name that neither
// network.hosts nor the resolver knows.
var ErrUnresolved = errors.New("member name not resolved")

// ErrUnknownPool is returned for a site that names no defined pool.
var ErrUnknownPool = errors.New("unknown pool")

// ErrBadValue is returned for a value the planes cannot run.
var ErrBadValue = errors.New("invalid value")

// Resolver turns a member name missing from network.hosts into an
// address; nil: network.hosts only.
type Resolver func(ctx context.Context, name string) (netip.Addr, error)

// Member is a pool member with its resolved address.
type Member struct {
	member.ID
	Name     string // as configured: a name or an address
	Disabled bool
}

// Plan is a compiled configuration.
type Plan struct {
	// Members by pool, in configuration order.
	Members map[string][]Member
	L7      *l7.Spec
	Health  health.Spec
	// L4 is the fast path's spec; nil when the file runs no XDP.
	L4 *l4.Spec
	// Network is the host network's spec (netcfg), the fast path's
	// sysctls included.
	Network *netcfg.Spec
	// BGP is nil without a bgp section.
	BGP *bgp.Spec
}

// Compile resolves every member of cfg once and builds the planes'
// specs from them.
func Compile(ctx context.Context, cfg *config.Config, resolve Resolver) (*Plan, error) {
	members, err := resolveMembers(ctx, cfg, resolve)
	if err != nil {
		return nil, err
	}
	p := &Plan{Members: members}
	if p.L7, err = compileL7(cfg, members); err != nil {
		return nil, err
	}
	p.Health = compileHealth(cfg, members)
	p.L4 = compileL4(cfg, members)
	p.Network = compileNetwork(cfg, members, p.L4)
	p.BGP = compileBGP(cfg)
	return p, nil
}

// resolveMembers resolves each member of every pool; a name listed in
// several pools is resolved once.
func resolveMembers(ctx context.Context, cfg *config.Config, resolve Resolver) (map[string][]Member, error) {
	out := map[string][]Member{}
	byName := map[string]netip.Addr{}
	var errs []error
	for _, pool := range poolNames(cfg.Pools) {
		p := cfg.Pools[pool]
		if p == nil {
			continue
		}
		ms := []Member{}
		for _, m := range p.Members {
			a, ok := byName[m.Address]
			if !ok {
				var err error
				if a, err = resolveOne(ctx, cfg, m, resolve); err != nil {
					errs = append(errs, fmt.Errorf("resolve member %q of pool %q: %w", m.Address, pool, err))
					continue
				}
				byName[m.Address] = a
			}
			ms = append(ms, Member{ID: member.New(pool, a), Name: m.Address, Disabled: m.Disabled})
		}
		out[pool] = ms
	}
	return out, errors.Join(errs...)
}

// resolveOne returns a member's address: a literal, a network.hosts
// entry, else what resolve answers.
func resolveOne(ctx context.Context, cfg *config.Config, m config.Member, resolve Resolver) (netip.Addr, error) {
	if a, ok := cfg.MemberAddr(m); ok {
		return a.Unmap(), nil
	}
	if resolve == nil {
		return netip.Addr{}, fmt.Errorf("%w: add it to network.hosts or write its address", ErrUnresolved)
	}
	a, err := resolve(ctx, m.Address)
	if err != nil {
		return netip.Addr{}, err
	}
	if !a.IsValid() {
		return netip.Addr{}, fmt.Errorf("%w: the resolver gave no address", ErrUnresolved)
	}
	return a.Unmap(), nil
}

func poolNames[V any](pools map[string]V) []string {
	names := make([]string, 0, len(pools))
	for name := range pools {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
