package daemon

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/ha"
	"github.com/edgeproxy/edgeproxy/internal/metric"
	"github.com/edgeproxy/edgeproxy/internal/peerlink"
	"github.com/edgeproxy/edgeproxy/l4"
)

// Messages on the mirror link (peerlink kinds).
const (
	kindRecord  peerlink.Kind = 1 // a live record of the active node (l4.SetMirrorSink)
	kindCopy    peerlink.Kind = 2 // copy id (8 bytes), then a record of a full copy
	kindCopyReq peerlink.Kind = 3 // copy id: send me a full copy
	kindCopyEnd peerlink.Kind = 4 // copy id, then the copy's record count (4 bytes)
)

// Timing of the full copy a node that is not active asks for at start.
const (
	// mirrorPeerWait is how long a starting node waits to hear from the
	// peer before it counts as synced alone (the peer is down).
	mirrorPeerWait = 5 * time.Second
	// mirrorCopyStall is how long a copy may send nothing before it is
	// asked for again (a lost request, a restarted peer).
	mirrorCopyStall = 2 * time.Second
	mirrorTick      = 100 * time.Millisecond
)

// flowMirror streams the fastl4 flows of the active node to the peer and
// installs the peer's on this node while it is not active. The channel
// is a datagram one: live records that are lost are made good by the
// next refresh (a flow with packets is sent again at each GC pass of
// the active node) or by the next copy. A full copy is asked for again
// as a whole when it stalls or arrives short: it is idempotent, rare
// (a node's start) and paced by the link's bandwidth, which makes that
// simpler than acknowledging its datagrams one by one.
type flowMirror struct {
	d    *Daemon
	link *peerlink.Link
	peer netip.AddrPort
	log  *slog.Logger
	ctx  context.Context

	mu       sync.Mutex
	synced   bool
	started  time.Time
	copyID   uint64
	got      uint32
	lastCopy time.Time // last sign of the copy under way
	copying  bool      // sending a copy to the peer
	wired    *l4.FastPath
	active   bool
	counts   map[string]uint64 // records by result

	desc, descFlows, descSynced *prometheus.Desc
}

// startMirror opens the mirror link of cfg.HA.Mirror.
func (d *Daemon) startMirror(cfg *config.Config) error {
	mc := cfg.HA.Mirror
	key, err := peerlink.LoadKey(mc.KeyFile)
	if err != nil {
		return fmt.Errorf("start flow mirroring: %w", err)
	}
	link, err := peerlink.New(peerlink.Config{Name: "mirror", Node: mc.Listen.String(), Listen: mc.Listen,
		Peers: []netip.AddrPort{mc.Peer}, Key: key, Bandwidth: int(mc.Bandwidth), Log: d.log})
	if err != nil {
		return fmt.Errorf("start flow mirroring: %w", err)
	}
	m := &flowMirror{d: d, link: link, peer: mc.Peer, log: d.log.With("component", "mirror"), started: time.Now(),
		counts: map[string]uint64{},
		desc: prometheus.NewDesc(metric.Name("mirror_records_total"),
			"Flow mirroring records, by result: sent, dropped (over the bandwidth budget), installed and removed (from the peer), ignored (arrived while active), invalid.",
			[]string{"result"}, nil),
		descFlows: prometheus.NewDesc(metric.Name("mirror_flows"),
			"Established flows of mirrored fastl4 virtuals in this node's tables at the last GC pass: on the standby, the active node's flows it holds.", nil, nil),
		descSynced: prometheus.NewDesc(metric.Name("mirror_synced"),
			"Whether this node holds a full copy of the peer's flows (1), or is receiving one and does not take the active role (0).", nil, nil)}
	// A node that is active at start keeps its own (pinned) flows.
	m.synced = d.pair.state().Role == string(ha.RoleActive)
	link.Handle(kindRecord, m.onRecord)
	link.Handle(kindCopy, m.onCopy)
	link.Handle(kindCopyReq, m.onCopyReq)
	link.Handle(kindCopyEnd, m.onCopyEnd)
	d.reg.MustRegister(link, m)
	d.mirror = m
	d.spawn("flow mirror", m.run)
	return nil
}

