package health

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/edgeproxy/edgeproxy/config"
)

// ErrUnresolved is returned for a member name that neither network.hosts
// nor the resolver knows.
var ErrUnresolved = errors.New("member name not resolved")

// ResolveFunc resolves a member name that is not in network.hosts.
type ResolveFunc func(ctx context.Context, name string) (netip.Addr, error)

// Targets lists the members of every pool of c, resolved through
// network.hosts (or resolve, when given, for names missing there), with
// the monitors keyed by pool: the arguments of Checker.Update.
func Targets(ctx context.Context, c *config.Config, resolve ResolveFunc) ([]Target, map[string]config.Monitor, error) {
	names := make([]string, 0, len(c.Pools))
	for name := range c.Pools {
		names = append(names, name)
	}
	slices.Sort(names)
	var targets []Target
	monitors := make(map[string]config.Monitor, len(c.Pools))
	for _, name := range names {
		p := c.Pools[name]
		if p == nil {
			continue
		}
		monitors[name] = p.Monitor
		for _, m := range p.Members {
			addr, ok := c.MemberAddr(m)
			if !ok {
				if resolve == nil {
					return nil, nil, fmt.Errorf("resolve member %q of pool %q: %w: add it to network.hosts", m.Address, name, ErrUnresolved)
				}
				a, err := resolve(ctx, m.Address)
				if err != nil {
					return nil, nil, fmt.Errorf("resolve member %q of pool %q: %w", m.Address, name, err)
				}
				addr = a
			}
			targets = append(targets, Target{Pool: name, Member: m.Address, Addr: addr.Unmap(), Disabled: m.Disabled})
		}
	}
	return targets, monitors, nil
}
