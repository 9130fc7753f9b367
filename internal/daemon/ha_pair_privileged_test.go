package daemon_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/internal/certgen"
	"github.com/edgeproxy/edgeproxy/internal/control"
	"github.com/edgeproxy/edgeproxy/internal/daemon"
	"github.com/edgeproxy/edgeproxy/internal/fakefe"
	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

const pairConfig = `admin:
  listen: 127.0.0.1:9469
control:
  socket: %[1]s/control.sock
%[2]sfastpath:
  pin_path: %[3]s
ha:
  priority: %[4]d
  fifo: %[1]s/keepalived.fifo
  external: {vrid: 51, peer: %[5]s}
  internal: {vrid: 52, peer: %[6]s, floating: [%[7]s/24]}
pools:
  web:
    members: [%[8]s]
    monitor: {type: tcp, port: 8080, interval: 300ms, timeout: 200ms, rise: 1, fall: 1}
virtuals:
  - name: web-tls
    mode: https
    listen: %[9]s:443
    certificates:
      - {cert: %[10]s/public.pem, key: %[10]s/public.key}
    sites:
      - {hosts: [webext.example.com], pool: web, port: 8080}
  - name: echo-l4
    mode: fastl4
    listen: %[11]s:5201
    pool: web
    port: 5201
    snat: automap
    loose_init: true
  - name: bulk-l4
    mode: fastl4
    listen: %[11]s:5202
    pool: web
    port: 5202
    snat: automap
    loose_init: true
  - name: poll-l4
    mode: fastl4
    listen: %[11]s:8081
    pool: web
    port: 8081
    snat: automap
    loose_init: true
`

// pairNodeRun is one node of the pair lab: its daemon and keepalived.
type pairNodeRun struct {
	ns         *lab.NS
	dir        string
	daemon     *labtest.Daemon
	args       []string // the daemon's command line
	keepalived *exec.Cmd
	// keepalivedStart is when keepalived was started.
	keepalivedStart time.Time
}

// pairRun is the pair lab with the member, both nodes' daemons and
// keepalived running.
type pairRun struct {
	p     *lab.Pair
	nodes [2]*pairNodeRun
	l4VIP netip.Addr
	bin   string
	tls   *tls.Config
}

// startPair builds the pair lab and starts everything in it.
func startPair(t *testing.T) *pairRun {
	r, _ := startPairEdited(t, nil)
	return r
}

