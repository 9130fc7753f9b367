// Package peerlink is a small authenticated message channel between
// edgeproxy nodes over UDP.
//
// A node sends typed messages (a Kind and a body) to one peer (SendTo) or
// to every configured peer (Send); the receiver calls the handler
// registered for the message's kind (Handle). Messages are queued per
// peer and batched into datagrams; a datagram is sent when it is full or
// after FlushEvery, and the send rate is held to Bandwidth bytes/s of UDP
// payload. A message that would overrun a peer's queue (one second of
// bandwidth) is dropped and counted: the link is a datagram channel, not
// a stream, so a user that needs delivery (a full copy of a table, say)
// asks for it again or acknowledges it in its own messages.
//
// Every datagram carries the sender's node name, its epoch (the wall
// time it started, in ns), a sequence number and an HMAC-SHA256 over the
// whole datagram with the shared key. The receiver rejects and counts a
// datagram with a wrong MAC, one it cannot parse, and a replay: a
// sequence number already seen or older than the window of the last
// ReplayWindow numbers, or an epoch older than the sender's current one
// (a node that restarts starts a newer epoch and a fresh sequence).
//
// A Link is a prometheus.Collector: register it on the daemon's registry.
// Its metrics (prefix edgeproxy_peerlink_, constant label link=Name, so
// links of different names coexist): datagrams, messages and bytes sent
// and received, rejected datagrams by reason, dropped messages by
// reason, the age of each peer's last valid datagram and the send lag
// (how long the oldest queued message has waited).
package peerlink

import (
	"errors"
	"log/slog"
	"net/netip"
	"time"
)

// Kind is a message type, chosen by the package using the link; the
// receiver dispatches on it.
type Kind uint16

// Config is a link's plain spec.
type Config struct {
	// Name labels the link's metrics and logs ("mirror").
	Name string
	// Node names this node to its peers; it must differ between nodes
	// sharing a key (the replay window is kept per node name).
	Node string
	// Listen is the local UDP address; port 0 picks one.
	Listen netip.AddrPort
	// Peers are the addresses Send sends to.
	Peers []netip.AddrPort
	// Key is the shared HMAC key, at least MinKeyLen bytes (LoadKey).
	Key []byte
	// Bandwidth is the send budget in bytes/s of UDP payload, over all
	// peers; 0 means DefaultBandwidth.
	Bandwidth int
	// MTU bounds a datagram's UDP payload; 0 means DefaultMTU.
	MTU int
	// FlushEvery is how long a message may wait for a fuller datagram;
	// 0 means DefaultFlushEvery.
	FlushEvery time.Duration
	// Log receives the link's warnings; nil means slog.Default().
	Log *slog.Logger
}

// Defaults and bounds.
const (
	MinKeyLen         = 32
	DefaultBandwidth  = 10 << 20 // 10 MiB/s
	DefaultMTU        = 1400
	DefaultFlushEvery = 10 * time.Millisecond
	ReplayWindow      = 1024
	// MaxBody is the largest message body with the default MTU and a
	// node name of up to 64 bytes.
	MaxBody = DefaultMTU - headerMax - msgHeader - macLen
)

// Errors of Send and SendTo.
var (
	ErrTooLarge  = errors.New("peerlink: message larger than a datagram")
	ErrQueueFull = errors.New("peerlink: send queue full (over the bandwidth budget)")
	ErrNoPeer    = errors.New("peerlink: not a configured peer")
	ErrClosed    = errors.New("peerlink: link closed")
)

// Message is what a handler receives. Body is valid only during the call.
type Message struct {
	Kind Kind
	Body []byte
	// From is the datagram's source address, Node the sender's name.
	From netip.AddrPort
	Node string
	// Sent is the sender's clock when it sent the datagram.
	Sent time.Time
}

// Handler handles the messages of one kind; handlers run one at a time,
// in the order the datagrams arrived, on the link's receiving goroutine.
type Handler func(Message)

// PeerStats is what the link knows of one peer.
type PeerStats struct {
	Addr netip.AddrPort
	Node string // empty until a valid datagram came from it
	// Age is the time since its last valid datagram (-1 if none).
	Age time.Duration
	// Queued is the bytes waiting to be sent to it; Lag how long its
	// oldest queued message has waited.
	Queued int
	Lag    time.Duration
}

// Stats are the link's counters.
type Stats struct {
	TxDatagrams, TxBytes, TxMessages uint64
	RxDatagrams, RxBytes, RxMessages uint64
	// Rejected datagrams by reason: RejectMAC, RejectReplay, RejectMalformed.
	Rejected map[string]uint64
	// Dropped messages by reason: DropQueueFull, DropNoHandler.
	Dropped map[string]uint64
	Peers   []PeerStats
}

// Reasons in Stats and the metrics.
const (
	RejectMAC       = "mac"
	RejectReplay    = "replay"
	RejectMalformed = "malformed"
	DropQueueFull   = "queue_full"
	DropNoHandler   = "no_handler"
)
