package bgp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// The scale-out lab: a client, a BIRD 2 router installing the VIP's
// multipath route into its kernel with L4 hashing, and proxy nodes,
// each on its own link to the router, announcing the same VIP.
//
//	client 198.18.0.1 -- 198.18.0.254 router  198.18.1N.1 -- 198.18.1N.2 node N (VIP 198.18.100.10 on lo)
const (
	routerAS = 65000
	nodeAS   = 65100
	vipPort  = 8080
)

var vip = netip.MustParseAddr("198.18.100.10")

type scaleLab struct {
	t      *testing.T
	client *lab.NS
	router *lab.NS
	nodes  []*labNode
	bird   *lab.Bird
	dir    string
}

type labNode struct {
	name string
	ns   *lab.NS
	addr netip.Addr // on the link to the router
	peer netip.Addr // the router's end
	cmd  *exec.Cmd
	in   io.WriteCloser
}

func newScaleLab(t *testing.T, n int) *scaleLab {
	testnet.RequireRoot(t, "bird", "birdc", "sysctl")
	l := &scaleLab{t: t, dir: t.TempDir()}
	id := fmt.Sprintf("epbgp-%d", os.Getpid()%100000)
	l.client = newNS(t, id+"-c")
	l.router = newNS(t, id+"-r")
	l.veth(l.client, "c0", "rc", "198.18.0.1/24", "198.18.0.254/24")
	l.client.Run(t, "ip", "route", "add", "default", "via", "198.18.0.254")
	l.router.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1")
	for i := 1; i <= n; i++ {
		nd := &labNode{name: fmt.Sprintf("node%d", i), ns: newNS(t, fmt.Sprintf("%s-n%d", id, i)),
			addr: netip.AddrFrom4([4]byte{198, 18, byte(10 + i), 2}), peer: netip.AddrFrom4([4]byte{198, 18, byte(10 + i), 1})}
		l.veth(nd.ns, "n0", fmt.Sprintf("r%d", i), nd.addr.String()+"/24", nd.peer.String()+"/24")
		nd.ns.Run(t, "ip", "route", "add", "default", "via", nd.peer.String())
		nd.ns.Run(t, "ip", "addr", "add", vip.String()+"/32", "dev", "lo")
		l.nodes = append(l.nodes, nd)
	}
	l.startBird()
	return l
}

func newNS(t *testing.T, name string) *lab.NS {
	ns, err := lab.NewNS(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Close)
	return ns
}

// veth links ns (interface in, address inAddr) to the router (out, outAddr).
func (l *scaleLab) veth(ns *lab.NS, in, out, inAddr, outAddr string) {
	l.router.Run(l.t, "ip", "link", "add", out, "type", "veth", "peer", "name", in, "netns", ns.Name)
	l.router.Run(l.t, "ip", "addr", "add", outAddr, "dev", out)
	l.router.Run(l.t, "ip", "link", "set", out, "up")
	ns.Run(l.t, "ip", "addr", "add", inAddr, "dev", in)
	ns.Run(l.t, "ip", "link", "set", in, "up")
}

func (l *scaleLab) startBird() {
	conf := fmt.Sprintf(`router id 198.18.0.254;
protocol device { scan time 1; }
protocol kernel { ipv4 { export all; import none; }; merge paths on; }
protocol bfd { interface "r*" { min rx interval 300 ms; min tx interval 300 ms; multiplier 3; }; }
template bgp node { local as %d; ipv4 { import all; export none; }; hold time 3; connect retry time 1; error wait time 1, 2; bfd on; }
`, routerAS)
	for i, nd := range l.nodes {
		conf += fmt.Sprintf("protocol bgp node%d from node { neighbor %s as %d; }\n", i+1, nd.addr, nodeAS)
	}
	var err error
	if l.bird, err = lab.StartBird(l.router, l.dir, conf); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(l.bird.Close)
}