// startPairEdited is startPair with node i's file passed through edit
// (nil: as pairConfig has it); it returns the nodes' pin directories too.
func startPairEdited(t *testing.T, edit func(i int, r *pairRun, c string) string) (*pairRun, [2]string) {
	t.Helper()
	testnet.RequireRoot(t, "keepalived")
	p, err := lab.BuildPair(1)
	if err != nil {
		t.Fatalf("build pair lab: %v", err)
	}
	t.Cleanup(p.Close)
	dir := t.TempDir()
	certs, err := certgen.Write(dir, certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	startPairMember(t, p)
	r := &pairRun{p: p, bin: rootOnlyBinary(t), l4VIP: netip.MustParseAddr("198.18.0.20"),
		tls: &tls.Config{ServerName: "webext.example.com", RootCAs: certs.PublicRoot.Pool(), MinVersion: tls.VersionTLS12}}
	var pins [2]string
	for i := range r.nodes {
		pins[i] = testnet.TestPinDir(t, p.Nodes[i].Name)
		r.nodes[i] = startPairNode(t, p, i, r.bin, dir, func(nd string) string {
			c := fmt.Sprintf(pairConfig, nd, p.NodeNetworkYAML(i), pins[i], 150-50*i,
				p.ExtAddrs[1-i], p.IntAddrs[1-i], p.Floating, p.Members[0], p.VIP, dir, r.l4VIP)
			if edit != nil {
				c = edit(i, r, c)
			}
			return c
		})
	}
	return r, pins
}

// get sends one HTTPS request through the L7 VIP, on a connection of its
// own, dialled and read in this goroutine (an http.Transport keeps
// dialling in the background after a timeout), within timeout.
func (r *pairRun) get(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := r.p.Client.DialContext(ctx, "tcp", netip.AddrPortFrom(r.p.VIP, 443).String())
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	tc := tls.Client(c, r.tls)
	req, err := http.NewRequest("GET", "https://webext.example.com/echo", nil)
	if err != nil {
		return err
	}
	req.Close = true
	if err := req.Write(tc); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// rootOnlyBinary copies edgeproxy to a directory only root can write,
// as keepalived's script security asks of the scripts it runs.
func rootOnlyBinary(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("/run", "edgeproxy-ha-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(labtest.Binary(t))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(d, "edgeproxy")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// startPairMember runs the member: plain HTTP on 8080, a TCP echo on 5201.
func startPairMember(t *testing.T, p *lab.Pair) {
	t.Helper()
	addr := p.Members[0]
	ln, err := p.Backend.Listen("tcp", netip.AddrPortFrom(addr, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go fakefe.New(fakefe.Options{Name: "fe01"}).Serve(ln, nil)
	echo, err := p.Backend.Listen("tcp", netip.AddrPortFrom(addr, 5201).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { echo.Close() })
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
}

// startPairNode writes node i's file, starts its daemon, then keepalived
// with the configuration edgeproxy generates from the file.
func startPairNode(t *testing.T, p *lab.Pair, i int, bin, dir string, cfg func(nodeDir string) string) *pairNodeRun {
	t.Helper()
	nd := filepath.Join(dir, fmt.Sprintf("node%d", i))
	if err := os.MkdirAll(nd, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(nd, "edgeproxy.yaml")
	if err := os.WriteFile(path, []byte(cfg(nd)), 0o644); err != nil {
		t.Fatal(err)
	}
	n := &pairNodeRun{ns: p.Nodes[i], dir: nd, daemon: &labtest.Daemon{NS: p.Nodes[i]},
		args: []string{bin, "run", "-config", path, "-pid-file", filepath.Join(nd, "edgeproxy.pid"),
			"-netcfg-state", filepath.Join(nd, "netcfg.json"), "-member-state", filepath.Join(nd, "members.json")}}
	labtest.Start(t, n.daemon, labtest.PoolUp("web", 1), n.args[0], n.args[1:]...)
	conf, err := exec.Command(bin, "ha", "keepalived-conf", "-config", path, "-edgeproxy", bin).Output()
	if err != nil {
		t.Fatalf("keepalived-conf: %v", err)
	}
	if err := os.WriteFile(filepath.Join(nd, "keepalived.conf"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	n.startKeepalived(t, i)
	return n
}

// startKeepalived starts keepalived in the node with the configuration
// edgeproxy generated; it is killed at the test's end, its log shown
// when the test failed.
func (n *pairNodeRun) startKeepalived(t *testing.T, i int) {
	t.Helper()
	var log strings.Builder
	cmd := n.ns.Command(context.Background(), "keepalived", "--dont-fork", "--log-console", "--vrrp",
		"--use-file="+filepath.Join(n.dir, "keepalived.conf"), "--pid="+filepath.Join(n.dir, "keepalived.pid"),
		"--vrrp_pid="+filepath.Join(n.dir, "vrrp.pid"))
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	n.keepalived, n.keepalivedStart = cmd, time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start keepalived: %v", err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		if t.Failed() {
			t.Logf("node %d keepalived log (started %s):\n%s", i, n.keepalivedStart.Format(time.TimeOnly), log.String())
		}
	})
}

// die is an unplanned failure: the links go down, then keepalived (its
// VRRP process too, before it can say goodbye) and the daemon are
// killed.
func (n *pairNodeRun) die(t *testing.T) {
	t.Helper()
	for _, ifc := range []string{testnet.ExtIf, testnet.IntIf} {
		n.ns.Run(t, "ip", "link", "set", ifc, "down")
	}
	n.killKeepalived()
	n.daemon.Kill()
}

// killKeepalived kills keepalived's process group with SIGKILL.
func (n *pairNodeRun) killKeepalived() {
	syscall.Kill(-n.keepalived.Process.Pid, syscall.SIGKILL)
}

// waitActive waits until exactly one node reports the active role and
// holds every shared address.
func waitActive(t *testing.T, nodes [2]*pairNodeRun) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		act := -1
		for i, n := range nodes {
			if st, err := n.daemon.Status(); err == nil && st.HA != nil && st.HA.Role == "active" && len(st.HA.Held) == st.HA.Shared {
				if act >= 0 {
					t.Fatalf("both nodes active")
				}
				act = i
			}
		}
		if act >= 0 {
			return act
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("no node became active within 20s")
	return -1
}

// echoConn is a TCP connection through the fastl4 VIP to the member's
// echo service.
type echoConn struct {
	c net.Conn
	r *bufio.Reader
}

// openEcho connects from the client port given, so that whether it is in
// the SNAT range is the test's choice.
func openEcho(p *lab.Pair, vip netip.Addr, port int) (*echoConn, error) {
	var c net.Conn
	err := p.Client.Do(func() (err error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: p.ClientAddr.AsSlice(), Port: port}, Timeout: 3 * time.Second}
		c, err = d.Dial("tcp", netip.AddrPortFrom(vip, 5201).String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("connect through the fastl4 VIP: %w", err)
	}
	e := &echoConn{c: c, r: bufio.NewReader(c)}
	if s := e.try(); s != "echoed" {
		c.Close()
		return nil, fmt.Errorf("fastl4 echo before the failover: %s", s)
	}
	return e, nil
}

// try sends a line and says what came back.
func (e *echoConn) try() string { return e.tryLine("ping\n") }

// tryLine sends line (ending in a newline) and says whether the same
// came back.
func (e *echoConn) tryLine(line string) string {
	e.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := e.c.Write([]byte(line)); err != nil {
		return "write failed: " + err.Error()
	}
	got, err := e.r.ReadString('\n')
	if err != nil {
		return fmt.Sprintf("no echo (client port %d): %v", e.c.LocalAddr().(*net.TCPAddr).Port, err)
	}
	if got != line {
		return fmt.Sprintf("echo %q, sent %q", got, line)
	}
	return "echoed"
}

// TestPrivilegedHAPlannedSwitchoverAndFailBack: `edgeproxy ha standby`
// on the active node hands the role to the other one while HTTPS
// requests go through the L7 VIP back to back: none fails (a failed try
// is retried for up to 0.5 s) and the longest stall is within 0.5 s. The
// old active then restarts (maintenance), returns as a standby once ready,
// and takes the role back only when `edgeproxy ha standby` runs on the
// other node (no automatic preemption). fastl4 connections opened through
// either node carry on across both switches (mirrored both ways, without
// loose_init, client ports outside the SNAT range): the returning node
// receives a full copy of the flows opened meanwhile before it may take
// the role back. No RST is seen for them on the client or the member.
func TestPrivilegedHAPlannedSwitchoverAndFailBack(t *testing.T) {
	r, _ := startMirrorPair(t, true)
	a := r.settled(t)
	b := 1 - a
	if err := r.get(300 * time.Millisecond); err != nil {
		t.Fatalf("the L7 VIP does not serve: %v", err)
	}
	rsts := map[string]*rstCounter{"client": countRSTs(t, r.p.Client, echoPort), "member": countRSTs(t, r.p.Backend, echoPort)}
	viaA, err := openEcho(r.p, r.l4VIP, 33001)
	if err != nil {
		t.Fatalf("fastl4 through node %d: %v", a, err)
	}
	defer viaA.c.Close()
	l7 := r.l7Loop()
	pingA := viaA.ping()

	// A peer whose keepalived started moments ago may take the role
	// only when its master-down timer runs out: a planned switchover
	// waits for a settled standby.
	r.nodes[b].waitSettled(t)
	r.waitSynced(t, b)
	r.nodes[a].standby(t, r.bin)
	if got := waitActive(t, r.nodes); got != b {
		t.Fatalf("node %d active after ha standby on it, want node %d", got, b)
	}
	viaB, err := openEcho(r.p, r.l4VIP, 33002)
	if err != nil {
		t.Fatalf("fastl4 through node %d: %v", b, err)
	}
	defer viaB.c.Close()
	pingB := viaB.ping()

	// Maintenance on the old active: it restarts. keepalived keeps it
	// out of the role until its check passes.
	r.nodes[a].restart(t, a)
	r.nodes[a].waitSettled(t)
	r.waitSynced(t, a)
	if got := waitActive(t, r.nodes); got != b {
		t.Fatalf("node %d active after node %d returned, want node %d (no preemption)", got, a, b)
	}
	r.nodes[b].standby(t, r.bin)
	if got := waitActive(t, r.nodes); got != a {
		t.Fatalf("node %d active after ha standby on node %d, want node %d", got, b, a)
	}

	ok, failed, stall, errs := l7.end()
	t.Logf("L7 VIP: %d requests, %d failed, longest stall %s", ok+failed, failed, stall.Round(time.Millisecond))
	if failed > 0 || ok == 0 {
		t.Errorf("%d of %d HTTPS requests failed across the switches: %v", failed, ok+failed, errs)
	}
	if stall > 500*time.Millisecond {
		t.Errorf("longest stall of the HTTPS loop %s, want within 0.5s", stall)
	}
	for _, c := range []struct {
		name string
		p    *pinger
	}{{"opened through the first active node", pingA}, {"opened through the second", pingB}} {
		n, stall, err := c.p.end()
		t.Logf("fastl4 connection %s: %d echoes, longest stall %s, %s", c.name, n, stall.Round(time.Millisecond), err)
		if err != "" {
			t.Errorf("fastl4 connection %s: %s", c.name, err)
		}
	}
	for side, c := range rsts {
		if n := c.count(t); n != 0 {
			t.Errorf("%d RSTs on the fastl4 connections seen by the %s", n, side)
		}
	}
}

// TestPrivilegedHAStandbyKeepsNewestFlows: a planned switchover carries
// on a mirrored fastl4 connection opened just before `edgeproxy ha
// standby` (the fast path reads its flow events a few times a second,
// so the newest may not have reached the peer when it takes over). The
// switchover goes to the node of the higher priority, which takes the
// role at once rather than after its master-down timer, four times,
// each asked on the control socket the moment a new connection echoed;
// every connection keeps echoing through all the switches.
func TestPrivilegedHAStandbyKeepsNewestFlows(t *testing.T) {
	r, _ := startMirrorPair(t, true)
	const hi, lo = 0, 1 // node 0 has the higher priority (pairConfig)
	if r.settled(t) == hi {
		r.handOver(t, hi, lo)
	}
	var pings []*pinger
	for round := range 4 {
		r.nodes[hi].waitSettled(t)
		r.waitSynced(t, hi)
		e, err := openEcho(r.p, r.l4VIP, 33101+round)
		if err != nil {
			t.Fatalf("fastl4 through node %d: %v", lo, err)
		}
		defer e.c.Close()
		pings = append(pings, e.ping())
		// The command the CLI sends, straight on the socket: starting the
		// CLI in the namespace takes long enough for the reader's poll.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var res daemon.HAStandbyResult
		_, err = control.Call(ctx, filepath.Join(r.nodes[lo].dir, "control.sock"), daemon.CmdHAStandby, struct{}{}, &res)
		cancel()
		if err != nil {
			t.Fatalf("ha standby on node %d: %v", lo, err)
		}
		if got := waitActive(t, r.nodes); got != hi {
			t.Fatalf("node %d active after ha standby on node %d, want node %d", got, lo, hi)
		}
		r.handOver(t, hi, lo)
	}
	for i, p := range pings {
		n, _, err := p.end()
		t.Logf("fastl4 connection %d: %d echoes %s", i, n, err)
		if err != "" {
			t.Errorf("fastl4 connection opened just before switchover %d: %s", i, err)
		}
	}
}

// handOver runs ha standby on node from once node to is a settled,
// synced standby, and waits for node to to be active.
func (r *pairRun) handOver(t *testing.T, from, to int) {
	t.Helper()
	r.nodes[to].waitSettled(t)
	r.waitSynced(t, to)
	r.nodes[from].standby(t, r.bin)
	if got := waitActive(t, r.nodes); got != to {
		t.Fatalf("node %d active after ha standby on node %d, want node %d", got, from, to)
	}
}

// standby runs edgeproxy ha standby on the node.
func (n *pairNodeRun) standby(t *testing.T, bin string) {
	t.Helper()
	out, err := n.ns.Command(context.Background(), bin, "ha", "standby", "-socket", filepath.Join(n.dir, "control.sock")).CombinedOutput()
	if err != nil {
		t.Fatalf("edgeproxy ha standby: %v: %s", err, out)
	}
	t.Logf("edgeproxy ha standby: %s", strings.TrimSpace(string(out)))
}

// restart stops the node, keepalived then the daemon, and starts them
// again in the other order, as a reboot does.
func (n *pairNodeRun) restart(t *testing.T, i int) {
	t.Helper()
	n.killKeepalived()
	n.keepalived.Wait()
	// Its VRRP process, killed with it, may outlive it for a moment:
	// the new keepalived must not take its pid file for a running one.
	for _, f := range []string{"keepalived.pid", "vrrp.pid"} {
		os.Remove(filepath.Join(n.dir, f))
	}
	n.restartDaemon(t, labtest.PoolUp("web", 1))
	n.startKeepalived(t, i)
}

// restartDaemon stops the node's daemon and starts it again, waiting for
// a status that is ready.
func (n *pairNodeRun) restartDaemon(t *testing.T, ready labtest.Ready) {
	t.Helper()
	n.daemon.Stop()
	n.daemon = &labtest.Daemon{NS: n.ns}
	labtest.Start(t, n.daemon, ready, n.args[0], n.args[1:]...)
}

// waitSettled waits until the node is a ready standby since keepalived
// (started before) said so, two seconds ago at least (two checks).
func (n *pairNodeRun) waitSettled(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var ha *admin.HA
	for time.Now().Before(deadline) {
		st, err := n.daemon.Status()
		if err == nil && st.Ready && st.HA != nil {
			ha = st.HA
			if ha.Role == "standby" && ha.Since.After(n.keepalivedStart) && time.Since(ha.Since) > 2*time.Second {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("node not a settled standby within 15s: %+v (keepalived started %s)", ha, n.keepalivedStart.Format(time.StampMilli))
}

// settled waits until the pair has settled: one node active, the other a
// standby for more than 2 s since its keepalived started, the roles
// re-read while they still move (a node that started later may hold
// the role first and lose it when the other's keepalived comes up); it
// returns the active node.
func (r *pairRun) settled(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		a := waitActive(t, r.nodes)
		n := r.nodes[1-a]
		st, err := n.daemon.Status()
		if err == nil && st.Ready && st.HA != nil && st.HA.Role == "standby" &&
			st.HA.Since.After(n.keepalivedStart) && time.Since(st.HA.Since) > 2*time.Second {
			if again := waitActive(t, r.nodes); again == a {
				return a
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the pair did not settle within 30s (one node active, the other a standby for 2s)")
	return -1
}

// l7Loop sends HTTPS requests through the L7 VIP back to back, in the
// background, until end.
type l7Loop struct {
	stop, done chan struct{}
	ok, failed int
	stall      time.Duration // longest time between two successes
	errs       []string
}

func (r *pairRun) l7Loop() *l7Loop {
	l := &l7Loop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		last := time.Now()
		for range 100000 {
			select {
			case <-l.stop:
				return
			default:
			}
			// A request takes about 10 ms: a try that has no answer
			// within 200 ms went to the node that left.
			first := time.Now()
			err := r.get(200 * time.Millisecond)
			for err != nil && time.Since(first) < 500*time.Millisecond {
				time.Sleep(10 * time.Millisecond)
				err = r.get(200 * time.Millisecond)
			}
			if err != nil {
				l.failed++
				l.errs = append(l.errs, err.Error())
				continue
			}
			l.ok++
			l.stall = max(l.stall, time.Since(last))
			last = time.Now()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return l
}

func (l *l7Loop) end() (ok, failed int, stall time.Duration, errs []string) {
	close(l.stop)
	<-l.done
	return l.ok, l.failed, l.stall, l.errs
}

// pinger sends a numbered line on an echo connection every 100 ms, in the
// background, until end or the first line not echoed.
type pinger struct {
	stop, done chan struct{}
	n          int
	stall      time.Duration // longest time between two echoes
	err        string
}

func (e *echoConn) ping() *pinger {
	pg := &pinger{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(pg.done)
		last := time.Now()
		for range 100000 {
			select {
			case <-pg.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if s := e.tryLine(fmt.Sprintf("ping %d from port %d\n", pg.n, e.c.LocalAddr().(*net.TCPAddr).Port)); s != "echoed" {
				pg.err = s
				return
			}
			pg.n++
			pg.stall = max(pg.stall, time.Since(last))
			last = time.Now()
		}
	}()
	return pg
}

func (pg *pinger) end() (n int, stall time.Duration, err string) {
	close(pg.stop)
	<-pg.done
	return pg.n, pg.stall, pg.err
}

// TestPrivilegedHAMemberLossNoFlapping: a node that reaches no member
// over its internal NIC (its health checks dropped there) gives up the
// active role through keepalived's check, and the pair does not flap: a
// blip shorter than the check's hysteresis (two failures a second apart)
// moves nothing, the member coming back to the node that left does not
// take the role back (no preemption), and over the toggles the active
// node changes at most once per toggle.
func TestPrivilegedHAMemberLossNoFlapping(t *testing.T) {
	r := startPair(t)
	a := waitActive(t, r.nodes)
	b := 1 - a
	w := r.watchActive(a)
	defer w.end()

	steps := []struct {
		name    string
		node    int
		block   bool
		active  int // the active node once the step settled
		changes int // active-node changes so far
	}{
		{"members unreachable from the active node", a, true, b, 1},
		{"members reachable again from it", a, false, b, 1},
		{"members unreachable from the new active node", b, true, a, 2},
		{"members reachable again from it", b, false, a, 2},
	}
	// A blip first: 300 ms without members is one failed check at most.
	r.nodes[a].blockMembers(t, r.p, true)
	time.Sleep(300 * time.Millisecond)
	r.nodes[a].blockMembers(t, r.p, false)
	w.settle(t, "a 300 ms blip on the active node", a, 0)
	for _, s := range steps {
		r.nodes[s.node].blockMembers(t, r.p, s.block)
		w.settle(t, s.name, s.active, s.changes)
	}
}

// TestPrivilegedHAStatusAfterRestart: a node keepalived holds in FAULT
// (it reaches no member) still says fault after its daemon restarts,
// although keepalived does not repeat its state to the new daemon, and
// says why; once the members are back, keepalived's word (standby)
// reaches the new daemon.
func TestPrivilegedHAStatusAfterRestart(t *testing.T) {
	r := startPair(t)
	b := 1 - waitActive(t, r.nodes)
	n := r.nodes[b]
	n.waitSettled(t)
	n.blockMembers(t, r.p, true)
	n.waitRole(t, "fault", 10*time.Second)

	n.restartDaemon(t, func(st *admin.Status) bool { return st.Ready })
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		st, err := n.daemon.Status()
		if err != nil || st.HA == nil || st.HA.Role != "fault" || st.HA.Cause == "" {
			t.Fatalf("status of the node in FAULT after its daemon restarted: %+v, %v; want role fault with a cause", st.HA, err)
		}
	}
	out := n.ns.Run(t, r.bin, "status", "-admin", "127.0.0.1:9469")
	if !strings.Contains(out, "ha fault since") || !strings.Contains(out, "ha fault: no member is up") {
		t.Errorf("edgeproxy status lacks the fault and its cause:\n%s", out)
	}
	n.blockMembers(t, r.p, false)
	n.waitRole(t, "standby", 10*time.Second)
}

// waitRole waits until the node's status shows role as keepalived's
// word (no derived cause).
func (n *pairNodeRun) waitRole(t *testing.T, role string, limit time.Duration) {
	t.Helper()
	var last *admin.HA
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if st, err := n.daemon.Status(); err == nil && st.HA != nil {
			if last = st.HA; last.Role == role && last.Cause == "" {
				return
			}
		}
	}
	t.Fatalf("node not %s within %s: %+v", role, limit, last)
}

// blockMembers drops (or lets through again) the node's packets to the
// members' HTTP port, which its health monitor checks.
func (n *pairNodeRun) blockMembers(t *testing.T, p *lab.Pair, block bool) {
	t.Helper()
	if block {
		n.ns.Run(t, "nft", "add table ip members_off")
		n.ns.Run(t, "nft", "add chain ip members_off out { type filter hook output priority 0 ; }")
		n.ns.Run(t, "nft", "add rule ip members_off out ip daddr "+p.MemberNet.String()+" tcp dport 8080 drop")
		return
	}
	n.ns.Run(t, "nft", "delete table ip members_off")
}

// activeWatch follows which node is active, from both nodes' status.
type activeWatch struct {
	mu      sync.Mutex
	active  int
	changes int
	stop    chan struct{}
	done    chan struct{}
}

func (r *pairRun) watchActive(first int) *activeWatch {
	w := &activeWatch{active: first, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for range 100000 {
			select {
			case <-w.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			act := -1
			for i, n := range r.nodes {
				if st, err := n.daemon.Status(); err == nil && st.HA != nil && st.HA.Role == "active" {
					act = i
				}
			}
			w.mu.Lock()
			if act >= 0 && act != w.active {
				w.active, w.changes = act, w.changes+1
			}
			w.mu.Unlock()
		}
	}()
	return w
}

// settle waits for the active node to be want, then watches 3 s more
// (past keepalived's hysteresis) and checks the count of changes.
func (w *activeWatch) settle(t *testing.T, step string, want, changes int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		act := w.active
		w.mu.Unlock()
		if act == want || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Logf("%s: node %d active, %d changes so far", step, w.active, w.changes)
	if w.active != want || w.changes != changes {
		t.Fatalf("%s: node %d active after %d changes, want node %d after %d", step, w.active, w.changes, want, changes)
	}
}

func (w *activeWatch) end() {
	close(w.stop)
	<-w.done
}
