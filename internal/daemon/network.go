package daemon

import (
	"context"
	"errors"
	"fmt"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/netcfg"
)

// The daemon reaches netcfg through the functions of this file only.

// hasInterface reports whether cfg names a NIC: netcfg opens with the
// first one.
func hasInterface(cfg *config.Config) bool {
	return cfg.Network.External.Interface != "" || cfg.Network.Internal.Interface != ""
}

// applyNetwork opens netcfg when the configuration names its first
// interface, then applies the network section when it is managed.
func (d *Daemon) applyNetwork(c *change) func(context.Context) error {
	return func(context.Context) error {
		if d.host == nil {
			if !hasInterface(c.next) {
				return nil
			}
			if err := d.openNetwork(c); err != nil {
				return err
			}
		}
		if !c.next.Network.Managed() {
			return nil
		}
		_, err := d.host.Apply(c.next)
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
			if c.prev != nil && c.next.Network.Managed() {
				_, err = d.host.Revert()
			}
			return errors.Join(err, d.closeNetwork())
		case c.prev.Network.Managed():
			_, err := d.host.Apply(c.prev)
			return err
		case c.next.Network.Managed():
			_, err := d.host.Revert()
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
	r, err := netcfg.NewReconciler(h, c.next, netcfg.ReconcilerOptions{})
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

// updateReconciler points the running reconciler at the new network
// section (one opened by this change has it already).
func (d *Daemon) updateReconciler(c *change) func(context.Context) error {
	return func(context.Context) error {
		if d.recon == nil || c.openedNetwork {
			return nil
		}
		return d.recon.SetConfig(c.next)
	}
}