// run serves the link and follows the role and the fast path.
func (m *flowMirror) run(ctx context.Context) error {
	m.mu.Lock()
	m.ctx = ctx
	m.mu.Unlock()
	errc := make(chan error, 1)
	go func() { errc <- m.link.Run(ctx) }()
	t := time.NewTicker(mirrorTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return <-errc
		case err := <-errc:
			return err
		case <-t.C:
			m.wire()
			m.sync()
		}
	}
}

// wire gives the fast path in service the sink and this node's role.
func (m *flowMirror) wire() {
	active := m.d.pair.state().Role == string(ha.RoleActive)
	var fp *l4.FastPath
	if f := m.d.fastPath(); f != nil {
		fp = f.fp
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.active = active
	if active && !m.synced {
		// The sync gate keeps a node from taking the role, never from
		// keeping it: an active node that failed its check for want of
		// the peer's flows would hand the role over and flap (both
		// nodes starting at once, or keepalived electing it before its
		// first check). Its own flows are the ones that count now.
		m.synced = true
		m.log.Info("flow mirroring: active before a full copy arrived; serving with its own flows", "peer", m.peer)
		if fp != nil && fp == m.wired {
			fp.EndMirrorCopy(false)
		}
	}
	if fp == nil {
		m.wired = nil
		return
	}
	if fp != m.wired {
		fp.SetMirrorSink(m.send)
		m.wired = fp
	}
	fp.SetPassive(!active)
}

// sync asks the peer for a full copy until one arrived whole; a peer not
// heard from in the last mirrorPeerWait leaves this node synced alone.
func (m *flowMirror) sync() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.synced {
		return
	}
	// A peer that answers is heard from at least every mirrorCopyStall;
	// one silent for mirrorPeerWait (down, or gone during the copy)
	// must not keep this node from serving.
	heard := false
	for _, p := range m.link.Stats().Peers {
		heard = heard || p.Addr == m.peer && p.Age >= 0 && p.Age < mirrorPeerWait
	}
	now := time.Now()
	switch {
	case !heard && now.Sub(m.started) > mirrorPeerWait:
		m.log.Warn("flow mirroring: the peer is silent; serving without its flows", "peer", m.peer, "waited", mirrorPeerWait)
		m.synced = true
		if m.wired != nil {
			m.wired.EndMirrorCopy(false)
		}
	case m.copyID == 0 || now.Sub(m.lastCopy) > mirrorCopyStall:
		m.copyID, m.got, m.lastCopy = uint64(now.UnixNano()), 0, now
		if m.wired != nil {
			m.wired.BeginMirrorCopy()
		}
		m.link.SendTo(m.peer, kindCopyReq, binary.BigEndian.AppendUint64(nil, m.copyID))
	}
}

// send is the fast path's sink: a live record to the peer.
func (m *flowMirror) send(rec []byte) {
	result := "sent"
	if m.link.Send(kindRecord, rec) != nil {
		result = "dropped"
	}
	m.count(result)
}

func (m *flowMirror) count(result string) {
	m.mu.Lock()
	m.counts[result]++
	m.mu.Unlock()
}

// install applies a record of the peer's unless this node is active.
func (m *flowMirror) install(rec []byte) {
	m.mu.Lock()
	fp, active := m.wired, m.active
	m.mu.Unlock()
	if fp == nil || active {
		m.count("ignored")
		return
	}
	installed, err := fp.InstallMirrored(rec)
	switch {
	case err != nil:
		m.count("invalid")
		m.log.Debug("flow mirroring: record not installed", "err", err)
	case installed:
		m.count("installed")
	default:
		m.count("removed")
	}
}

func (m *flowMirror) onRecord(msg peerlink.Message) { m.install(msg.Body) }

func (m *flowMirror) onCopy(msg peerlink.Message) {
	if len(msg.Body) < 8 {
		m.count("invalid")
		return
	}
	m.mu.Lock()
	ours := binary.BigEndian.Uint64(msg.Body) == m.copyID && !m.synced
	if ours {
		m.got++
		m.lastCopy = time.Now()
	}
	m.mu.Unlock()
	if ours {
		m.install(msg.Body[8:])
	}
}

