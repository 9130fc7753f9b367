package peerlink

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var (
	loop    = netip.MustParseAddrPort("127.0.0.1:0")
	testKey = []byte("0123456789abcdef0123456789abcdef-test")
)

// start runs a link until the test ends.
func start(t *testing.T, cfg Config) *Link {
	t.Helper()
	if cfg.Key == nil {
		cfg.Key = testKey
	}
	if cfg.Listen == (netip.AddrPort{}) {
		cfg.Listen = loop
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return l
}

// inbox collects the bodies of one kind.
type inbox struct {
	mu   sync.Mutex
	msgs []Message
}

func (b *inbox) handle(m Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	m.Body = bytes.Clone(m.Body)
	b.msgs = append(b.msgs, m)
}

func (b *inbox) wait(t *testing.T, n int) []Message {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		got := append([]Message(nil), b.msgs...)
		b.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) != n {
				t.Fatalf("got %d messages, want %d", len(got), n)
			}
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLoopbackBatchedBothWays(t *testing.T) {
	a := start(t, Config{Name: "t", Node: "a"})
	b := start(t, Config{Name: "t", Node: "b", Peers: []netip.AddrPort{a.Addr()}})
	var atA, atB inbox
	a.Handle(1, atA.handle)
	b.Handle(2, atB.handle)
	for i := range 100 {
		if err := b.Send(1, []byte{byte(i), 'x', 'y'}); err != nil {
			t.Fatal(err)
		}
	}
	got := atA.wait(t, 100)
	for i, m := range got {
		if m.Kind != 1 || m.Node != "b" || m.From != b.Addr() || !bytes.Equal(m.Body, []byte{byte(i), 'x', 'y'}) {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	if s := b.Stats(); s.TxDatagrams > 10 || s.TxMessages != 100 {
		t.Errorf("100 small messages took %d datagrams (%d messages), want them batched", s.TxDatagrams, s.TxMessages)
	}
	// a answers the peer it heard from.
	if err := a.SendTo(b.Addr(), 2, []byte("pong")); err != nil {
		t.Fatal(err)
	}
	if m := atB.wait(t, 1)[0]; string(m.Body) != "pong" || m.Node != "a" {
		t.Errorf("answer: %+v", m)
	}
	ps := a.Stats().Peers
	if len(ps) != 1 || ps[0].Node != "b" || ps[0].Age < 0 || ps[0].Age > 5*time.Second {
		t.Errorf("a's peers: %+v", ps)
	}
	if err := a.SendTo(netip.MustParseAddrPort("127.0.0.1:9"), 1, nil); !errors.Is(err, ErrNoPeer) {
		t.Errorf("send to a stranger: %v, want ErrNoPeer", err)
	}
	if err := a.SendTo(b.Addr(), 1, make([]byte, a.MaxBody()+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized body: %v, want ErrTooLarge", err)
	}
}

// tap is a UDP socket standing in for a peer: it records what it gets.
func tap(t *testing.T) (*net.UDPConn, func() []byte) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loop))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, func() []byte {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 65536)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read a datagram: %v", err)
		}
		return buf[:n]
	}
}

