package l7

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/prometheus/client_golang/prometheus"
)

// The ACME tests run Pebble, its DNS and the proxy on a loopback address
// of their own: Pebble's validations reach the proxy's virtuals there.
var (
	acmeVIP   = netip.MustParseAddr("127.0.22.1")
	acmeNames = []string{"webext.example.com", "meet.example.com"}
)

const (
	pebbleHTTPPort = 5002 // Pebble validates http-01 here
	pebbleTLSPort  = 5001 // and tls-alpn-01 here
)

// pebble is the ACME test CA, run as a process.
type pebble struct {
	cmd     *exec.Cmd
	dir     string
	tlsRoot string // verifies Pebble's own TLS
	client  *http.Client
}

var pebbleBin string

// buildPebble builds the Pebble tool of go.mod once.
func buildPebble(t *testing.T) string {
	t.Helper()
	needTool(t, "go")
	if pebbleBin != "" {
		return pebbleBin
	}
	dir, err := os.MkdirTemp("", "pebble")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "pebble")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/letsencrypt/pebble/v2/cmd/pebble").CombinedOutput()
	if err != nil {
		t.Fatalf("build pebble: %v: %s", err, out)
	}
	pebbleBin = bin
	return bin
}

// startPebble runs Pebble with certificates valid for validity, its DNS
// answering acmeNames with acmeVIP.
func startPebble(t *testing.T, validity time.Duration) *pebble {
	t.Helper()
	bin := buildPebble(t)
	dir := t.TempDir()
	ca := newTestCA(t, "Pebble TLS")
	cert, key, _ := ca.issue(t, "pebble", []string{"pebble"}, acmeVIP)
	dns, err := net.ListenPacket("udp", netip.AddrPortFrom(acmeVIP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dns.Close() })
	table := lab.DNSTable{}
	for _, n := range acmeNames {
		table[n] = []netip.Addr{acmeVIP}
	}
	go lab.ServeDNS(dns, table)
	dnsTCP, err := net.Listen("tcp", dns.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dnsTCP.Close() })
	go lab.ServeDNSTCP(dnsTCP, table)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress": acmeVIP.String() + ":14000", "managementListenAddress": acmeVIP.String() + ":15000",
		"certificate": cert, "privateKey": key, "httpPort": pebbleHTTPPort, "tlsPort": pebbleTLSPort,
		"keyAlgorithm": "ecdsa", "retryAfter": map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{"default": map[string]any{"description": "test", "validityPeriod": int(validity.Seconds())}},
	}}
	b, _ := json.Marshal(cfg)
	writeFile(t, filepath.Join(dir, "pebble.json"), b)
	pb := &pebble{dir: dir, tlsRoot: ca.rootPath,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool()}}}}
	pb.cmd = exec.Command(bin, "-config", filepath.Join(dir, "pebble.json"), "-dnsserver", dns.LocalAddr().String())
	pb.cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	log := &syncBuffer{}
	pb.cmd.Stdout, pb.cmd.Stderr = log, log
	if err := pb.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pb.stop()
		if t.Failed() {
			t.Logf("pebble:\n%s", log.String())
		}
	})
	waitFor(t, func() bool {
		resp, err := pb.client.Get(pb.directory())
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return pb
}

func (pb *pebble) directory() string { return "https://" + acmeVIP.String() + ":14000/dir" }

func (pb *pebble) stop() {
	if pb.cmd.ProcessState == nil {
		_ = pb.cmd.Process.Kill()
		_ = pb.cmd.Wait()
	}
}

// roots returns Pebble's issuing root, which changes with every start.
func (pb *pebble) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := pb.client.Get("https://" + acmeVIP.String() + ":15000/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root: %s", b)
	}
	return pool
}

// acmeSpec is an https virtual with an ACME certificate, and the http
// virtual on the same address that redirects every request.
func acmeSpec(pb *pebble, stateDir, challenge string) *Spec {
	https := netip.AddrPortFrom(acmeVIP, pebbleTLSPort)
	http := netip.AddrPortFrom(acmeVIP, pebbleHTTPPort)
	limits := ConnLimits{MaxConnsPerSource: 100, MaxHandshakesPerSource: 100}
	return &Spec{
		ACME: ACMEOptions{StateDir: stateDir, CheckInterval: 500 * time.Millisecond},
		Virtuals: []*Virtual{
			{Name: "web", Mode: ModeHTTPS, Listen: https, Limits: limits, TLS: TLS{HandshakeTimeout: 5 * time.Second},
				Certificates: []Certificate{{ACME: &ACME{Names: acmeNames, CA: pb.directory(), CARoot: pb.tlsRoot,
					Email: "ops@example.com", Challenge: challenge, KeyType: KeyECDSAP256}}},
				Sites: []*Site{{Hosts: acmeNames, Pool: "fe", Port: 4443, Limits: profileLimits(false)}}},
			{Name: "web-http", Mode: ModeHTTP, Listen: http, Limits: limits,
				Sites: []*Site{{Hosts: acmeNames, Redirect: true, Limits: profileLimits(false)}}},
		},
	}
}

