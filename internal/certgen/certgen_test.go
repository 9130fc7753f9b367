package certgen_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/certgen"
)

func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	set, err := certgen.Write(dir, certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// The public certificate, served with its chain, verifies for every
	// published name against the root alone.
	pub, err := tls.X509KeyPair(read(certgen.PublicCertFile), read(certgen.PublicKeyFile))
	if err != nil {
		t.Fatalf("public.pem and public.key do not pair: %v", err)
	}
	if len(pub.Certificate) != 2 {
		t.Fatalf("public.pem holds %d certificates, want leaf + issuing CA", len(pub.Certificate))
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(read(certgen.PublicRootFile)) {
		t.Fatal("public-root-ca.pem holds no certificate")
	}
	leaf, _ := x509.ParseCertificate(pub.Certificate[0])
	inter := x509.NewCertPool()
	ic, _ := x509.ParseCertificate(pub.Certificate[1])
	inter.AddCert(ic)
	for _, name := range certgen.PublicNames {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
			t.Errorf("public certificate for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "webext.example.com", Roots: roots}); err == nil {
		t.Error("the leaf verifies without its intermediate: the chain test proves nothing")
	}

	// Members verify against the internal CA under their own name and the
	// public names the proxy sends as SNI.
	internal := x509.NewCertPool()
	if !internal.AppendCertsFromPEM(read(certgen.InternalCAFile)) {
		t.Fatal("internal-ca.pem holds no certificate")
	}
	for member, extra := range certgen.DefaultMembers() {
		kp, err := tls.X509KeyPair(read(member+".pem"), read(member+".key"))
		if err != nil {
			t.Fatalf("%s: %v", member, err)
		}
		c, _ := x509.ParseCertificate(kp.Certificate[0])
		for _, name := range append([]string{member}, extra...) {
			if _, err := c.Verify(x509.VerifyOptions{DNSName: name, Roots: internal}); err != nil {
				t.Errorf("member %s for %s: %v", member, name, err)
			}
		}
		if _, err := c.Verify(x509.VerifyOptions{DNSName: member, Roots: roots, Intermediates: inter}); err == nil {
			t.Errorf("member %s verifies against the public root", member)
		}
	}
	if set.Members["fe01.corp.example.com"] == nil {
		t.Error("Set lacks the member certificates")
	}

	for _, key := range []string{certgen.PublicKeyFile, certgen.InternalKeyFile, "fe01.corp.example.com.key"} {
		st, err := os.Stat(filepath.Join(dir, key))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, %v; want 0600", key, st.Mode().Perm(), err)
		}
	}

	// Existing certificates are not replaced without Force.
	if _, err := certgen.Write(dir, certgen.Options{}); !errors.Is(err, certgen.ErrExists) {
		t.Errorf("second Write = %v, want ErrExists", err)
	}
	if _, err := certgen.Write(dir, certgen.Options{Force: true}); err != nil {
		t.Errorf("Write with Force: %v", err)
	}
}

func TestIssueIPAddress(t *testing.T) {
	ca, err := certgen.NewRootCA("test", certgen.For(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	l, err := ca.Issue([]string{"198.19.1.11", "fe01.corp.example.com"}, certgen.For(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Cert.IPAddresses) != 1 || len(l.Cert.DNSNames) != 1 {
		t.Fatalf("SANs: %v %v", l.Cert.IPAddresses, l.Cert.DNSNames)
	}
	if _, err := l.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err != nil {
		t.Error(err)
	}
	if err := l.Cert.VerifyHostname("198.19.1.11"); err != nil {
		t.Error(err)
	}
}
