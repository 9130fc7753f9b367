package cluster

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/peerlink"
)

// learn records the MAC of the peer at from (under mu).
func (n *Node) learn(from netip.AddrPort, mac net.HardwareAddr) {
	if old, ok := n.macs[from]; ok && bytes.Equal(old, mac) {
		return
	}
	n.macs[from] = mac
	if n.table != nil {
		if err := n.table.SetPeers(n.peerMACs()); err != nil {
			n.log.Error("set the peers' MACs", "err", err)
		}
	}
}

func (n *Node) peerMACs() []net.HardwareAddr {
	out := make([]net.HardwareAddr, 0, len(n.macs))
	for _, m := range n.macs {
		out = append(out, m)
	}
	return out
}

func (n *Node) deleteOwner(c Conn) {
	if n.table != nil {
		if err := n.table.DeleteOwner(c.Client, c.VIP); err != nil {
			n.log.Error("forget a peer's connection", "client", c.Client, "err", err)
		}
	}
}

func (n *Node) handleOwn(m peerlink.Message) {
	mac, conns, err := parseBody(m.Body)
	if err != nil {
		n.log.Warn("peer's connections", "peer", m.From, "err", err)
		return
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	n.learn(m.From, mac)
	for _, c := range conns {
		if _, mine := n.owned[c]; mine {
			continue
		}
		n.foreign[c] = foreign{mac: mac, seen: now}
		if n.table != nil {
			if err := n.table.SetOwner(c.Client, c.VIP, mac); err != nil {
				n.log.Error("record a peer's connection", "client", c.Client, "err", err)
			}
		}
	}
}

func (n *Node) handleGone(m peerlink.Message) {
	mac, conns, err := parseBody(m.Body)
	if err != nil {
		n.log.Warn("peer's ended connections", "peer", m.From, "err", err)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range conns {
		if f, ok := n.foreign[c]; ok && bytes.Equal(f.mac, mac) {
			delete(n.foreign, c)
			n.deleteOwner(c)
		}
	}
}

// handleAsk answers a starting peer with this node's connections, then
// kindDone; off the receive goroutine, as the link paces the answer.
func (n *Node) handleAsk(m peerlink.Message) {
	if len(m.Body) != 6 {
		return
	}
	mac := net.HardwareAddr(slices.Clone(m.Body))
	n.mu.Lock()
	n.learn(m.From, mac)
	n.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.sendTable(ctx, m.From)
		if err := n.link.SendToWait(ctx, m.From, kindDone, n.spec.MAC); err != nil {
			n.log.Warn("answer a peer's request for connections", "peer", m.From, "err", err)
		}
	}()
}

func (n *Node) handleDone(m peerlink.Message) {
	if len(m.Body) != 6 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.learn(m.From, net.HardwareAddr(slices.Clone(m.Body)))
	n.answered[m.From] = true
	close(n.changed)
	n.changed = make(chan struct{})
}
