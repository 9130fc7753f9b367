package diagnose

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
)

// pki is a certificate with its key.
type pki struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

var serialNo atomic.Int64

// certSpec describes a test certificate.
type certSpec struct {
	CN        string
	DNS       []string
	IPs       []netip.Addr
	CA        bool
	NotBefore time.Time
	NotAfter  time.Time
}

// issue signs spec with parent (nil: self-signed).
func issue(t testing.TB, parent *pki, spec certSpec) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if spec.NotBefore.IsZero() {
		spec.NotBefore = time.Now().Add(-time.Hour)
	}
	if spec.NotAfter.IsZero() {
		spec.NotAfter = time.Now().Add(365 * 24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serialNo.Add(1)),
		Subject:               pkix.Name{CommonName: spec.CN, Organization: []string{"edgeproxy test"}},
		NotBefore:             spec.NotBefore,
		NotAfter:              spec.NotAfter,
		DNSNames:              spec.DNS,
		BasicConstraintsValid: true,
		IsCA:                  spec.CA,
	}
	for _, a := range spec.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	}
	if spec.CA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{Cert: c, Key: key}
}

// testPKI is a public root → intermediate chain and an internal CA.
type testPKI struct {
	Root, Inter, Internal *pki
}

func newTestPKI(t testing.TB) *testPKI {
	root := issue(t, nil, certSpec{CN: "Test Public Root CA", CA: true})
	return &testPKI{
		Root:     root,
		Inter:    issue(t, root, certSpec{CN: "Test Public Intermediate CA", CA: true}),
		Internal: issue(t, nil, certSpec{CN: "Corp Internal CA", CA: true}),
	}
}

func pool(cs ...*pki) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c.Cert)
	}
	return p
}

// writeCert writes leaf + chain to dir/name.pem and the leaf's key to
// dir/name.key.
func writeCert(t testing.TB, dir, name string, leaf *pki, chain ...*pki) config.Certificate {
	t.Helper()
	var b []byte
	for _, c := range append([]*pki{leaf}, chain...) {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})...)
	}
	cp := filepath.Join(dir, name+".pem")
	kp := filepath.Join(dir, name+".key")
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	writeKey(t, kp, leaf.Key)
	return config.Certificate{Cert: cp, Key: kp}
}

func writeKey(t testing.TB, path string, k *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writePool(t testing.TB, path string, cs ...*pki) string {
	t.Helper()
	var b []byte
	for _, c := range cs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Cert.Raw})...)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func tlsCert(leaf *pki, chain ...*pki) tls.Certificate {
	tc := tls.Certificate{PrivateKey: leaf.Key, Leaf: leaf.Cert}
	for _, c := range append([]*pki{leaf}, chain...) {
		tc.Certificate = append(tc.Certificate, c.Cert.Raw)
	}
	return tc
}

// loopback returns a random address in 127/8 other than 127.0.0.1, so
// that fixed ports (4443) do not meet other tests' listeners.
func loopback(t testing.TB) netip.Addr {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return netip.AddrFrom4([4]byte{127, 1 + b[0]%250, b[1], 1 + b[2]%250})
}

// listen opens a TCP listener, closed at the end of the test.
func listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serve runs an HTTP(S) server on ln until the end of the test. With
// certs it is HTTPS; the first certificate is the default.
func serve(t testing.TB, ln net.Listener, h http.Handler, certs ...tls.Certificate) netip.AddrPort {
	t.Helper()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
	}
	if len(certs) > 0 {
		srv.TLSConfig = &tls.Config{Certificates: certs, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return netip.MustParseAddrPort(ln.Addr().String())
}

// runCheck runs one check and returns its findings.
func runCheck(t testing.TB, env *Env, c Check) []Finding {
	t.Helper()
	if env.Timeout == 0 {
		env.Timeout = 3 * time.Second
	}
	fs, err := Run(context.Background(), env, c)
	if err != nil {
		t.Fatalf("run %s: %v", c.Name, err)
	}
	for _, f := range fs {
		t.Logf("%s %s %s: %s | fix: %s", f.Verdict, f.Check, f.Subject, strings.ReplaceAll(f.Evidence, "\n", " / "), f.Fix)
	}
	return fs
}

// find returns the findings whose subject contains subj, effects
// included.
func find(fs []Finding, subj string) []Finding {
	var out []Finding
	for _, f := range fs {
		if strings.Contains(f.Subject, subj) {
			out = append(out, f)
		}
		out = append(out, find(f.Effects, subj)...)
	}
	return out
}

// expect asserts that some finding on subj has the verdict and that its
// evidence (and fix) contain every word.
func expect(t testing.TB, fs []Finding, subj string, v Verdict, words ...string) Finding {
	t.Helper()
	var seen []string
	for _, f := range find(fs, subj) {
		seen = append(seen, f.Verdict.String()+" "+f.Subject+": "+f.Evidence)
		if f.Verdict != v {
			continue
		}
		text := f.Evidence + "\n" + f.Fix
		ok := true
		for _, w := range words {
			if !strings.Contains(text, w) {
				ok = false
			}
		}
		if ok {
			return f
		}
	}
	t.Fatalf("no %s finding on %q containing %q; findings on it:\n%s", v, subj, words, strings.Join(seen, "\n"))
	return Finding{}
}

// expectAtMost asserts that no finding has a verdict at least v.
func expectAtMost(t testing.TB, fs []Finding, v Verdict) {
	t.Helper()
	for _, f := range fs {
		if f.Verdict > v {
			t.Errorf("unexpected %s %s %s: %s", f.Verdict, f.Check, f.Subject, f.Evidence)
		}
	}
}

func selfPID(pid int, _ string) bool { return pid == os.Getpid() }
