package l4

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// e2eVirtuals publish the backend's services through the fast path.
var e2eVirtuals = []Virtual{
	fastl4("web", "198.18.0.10:443", "fe4", 4443),
	fastl4("web6", "[2001:db8:1::10]:443", "fe6", 4443),
	fastl4("whoami", "198.18.0.10:7000", "fe4", 7000),
	fastl4("whoami6", "[2001:db8:1::10]:7000", "fe6", 7000),
	fastl4("sink", "198.18.0.10:5001", "fe4", 5001),
	fastl4("iperf", "198.18.0.10:5201", "fe4", 5201),
	fastl4("idle", "198.18.0.10:7100", "fe4", 7000, func(v *Virtual) { v.IdleTimeout = 2 * time.Second }),
}

// e2eEnv is a lab with the fast path attached and running, and servers
// on every member: HTTPS on 4443, whoami on 7000, a byte sink on 5001.
type e2eEnv struct {
	*env
	stop    func()
	whoErrs chan error // errors seen by whoami handlers
}

func newE2E(t *testing.T) *e2eEnv {
	e := newEnv(t, func(lab *testnet.Lab) *Spec {
		return testSpec(lab, e2eVirtuals...)
	}, func(o *Options) { o.MaxFlows = 1 << 16 })
	x := &e2eEnv{env: e, whoErrs: make(chan error, 1024)}
	cert := selfSigned(t)
	for _, m := range append(append([]netip.Addr(nil), e.lab.Members4...), e.lab.Members6...) {
		x.serveHTTPS(t, m, cert)
		x.serveWhoami(t, m)
		x.serveSink(t, m)
	}
	x.start()
	return x
}

// start runs the fast path's control loop until the test ends or stop.
func (x *e2eEnv) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	fp := x.fp
	go func() {
		defer close(done)
		_ = fp.Run(ctx)
	}()
	var once sync.Once
	x.stop = func() { once.Do(func() { cancel(); <-done }) }
	x.t.Cleanup(x.stop)
}

func selfSigned(t *testing.T) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "fe.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"fe.test"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func (x *e2eEnv) listen(t *testing.T, addr netip.Addr, port uint16) net.Listener {
	ln, err := x.lab.Backend.Listen("tcp", netip.AddrPortFrom(addr, port).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveHTTPS answers with "<client address> <member address>".
func (x *e2eEnv) serveHTTPS(t *testing.T, addr netip.Addr, cert tls.Certificate) {
	ln := x.listen(t, addr, 4443)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host, _, _ := net.SplitHostPort(r.RemoteAddr)
			fmt.Fprintf(w, "%s %s", host, addr)
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          nil,
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { srv.Close() })
}

// serve accepts connections on addr:port and runs handle on each, with a
// deadline, until the test ends.
func (x *e2eEnv) serve(t *testing.T, addr netip.Addr, port uint16, handle func(net.Conn)) {
	ln := x.listen(t, addr, port)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(60 * time.Second))
				handle(c)
			}()
		}
	}()
}

// serveWhoami writes "<client> <member>\n" and waits for the client to
// close.
func (x *e2eEnv) serveWhoami(t *testing.T, addr netip.Addr) {
	x.serve(t, addr, 7000, func(c net.Conn) {
		fmt.Fprintf(c, "%s %s\n", c.RemoteAddr(), c.LocalAddr())
		if _, err := io.Copy(io.Discard, c); err != nil {
			select {
			case x.whoErrs <- err:
			default:
			}
		}
	})
}

// serveSink counts what it receives and answers with the count (8 bytes)
// when the client half-closes.
func (x *e2eEnv) serveSink(t *testing.T, addr netip.Addr) {
	x.serve(t, addr, 5001, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		_ = binary.Write(c, binary.BigEndian, uint64(n))
	})
}

// whoami connects to the virtual and returns what the member saw.
func (x *e2eEnv) whoami(ctx context.Context, vip netip.AddrPort) (client, member string, err error) {
	c, err := x.lab.Client.DialContext(ctx, "tcp", vip.String())
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return "", "", fmt.Errorf("whoami answered %q", line)
	}
	return f[0], f[1], nil
}

