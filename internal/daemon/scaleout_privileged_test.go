package daemon_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/certgen"
	"github.com/edgeproxy/edgeproxy/internal/fakefe"
	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// The scale-out lab's autonomous systems: the router's and the nodes'.
const (
	scaleRouterAS = 65000
	scaleNodeAS   = 65100
)

// scaleConfig is a node's file: the pool web published in XDP on VIP:80
// (SNAT to the node's own internal address) and through the L7 proxy on
// VIP:443, announced to the router with BFD; the other nodes are its
// cluster peers, which send back the connections the router moves.
const scaleConfig = `admin:
  listen: 127.0.0.1:9469
log:
  access: "off"
control:
  socket: %[1]s/control.sock
%[2]sbgp:
  local_as: %[3]d
  router_id: %[4]s
  neighbors:
    - {address: %[5]s, as: %[6]d, bfd: true, hold_time: 3s}
cluster:
  peers: [%[11]s]
  key_file: %[10]s/cluster.key
fastpath:
  pin_path: %[7]s
pools:
  web:
    members: [%[8]s]
    monitor: {type: tcp, port: 8080, interval: 300ms, timeout: 200ms, rise: 1, fall: 2}
virtuals:
  - name: web-l4
    mode: fastl4
    listen: %[9]s:80
    pool: web
    port: 8080
    snat: automap
  - name: web-tls
    mode: https
    listen: %[9]s:443
    drain_timeout: 5s
    certificates:
      - {cert: %[10]s/public.pem, key: %[10]s/public.key}
    sites:
      - {hosts: [webext.example.com], pool: web, port: 8080}
`

// scaleOut is three edgeproxy daemons announcing one VIP to BIRD.
type scaleOut struct {
	lab   *lab.ScaleOut
	bird  *lab.Bird
	dir   string
	bin   string
	tls   *tls.Config
	nodes []*scaleNode
	// byInt names the node whose internal address a member saw.
	byInt map[string]string
}

type scaleNode struct {
	name   string
	ns     *lab.NS
	dir    string
	daemon *labtest.Daemon
}

