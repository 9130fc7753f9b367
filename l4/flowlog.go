package l4

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// DefaultLogRate is the connection log's default cap, lines per second.
const DefaultLogRate = 1000

// eventPoll is how often the flow events ring is read when the program
// has not woken the reader up: the delay of an open line at most.
const eventPoll = 200 * time.Millisecond

// Why a flow ended, in its close record (the termination field).
const (
	EndFIN       = "fin"
	EndRST       = "rst"
	EndIdle      = "idle_timeout"
	EndHandshake = "handshake_timeout"
	EndKilled    = "killed"
	EndDrained   = "drained"
)

var endCodes = map[string]uint8{
	EndFIN:       uint8(bpf.FastL4FlowEndFLOW_END_FIN),
	EndRST:       uint8(bpf.FastL4FlowEndFLOW_END_RST),
	EndIdle:      uint8(bpf.FastL4FlowEndFLOW_END_IDLE),
	EndHandshake: uint8(bpf.FastL4FlowEndFLOW_END_HANDSHAKE),
	EndKilled:    uint8(bpf.FastL4FlowEndFLOW_END_KILLED),
	EndDrained:   uint8(bpf.FastL4FlowEndFLOW_END_DRAINED),
}

var endNames = func() map[uint8]string {
	m := map[uint8]string{}
	for k, v := range endCodes {
		m[v] = k
	}
	return m
}()

const (
	eventOpen   = uint8(bpf.FastL4FlowEventKindFLOW_EVENT_OPEN)
	eventClose  = uint8(bpf.FastL4FlowEventKindFLOW_EVENT_CLOSE)
	svcLog      = uint32(bpf.FastL4SvcFlagsSVC_LOG)
	svcAnnounce = uint32(bpf.FastL4SvcFlagsSVC_ANNOUNCE)
)

// flowLog writes the connection log: the program's open events (read
// from the flow_events ring) and the close events of the flows the
// control plane removes, at most rate lines a second (a token bucket
// holding one second of lines); the rest are counted.
type flowLog struct {
	log *slog.Logger // nil: nowhere

	mu     sync.Mutex
	rate   float64
	tokens float64
	last   time.Time

	dropped atomic.Uint64 // by the rate limit
}

func (l *flowLog) setRate(n int) {
	if n <= 0 {
		n = DefaultLogRate
	}
	l.mu.Lock()
	l.rate = float64(n)
	l.tokens = min(l.tokens, l.rate)
	l.mu.Unlock()
}

// allow takes a token for one line, or counts the line dropped.
func (l *flowLog) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.tokens = min(l.rate, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	} else {
		l.tokens = l.rate
	}
	l.last = now
	if l.tokens < 1 {
		l.dropped.Add(1)
		return false
	}
	l.tokens--
	return true
}