func TestPrivilegedEndToEnd(t *testing.T) {
	testnet.RequireRoot(t, "curl", "iperf3", "ss")
	x := newE2E(t)
	lab := x.lab
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("curl over IPv4 and IPv6", func(t *testing.T) {
		curlSeesSNAT(ctx, t, lab)
	})

	t.Run("iperf3 bulk", func(t *testing.T) {
		srv := lab.Backend.Command(ctx, "iperf3", "-s", "-1")
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
		eventually(t, 5*time.Second, "iperf3 server listening", func() bool {
			out, _ := lab.Backend.Command(ctx, "ss", "-Hltn", "sport = :5201").CombinedOutput()
			return strings.Contains(string(out), "5201")
		})
		out, err := lab.Client.Command(ctx, "iperf3", "-c", "198.18.0.10", "-p", "5201", "-t", "3", "-J").CombinedOutput()
		if err != nil {
			t.Fatalf("iperf3: %v: %s", err, out)
		}
		var res struct {
			End struct {
				SumReceived struct {
					Bytes         float64 `json:"bytes"`
					BitsPerSecond float64 `json:"bits_per_second"`
				} `json:"sum_received"`
			} `json:"end"`
		}
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("iperf3 output: %v", err)
		}
		if res.End.SumReceived.Bytes == 0 {
			t.Fatalf("iperf3 moved no data: %s", out)
		}
		t.Logf("iperf3 through the fast path: %.0f MB in 3s, %.2f Gbit/s", res.End.SumReceived.Bytes/1e6, res.End.SumReceived.BitsPerSecond/1e9)
	})

	t.Run("member down takes no new flows", func(t *testing.T) {
		down := lab.Members4[0]
		x.do(func() {
			if err := x.fp.SetMemberUp("fe4", down, false); err != nil {
				t.Fatal(err)
			}
		})
		for i := range 30 {
			client, member, err := x.whoami(ctx, netip.MustParseAddrPort("198.18.0.10:7000"))
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			if strings.HasPrefix(member, down.String()+":") {
				t.Fatalf("connection %d went to %s, which is down", i, member)
			}
			if !strings.HasPrefix(client, lab.IntAddr4.String()+":") {
				t.Errorf("member saw client %s", client)
			}
		}
		x.do(func() {
			if err := x.fp.SetMemberUp("fe4", down, true); err != nil {
				t.Fatal(err)
			}
		})
		seen := map[string]bool{}
		for range 40 {
			_, member, err := x.whoami(ctx, netip.MustParseAddrPort("198.18.0.10:7000"))
			if err != nil {
				t.Fatal(err)
			}
			seen[strings.Split(member, ":")[0]] = true
		}
		if len(seen) != 2 {
			t.Errorf("after the member came back, 40 connections reached %v", seen)
		}
	})

	t.Run("10000 short connections", func(t *testing.T) {
		const total, workers = 10000, 8
		var next, failed, done atomic.Int64
		var firstErr atomic.Value
		deadline, stop := context.WithTimeout(ctx, 120*time.Second)
		defer stop()
		var wg sync.WaitGroup
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= total && deadline.Err() == nil {
					if _, _, err := x.whoami(deadline, netip.MustParseAddrPort("198.18.0.10:7000")); err != nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, err)
						continue
					}
					done.Add(1)
				}
			}()
		}
		wg.Wait()
		if failed.Load() != 0 || done.Load() != total {
			t.Fatalf("%d of %d connections succeeded, %d failed (first error: %v)", done.Load(), total, failed.Load(), firstErr.Load())
		}
	})

	t.Run("reset on idle timeout", func(t *testing.T) {
		for len(x.whoErrs) > 0 {
			<-x.whoErrs
		}
		c, err := lab.Client.DialContext(ctx, "tcp", "198.18.0.10:7100")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		// Idle past the 2s timeout: the GC resets both sides.
		_, err = r.ReadByte()
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client read after the idle timeout: %v, want a reset", err)
		}
		select {
		case err := <-x.whoErrs:
			if !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("member: %v, want a reset", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("the member's side was not reset")
		}
	})

	t.Run("flows listing and metrics", func(t *testing.T) {
		c, err := lab.Client.DialContext(ctx, "tcp", "198.18.0.10:7000")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
			t.Fatal(err)
		}
		local := netip.MustParseAddrPort(c.LocalAddr().String())
		flows, err := ReadFlows(x.opts.PinPath)
		if err != nil {
			t.Fatal(err)
		}
		var found *Flow
		for i := range flows {
			if flows[i].Client == local {
				found = &flows[i]
			}
		}
		if found == nil {
			t.Fatalf("connection from %s not listed among %d flows", local, len(flows))
		}
		if found.Virtual != "whoami" || found.VIP != netip.MustParseAddrPort("198.18.0.10:7000") || found.SNAT.Addr() != lab.IntAddr4 ||
			found.Member.Port() != 7000 || found.State != StateEstablished || found.Proto != "tcp" {
			t.Errorf("flow listed as %+v", *found)
		}

		// The flow gauges come from the last GC pass.
		x.do(func() {
			if err := x.fp.collect(); err != nil {
				t.Fatal(err)
			}
		})
		got := x.fp.gatherMetrics(t)
		for _, k := range []string{
			"edgeproxy_xdp_packets_total{reason=fwd_new,virtual=whoami}",
			"edgeproxy_xdp_packets_total{reason=fwd_server,virtual=web}",
			"edgeproxy_flows{state=established,virtual=whoami}",
			"edgeproxy_flows_capacity{}",
		} {
			if got[k] <= 0 {
				t.Errorf("metric %s = %v", k, got[k])
			}
		}
	})
}

func TestPrivilegedEndToEndIPv6(t *testing.T) {
	testnet.RequireRoot(t, "curl")
	x := newE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	members := map[string]bool{}
	for i := range 200 {
		client, member, err := x.whoami(ctx, netip.MustParseAddrPort("[2001:db8:1::10]:7000"))
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		ap, err := netip.ParseAddrPort(client)
		if err != nil || ap.Addr() != x.lab.IntAddr6 {
			t.Fatalf("member saw client %s, want %s", client, x.lab.IntAddr6)
		}
		members[member[:strings.LastIndex(member, ":")]] = true
	}
	if len(members) != 2 {
		t.Errorf("200 connections reached %v, want both members", members)
	}
}

