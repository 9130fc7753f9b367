package l7

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
)

// ocspResponder answers OCSP requests on loopback with responses made by
// openssl ocsp from an index of the CA's certificates.
type ocspResponder struct {
	url      string
	requests atomic.Int64
}

func startOCSPResponder(t *testing.T, ca *testCA) (*ocspResponder, func(leaf *x509.Certificate)) {
	t.Helper()
	needTool(t, "openssl")
	dir := t.TempDir()
	signer, key, index := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key"), filepath.Join(dir, "index.txt")
	writeFile(t, signer, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.inter.Raw}))
	kb, err := x509.MarshalECPrivateKey(ca.interKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	writeFile(t, index, nil)
	add := func(leaf *x509.Certificate) {
		line := fmt.Sprintf("V\t%s\t\t%X\tunknown\t/CN=%s\n", leaf.NotAfter.UTC().Format("060102150405Z"), leaf.SerialNumber, leaf.Subject.CommonName)
		f, err := os.OpenFile(index, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.WriteString(line)
	}
	r := &ocspResponder{}
	var n atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.requests.Add(1)
		body, _ := io.ReadAll(io.LimitReader(req.Body, 64<<10))
		in, out := filepath.Join(dir, fmt.Sprintf("req%d.der", n.Add(1))), filepath.Join(dir, fmt.Sprintf("resp%d.der", n.Load()))
		writeFile(t, in, body)
		ctx, cancel := context.WithTimeout(req.Context(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "openssl", "ocsp", "-index", index, "-rsigner", signer, "-rkey", key,
			"-CA", signer, "-reqin", in, "-respout", out, "-ndays", "1")
		if msg, err := cmd.CombinedOutput(); err != nil {
			http.Error(w, fmt.Sprintf("openssl ocsp: %v: %s", err, msg), http.StatusInternalServerError)
			return
		}
		resp, err := os.ReadFile(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(resp)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	r.url = "http://" + ln.Addr().String() + "/"
	return r, add
}

// issueWithOCSP issues a leaf naming an OCSP responder.
func (ca *testCA) issueWithOCSP(t *testing.T, names []string, responder string) (certPath, keyPath string, leaf *x509.Certificate) {
	t.Helper()
	ca.serial++
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
		DNSNames: names, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, OCSPServer: []string{responder},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.inter, &key.PublicKey, ca.interKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.interPEM...)
	kb, _ := x509.MarshalECPrivateKey(key)
	base := filepath.Join(ca.dir, fmt.Sprintf("ocsp-%d", ca.serial))
	certPath, keyPath = base+".pem", base+".key"
	writeFile(t, certPath, chain)
	writeFile(t, keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
	return certPath, keyPath, leaf
}

// A certificate that names an OCSP responder is served with the
// responder's answer stapled, fetched in the background; one whose
// responder cannot be reached is served at once without a staple.
func TestOCSPStapling(t *testing.T) {
	public := newTestCA(t, "Public")
	resp, add := startOCSPResponder(t, public)
	cert, key, leaf := public.issueWithOCSP(t, skypeHosts, resp.url)
	add(leaf)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + dead.Addr().String() + "/"
	dead.Close()
	owasCert, owasKey, _ := public.issueWithOCSP(t, []string{owasHost}, deadURL)

	e := newEnv(t, envOptions{virtual: func(v *config.Virtual) {
		v.Certificates[0] = config.Certificate{Cert: cert, Key: key}
		v.Certificates[1] = config.Certificate{Cert: owasCert, Key: owasKey}
	}})
	e.public = public
	status := func(sni string) string {
		return sClient(t, e.httpsAddr, "-CAfile", public.rootPath, "-servername", sni, "-status")
	}
	// The responder that cannot be reached delays nothing.
	if out := status(owasHost); !strings.Contains(out, "Verify return code: 0 (ok)") || !strings.Contains(out, "OCSP response: no response sent") {
		t.Fatalf("certificate with an unreachable responder:\n%s", out)
	}
	var out string
	for range 50 {
		out = status("webext.example.com")
		if strings.Contains(out, "OCSP Response Status: successful") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, want := range []string{"OCSP Response Status: successful", "Cert Status: good", "Verify return code: 0 (ok)"} {
		if !strings.Contains(out, want) {
			t.Fatalf("openssl s_client -status lacks %q:\n%s\nproxy log:\n%s", want, out, e.log.String())
		}
	}
	if resp.requests.Load() == 0 {
		t.Fatal("the responder was never asked")
	}
	// Past the response's nextUpdate (1 day) it is no longer served.
	e.proxy.skew.Add(int64(25 * time.Hour))
	if out := status("webext.example.com"); !strings.Contains(out, "OCSP response: no response sent") {
		t.Fatalf("an expired OCSP response was stapled:\n%s", out)
	}
}
