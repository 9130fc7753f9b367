package peerlink

import (
	"hash"
	"math/bits"
	"net/netip"
	"time"
)

// receive reads datagrams until the socket closes.
func (l *Link) receive() error {
	buf := make([]byte, 65536)
	mac := newMAC(l.cfg.Key)
	sum := make([]byte, 0, macLen)
	for {
		n, from, err := l.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		l.datagram(buf[:n], from, mac, sum)
	}
}

// datagram checks one datagram and dispatches its messages.
func (l *Link) datagram(b []byte, from netip.AddrPort, mac hash.Hash, sum []byte) {
	ok, short := verify(b, mac, sum)
	if short {
		l.reject(RejectMalformed, from)
		return
	}
	if !ok {
		l.reject(RejectMAC, from)
		return
	}
	h, msgs, err := parse(b)
	if err != nil {
		l.reject(RejectMalformed, from)
		return
	}
	l.mu.Lock()
	w := l.windows[h.node]
	if w == nil {
		w = &window{}
		l.windows[h.node] = w
	}
	if !w.accept(h.epoch, h.seq) {
		l.mu.Unlock()
		l.reject(RejectReplay, from)
		return
	}
	if p := l.addPeer(from); p != nil {
		p.node, p.lastRx = h.node, time.Now()
	}
	l.c.rxDgrams++
	l.c.rxBytes += uint64(len(b))
	l.mu.Unlock()
	sent := time.Unix(0, int64(h.sent))
	l.hmu.RLock()
	defer l.hmu.RUnlock()
	var lost uint64
	n := eachMsg(msgs, func(k Kind, body []byte) {
		if fn := l.handlers[k]; fn != nil {
			fn(Message{Kind: k, Body: body, From: from, Node: h.node, Sent: sent})
		} else {
			lost++
		}
	})
	l.mu.Lock()
	l.c.rxMsgs += uint64(n)
	l.c.dropped[DropNoHandler] += lost
	l.mu.Unlock()
}

// reject counts a rejected datagram and logs the 1st, 2nd, 4th, 8th...
func (l *Link) reject(reason string, from netip.AddrPort) {
	l.mu.Lock()
	l.c.rejected[reason]++
	n := l.c.rejected[reason]
	l.mu.Unlock()
	if bits.OnesCount64(n) == 1 {
		l.log.Warn("peer link rejected a datagram", "reason", reason, "from", from, "count", n)
	}
}
