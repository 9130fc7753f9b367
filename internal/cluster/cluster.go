// Package cluster tells the nodes that announce the same VIPs behind one
// ECMP route which TCP connections each owns, so that a connection the
// router moves to another node (its next hops changed: a node drained,
// died or came back) is sent back to its owner by the XDP program
// (second chance, bpf/peers.h) instead of being reset there.
//
// A node announces each connection it accepts (L7) or opens (fastl4) at
// once, and its end; every Idle/3 it announces all of them again, and a
// peer forgets an entry not heard of for Idle. A starting node asks its
// peers for theirs (Sync) before it announces its routes, so that the
// connections the router moves to it go back to their owners. The
// messages travel on a peerlink.Link (authenticated, replay-protected
// UDP); they are datagrams, and the periodic announcement repairs a lost
// one.
package cluster

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/peerlink"
)

// DefaultIdle is how long a peer's connection is kept without being
// announced again.
const DefaultIdle = 60 * time.Second

// Table is where the peers' connections go: the XDP program's owners
// map (l4.FastPath).
type Table interface {
	SetPeers(macs []net.HardwareAddr) error
	SetOwner(client, vip netip.AddrPort, mac net.HardwareAddr) error
	DeleteOwner(client, vip netip.AddrPort) error
}

// Spec is a node's plain spec.
type Spec struct {
	// MAC is this node's on the external segment, where its peers send
	// its connections.
	MAC net.HardwareAddr
	// Peers are the other nodes' link addresses.
	Peers []netip.AddrPort
	// Idle bounds how long a peer's connection is kept unannounced
	// (DefaultIdle when 0).
	Idle time.Duration
}

// Node is one node's view of the cluster's connections.
type Node struct {
	spec Spec
	link *peerlink.Link
	log  *slog.Logger

	mu       sync.Mutex
	table    Table
	owned    map[Conn]struct{}
	foreign  map[Conn]foreign
	macs     map[netip.AddrPort]net.HardwareAddr // peers' MACs by link address
	answered map[netip.AddrPort]bool             // peers that sent their table
	changed  chan struct{}                       // closed and renewed on an answer
}

// foreign is a peer's connection.
type foreign struct {
	mac  net.HardwareAddr
	seen time.Time
}

// New makes the node and takes link's message kinds; run the link and
// Run.
func New(spec Spec, link *peerlink.Link, log *slog.Logger) *Node {
	if spec.Idle <= 0 {
		spec.Idle = DefaultIdle
	}
	n := &Node{spec: spec, link: link, log: log.With("component", "cluster"), owned: map[Conn]struct{}{},
		foreign: map[Conn]foreign{}, macs: map[netip.AddrPort]net.HardwareAddr{}, answered: map[netip.AddrPort]bool{},
		changed: make(chan struct{})}
	link.Handle(kindOwn, n.handleOwn)
	link.Handle(kindGone, n.handleGone)
	link.Handle(kindAsk, n.handleAsk)
	link.Handle(kindDone, n.handleDone)
	return n
}

// Opened records a connection of this node and tells the peers at once.
func (n *Node) Opened(c Conn) {
	n.mu.Lock()
	n.owned[c] = struct{}{}
	if _, ok := n.foreign[c]; ok {
		delete(n.foreign, c)
		n.deleteOwner(c)
	}
	n.mu.Unlock()
	n.send(kindOwn, c)
}

// Closed records the end of a connection of this node.
func (n *Node) Closed(c Conn) {
	n.mu.Lock()
	_, ok := n.owned[c]
	delete(n.owned, c)
	n.mu.Unlock()
	if ok {
		n.send(kindGone, c)
	}
}

func (n *Node) send(k peerlink.Kind, c Conn) {
	if err := n.link.Send(k, appendConn(slices.Clone(n.spec.MAC), c)); err != nil {
		n.log.Debug("tell the peers of a connection", "client", c.Client, "err", err)
	}
}

// Attach installs the peers' connections known so far into t, and the
// later ones as they come.
func (n *Node) Attach(t Table) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.table = t
	if err := t.SetPeers(n.peerMACs()); err != nil {
		return err
	}
	for c, f := range n.foreign {
		if err := t.SetOwner(c.Client, c.VIP, f.mac); err != nil {
			return err
		}
	}
	return nil
}

// Sync asks every peer for its connections and waits until all have
// answered or timeout passed; it returns how many answered.
func (n *Node) Sync(ctx context.Context, timeout time.Duration) int {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, p := range n.spec.Peers {
		if err := n.link.SendTo(p, kindAsk, n.spec.MAC); err != nil {
			n.log.Warn("ask a peer for its connections", "peer", p, "err", err)
		}
	}
	for {
		n.mu.Lock()
		got, ch := len(n.answered), n.changed
		n.mu.Unlock()
		if got >= len(n.spec.Peers) {
			return got
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return got
		}
	}
}

// Run announces this node's connections again and forgets the peers'
// stale ones every Idle/3, until ctx ends.
func (n *Node) Run(ctx context.Context) error {
	t := time.NewTicker(n.spec.Idle / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n.sweep(time.Now())
		for _, p := range n.spec.Peers {
			n.sendTable(ctx, p)
		}
	}
}

// sweep forgets the peers' connections not announced for Idle.
func (n *Node) sweep(now time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for c, f := range n.foreign {
		if now.Sub(f.seen) > n.spec.Idle {
			delete(n.foreign, c)
			n.deleteOwner(c)
		}
	}
}

// sendTable sends this node's connections to peer, paced by the link.
func (n *Node) sendTable(ctx context.Context, peer netip.AddrPort) {
	n.mu.Lock()
	conns := make([]Conn, 0, len(n.owned))
	for c := range n.owned {
		conns = append(conns, c)
	}
	n.mu.Unlock()
	for _, b := range bodies(n.spec.MAC, conns, n.link.MaxBody()) {
		if err := n.link.SendToWait(ctx, peer, kindOwn, b); err != nil {
			n.log.Debug("send connections to a peer", "peer", peer, "err", err)
			return
		}
	}
}
