package peerlink

import (
	"maps"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeproxy/edgeproxy/internal/metric"
)

// Stats returns the link's counters and its peers.
func (l *Link) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	s := Stats{TxDatagrams: l.c.txDgrams, TxBytes: l.c.txBytes, TxMessages: l.c.txMsgs,
		RxDatagrams: l.c.rxDgrams, RxBytes: l.c.rxBytes, RxMessages: l.c.rxMsgs,
		Rejected: maps.Clone(l.c.rejected), Dropped: maps.Clone(l.c.dropped)}
	for _, p := range l.order {
		ps := PeerStats{Addr: p.addr, Node: p.node, Age: -1, Queued: p.bytes}
		if !p.lastRx.IsZero() {
			ps.Age = now.Sub(p.lastRx)
		}
		if len(p.queue) > 0 {
			ps.Lag = now.Sub(p.queue[0].at)
		}
		s.Peers = append(s.Peers, ps)
	}
	return s
}

// descs are a link's metric descriptions; the link's name is a constant
// label, so links of different names register side by side.
type descs struct {
	dgrams, bytes, msgs, rejected, dropped, age, lag *prometheus.Desc
}

func newDescs(link string) descs {
	c := prometheus.Labels{"link": link}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(metric.Name("peerlink_"+name), help, labels, c)
	}
	return descs{
		dgrams: d("datagrams_total", "Datagrams sent and accepted on the peer link, by direction (tx, rx).", "direction"),
		bytes:  d("bytes_total", "UDP payload bytes sent and accepted on the peer link, by direction (tx, rx).", "direction"),
		msgs:   d("messages_total", "Messages sent and received on the peer link, by direction (tx, rx).", "direction"),
		rejected: d("rejected_total",
			"Datagrams the peer link rejected, by reason: mac (wrong key or altered), replay (old or repeated sequence), malformed.", "reason"),
		dropped: d("dropped_total",
			"Messages the peer link dropped, by reason: queue_full (over the bandwidth budget), no_handler.", "reason"),
		age: d("peer_age_seconds", "Time since the peer's last valid datagram (absent until one arrived).", "peer", "node"),
		lag: d("send_lag_seconds", "How long the oldest message queued for the peer has waited (0: queue empty).", "peer"),
	}
}

// Describe implements prometheus.Collector.
func (l *Link) Describe(ch chan<- *prometheus.Desc) {
	d := l.descs
	for _, d := range []*prometheus.Desc{d.dgrams, d.bytes, d.msgs, d.rejected, d.dropped, d.age, d.lag} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (l *Link) Collect(ch chan<- prometheus.Metric) {
	s, d := l.Stats(), l.descs
	c := func(desc *prometheus.Desc, v uint64, label string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), label)
	}
	c(d.dgrams, s.TxDatagrams, "tx")
	c(d.dgrams, s.RxDatagrams, "rx")
	c(d.bytes, s.TxBytes, "tx")
	c(d.bytes, s.RxBytes, "rx")
	c(d.msgs, s.TxMessages, "tx")
	c(d.msgs, s.RxMessages, "rx")
	for _, r := range []string{RejectMAC, RejectReplay, RejectMalformed} {
		c(d.rejected, s.Rejected[r], r)
	}
	for _, r := range []string{DropQueueFull, DropNoHandler} {
		c(d.dropped, s.Dropped[r], r)
	}
	for _, p := range s.Peers {
		if p.Age >= 0 {
			ch <- prometheus.MustNewConstMetric(d.age, prometheus.GaugeValue, p.Age.Seconds(), p.Addr.String(), p.Node)
		}
		ch <- prometheus.MustNewConstMetric(d.lag, prometheus.GaugeValue, p.Lag.Seconds(), p.Addr.String())
	}
}
