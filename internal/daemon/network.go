package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/plan"
	"github.com/edgeproxy/edgeproxy/netcfg"
)

// The daemon reaches netcfg through the functions of this file only.

// hasInterface reports whether cfg names a NIC: netcfg opens with the
// first one.
func hasInterface(cfg *config.Config) bool {
	return cfg.Network.External.Interface != "" || cfg.Network.Internal.Interface != ""
}

// netcfgStep opens netcfg when the configuration names its first
// interface, then applies the network section (with the members known
// without DNS: the DMZ resolver may be reachable only through it).
func (d *Daemon) netcfgStep(c *change) func(context.Context) error {
	return func(context.Context) error {
		if d.host == nil {
			if !hasInterface(c.next) {
				return nil
			}
			if err := d.openNetwork(c); err != nil {
				return err
			}
		}
		err := applyNetwork(d.host, plan.Network(c.next))
		if err != nil && c.openedNetwork {
			d.closeNetwork()
		}
		return err
	}
}

// restoreNetwork puts the host back as the previous configuration has
// it. At start there is none: the host stays as it is.
func (d *Daemon) restoreNetwork(c *change) func(context.Context) error {
	return func(context.Context) error {
		switch {
		case d.host == nil:
			return nil
		case c.openedNetwork:
			var err error
			if c.prev != nil {
				_, err = d.host.Revert()
			}
			return errors.Join(err, d.closeNetwork())
		case c.prev.Network.Managed():
			return applyNetwork(d.host, c.prevPlan.Network)
		case c.next.Network.Managed():
			_, err := d.host.Revert()
			if d.recon != nil && c.prevPlan != nil {
				// The reconciler keeps the previous state again.
				err = errors.Join(err, d.recon.SetSpec(c.prevPlan.Network))
			}
			return err
		}
		return nil
	}
}

func (d *Daemon) openNetwork(c *change) error {
	h, err := netcfg.Open(netcfg.Options{StatePath: d.opts.NetcfgState, Logger: d.log})
	if err != nil {
		return fmt.Errorf("open host network: %w", err)
	}
	r, err := netcfg.NewReconciler(h, plan.Network(c.next), netcfg.ReconcilerOptions{})
	if err == nil {
		err = d.reg.Register(r)
	}
	if err != nil {
		h.Close()
		return fmt.Errorf("start network reconciler: %w", err)
	}
	d.host, d.recon = h, r
	c.openedNetwork = true
	c.opened = append(c.opened, component{"netcfg", r.Run})
	return nil
}

func (d *Daemon) closeNetwork() error {
	d.reg.Unregister(d.recon)
	err := d.host.Close()
	d.host, d.recon = nil, nil
	return err
}

// updateReconciler points the reconciler at the compiled network spec,
// which has every resolved member (the one it opened with may not).
func (d *Daemon) updateReconciler(c *change) func(context.Context) error {
	return func(context.Context) error {
		if d.recon == nil {
			return nil
		}
		return d.recon.SetSpec(c.nextPlan.Network)
	}
}

// applyNetwork gives netcfg its spec: all of it when the file manages the
// host, else only the sysctls the planes need (netcfg reports the rest).
func applyNetwork(h *netcfg.Host, spec *netcfg.Spec) error {
	var err error
	if spec.Managed {
		_, err = h.Apply(spec)
	} else if _, err = h.ApplyRequired(spec); errors.Is(err, netcfg.ErrNoNetwork) {
		err = nil // nothing to manage, nothing required
	}
	return err
}
