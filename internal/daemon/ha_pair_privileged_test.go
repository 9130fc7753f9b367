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
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/certgen"
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
`

// pairNodeRun is one node of the pair lab: its daemon and keepalived.
type pairNodeRun struct {
	ns         *lab.NS
	dir        string
	daemon     *labtest.Daemon
	keepalived *exec.Cmd
}

// TestPrivilegedHAUnplannedFailover: two nodes with keepalived; the
// active one dies (keepalived and daemon killed, links down). HTTPS
// requests through the L7 VIP in a bounded loop succeed again within
// 1.5 s, served by the other node.
func TestPrivilegedHAUnplannedFailover(t *testing.T) {
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
	bin := rootOnlyBinary(t)
	l4VIP := netip.MustParseAddr("198.18.0.20")
	var nodes [2]*pairNodeRun
	for i := range nodes {
		nodes[i] = startPairNode(t, p, i, bin, dir, func(nd string) string {
			return fmt.Sprintf(pairConfig, nd, p.NodeNetworkYAML(i), testnet.TestPinDir(t, p.Nodes[i].Name), 150-50*i,
				p.ExtAddrs[1-i], p.IntAddrs[1-i], p.Floating, p.Members[0], p.VIP, dir, l4VIP)
		})
	}
	active := waitActive(t, nodes)
	t.Logf("node %d active", active)

	// One request per connection, dialled and read in this goroutine (an
	// http.Transport keeps dialling in the background after a timeout).
	tlsConf := &tls.Config{ServerName: "webext.example.com", RootCAs: certs.PublicRoot.Pool(), MinVersion: tls.VersionTLS12}
	get := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		c, err := p.Client.DialContext(ctx, "tcp", netip.AddrPortFrom(p.VIP, 443).String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		tc := tls.Client(c, tlsConf)
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
	if err := get(); err != nil {
		t.Fatalf("the L7 VIP does not serve before the failover: %v", err)
	}
	// The fastl4 VIP serves through the active node (the lab's bridges
	// hand over frames with partial checksums). What happens to the
	// connection after the failover, without mirroring, is reported.
	l4, err := openEcho(p, l4VIP)
	if err != nil {
		t.Fatalf("fastl4 through the active node: %v", err)
	}

	killed := time.Now()
	nodes[active].die(t)
	var back time.Time
	for n := 0; n < 400 && time.Since(killed) < 10*time.Second; n++ {
		if err := get(); err == nil {
			back = time.Now()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if back.IsZero() {
		t.Fatalf("no HTTPS request through the VIP succeeded within 10s of the failover")
	}
	gap := back.Sub(killed)
	t.Logf("L7 VIP served again %s after the active node died", gap.Round(time.Millisecond))
	if gap > 1500*time.Millisecond {
		t.Errorf("L7 VIP served again after %s, want within 1.5s", gap)
	}
	if st, err := nodes[1-active].daemon.Status(); err != nil || st.HA == nil || st.HA.Role != "active" {
		t.Errorf("the surviving node's status: %+v, %v; want role active", st, err)
	}
	t.Logf("fastl4 connection opened before the failover, afterwards: %s", l4.try())
	l4.c.Close()
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
	n := &pairNodeRun{ns: p.Nodes[i], dir: nd, daemon: &labtest.Daemon{NS: p.Nodes[i]}}
	labtest.Start(t, n.daemon, labtest.PoolUp("web", 1), bin, "run", "-config", path,
		"-pid-file", filepath.Join(nd, "edgeproxy.pid"), "-netcfg-state", filepath.Join(nd, "netcfg.json"),
		"-member-state", filepath.Join(nd, "members.json"))
	conf, err := exec.Command(bin, "ha", "keepalived-conf", "-config", path, "-edgeproxy", bin).Output()
	if err != nil {
		t.Fatalf("keepalived-conf: %v", err)
	}
	kconf := filepath.Join(nd, "keepalived.conf")
	if err := os.WriteFile(kconf, conf, 0o644); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	n.keepalived = n.ns.Command(context.Background(), "keepalived", "--dont-fork", "--log-console", "--vrrp",
		"--use-file="+kconf, "--pid="+filepath.Join(nd, "keepalived.pid"), "--vrrp_pid="+filepath.Join(nd, "vrrp.pid"))
	n.keepalived.Stdout, n.keepalived.Stderr = &log, &log
	n.keepalived.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.keepalived.Start(); err != nil {
		t.Fatalf("start keepalived: %v", err)
	}
	t.Cleanup(func() {
		n.killKeepalived()
		n.keepalived.Wait()
		if t.Failed() {
			t.Logf("node %d keepalived log:\n%s", i, log.String())
		}
	})
	return n
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

func openEcho(p *lab.Pair, vip netip.Addr) (*echoConn, error) {
	c, err := p.Client.Dial("tcp", netip.AddrPortFrom(vip, 5201).String())
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
func (e *echoConn) try() string {
	e.c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := e.c.Write([]byte("ping\n")); err != nil {
		return "write failed: " + err.Error()
	}
	line, err := e.r.ReadString('\n')
	if err != nil {
		return fmt.Sprintf("no echo (client port %d): %v", e.c.LocalAddr().(*net.TCPAddr).Port, err)
	}
	if line != "ping\n" {
		return fmt.Sprintf("echo %q", line)
	}
	return "echoed"
}
