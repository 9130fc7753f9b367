package peerlink

import (
	"context"
	"hash"
	"net/netip"
	"time"
)

type datagram struct {
	to netip.AddrPort
	b  []byte
}

// sendLoop sends full datagrams as soon as the budget allows and partial
// ones every FlushEvery.
func (l *Link) sendLoop(ctx context.Context) {
	t := time.NewTicker(l.cfg.FlushEvery)
	defer t.Stop()
	mac := newMAC(l.cfg.Key)
	for {
		all := false
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			all = true
		case <-l.wake:
		}
		for _, d := range l.batch(all, mac) {
			if _, err := l.conn.WriteToUDPAddrPort(d.b, d.to); err != nil {
				l.log.Debug("send on peer link", "to", d.to, "err", err)
			}
		}
	}
}

// batch takes the datagrams to send now off the queues: full ones, and
// partial ones too when all is set, as far as the budget allows.
func (l *Link) batch(all bool, mac hash.Hash) []datagram {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	burst := float64(max(l.cfg.Bandwidth/10, l.cfg.MTU))
	l.tokens = min(burst, l.tokens+now.Sub(l.refill).Seconds()*float64(l.cfg.Bandwidth))
	l.refill = now
	room := l.cfg.MTU - headerMax - macLen
	var out []datagram
	for _, p := range l.order {
		for len(p.queue) > 0 && (all || p.bytes >= room) && l.tokens >= float64(l.cfg.MTU) {
			b := l.build(p, now, room, mac)
			l.tokens -= float64(len(b))
			out = append(out, datagram{to: p.addr, b: b})
		}
	}
	if len(out) > 0 {
		l.room.Broadcast()
	}
	return out
}

// build makes one datagram from the head of a peer's queue.
func (l *Link) build(p *peer, now time.Time, room int, mac hash.Hash) []byte {
	l.seq++
	b := appendHeader(make([]byte, 0, l.cfg.MTU), header{epoch: l.epoch, seq: l.seq, sent: uint64(now.UnixNano()), node: l.cfg.Node})
	n, used := 0, 0
	for _, q := range p.queue {
		if used+msgHeader+len(q.body) > room {
			break
		}
		b = appendMsg(b, q.kind, q.body)
		used += msgHeader + len(q.body)
		n++
	}
	clear(p.queue[:n])
	p.queue = p.queue[n:]
	p.bytes -= used
	l.c.txDgrams++
	l.c.txMsgs += uint64(n)
	b = seal(b, mac)
	l.c.txBytes += uint64(len(b))
	return b
}
