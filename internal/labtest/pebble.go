package labtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/certgen"
	"github.com/edgeproxy/edgeproxy/internal/lab"
)

// PebblePackage is the ACME test CA of go.mod's tools.
const PebblePackage = "github.com/letsencrypt/pebble/v2/cmd/pebble"

// Pebble's ports on its address.
const (
	PebbleACMEPort       = 14000
	PebbleManagementPort = 15000
)

// PebbleOptions shape a Pebble run.
type PebbleOptions struct {
	// Addr is Pebble's address in the namespace: its directory, its
	// management API and its DNS server listen there.
	Addr netip.Addr
	// DNS is what Pebble's DNS answers: the names it validates.
	DNS lab.DNSTable
	// Validity is the issued certificates' lifetime.
	Validity time.Duration
}

// Pebble is the ACME test CA running in a lab namespace, with a DNS
// server of its own that its validations resolve names with. It
// validates http-01 on port 80 and tls-alpn-01 on port 443, as a public
// CA does.
type Pebble struct {
	NS   *lab.NS
	Opts PebbleOptions
	// TLSRoot is a PEM file verifying Pebble's own TLS: an ACME
	// certificate's ca_root.
	TLSRoot string
	Log     lab.Log

	dir    string
	cmd    *exec.Cmd
	done   chan struct{}
	client *http.Client
}

var (
	pebbleOnce sync.Once
	pebblePath string
	pebbleErr  error
)

// pebbleBinary builds Pebble once per test process, beside edgeproxy's
// binary (Main removes both).
func pebbleBinary(t testing.TB) string {
	t.Helper()
	Binary(t)
	pebbleOnce.Do(func() {
		pebblePath = filepath.Join(binaryDir, "pebble")
		if out, err := exec.Command("go", "build", "-o", pebblePath, PebblePackage).CombinedOutput(); err != nil {
			pebbleErr = fmt.Errorf("build pebble: %v\n%s", err, out)
		}
	})
	if pebbleErr != nil {
		t.Fatal(pebbleErr)
	}
	return pebblePath
}

// StartPebble runs Pebble in ns and waits until its directory answers;
// it is stopped at the test's cleanup, its log shown when the test failed.
func StartPebble(t testing.TB, ns *lab.NS, opts PebbleOptions) *Pebble {
	t.Helper()
	bin := pebbleBinary(t)
	dir := t.TempDir()
	ca, err := certgen.NewRootCA("Pebble TLS root", certgen.For(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue([]string{opts.Addr.String()}, certgen.For(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	p := &Pebble{NS: ns, Opts: opts, TLSRoot: filepath.Join(dir, "pebble-tls-root.pem"), dir: dir,
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: ns.DialContext, TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}}
	for name, b := range map[string][]byte{"pebble-tls-root.pem": ca.PEM(), "tls.pem": leaf.CertPEM, "tls.key": leaf.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p.serveDNS(t)
	cfg, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":           netip.AddrPortFrom(opts.Addr, PebbleACMEPort).String(),
		"managementListenAddress": netip.AddrPortFrom(opts.Addr, PebbleManagementPort).String(),
		"certificate":             filepath.Join(dir, "tls.pem"), "privateKey": filepath.Join(dir, "tls.key"),
		"httpPort": 80, "tlsPort": 443, "keyAlgorithm": "ecdsa",
		"retryAfter": map[string]int{"authz": 1, "order": 1},
		"profiles": map[string]any{"default": map[string]any{
			"description": "lab", "validityPeriod": int(opts.Validity.Seconds())}},
	}})
	if err := os.WriteFile(filepath.Join(dir, "pebble.json"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("pebble log:\n%s", p.Log.String())
		}
	})
	p.cmd = ns.Command(context.Background(), bin, "-config", filepath.Join(dir, "pebble.json"),
		"-dnsserver", netip.AddrPortFrom(opts.Addr, 53).String())
	p.cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	p.cmd.Stdout, p.cmd.Stderr = &p.Log, &p.Log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start pebble: %v", err)
	}
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := p.client.Get(p.Directory())
		if err == nil {
			resp.Body.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble directory %s not answering in 30 s: %v\n%s", p.Directory(), err, p.Log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// serveDNS answers Opts.DNS on Opts.Addr:53, UDP and TCP, until the
// test ends.
func (p *Pebble) serveDNS(t testing.TB) {
	t.Helper()
	addr := netip.AddrPortFrom(p.Opts.Addr, 53).String()
	pc, err := p.NS.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := p.NS.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	go lab.ServeDNS(pc, p.Opts.DNS)
	go lab.ServeDNSTCP(ln, p.Opts.DNS)
}

// Directory is the ACME directory URL.
func (p *Pebble) Directory() string {
	return "https://" + netip.AddrPortFrom(p.Opts.Addr, PebbleACMEPort).String() + "/dir"
}

// Stop ends Pebble (the CA outage); it does nothing when Pebble has
// exited.
func (p *Pebble) Stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Roots returns the root Pebble issues under (a new one at each start):
// what a client of the ordered certificates trusts.
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	url := "https://" + netip.AddrPortFrom(p.Opts.Addr, PebbleManagementPort).String() + "/roots/0"
	resp, err := p.client.Get(url)
	if err != nil {
		t.Fatalf("get pebble root: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root from %s: no PEM certificate: %s", url, b)
	}
	return pool
}