// stream sends for about d through the sink virtual and returns how many
// bytes were sent and how many the member counted.
func (x *e2eEnv) stream(ctx context.Context, d time.Duration) (sent, counted uint64, err error) {
	c, err := x.lab.Client.DialContext(ctx, "tcp", "198.18.0.10:5001")
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d + 30*time.Second))
	buf := make([]byte, 32<<10)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		n, err := c.Write(buf)
		sent += uint64(n)
		if err != nil {
			return sent, 0, err
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return sent, 0, err
	}
	err = binary.Read(c, binary.BigEndian, &counted)
	return sent, counted, err
}

func TestPrivilegedRestartMidTransfer(t *testing.T) {
	x := newE2E(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	type result struct {
		sent, counted uint64
		err           error
	}
	res := make(chan result, 1)
	go func() {
		s, c, err := x.stream(ctx, 3*time.Second)
		res <- result{s, c, err}
	}()
	time.Sleep(time.Second)
	// Restart the control plane: the program and maps stay pinned.
	x.stop()
	if err := x.fp.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	x.open()
	x.start()
	r := <-res
	if r.err != nil {
		t.Fatalf("transfer across the restart: %v (sent %d)", r.err, r.sent)
	}
	if r.sent == 0 || r.counted != r.sent {
		t.Fatalf("member counted %d of %d bytes", r.counted, r.sent)
	}
	t.Logf("%d bytes across a restart", r.sent)
	// The pinned names came back: the virtual kept its id.
	if n := x.counter("sink", bpf.FastL4ReasonREASON_FWD_CLIENT); n == 0 {
		t.Error("no counted packets for the sink virtual after the restart")
	}
}

func TestPrivilegedReplaceProgram(t *testing.T) {
	testnet.RequireRoot(t)
	lab := testnet.New(t, testnet.Options{Members: 2})
	pin := testPinPath(t)
	// Another program sits on ext0 behind a pinned link, as an older
	// build would.
	if err := lab.Proxy.Do(func() error {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Name:         "older_build",
			Type:         ebpf.XDP,
			AttachType:   ebpf.AttachXDP,
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, xdpPass), asm.Return()},
			License:      "GPL",
		})
		if err != nil {
			return err
		}
		defer prog.Close()
		ifc, err := net.InterfaceByName(testnet.ExtIf)
		if err != nil {
			return err
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
		if err != nil {
			return err
		}
		defer l.Close()
		if err := mkdirAll(pin); err != nil {
			return err
		}
		return l.Pin(filepath.Join(pin, "link_"+testnet.ExtIf))
	}); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, lab: lab, spec: testSpec(lab, e2eVirtuals...)}
	e.opts = Options{PinPath: pin, ExtIf: testnet.ExtIf, IntIf: testnet.IntIf, MaxFlows: 1024, MaglevSize: 251, Logger: newEnvLogger(t)}
	e.open()
	t.Cleanup(func() { e.fp.Close() })
	x := &e2eEnv{env: e, whoErrs: make(chan error, 16)}
	for _, m := range lab.Members4 {
		x.serveWhoami(t, m)
	}
	x.start()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := x.whoami(ctx, netip.MustParseAddrPort("198.18.0.10:7000")); err != nil {
		t.Fatalf("through the replaced program: %v", err)
	}
	// The pinned link now runs this build.
	e.do(func() {
		l := e.fp.links[testnet.ExtIf]
		info, err := l.Info()
		if err != nil {
			t.Fatal(err)
		}
		same, err := sameProgram(info.Program, e.fp.objs.EdgeproxyFastl4)
		if err != nil || !same {
			t.Errorf("pinned link runs another program (%v)", err)
		}
	})
}

// curlSeesSNAT runs curl from the client to the IPv4 and IPv6 VIPs on 443
// and checks that the member saw the internal NIC's address as the client.
func curlSeesSNAT(ctx context.Context, t *testing.T, lab *testnet.Lab) {
	t.Helper()
	for _, tc := range []struct {
		url  string
		snat netip.Addr
	}{
		{"https://198.18.0.10/", lab.IntAddr4},
		{"https://[2001:db8:1::10]/", lab.IntAddr6},
	} {
		out, err := lab.Client.Command(ctx, "curl", "-sS", "-k", "--max-time", "10", tc.url).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %s: %v: %s", tc.url, err, out)
		}
		f := strings.Fields(string(out))
		if len(f) != 2 || f[0] != tc.snat.String() {
			t.Errorf("curl %s: the member saw %q, want the SNAT address %s as the client", tc.url, out, tc.snat)
		}
	}
}

// gatherMetrics checks the fast path's metrics with the linter and
// returns each series' value by name{label=value,...}, labels sorted.
func (f *FastPath) gatherMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(f.Collector())
	if problems, err := testutil.CollectAndLint(f.Collector()); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", err, problems)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			labels := []string{}
			for _, l := range m.Label {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			got[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return got
}