func newScaleOut(t *testing.T, n int) *scaleOut {
	testnet.RequireRoot(t, "bird", "birdc", "sysctl")
	l, err := lab.BuildScaleOut(n, 2)
	if err != nil {
		t.Fatalf("build scale-out lab: %v", err)
	}
	t.Cleanup(l.Close)
	s := &scaleOut{lab: l, dir: t.TempDir(), bin: labtest.Binary(t), byInt: map[string]string{}}
	certs, err := certgen.Write(s.dir, certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.tls = &tls.Config{ServerName: "webext.example.com", RootCAs: certs.PublicRoot.Pool(), MinVersion: tls.VersionTLS12}
	for i, m := range l.Members {
		ln, err := l.Backend.Listen("tcp", netip.AddrPortFrom(m, 8080).String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go fakefe.New(fakefe.Options{Name: fmt.Sprintf("fe%02d", i+1)}).Serve(ln, nil)
	}
	s.startBird(t)
	if err := os.WriteFile(filepath.Join(s.dir, "cluster.key"), []byte(strings.Repeat("k", 48)), 0o600); err != nil {
		t.Fatal(err)
	}
	var members []string
	for _, m := range l.Members {
		members = append(members, m.String())
	}
	for i, ns := range l.Nodes {
		nd := &scaleNode{name: fmt.Sprintf("node%d", i+1), ns: ns, dir: filepath.Join(s.dir, fmt.Sprintf("node%d", i+1)), daemon: &labtest.Daemon{NS: ns}}
		if err := os.MkdirAll(nd.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var peers []string
		for j, a := range l.ExtAddrs {
			if j != i {
				peers = append(peers, a.String())
			}
		}
		cfg := fmt.Sprintf(scaleConfig, nd.dir, l.NodeNetworkYAML(i), scaleNodeAS, l.ExtAddrs[i], l.RouterAddr, scaleRouterAS,
			testnet.TestPinDir(t, ns.Name), strings.Join(members, ", "), l.VIP, s.dir, strings.Join(peers, ", "))
		if err := os.WriteFile(filepath.Join(nd.dir, "edgeproxy.yaml"), []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		s.byInt[l.IntAddrs[i].String()] = nd.name
		s.nodes = append(s.nodes, nd)
		t.Cleanup(func() {
			nd.daemon.Stop()
			if t.Failed() {
				t.Logf("%s's daemon log:\n%s", nd.name, nd.daemon.Log.String())
			}
		})
	}
	return s
}

// startBird runs the router: BGP with every node, BFD on the nodes'
// segment, the VIP's multipath route installed into its kernel.
func (s *scaleOut) startBird(t *testing.T) {
	conf := fmt.Sprintf(`router id %s;
protocol device { scan time 1; }
protocol kernel { ipv4 { export all; import none; }; merge paths on; }
protocol bfd { interface "sw0" { min rx interval 300 ms; min tx interval 300 ms; multiplier 3; }; }
template bgp node { local as %d; ipv4 { import all; export none; }; hold time 3; connect retry time 1; error wait time 1, 2; bfd on; }
`, s.lab.Gateway, scaleRouterAS)
	for i, a := range s.lab.ExtAddrs {
		conf += fmt.Sprintf("protocol bgp node%d from node { neighbor %s as %d; }\n", i+1, a, scaleNodeAS)
	}
	var err error
	if s.bird, err = lab.StartBird(s.lab.Router, s.dir, conf); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.bird.Close)
}

// start runs the nodes' daemons, all at once, and waits until each has
// both members up. A daemon is stopped when the whole test ends, not the
// subtest that restarted it.
func (s *scaleOut) start(t *testing.T, nodes ...*scaleNode) {
	t.Helper()
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = nd.daemon.Start(labtest.PoolUp("web", len(s.lab.Members)), 30*time.Second, s.bin, "run",
				"-config", filepath.Join(nd.dir, "edgeproxy.yaml"), "-pid-file", filepath.Join(nd.dir, "edgeproxy.pid"),
				"-netcfg-state", filepath.Join(nd.dir, "netcfg.json"), "-member-state", filepath.Join(nd.dir, "members.json"))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start %s: %v", nodes[i].name, err)
		}
	}
}

// waitHops waits (at most 30 s) until the router's kernel holds n next
// hops for the VIP, and returns how long it took.
func (s *scaleOut) waitHops(t *testing.T, n int) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 30*time.Second {
		if len(lab.NextHops(s.lab.Router, s.lab.VIP.String())) == n {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the router holds next hops %v for %s after 30s, want %d\n%s", lab.NextHops(s.lab.Router, s.lab.VIP.String()),
		s.lab.VIP, n, s.bird.Show("protocols", "all"))
	return 0
}

// scaleConn is one client connection through the VIP: plain HTTP to the
// fastl4 virtual (port 80) or HTTPS to the L7 one (port 443).
type scaleConn struct {
	c    net.Conn
	r    *bufio.Reader
	port uint16
}

func (s *scaleOut) dial(ctx context.Context, port uint16) (*scaleConn, error) {
	c, err := s.lab.Client.DialContext(ctx, "tcp", netip.AddrPortFrom(s.lab.VIP, port).String())
	if err != nil {
		return nil, err
	}
	if port == 443 {
		c = tls.Client(c, s.tls)
	}
	return &scaleConn{c: c, r: bufio.NewReader(c), port: port}, nil
}

// get makes one request on the connection (closing it after when last)
// and returns the internal address the member saw, which names the node.
func (c *scaleConn) get(last bool) (string, error) {
	_ = c.c.SetDeadline(time.Now().Add(3 * time.Second))
	req, err := http.NewRequest("GET", "http://webext.example.com/echo", nil)
	if err != nil {
		return "", err
	}
	req.Close = last
	if err := req.Write(c.c); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(c.r, req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("status %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var e fakefe.Echo
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		return "", fmt.Errorf("decode echo: %w", err)
	}
	host, _, err := net.SplitHostPort(e.RemoteAddr)
	return host, err
}

// request makes one request on a new connection (a new client port) and
// returns the node that forwarded it.
func (s *scaleOut) request(ctx context.Context, port uint16) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := s.dial(ctx, port)
	if err != nil {
		return "", err
	}
	defer c.c.Close()
	from, err := c.get(true)
	if err != nil {
		return "", fmt.Errorf("port %d: %w", port, err)
	}
	node, ok := s.byInt[from]
	if !ok {
		return "", fmt.Errorf("port %d: the member saw %s, no node's internal address", port, from)
	}
	return node, nil
}

// spread makes n requests, each on a new connection, alternately to the
// fastl4 and the L7 virtual, and counts them by node and port as the
// members saw them.
func (s *scaleOut) spread(t *testing.T, n int) (seen map[string]int, failed int) {
	seen = map[string]int{}
	for i := range n {
		port := uint16(80)
		if i%2 == 1 {
			port = 443
		}
		node, err := s.request(context.Background(), port)
		if err != nil {
			failed++
			t.Logf("request %d: %v", i, err)
			continue
		}
		seen[fmt.Sprintf("%s:%d", node, port)]++
	}
	return seen, failed
}

// served counts, from each daemon's metrics, the new flows its fastl4
// virtual forwarded and the requests its L7 virtual answered, keyed as
// spread keys them.
func (s *scaleOut) served(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, nd := range s.nodes {
		fams := scrapeDaemon(t, nd.daemon)
		l4, _ := value(fams, "edgeproxy_xdp_packets_total", "reason", "fwd_new", "virtual", "web-l4")
		l7, _ := value(fams, "edgeproxy_http_requests_total", "virtual", "web-tls")
		out[nd.name+":80"], out[nd.name+":443"] = int(l4), int(l7)
	}
	return out
}

// delta is after minus before, for every key of either.
func delta(before, after map[string]int) map[string]int {
	d := map[string]int{}
	for k, v := range after {
		d[k] = v - before[k]
	}
	for k, v := range before {
		if _, ok := after[k]; !ok {
			d[k] = -v
		}
	}
	return d
}

// Three edgeproxy daemons announce one VIP to BIRD, which spreads flows
// over them with ECMP and an L4 hash, and follows them as a node loses
// its members, as each is restarted in turn and as one dies.
func TestPrivilegedScaleOut(t *testing.T) {
	s := newScaleOut(t, 3)
	start := time.Now()
	s.start(t, s.nodes...)
	s.waitHops(t, 3)
	t.Logf("3 daemons started at once and announced: the router holds a 3-way route %v after they started",
		time.Since(start).Round(time.Millisecond))

	before := s.served(t)
	seen, failed := s.spread(t, 300)
	counted := delta(before, s.served(t))
	if failed > 0 {
		t.Fatalf("300 connections through the 3-way route: %d failed", failed)
	}
	for _, nd := range s.nodes {
		for _, port := range []string{":80", ":443"} {
			if k := nd.name + port; seen[k] == 0 || counted[k] != seen[k] {
				t.Errorf("%s: the members saw %d connections from it, its metrics count %d; want the same, more than 0", k, seen[k], counted[k])
			}
		}
	}
	t.Logf("300 connections (node:port): %v", seen)

	for _, step := range []struct {
		name string
		run  func(*testing.T)
	}{{"node without members is withdrawn", s.memberLoss}, {"rolling restart", s.rollingRestart}, {"node killed", s.nodeKilled}} {
		if !t.Run(step.name, step.run) {
			return // each step starts from the 3-way route the one before ends with
		}
	}
}

// memberLoss pulls a node's internal cable at the switch: its monitors
// mark both members down, it withdraws its route and the router drops
// it; new connections all go to the two others.
func (s *scaleOut) memberLoss(t *testing.T) {
	i := 2
	lost := s.nodes[i]
	cut := time.Now()
	if err := s.lab.Unplug(i, lab.IntIf, true); err != nil {
		t.Fatal(err)
	}
	s.waitHops(t, 2)
	took := time.Since(cut)
	t.Logf("%s's internal link cut: members down, route withdrawn, router down to 2 next hops %v after the cut", lost.name, took.Round(time.Millisecond))
	st, err := lost.daemon.Status()
	if err != nil || st.BGP == nil {
		t.Fatalf("%s status: %v", lost.name, err)
	}
	if r := routeOf(st.BGP, s.lab.VIP.String()+"/32"); r.Announced || !strings.Contains(r.Why, "no member up") {
		t.Errorf("%s status: route %+v, want withdrawn for want of members", lost.name, r)
	}
	before := s.served(t)
	seen, failed := s.spread(t, 100)
	counted := delta(before, s.served(t))
	if n := seen[lost.name+":80"] + seen[lost.name+":443"] + counted[lost.name+":80"] + counted[lost.name+":443"]; failed > 0 || n > 0 {
		t.Errorf("100 connections with %s withdrawn: %d failed, %d reached it (seen %v, counted %v); want none", lost.name, failed, n, seen, counted)
	}
	back := time.Now()
	if err := s.lab.Unplug(i, lab.IntIf, false); err != nil {
		t.Fatal(err)
	}
	s.waitHops(t, 3)
	took = time.Since(back)
	t.Logf("%s's internal link back: members up, 3-way route again %v later", lost.name, took.Round(time.Millisecond))
}

// load makes requests, each on a new connection, alternately to the
// fastl4 and the L7 virtual, until stop is called (at most 20000).
type load struct {
	cancel context.CancelFunc
	done   chan struct{}
	ok     int
	failed []failure
}

// failure is a request that failed, with when it ran.
type failure struct {
	n          int
	start, end time.Time
	err        error
}

func (s *scaleOut) startLoad() *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; i < 20000 && ctx.Err() == nil; i++ {
			port := uint16(80)
			if i%2 == 1 {
				port = 443
			}
			start := time.Now()
			_, err := s.request(ctx, port)
			switch {
			case err == nil:
				l.ok++
			case ctx.Err() == nil:
				l.failed = append(l.failed, failure{i, start, time.Now(), err})
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return l
}

func (l *load) stop() {
	l.cancel()
	<-l.done
}

// split sorts the failed requests: those in flight when the router's
// next hops changed (hash-threshold ECMP sent the rest of their packets
// to another node, which has no such connection and resets it) and the
// others.
func (l *load) split(changes []time.Time) (inFlight, other []string) {
	for _, f := range l.failed {
		desc := fmt.Sprintf("request %d (%s to %s): %v", f.n, f.start.Format("15:04:05.000"), f.end.Format("15:04:05.000"), f.err)
		// A request lasts milliseconds unless something broke it; the
		// change is seen here a little after the kernel made it.
		until := f.start.Add(min(f.end.Sub(f.start), 500*time.Millisecond) + 100*time.Millisecond)
		if slices.ContainsFunc(changes, func(c time.Time) bool { return !c.Before(f.start) && c.Before(until) }) {
			inFlight = append(inFlight, desc)
		} else {
			other = append(other, desc)
		}
	}
	return inFlight, other
}

// rollingRestart drains each daemon in turn with `edgeproxy drain`
// (routes withdrawn, new requests waited out, open connections
// finished) and starts it again, under a loop of short requests. No
// request fails: those in flight when the router's next hops change,
// which its hash sends to another node, are sent back to their owner.
func (s *scaleOut) rollingRestart(t *testing.T) {
	w, err := lab.WatchRoute(s.lab.Router, netip.PrefixFrom(s.lab.VIP, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	l := s.startLoad()
	defer l.stop()
	before := s.forwarded(t)
	for _, nd := range s.nodes {
		s.restart(t, nd)
	}
	l.stop()
	forwarded := s.forwarded(t) - before
	inFlight, other := l.split(w.Changes())
	t.Logf("rolling restart of 3 daemons: %d requests, %d failed (%d in flight at one of the router's %d next hop changes); %d segments sent back to their owner",
		l.ok+len(l.failed), len(l.failed), len(inFlight), len(w.Changes()), forwarded)
	if len(l.failed) > 0 || l.ok == 0 {
		t.Errorf("rolling restart: %d of %d requests failed, want 0:\n%s", len(l.failed), l.ok+len(l.failed), strings.Join(append(inFlight, other...), "\n"))
	}
}

// forwarded is how many segments the running nodes' fast paths have sent
// to the peer owning their connection (the count is pinned: it goes on
// across restarts).
func (s *scaleOut) forwarded(t *testing.T, except ...*scaleNode) int {
	n := 0
	for _, nd := range s.nodes {
		if !slices.Contains(except, nd) {
			v, _ := value(scrapeDaemon(t, nd.daemon), "edgeproxy_xdp_second_chance_total", "what", "forwarded")
			n += int(v)
		}
	}
	return n
}

// restart drains the node's daemon with `edgeproxy drain`, starts it
// again and waits for the 3-way route.
func (s *scaleOut) restart(t *testing.T, nd *scaleNode) {
	t.Helper()
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	out, err := exec.CommandContext(ctx, s.bin, "drain", "-socket", filepath.Join(nd.dir, "control.sock")).CombinedOutput()
	cancel()
	if err != nil || !strings.Contains(string(out), "routes withdrawn: "+s.lab.VIP.String()) {
		t.Fatalf("edgeproxy drain %s: %v\n%s", nd.name, err, out)
	}
	answered := time.Since(began)
	if hops := lab.NextHops(s.lab.Router, s.lab.VIP.String()); len(hops) != 2 {
		t.Errorf("edgeproxy drain %s answered with the router's next hops %v, want 2", nd.name, hops)
	}
	if err := nd.daemon.Wait(); err != nil {
		t.Fatalf("%s exit after edgeproxy drain: %v", nd.name, err)
	}
	exited := time.Now()
	s.start(t, nd)
	took := s.waitHops(t, 3)
	t.Logf("%s: drain answered %v after the call (%s), the daemon exited %v later; restarted, 3-way route again %v after it exited",
		nd.name, answered.Round(time.Millisecond), strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0]),
		exited.Sub(began.Add(answered)).Round(time.Millisecond), took.Round(time.Millisecond))
}

// nodeKilled kills a node without warning: its links go down, then its
// daemon is killed (no drain, no BGP message reaches the router). BFD
// tells the router, which drops it; long-lived connections on the other
// nodes survive as far as the router's hash keeps them in place.
func (s *scaleOut) nodeKilled(t *testing.T) {
	var conns []*scaleConn
	var on []string
	for i := range 60 {
		port := uint16(80)
		if i%2 == 1 {
			port = 443
		}
		c, err := s.dial(context.Background(), port)
		if err != nil {
			t.Fatalf("open long-lived connection: %v", err)
		}
		t.Cleanup(func() { c.c.Close() })
		from, err := c.get(false)
		if err != nil {
			t.Fatalf("long-lived connection's first request: %v", err)
		}
		conns, on = append(conns, c), append(on, s.byInt[from])
	}
	// The last of the router's next hops: with hash-threshold ECMP its
	// loss moves some of the others' flows too (the middle one's moves
	// none).
	w, err := lab.WatchRoute(s.lab.Router, netip.PrefixFrom(s.lab.VIP, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	i := 2
	dead := s.nodes[i]
	forwarded := s.forwarded(t, dead)
	// Its links go down at the switch (the daemon would bring its own NICs
	// back up), then the daemon is killed: the FIN its kernel sends for
	// the BGP session goes nowhere.
	down := time.Now()
	for _, ifc := range []string{lab.ExtIf, lab.IntIf} {
		if err := s.lab.Unplug(i, ifc, true); err != nil {
			t.Fatal(err)
		}
	}
	dead.daemon.Kill()
	s.waitHops(t, 2)
	took := time.Since(down)
	if ch := w.Changes(); len(ch) > 0 {
		took = ch[0].Sub(down) // when the kernel's route changed, not when the test saw it
	}
	if p := s.bird.Show("protocols", "all", dead.name); !strings.Contains(p, "BFD session down") {
		t.Errorf("the router dropped %s for another reason than BFD:\n%s", dead.name, p)
	}
	t.Logf("%s killed with its links down: BFD told the router, 2 next hops %v after the links went down", dead.name, took.Round(time.Millisecond))
	// Each connection on the other nodes makes one more request, all at
	// once: one moved to the other node is reset (L7) or unanswered
	// (fastl4, whose flow table there lacks it) within 3 s.
	alive := make([]bool, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		if on[i] != dead.name {
			wg.Add(1)
			go func() {
				defer wg.Done()
				from, err := c.get(false)
				alive[i] = err == nil && s.byInt[from] == on[i]
			}()
		}
	}
	wg.Wait()
	others, survived := map[uint16]int{}, map[uint16]int{}
	for i, c := range conns {
		if on[i] != dead.name {
			others[c.port]++
			if alive[i] {
				survived[c.port]++
			}
		}
	}
	t.Logf("long-lived connections on the 2 other nodes that survived the 3 to 2 next hop change: fastl4 %d of %d, L7 %d of %d (%d segments sent back to their owner)",
		survived[80], others[80], survived[443], others[443], s.forwarded(t, dead)-forwarded)
	seen, failed := s.spread(t, 100)
	if n := seen[dead.name+":80"] + seen[dead.name+":443"]; failed > 0 || n > 0 {
		t.Errorf("100 new connections after %s died: %d failed, %d reached it; want none", dead.name, failed, n)
	}
}