// start runs node i as a process in its namespace.
func (l *scaleLab) start(nd *labNode) {
	spec := nodeSpec{Name: nd.name, Listen: netip.AddrPortFrom(vip, vipPort).String(), Spec: Spec{
		LocalAS: nodeAS, RouterID: nd.addr,
		Neighbors: []Neighbor{{Address: nd.peer, AS: routerAS, BFD: true, HoldTime: 3 * time.Second}},
		Routes:    []Route{{Prefix: HostRoute(vip), Communities: []uint32{nodeAS<<16 | 100}, Virtuals: []Virtual{{Name: "web", Pools: []string{"web"}}}}},
	}}
	js, _ := json.Marshal(spec)
	exe, err := os.Executable()
	if err != nil {
		l.t.Fatal(err)
	}
	nd.cmd = nd.ns.Command(context.Background(), exe, "-test.run=^$")
	nd.cmd.Env = append(os.Environ(), nodeEnv+"="+string(js))
	nd.cmd.Stderr = os.Stderr
	if nd.in, err = nd.cmd.StdinPipe(); err != nil {
		l.t.Fatal(err)
	}
	if err := nd.cmd.Start(); err != nil {
		l.t.Fatalf("start %s: %v", nd.name, err)
	}
	cmd := nd.cmd
	l.t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

func (nd *labNode) send(t *testing.T, line string) {
	if _, err := fmt.Fprintln(nd.in, line); err != nil {
		t.Fatalf("%s: %v", nd.name, err)
	}
}

// nextHops returns the router's next hops for the VIP.
func (l *scaleLab) nextHops() []string { return lab.NextHops(l.router, vip.String()) }

// waitHops waits (at most 30 s) for the router to hold n next hops and
// returns how long it took.
func (l *scaleLab) waitHops(n int) time.Duration {
	l.t.Helper()
	start := time.Now()
	for time.Since(start) < 30*time.Second {
		if len(l.nextHops()) == n {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.t.Fatalf("the router holds next hops %v for %s after 30s, want %d\n%s", l.nextHops(), vip, n, l.bird.Show("protocols", "all"))
	return 0
}

// request opens a connection to the VIP and returns the node's name.
func (l *scaleLab) request(ctx context.Context) (string, error) {
	c, err := l.client.DialContext(ctx, "tcp", netip.AddrPortFrom(vip, vipPort).String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	name, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(name), err
}

// spread makes n short connections and counts them by node.
func (l *scaleLab) spread(n int) (map[string]int, int) {
	seen, failed := map[string]int{}, 0
	for range n {
		name, err := l.request(context.Background())
		if err != nil {
			failed++
			continue
		}
		seen[name]++
	}
	return seen, failed
}

// holdOpen opens n long-lived connections and returns them with the node
// each reached.
func (l *scaleLab) holdOpen(n int) ([]net.Conn, []string) {
	var conns []net.Conn
	var names []string
	for range n {
		c, err := l.client.Dial("tcp", netip.AddrPortFrom(vip, vipPort).String())
		if err != nil {
			l.t.Fatalf("open long-lived connection: %v", err)
		}
		l.t.Cleanup(func() { _ = c.Close() })
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		name, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			l.t.Fatalf("read long-lived connection: %v", err)
		}
		conns = append(conns, c)
		names = append(names, strings.TrimSpace(name))
	}
	return conns, names
}

// alive reports whether a long-lived connection still echoes.
func alive(c net.Conn) bool {
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := fmt.Fprintln(c, "ping"); err != nil {
		return false
	}
	var buf [5]byte
	_, err := io.ReadFull(c, buf[:])
	return err == nil && string(buf[:]) == "ping\n"
}

// Three nodes announce one VIP; the router spreads flows over them with
// ECMP and follows them as they lose members, restart and die.
func TestPrivilegedScaleOut(t *testing.T) {
	l := newScaleLab(t, 3)
	start := time.Now()
	for _, nd := range l.nodes {
		l.start(nd)
	}
	l.waitHops(3)
	t.Logf("3 nodes announced, router holds a 3-way route after %v", time.Since(start).Round(time.Millisecond))

	seen, failed := l.spread(300)
	if failed > 0 || len(seen) != 3 {
		t.Fatalf("300 connections through the 3-way route: %d failed, reached %v; want 0 failed and all 3 nodes", failed, seen)
	}
	t.Logf("300 connections: %v", seen)

	t.Run("node without members is withdrawn", func(t *testing.T) { l.memberLoss(t) })
	t.Run("rolling restart", func(t *testing.T) { l.rollingRestart(t) })
	t.Run("node killed", func(t *testing.T) { l.nodeKilled(t) })
}

func (l *scaleLab) memberLoss(t *testing.T) {
	lost := l.nodes[2]
	lost.send(t, "members 0")
	took := l.waitHops(2)
	t.Logf("%s lost its members: the router dropped it in %v", lost.name, took.Round(time.Millisecond))
	seen, failed := l.spread(100)
	if failed > 0 || seen[lost.name] > 0 {
		t.Errorf("100 connections with %s withdrawn: %d failed, reached %v; want 0 failed, none on %s", lost.name, failed, seen, lost.name)
	}
	lost.send(t, "members 1")
	took = l.waitHops(3)
	t.Logf("%s has a member again: announced and used in %v", lost.name, took.Round(time.Millisecond))
}

// rollingRestart restarts each node in turn (SIGTERM: withdraw, wait,
// finish) while a bounded loop of short requests runs.
func (l *scaleLab) rollingRestart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	type result struct{ ok, failed int }
	done := make(chan result)
	go func() {
		var r result
		for i := 0; i < 20000 && ctx.Err() == nil; i++ {
			if _, err := l.request(ctx); err != nil && ctx.Err() == nil {
				r.failed++
				t.Logf("request %d: %v", i, err)
			} else {
				r.ok++
			}
			time.Sleep(2 * time.Millisecond)
		}
		done <- r
	}()
	for _, nd := range l.nodes {
		_ = nd.cmd.Process.Signal(syscall.SIGTERM)
		_ = nd.cmd.Wait()
		l.start(nd)
		took := l.waitHops(3)
		t.Logf("%s restarted: announced and used again %v after it exited", nd.name, took.Round(time.Millisecond))
	}
	cancel()
	r := <-done
	if r.failed > 0 || r.ok == 0 {
		t.Errorf("rolling restart of 3 nodes: %d of %d requests failed, want 0", r.failed, r.ok+r.failed)
	}
	t.Logf("rolling restart: %d requests, %d failed", r.ok+r.failed, r.failed)
}

// nodeKilled stops nodes without warning. A process killed outright has
// its BGP session reset by its kernel; a node that hangs (or loses
// power) sends nothing more, and BFD takes it out of the router's route.
// Long-lived connections on the other nodes survive as far as the
// router's hashing keeps them in place.
func (l *scaleLab) nodeKilled(t *testing.T) {
	conns, names := l.holdOpen(60)
	hung := l.nodes[2]
	_ = hung.cmd.Process.Signal(syscall.SIGSTOP)
	took := l.waitHops(2)
	t.Logf("%s hung: BFD withdrew it from the router in %v", hung.name, took.Round(time.Millisecond))
	others, survived := 0, 0
	for i, c := range conns {
		if names[i] == hung.name {
			continue
		}
		others++
		if alive(c) {
			survived++
		}
	}
	t.Logf("long-lived connections on the other nodes: %d of %d survived the 3 to 2 next hop change", survived, others)
	if _, failed := l.spread(100); failed > 0 {
		t.Errorf("100 new connections after %s hung: %d failed, want 0", hung.name, failed)
	}
	_ = hung.cmd.Process.Kill()
	killed := l.nodes[1]
	_ = killed.cmd.Process.Kill()
	took = l.waitHops(1)
	t.Logf("%s killed: its kernel reset the session, the router dropped it in %v", killed.name, took.Round(time.Millisecond))
}