// write logs one event of the virtual named virtual.
func (l *flowLog) write(ev *bpf.FastL4FlowEvent, virtual string) {
	if l.log == nil || !l.log.Enabled(context.Background(), slog.LevelInfo) {
		return
	}
	wall := time.Now()
	if !l.allow(wall) {
		return
	}
	if now := monoNow(); now > ev.TsNs {
		wall = wall.Add(-time.Duration(now - ev.TsNs))
	}
	c, s := ev.Client, ev.Server
	proto := "tcp"
	if c.Proto == unix.IPPROTO_UDP {
		proto = "udp"
	}
	msg := "open"
	attrs := make([]slog.Attr, 0, 14)
	attrs = append(attrs,
		slog.String("virtual", virtual),
		slog.String("proto", proto),
		slog.String("client", addrPort(c.Saddr, c.Sport, c.Family).String()),
		slog.String("vip", addrPort(c.Daddr, c.Dport, c.Family).String()),
		slog.String("snat", addrPort(s.Daddr, s.Dport, s.Family).String()),
		slog.String("upstream", addrPort(s.Saddr, s.Sport, s.Family).String()),
	)
	if ev.Kind == eventClose {
		msg = "close"
		var dur time.Duration
		if ev.TsNs > ev.CreatedNs {
			dur = time.Duration(ev.TsNs - ev.CreatedNs)
		}
		attrs = append(attrs,
			slog.Uint64("bytes_in", ev.Bytes[dirClient]),
			slog.Uint64("bytes_out", ev.Bytes[dirServer]),
			slog.Uint64("packets_in", ev.Packets[dirClient]),
			slog.Uint64("packets_out", ev.Packets[dirServer]),
			slog.Float64("duration_ms", ms(dur)),
			slog.String("termination", endNames[ev.End]),
		)
	}
	r := slog.NewRecord(wall, slog.LevelInfo, msg, 0)
	r.AddAttrs(attrs...)
	_ = l.log.Handler().Handle(context.Background(), r)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// closeEvent is the close record of a pair removed at now, for end.
func closeEvent(p *pair, end string, now uint64) bpf.FastL4FlowEvent {
	ck, sk := p.keys()
	ev := bpf.FastL4FlowEvent{TsNs: now, Client: ck, Server: sk, Kind: eventClose, End: endCodes[end]}
	for _, h := range []*half{p.c, p.s} {
		if h == nil {
			continue
		}
		ev.Vid, ev.CreatedNs = uint32(h.val.Vid), h.val.CreatedNs
		ev.Bytes[h.val.Dir&1] = h.val.Bytes
		ev.Packets[h.val.Dir&1] = uint64(h.val.Packets)
	}
	return ev
}

// endOf is why a pair reaped in state st ended.
func endOf(st string) string {
	switch st {
	case StateReset:
		return EndRST
	case StateClosing, StateFinWait:
		return EndFIN
	case StateHandshake:
		return EndHandshake
	}
	return EndIdle
}

// logClosed writes the close records of the established pairs removed
// (half-open ones never opened) of virtuals that log: for end, or ""
// for the end their state tells (the GC).
func (f *FastPath) logClosed(gone []reapedFlow, end string) {
	now := monoNow()
	for _, r := range gone {
		if r.half || r.k.flags&(svcLog|svcAnnounce) == 0 {
			continue
		}
		e := end
		if e == "" {
			e = endOf(r.state)
		}
		ev := closeEvent(r.p, e, now)
		f.report(&ev, r.k.name, r.k.flags)
	}
}

// report writes an event of the virtual named virtual, with flags, to
// the connection log when it logs, and to Options.OnFlow.
func (f *FastPath) report(ev *bpf.FastL4FlowEvent, virtual string, flags uint32) {
	if flags&svcLog != 0 {
		f.flowLog.write(ev, virtual)
	}
	c := ev.Client
	if f.opts.OnFlow != nil && c.Proto == unix.IPPROTO_TCP {
		f.opts.OnFlow(FlowChange{Open: ev.Kind == eventOpen,
			Client: addrPort(c.Saddr, c.Sport, c.Family), VIP: addrPort(c.Daddr, c.Dport, c.Family)})
	}
}

// readEvents writes the program's flow events to the connection log and
// hands those of mirrored virtuals to the mirror sink, until ctx is done.
func (f *FastPath) readEvents(ctx context.Context) error {
	rd, err := ringbuf.NewReader(f.objs.FlowEvents)
	if err != nil {
		return fmt.Errorf("open flow events ring: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { rd.Close() })
	defer stop()
	defer rd.Close()
	f.evFlush.attach(rd)
	var pending []chan error // FlushEvents waiters, released at an empty ring
	var rec ringbuf.Record
	for {
		pending = append(pending, f.evFlush.take()...)
		// The program wakes the reader only once the ring fills up
		// (bpf/events.h): poll it meanwhile.
		rd.SetDeadline(time.Now().Add(eventPoll))
		if err := rd.ReadInto(&rec); err != nil {
			switch {
			case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
				release(pending, nil)
				pending = nil
				continue
			case errors.Is(err, ringbuf.ErrClosed):
				f.evFlush.detach(pending, ErrClosed)
				return nil
			}
			f.evFlush.detach(pending, err)
			return fmt.Errorf("read flow events ring: %w", err)
		}
		var ev bpf.FastL4FlowEvent
		if _, err := binary.Decode(rec.RawSample, binary.NativeEndian, &ev); err != nil {
			continue
		}
		var k knobs
		if ev.Vid < maxVirtuals {
			k = f.virtualKnobs(int(ev.Vid))
		}
		f.report(&ev, k.name, k.flags)
		if sink := f.mirrorSink(); sink != nil && k.flags&svcMirror != 0 {
			f.mirrorEvent(&ev, sink)
		}
	}
}
