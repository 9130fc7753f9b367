package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/cluster"
	"github.com/edgeproxy/edgeproxy/internal/peerlink"
	"github.com/edgeproxy/edgeproxy/l4"
)

// Second chance between the nodes behind one ECMP route (cluster:).
const (
	// clusterSync bounds how long a starting node waits for its peers'
	// connections before it announces its routes (a peer that is down
	// never answers).
	clusterSync = 2 * time.Second
	// clusterFlush is how long a connection's announcement may wait for
	// a fuller datagram: the router may move a connection a few
	// milliseconds old.
	clusterFlush = time.Millisecond
)

// startCluster joins the peers once the network section has put the
// external address in place: it fetches their connections and installs
// them in the fast path, then lets the routes go out (updateRoutes).
func (d *Daemon) startCluster(ctx context.Context, cfg *config.Config) error {
	cl := cfg.Cluster
	if cl == nil {
		return nil
	}
	link, spec, err := newClusterLink(cfg, d)
	if err != nil {
		return err
	}
	node := cluster.New(spec, link, d.log)
	d.reg.MustRegister(link, node)
	d.spawn("cluster link", link.Run)
	d.spawn("cluster", node.Run)
	began := time.Now()
	n := node.Sync(ctx, clusterSync)
	d.log.Info("cluster: peers' connections fetched", "peers", len(spec.Peers), "answered", n,
		"connections", node.Status().Foreign, "took", time.Since(began).Round(time.Millisecond))
	if f := d.fastPath(); f != nil {
		if err := node.Attach(f.fp); err != nil {
			return fmt.Errorf("install the peers' connections: %w", err)
		}
		flows, err := f.fp.Flows()
		if err != nil {
			return fmt.Errorf("list the fast path's flows: %w", err)
		}
		for _, fl := range flows {
			if fl.Proto == "tcp" {
				node.Opened(cluster.Conn{Client: fl.Client, VIP: fl.VIP})
			}
		}
	}
	d.cluster.Store(node)
	d.updateRoutes()
	return nil
}

// newClusterLink opens the channel to the peers on the external address.
func newClusterLink(cfg *config.Config, d *Daemon) (*peerlink.Link, cluster.Spec, error) {
	cl := cfg.Cluster
	var spec cluster.Spec
	key, err := peerlink.LoadKey(cl.KeyFile)
	if err != nil {
		return nil, spec, err
	}
	nic, err := netlink.LinkByName(cfg.Network.External.Interface)
	if err != nil {
		return nil, spec, fmt.Errorf("read the external NIC's MAC: %w", err)
	}
	port := cl.Port
	if port == 0 {
		port = config.DefaultClusterPort
	}
	self := config.ClusterAddr(cfg)
	for _, p := range cl.Peers {
		spec.Peers = append(spec.Peers, netip.AddrPortFrom(p, port))
	}
	spec.MAC, spec.Idle = nic.Attrs().HardwareAddr, cl.Idle.D()
	link, err := peerlink.New(peerlink.Config{Name: "cluster", Node: self.String(), Listen: netip.AddrPortFrom(self, port),
		Peers: spec.Peers, Key: key, FlushEvery: clusterFlush, Log: d.log})
	if err != nil {
		return nil, spec, fmt.Errorf("open the cluster link: %w", err)
	}
	return link, spec, nil
}

// clusterReady is false while a node with peers has not fetched their
// connections: its routes wait.
func (d *Daemon) clusterReady(cfg *config.Config) bool {
	return cfg == nil || cfg.Cluster == nil || d.cluster.Load() != nil
}

// onFlow tells the peers of the fast path's connections.
func (d *Daemon) onFlow(fc l4.FlowChange) {
	d.onConn(fc.Open, fc.Client, fc.VIP)
}

// onConn tells the peers of a connection that opened or ended here.
func (d *Daemon) onConn(open bool, client, vip netip.AddrPort) {
	n := d.cluster.Load()
	if n == nil {
		return
	}
	c := cluster.Conn{Client: client, VIP: vip}
	if open {
		n.Opened(c)
	} else {
		n.Closed(c)
	}
}

// clusterStatus is second chance for /status (nil without cluster).
func (d *Daemon) clusterStatus() *admin.Cluster {
	n := d.cluster.Load()
	if n == nil {
		return nil
	}
	st := n.Status()
	out := &admin.Cluster{Owned: st.Owned, Foreign: st.Foreign}
	for _, p := range st.Peers {
		out.Peers = append(out.Peers, admin.ClusterPeer{Address: p.Address, MAC: p.MAC, Synced: p.Synced})
	}
	if f := d.fastPath(); f != nil {
		if ps, err := f.fp.PeerStats(); err == nil {
			out.Forwarded, out.SYNLocal, out.FromPeer, out.Held = ps.Forwarded, ps.SYNLocal, ps.FromPeer, ps.Held
		}
	}
	return out
}