func (m *flowMirror) onCopyEnd(msg peerlink.Message) {
	if len(msg.Body) != 12 {
		return
	}
	id, n := binary.BigEndian.Uint64(msg.Body), binary.BigEndian.Uint32(msg.Body[8:])
	m.mu.Lock()
	defer m.mu.Unlock()
	if id != m.copyID || m.synced {
		return
	}
	if m.got != n {
		m.log.Info("flow mirroring: the peer's copy arrived short; asking again", "got", m.got, "sent", n)
		m.copyID = 0
		return
	}
	m.synced = true
	pruned := 0
	if m.wired != nil {
		var err error
		if pruned, err = m.wired.EndMirrorCopy(true); err != nil {
			m.log.Warn("flow mirroring: removing the flows the peer no longer has", "err", err)
		}
	}
	m.log.Info("flow mirroring: synced with the peer", "flows", n, "removed", pruned, "took", time.Since(m.started).Round(time.Millisecond))
}

// onCopyReq sends this node's flows to the peer that asked, paced by
// the link's budget; one copy at a time.
func (m *flowMirror) onCopyReq(msg peerlink.Message) {
	if len(msg.Body) != 8 {
		return
	}
	id := append([]byte(nil), msg.Body...)
	m.mu.Lock()
	fp, ctx, busy := m.wired, m.ctx, m.copying || m.ctx == nil
	m.copying = m.copying || !busy
	m.mu.Unlock()
	if busy {
		return
	}
	go func() {
		defer func() { m.mu.Lock(); m.copying = false; m.mu.Unlock() }()
		n := 0
		var err error
		if fp != nil {
			n, err = fp.MirrorCopy(func(rec []byte) error {
				return m.link.SendToWait(ctx, msg.From, kindCopy, append(id[:8:8], rec...))
			})
		}
		if err == nil {
			err = m.link.SendToWait(ctx, msg.From, kindCopyEnd, binary.BigEndian.AppendUint32(id[:8:8], uint32(n)))
		}
		if err != nil {
			m.log.Warn("flow mirroring: full copy to the peer failed", "err", err)
			return
		}
		m.log.Info("flow mirroring: sent a full copy to the peer", "flows", n)
	}()
}

// status is the mirroring part of /status.
func (m *flowMirror) status() *admin.Mirror {
	s := m.link.Stats()
	out := &admin.Mirror{Peer: m.peer.String(), PeerAge: -1}
	for _, p := range s.Peers {
		if p.Addr == m.peer {
			out.PeerAge, out.SendLag = p.Age.Seconds(), p.Lag.Seconds()
			if p.Age < 0 {
				out.PeerAge = -1
			}
		}
	}
	for _, n := range s.Rejected {
		out.Rejected += n
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out.Synced = m.synced
	if m.wired != nil {
		out.Flows = m.wired.MirroredFlows()
	}
	out.Sent, out.Installed, out.Removed = m.counts["sent"], m.counts["installed"], m.counts["removed"]
	return out
}

func (m *flowMirror) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.desc
	ch <- m.descFlows
	ch <- m.descSynced
}

func (m *flowMirror) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range []string{"sent", "dropped", "installed", "removed", "ignored", "invalid"} {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.CounterValue, float64(m.counts[r]), r)
	}
	synced := 0.0
	if m.synced {
		synced = 1
	}
	ch <- prometheus.MustNewConstMetric(m.descSynced, prometheus.GaugeValue, synced)
	if m.wired != nil {
		ch <- prometheus.MustNewConstMetric(m.descFlows, prometheus.GaugeValue, float64(m.wired.MirroredFlows()))
	}
}

// flushLimit bounds how long a planned switchover waits for the mirror
// to send the flows opened since the fast path last read its events.
const flushLimit = time.Second

// flush hands the flows opened since the fast path's last read of its
// events to the link and waits until the link has sent everything
// queued for the peer, for at most flushLimit: a planned switchover
// calls it before giving up the role, so that the peer holds every
// connection opened before it was asked (the reader otherwise reads the
// events only every 0.2 s).
func (m *flowMirror) flush(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, flushLimit)
	defer cancel()
	m.mu.Lock()
	fp := m.wired
	m.mu.Unlock()
	if fp == nil {
		return nil
	}
	if err := fp.FlushEvents(ctx); err != nil {
		return fmt.Errorf("send new flows to the peer: %w", err)
	}
	for {
		queued := 0
		for _, p := range m.link.Stats().Peers {
			if p.Addr == m.peer {
				queued = p.Queued
			}
		}
		if queued == 0 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("send new flows to the peer: %d bytes still queued for %s after %s", queued, m.peer, flushLimit)
		}
		sleepCtx(ctx, 5*time.Millisecond)
	}
}
