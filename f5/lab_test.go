package f5

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/certgen"
	"github.com/edgeproxy/edgeproxy/internal/fakefe"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

func TestMain(m *testing.M) { labtest.Main(m) }

// labCerts writes the certificates sfb-irules.conf refers to, and the
// front ends' own, issued by the internal CA for the published names.
func labCerts(t *testing.T) (string, *certgen.Set) {
	t.Helper()
	dir := t.TempDir()
	members := map[string][]string{"fe01.corp.example.com": certgen.SkypeNames, "fe02.corp.example.com": certgen.SkypeNames}
	set, err := certgen.Write(dir, certgen.Options{PublicNames: certgen.SkypeNames, Members: members})
	if err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{
		certgen.PublicCertFile: "public.example.com.pem",
		certgen.PublicKeyFile:  "public.example.com.key",
		certgen.InternalCAFile: "corp_internal_ca.pem",
	} {
		if err := os.Rename(filepath.Join(dir, from), filepath.Join(dir, to)); err != nil {
			t.Fatal(err)
		}
	}
	return dir, set
}

// serveFrontEnd runs a fake front end, management applications included,
// on addr:4443 in the lab's backend.
func serveFrontEnd(t *testing.T, lab *testnet.Lab, addr netip.Addr, name string, leaf *certgen.Leaf) *fakefe.Server {
	t.Helper()
	cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := lab.Backend.Listen("tcp", netip.AddrPortFrom(addr, 4443).String())
	if err != nil {
		t.Fatal(err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	fe := fakefe.New(fakefe.Options{Name: name})
	hs := fe.HTTPServer(tc)
	go func() { _ = hs.Serve(tls.NewListener(ln, tc)) }()
	t.Cleanup(func() { _ = hs.Close() })
	return fe
}

// TestPrivilegedImportedSkypeIRules runs the daemon on what sfb-irules.conf
// imports to, in front of front ends that serve their management
// applications: through the VIP /cscp is refused, the web services are
// not, and port 80 redirects to https.
func TestPrivilegedImportedSkypeIRules(t *testing.T) {
	testnet.RequireRoot(t, "go")
	lab := testnet.New(t, testnet.Options{Members: 2})
	dir, set := labCerts(t)
	var fes []*fakefe.Server
	for i, name := range []string{"fe01.corp.example.com", "fe02.corp.example.com"} {
		fes = append(fes, serveFrontEnd(t, lab, lab.Members4[i], name, set.Members[name]))
	}
	res, _, y := importAndCheck(t, "bigip.conf", load(t, "sfb-irules.conf"), Options{CertDir: dir})
	if n := res.Report.Count(Unsupported); n != 0 {
		t.Fatalf("%d entries not carried over:\n%s", n, res.Report)
	}
	path := filepath.Join(dir, "edgeproxy.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &labtest.Daemon{NS: lab.Proxy}
	labtest.Start(t, d, labtest.PoolUp("sfb_fe_web", 2), labtest.Binary(t), "run", "-config", path,
		"-pid-file", "", "-netcfg-state", "-", "-cleanup")

	roots := x509.NewCertPool()
	roots.AddCert(set.PublicRoot.Cert)
	client := &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return lab.Client.DialContext(ctx, network, netip.AddrPortFrom(lab.VIP4, 443).String())
			},
			TLSClientConfig: &tls.Config{RootCAs: roots},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	get := func(url string) *http.Response {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	for _, p := range []string{"/cscp", "/Cscp/", "/OcsPowerShell/", "/RgsConfig"} {
		if resp := get("https://webext.example.com" + p); resp.StatusCode != http.StatusForbidden {
			t.Errorf("GET %s through the VIP: %s, want 403", p, resp.Status)
		}
	}
	if resp := get("https://webext.example.com/meet/"); resp.StatusCode == http.StatusForbidden || resp.StatusCode >= 500 {
		t.Errorf("GET /meet/ through the VIP: %s, want the front end's answer", resp.Status)
	}
	for _, fe := range fes {
		if n := fe.ManagementHits(); n != 0 {
			t.Errorf("a front end served %d management requests", n)
		}
	}

	client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return lab.Client.DialContext(ctx, network, netip.AddrPortFrom(lab.VIP4, 80).String())
	}
	resp := get("http://meet.example.com/meet/x?y=1")
	if loc := resp.Header.Get("Location"); resp.StatusCode/100 != 3 || loc != "https://meet.example.com/meet/x?y=1" {
		t.Errorf("GET http://meet.example.com/meet/x?y=1: %s, Location %q", resp.Status, loc)
	}
}