func startACMEProxy(t *testing.T, spec *Spec) (*Proxy, *prometheus.Registry) {
	t.Helper()
	log := &syncBuffer{}
	reg := prometheus.NewRegistry()
	p := New(Options{Registry: reg, Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err := p.Apply(spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopProxy(p)
		if t.Failed() {
			t.Logf("proxy:\n%s", log.String())
		}
	})
	return p, reg
}

// gauge returns the value of the metric name with label cert, or NaN.
func gauge(t *testing.T, reg *prometheus.Registry, name, cert string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "cert" && l.GetValue() == cert {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	return math.NaN()
}

func stopProxy(p *Proxy) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.Shutdown(ctx)
}

// served returns the chain the proxy serves for sni, verified against
// roots, or an error.
func served(sni string, roots *x509.CertPool) ([]*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 2 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", netip.AddrPortFrom(acmeVIP, pebbleTLSPort).String(),
		&tls.Config{ServerName: sni, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates, nil
}

// waitServed waits (60 s at most) until the proxy serves a chain for
// every name that verifies against roots, and returns the leaf's serial.
func waitServed(t *testing.T, roots *x509.CertPool) string {
	t.Helper()
	var serial string
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range acmeNames {
		for {
			chain, err := served(n, roots)
			if err == nil {
				if len(chain) < 2 {
					t.Fatalf("%s: served %d certificate(s): the intermediate is missing", n, len(chain))
				}
				serial = chain[0].SerialNumber.String()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no certificate verifying against Pebble's root served: %v", n, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return serial
}

// TestACMEIssuanceAndRestart: an https virtual gets its certificate from
// Pebble over http-01 (answered by the port-80 virtual, whose site only
// redirects) and over tls-alpn-01 (answered by the https virtual itself),
// serves it by SNI with its intermediate, and after a restart serves the
// stored one with the CA gone.
func TestACMEIssuanceAndRestart(t *testing.T) {
	for _, challenge := range []string{ChallengeHTTP01, ChallengeTLSALPN01} {
		t.Run(challenge, func(t *testing.T) {
			pb := startPebble(t, 24*time.Hour)
			roots := pb.roots(t)
			state := filepath.Join(t.TempDir(), "acme")
			p, reg := startACMEProxy(t, acmeSpec(pb, state, challenge))
			serial := waitServed(t, roots)
			if exp := gauge(t, reg, "edgeproxy_certificate_expiry_seconds", "acme:meet.example.com"); !(exp > 3600) {
				t.Errorf("expiry metric of meet.example.com: %v, want about a day", exp)
			}
			if ok := gauge(t, reg, "edgeproxy_acme_last_order_success", "acme:webext.example.com"); ok != 1 {
				t.Errorf("last order success metric: %v, want 1", ok)
			}
			if fi, err := os.Stat(state); err != nil || fi.Mode().Perm() != 0o700 {
				t.Fatalf("state directory %s: %v %v, want 0700", state, fi.Mode(), err)
			}
			st := p.ACMEStatus()
			if len(st) != 1 || st[0].LastOutcome != "obtained" || st[0].Serial == "" {
				t.Fatalf("status: %+v", st)
			}

			// A reload keeps the certificate without a new order.
			if err := p.Apply(acmeSpec(pb, state, challenge)); err != nil {
				t.Fatal(err)
			}
			if again := waitServed(t, roots); again != serial {
				t.Fatalf("after reload: serial %s, want %s", again, serial)
			}
			if st2 := p.ACMEStatus(); len(st2) != 1 || !st2[0].LastAt.Equal(st[0].LastAt) {
				t.Fatalf("after reload: status %+v, want no new order since %s", st2, st[0].LastAt)
			}

			// Restart with the CA down: the stored certificate serves.
			stopProxy(p)
			pb.stop()
			_, _ = startACMEProxy(t, acmeSpec(pb, state, challenge))
			if again := waitServed(t, roots); again != serial {
				t.Fatalf("after restart: serial %s, want the stored %s", again, serial)
			}
		})
	}
}

// TestACMERenewal: a short-lived certificate is renewed while it
// serves; with the CA down, the renewal fails and the valid certificate
// keeps serving.
func TestACMERenewal(t *testing.T) {
	pb := startPebble(t, 30*time.Second)
	roots := pb.roots(t)
	state := filepath.Join(t.TempDir(), "acme")
	p, reg := startACMEProxy(t, acmeSpec(pb, state, ChallengeHTTP01))
	first := waitServed(t, roots)
	renewed := first
	deadline := time.Now().Add(40 * time.Second)
	for renewed == first && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		renewed = waitServed(t, roots)
	}
	if renewed == first {
		t.Fatalf("certificate %s not renewed in 40 s: status %+v", first, p.ACMEStatus())
	}
	if st := p.ACMEStatus(); st[0].LastOutcome != "renewed" {
		t.Fatalf("status after renewal: %+v", st)
	}

	pb.stop()
	deadline = time.Now().Add(40 * time.Second)
	for time.Now().Before(deadline) {
		if st := p.ACMEStatus(); st[0].LastOutcome == "failed" {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	st := p.ACMEStatus()
	if st[0].LastOutcome != "failed" || st[0].LastError == "" {
		t.Fatalf("CA down: status %+v, want a failed renewal", st)
	}
	if ok := gauge(t, reg, "edgeproxy_acme_last_order_success", "acme:webext.example.com"); ok != 0 {
		t.Errorf("CA down: last order success metric %v, want 0", ok)
	}
	if now := waitServed(t, roots); now != renewed {
		t.Fatalf("CA down: serving %s, want the still valid %s", now, renewed)
	}
}

// TestMain removes the Pebble binary the ACME tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if pebbleBin != "" {
		os.RemoveAll(filepath.Dir(pebbleBin))
	}
	os.Exit(code)
}
