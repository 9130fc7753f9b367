package plan

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/l7"
)

// A configuration written as users write it, through config.Parse
// (strict decoding, defaults, validation) and Compile, runs as is.
func TestParsedConfigurationServes(t *testing.T) {
	var hits atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "fe01")
	}))
	t.Cleanup(backend.Close)
	_, port, _ := net.SplitHostPort(backend.Listener.Addr().String())
	cert, key, roots := selfSigned(t, "webext.example.com", "dialin.example.com")
	yaml := fmt.Sprintf(`
network:
  external: {interface: ext0, addresses: [203.0.113.10/24], gateway: 203.0.113.1}
  internal: {interface: int0, addresses: [10.20.0.10/24]}
  hosts:
    fe01.corp.example.com: 127.0.0.1
pools:
  sfb-fe:
    members: [fe01.corp.example.com]
    monitor: {type: tcp, port: %s}
virtuals:
  - name: sfb-web
    mode: https
    listen: %s
    certificates:
      - {cert: %s, key: %s}
    sites:
      - hosts: [webext.example.com, dialin.example.com]
        pool: sfb-fe
        port: %s
        profile: skype
`, port, freePort(t), cert, key, port)
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	pl, err := Compile(context.Background(), cfg, nil)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	p := l7.New(l7.Options{})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	if err := p.Apply(pl.L7); err != nil {
		t.Fatalf("apply: %v", err)
	}
	addr := p.Addrs()["sfb-web"].String()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}}}
	for path, want := range map[string]int{"/whoami": 200, "/RgsConfig": 403} {
		res, err := client.Get("https://dialin.example.com" + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, res.StatusCode, want)
		}
	}
	if hits.Load() != 1 {
		t.Fatalf("%d requests at the member, want 1 (the denied path stays at the proxy)", hits.Load())
	}
}

// freePort returns 127.0.0.1:port with a port free at the moment.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// selfSigned writes a self-signed certificate for names and its key, and
// returns their paths and a pool trusting it.
func selfSigned(t *testing.T, names ...string) (string, string, *x509.CertPool) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return certPath, keyPath, roots
}
