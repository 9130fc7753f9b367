package peerlink

import (
	"context"
	"errors"
	"fmt"

	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// maxPeers bounds the peers a link keeps: the configured ones and those
// it heard from (a valid datagram), to which SendTo may answer.
const maxPeers = 256

// Link is one node's end of the channel.
type Link struct {
	cfg   Config
	descs descs
	log   *slog.Logger
	conn  *net.UDPConn
	epoch uint64
	done  chan struct{}
	wake  chan struct{}

	hmu      sync.RWMutex
	handlers map[Kind]Handler

	mu      sync.Mutex
	seq     uint64
	peers   map[netip.AddrPort]*peer
	order   []*peer
	windows map[string]*window
	tokens  float64
	refill  time.Time
	room    *sync.Cond // signalled when queues drain
	closed  bool
	c       counters
}

type counters struct {
	txDgrams, txBytes, txMsgs uint64
	rxDgrams, rxBytes, rxMsgs uint64
	rejected, dropped         map[string]uint64
}

type peer struct {
	addr   netip.AddrPort
	node   string
	lastRx time.Time
	queue  []queued
	bytes  int
}

type queued struct {
	kind Kind
	body []byte
	at   time.Time
}

// New checks the spec and binds the link's socket; Run serves it.
func New(cfg Config) (*Link, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(cfg.Listen))
	if err != nil {
		return nil, fmt.Errorf("listen peer link %s on %s: %w", cfg.Name, cfg.Listen, err)
	}
	l := &Link{cfg: cfg, descs: newDescs(cfg.Name), log: cfg.Log.With("link", cfg.Name), conn: conn,
		epoch: uint64(time.Now().UnixNano()), done: make(chan struct{}), wake: make(chan struct{}, 1),
		handlers: map[Kind]Handler{}, peers: map[netip.AddrPort]*peer{}, windows: map[string]*window{},
		refill: time.Now(), c: counters{rejected: map[string]uint64{}, dropped: map[string]uint64{}}}
	l.room = sync.NewCond(&l.mu)
	for _, a := range cfg.Peers {
		l.addPeer(a)
	}
	return l, nil
}

func (c *Config) fill() error {
	switch {
	case len(c.Key) < MinKeyLen:
		return fmt.Errorf("peer link %s: key of %d bytes, want at least %d", c.Name, len(c.Key), MinKeyLen)
	case c.Node == "" || len(c.Node) > maxNode:
		return fmt.Errorf("peer link %s: node name %q must have 1 to %d bytes", c.Name, c.Node, maxNode)
	case c.Bandwidth < 0 || c.MTU < 0 || c.FlushEvery < 0:
		return fmt.Errorf("peer link %s: negative bandwidth, MTU or flush interval", c.Name)
	}
	if c.Bandwidth == 0 {
		c.Bandwidth = DefaultBandwidth
	}
	if c.MTU == 0 {
		c.MTU = DefaultMTU
	}
	if c.FlushEvery == 0 {
		c.FlushEvery = DefaultFlushEvery
	}
	if c.MTU < headerMax+msgHeader+macLen+64 || c.MTU > 65000 {
		return fmt.Errorf("peer link %s: MTU %d out of range (%d to 65000)", c.Name, c.MTU, headerMax+msgHeader+macLen+64)
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// Addr is the bound local address.
func (l *Link) Addr() netip.AddrPort { return l.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// MaxBody is the largest body Send accepts on this link.
func (l *Link) MaxBody() int { return l.cfg.MTU - headerMax - msgHeader - macLen }

// Handle sets the handler of a kind (nil removes it); messages of a kind
// without a handler are dropped and counted.
func (l *Link) Handle(k Kind, h Handler) {
	l.hmu.Lock()
	defer l.hmu.Unlock()
	if h == nil {
		delete(l.handlers, k)
		return
	}
	l.handlers[k] = h
}

// Run receives and sends until ctx ends, then closes the socket.
func (l *Link) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- l.receive() }()
	l.sendLoop(ctx)
	l.mu.Lock()
	l.closed = true
	l.room.Broadcast()
	l.mu.Unlock()
	l.conn.Close()
	close(l.done)
	if err := <-errc; err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("receive on peer link %s: %w", l.cfg.Name, err)
	}
	return nil
}

// Send queues a message to every configured peer.
func (l *Link) Send(k Kind, body []byte) error {
	var err error
	for _, a := range l.cfg.Peers {
		err = errors.Join(err, l.SendTo(a, k, body))
	}
	return err
}

// SendTo queues a message to one peer: a configured one or one the link
// heard from. It never blocks: a full queue drops the message
// (ErrQueueFull, counted).
func (l *Link) SendTo(to netip.AddrPort, k Kind, body []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.enqueue(to, k, body)
	if errors.Is(err, ErrQueueFull) {
		l.c.dropped[DropQueueFull]++
	}
	return err
}

// SendToWait is SendTo that waits for room in the peer's queue instead of
// dropping: for bulk transfers paced by the bandwidth budget.
func (l *Link) SendToWait(ctx context.Context, to netip.AddrPort, k Kind, body []byte) error {
	stop := context.AfterFunc(ctx, func() { l.mu.Lock(); l.room.Broadcast(); l.mu.Unlock() })
	defer stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		err := l.enqueue(to, k, body)
		if !errors.Is(err, ErrQueueFull) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		l.room.Wait()
	}
}

func (l *Link) enqueue(to netip.AddrPort, k Kind, body []byte) error {
	if l.closed {
		return ErrClosed
	}
	if len(body) > l.MaxBody() {
		return fmt.Errorf("send %d bytes to %s: %w", len(body), to, ErrTooLarge)
	}
	p := l.peers[to]
	if p == nil {
		return fmt.Errorf("send to %s: %w", to, ErrNoPeer)
	}
	if p.bytes+len(body)+msgHeader > max(l.cfg.Bandwidth, l.cfg.MTU) {
		return ErrQueueFull
	}
	p.queue = append(p.queue, queued{kind: k, body: append([]byte(nil), body...), at: time.Now()})
	p.bytes += len(body) + msgHeader
	if p.bytes >= l.cfg.MTU-headerMax-macLen {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

func (l *Link) addPeer(a netip.AddrPort) *peer {
	if p := l.peers[a]; p != nil {
		return p
	}
	if len(l.peers) >= maxPeers {
		return nil
	}
	p := &peer{addr: a}
	l.peers[a] = p
	l.order = append(l.order, p)
	return p
}