func TestForgedReplayedMalformedRejectedAndCounted(t *testing.T) {
	a := start(t, Config{Name: "t", Node: "a"})
	var got inbox
	a.Handle(1, got.handle)
	conn, next := tap(t)
	peerAddr := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	b := start(t, Config{Name: "t", Node: "b", Peers: []netip.AddrPort{peerAddr}})
	forger := start(t, Config{Name: "t", Node: "b", Key: []byte(strings.Repeat("k", 40)), Peers: []netip.AddrPort{a.Addr()}})

	var caught [][]byte
	for _, body := range []string{"one", "two"} {
		b.Send(1, []byte(body))
		caught = append(caught, next())
	}
	resend := func(d []byte) {
		if _, err := conn.WriteToUDPAddrPort(d, a.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	resend(caught[1])
	got.wait(t, 1)    // "two" is accepted
	resend(caught[1]) // repeated
	resend(caught[0]) // older, inside the window, never seen: accepted
	got.wait(t, 2)
	resend(caught[0]) // repeated
	forger.Send(1, []byte("forged"))
	altered := bytes.Clone(caught[1])
	altered[len(altered)-macLen-1] ^= 1
	resend(altered)
	resend([]byte("EPL1 garbage"))
	want := map[string]uint64{RejectReplay: 2, RejectMAC: 2, RejectMalformed: 1}
	deadline := time.Now().Add(5 * time.Second)
	for s := a.Stats(); !equalCounts(s.Rejected, want); s = a.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("rejected %v, want %v", s.Rejected, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m := got.wait(t, 2); string(m[0].Body) != "two" || string(m[1].Body) != "one" {
		t.Errorf("delivered %q %q, want two one", m[0].Body, m[1].Body)
	}
}

func equalCounts(got, want map[string]uint64) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func TestReplayWindow(t *testing.T) {
	var w window
	steps := []struct {
		epoch, seq uint64
		ok         bool
	}{
		{5, 10, true}, {5, 10, false}, {5, 9, true}, {5, 3000, true}, {5, 3000 - ReplayWindow, false},
		{5, 3000 - ReplayWindow + 1, true}, {5, 2999, true}, {5, 2999, false},
		{4, 9000, false}, // an older epoch: a node's earlier life
		{6, 1, true}, {6, 1, false}, {5, 3001, false},
	}
	for i, s := range steps {
		if ok := w.accept(s.epoch, s.seq); ok != s.ok {
			t.Fatalf("step %d: accept(%d, %d) = %v, want %v", i, s.epoch, s.seq, ok, s.ok)
		}
	}
}

func TestBandwidthBudget(t *testing.T) {
	const bw = 40_000
	a := start(t, Config{Name: "t", Node: "a"})
	var n inbox
	a.Handle(1, n.handle)
	b := start(t, Config{Name: "t", Node: "b", Peers: []netip.AddrPort{a.Addr()}, Bandwidth: bw})
	body := make([]byte, 1000)
	begin := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		for range 120 {
			if err := b.SendToWait(ctx, a.Addr(), 1, body); err != nil {
				return
			}
		}
	}()
	for range 15 {
		time.Sleep(100 * time.Millisecond)
		sent, elapsed := b.Stats().TxBytes, time.Since(begin).Seconds()
		if limit := bw*elapsed + float64(max(bw/10, DefaultMTU)); float64(sent) > limit {
			t.Fatalf("%d bytes sent in %.2f s, over the budget's %.0f", sent, elapsed, limit)
		}
	}
	if err := b.SendTo(a.Addr(), 1, make([]byte, 1000)); err == nil {
		// the queue may have room; fill it past one second of budget
		for i := 0; err == nil && i < 100; i++ {
			err = b.SendTo(a.Addr(), 1, body)
		}
		if !errors.Is(err, ErrQueueFull) {
			t.Fatalf("queue past the budget: %v, want ErrQueueFull", err)
		}
	}
	if d := b.Stats().Dropped[DropQueueFull]; d != 1 {
		t.Errorf("dropped %d, want 1", d)
	}
}

func TestLoadKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret := strings.Repeat("s", 40)
	if k, err := LoadKey(write("good", secret+"\n", 0o600)); err != nil || string(k) != secret {
		t.Errorf("good key: %q, %v", k, err)
	}
	for name, c := range map[string]struct {
		s    string
		mode os.FileMode
		want string
	}{
		"short":    {"abc\n", 0o600, "want at least 32"},
		"readable": {secret, 0o644, "chmod 600"},
	} {
		_, err := LoadKey(write(name, c.s, c.mode))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: %v, want an error with %q and without the key", name, err, c.want)
		}
	}
}

func TestMetricsTwoLinksOneRegistry(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	a := start(t, Config{Name: "mirror", Node: "a"})
	b := start(t, Config{Name: "ecmp", Node: "a"})
	reg.MustRegister(a, b)
	conn, _ := tap(t)
	conn.WriteToUDPAddrPort([]byte("junk"), a.Addr())
	deadline := time.Now().Add(5 * time.Second)
	for a.Stats().Rejected[RejectMalformed] == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	want := `
# HELP edgeproxy_peerlink_rejected_total Datagrams the peer link rejected, by reason: mac (wrong key or altered), replay (old or repeated sequence), malformed.
# TYPE edgeproxy_peerlink_rejected_total counter
edgeproxy_peerlink_rejected_total{link="ecmp",reason="mac"} 0
edgeproxy_peerlink_rejected_total{link="ecmp",reason="malformed"} 0
edgeproxy_peerlink_rejected_total{link="ecmp",reason="replay"} 0
edgeproxy_peerlink_rejected_total{link="mirror",reason="mac"} 0
edgeproxy_peerlink_rejected_total{link="mirror",reason="malformed"} 1
edgeproxy_peerlink_rejected_total{link="mirror",reason="replay"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "edgeproxy_peerlink_rejected_total"); err != nil {
		t.Error(err)
	}
}
