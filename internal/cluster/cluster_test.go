package cluster

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/peerlink"
)

var testKey = []byte("0123456789abcdef0123456789abcdef-cluster")

// owners is the table as the program reads it: tuple -> owner's MAC.
type owners struct {
	mu    sync.Mutex
	by    map[Conn]string
	peers int
}

func (o *owners) SetPeers(m []net.HardwareAddr) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.peers = len(m)
	return nil
}

func (o *owners) SetOwner(c, v netip.AddrPort, mac net.HardwareAddr) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.by[Conn{c, v}] = mac.String()
	return nil
}

func (o *owners) DeleteOwner(c, v netip.AddrPort) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.by, Conn{c, v})
	return nil
}

func (o *owners) get(c Conn) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.by[c]
}

// node runs a node on a loopback link until the test ends.
func node(t *testing.T, name string, mac net.HardwareAddr, peers ...netip.AddrPort) (*Node, *owners, netip.AddrPort) {
	t.Helper()
	l, err := peerlink.New(peerlink.Config{Name: "cluster", Node: name, Listen: netip.MustParseAddrPort("127.0.0.1:0"),
		Peers: peers, Key: testKey, FlushEvery: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	n := New(Spec{MAC: mac, Peers: peers, Idle: time.Hour}, l, slog.Default())
	o := &owners{by: map[Conn]string{}}
	if err := n.Attach(o); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return n, o, l.Addr()
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatalf("after 3s: %s", what)
}

// A node's connections reach its peer as they open and end; a starting
// node fetches a peer's connections; a node never takes its own
// connection for a peer's.
func TestOwnership(t *testing.T) {
	macA, macB := net.HardwareAddr{2, 0, 0, 0, 0, 0xa}, net.HardwareAddr{2, 0, 0, 0, 0, 0xb}
	b, ob, addrB := node(t, "b", macB)
	a, oa, _ := node(t, "a", macA, addrB)
	c1 := Conn{netip.MustParseAddrPort("198.18.0.1:40001"), netip.MustParseAddrPort("198.18.100.10:443")}
	c2 := Conn{netip.MustParseAddrPort("[2001:db8::1]:40002"), netip.MustParseAddrPort("[2001:db8::10]:80")}

	b.Opened(c2) // b has no configured peer: only a Sync learns it
	if got := a.Sync(context.Background(), 3*time.Second); got != 1 {
		t.Fatalf("sync: %d peers answered, want 1", got)
	}
	if oa.get(c2) != macB.String() {
		t.Errorf("after sync, a sends %s to %q, want %s", c2, oa.get(c2), macB)
	}
	a.Opened(c1)
	eventually(t, "b learns a's new connection", func() bool { return ob.get(c1) == macA.String() })
	ob.mu.Lock()
	if ob.peers != 1 {
		t.Errorf("b knows %d peer MACs, want 1 (a's)", ob.peers)
	}
	ob.mu.Unlock()
	a.Closed(c1)
	eventually(t, "b forgets a's ended connection", func() bool { return ob.get(c1) == "" })

	// A connection that opens here is this node's, whatever a peer said.
	a.Opened(c2)
	if oa.get(c2) != "" {
		t.Errorf("a opened %s itself but still sends it to %s", c2, oa.get(c2))
	}
	if st := a.Status(); st.Owned != 1 || st.Foreign != 0 || len(st.Peers) != 1 || !st.Peers[0].Synced {
		t.Errorf("a's status %+v", st)
	}
}
