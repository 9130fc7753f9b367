package daemon_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/diagnose"
	"github.com/edgeproxy/edgeproxy/internal/certgen"
	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
)

// acmeDeployment is the deployment with the https virtual's certificate
// ordered from Pebble, run in the client namespace (the Internet) with a
// DNS answering the published names with the VIP: the daemon orders from
// the proxy namespace, Pebble validates through the VIP's ports 80 and
// 443 as a public CA does.
type acmeDeployment struct {
	*deployment
	pebble *labtest.Pebble
	state  string
}

func newACMEDeployment(t *testing.T, challenge string, validity time.Duration) *acmeDeployment {
	t.Helper()
	d := newDeployment(t)
	table := lab.DNSTable{}
	for _, n := range certgen.SkypeNames {
		table[n] = []netip.Addr{d.lab.VIP4}
	}
	pb := labtest.StartPebble(t, d.lab.Client, labtest.PebbleOptions{Addr: d.lab.ClientAddr4, DNS: table, Validity: validity})
	a := &acmeDeployment{deployment: d, pebble: pb, state: filepath.Join(d.dir, "acme")}
	p := d.skype()
	p.FastL4, p.Bulk, p.LogLevel = nil, nil, "debug"
	p.L7.ACME = &lab.SkypeACME{CA: pb.Directory(), CARoot: pb.TLSRoot, Challenge: challenge,
		StateDir: a.state, CheckInterval: 500 * time.Millisecond}
	d.params = p
	d.writeConfig(t, p)
	return a
}

// chain connects from the client namespace to the VIP's 443 with sni
// ("" sends none) and returns the chain served, verified for name
// against roots.
func (a *acmeDeployment) chain(sni, name string, roots *x509.CertPool) ([]*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := a.lab.Client.DialContext(ctx, "tcp", netip.AddrPortFrom(a.lab.VIP4, 443).String())
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	var chain []*x509.Certificate
	c := tls.Client(raw, &tls.Config{ServerName: sni, InsecureSkipVerify: true,
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			for _, r := range rawCerts {
				cert, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				chain = append(chain, cert)
			}
			inter := x509.NewCertPool()
			for _, c := range chain[1:] {
				inter.AddCert(c)
			}
			_, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter})
			return err
		}})
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return chain, nil
}

// waitServed waits (60 s at most) until every published name is served a
// chain that verifies against Pebble's root and carries the
// intermediate, and returns the leaves' serials by name.
func (a *acmeDeployment) waitServed(t *testing.T, roots *x509.CertPool) map[string]string {
	t.Helper()
	serials := map[string]string{}
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range certgen.SkypeNames {
		for {
			chain, err := a.chain(n, n, roots)
			if err == nil {
				if len(chain) < 2 {
					t.Fatalf("%s: served %d certificate(s): the intermediate is missing", n, len(chain))
				}
				serials[n] = chain[0].SerialNumber.Text(16)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no chain verifying against Pebble's root served in 60 s: %v", n, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return serials
}

// acmeStatus returns the ACME certificate of /status.
func (a *acmeDeployment) acmeStatus(t *testing.T) admin.ACMECert {
	t.Helper()
	st, err := a.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.ACME) != 1 {
		t.Fatalf("status: %d ACME certificates, want 1: %+v", len(st.ACME), st.ACME)
	}
	return st.ACME[0]
}

// waitACME waits (60 s at most) until the ACME certificate's status
// satisfies ok.
func (a *acmeDeployment) waitACME(t *testing.T, what string, ok func(admin.ACMECert) bool) admin.ACMECert {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st := a.acmeStatus(t)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("ACME certificate not %s in 60 s: %+v", what, st)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestPrivilegedDaemonACME: the daemon orders the https virtual's
// certificate from Pebble over http-01 (answered on the VIP's port 80,
// whose site would otherwise send the request to the members) and over
// tls-alpn-01 (answered on 443); clients get a chain that verifies
// against Pebble's root with its intermediate, by SNI and, without SNI,
// the first name's. A reload and a restart reuse the stored certificates
// without a new order; with a file certificate first, clients without
// SNI get the file's.
func TestPrivilegedDaemonACME(t *testing.T) {
	for _, challenge := range []string{"http-01", "tls-alpn-01"} {
		t.Run(challenge, func(t *testing.T) {
			a := newACMEDeployment(t, challenge, 24*time.Hour)
			a.start(t)
			roots := a.pebble.Roots(t)
			serials := a.waitServed(t, roots)
			st := a.waitACME(t, "obtained", func(s admin.ACMECert) bool { return s.LastOutcome == "obtained" })
			if fi, err := os.Stat(a.state); err != nil || fi.Mode().Perm() != 0o700 {
				t.Fatalf("state directory %s: %v %v, want 0700", a.state, fi, err)
			}
			first := certgen.SkypeNames[0]
			chain, err := a.chain("", first, roots)
			if err != nil || chain[0].SerialNumber.Text(16) != serials[first] {
				t.Fatalf("no SNI: %v, want %s's ACME certificate", err, first)
			}
			fams := a.scrape(t)
			if exp, _ := value(fams, "edgeproxy_certificate_expiry_seconds", "cert", "acme:"+first); exp < 3600 {
				t.Errorf("expiry metric of %s: %v, want about a day", first, exp)
			}
			if ok, _ := value(fams, "edgeproxy_acme_last_order_success", "cert", "acme:"+first); ok != 1 {
				t.Errorf("edgeproxy_acme_last_order_success %v, want 1", ok)
			}

			// A reload that puts a file certificate first: it becomes the
			// no-SNI default, and the ACME certificates are not ordered
			// again.
			p, l7, acme := a.params, *a.params.L7, *a.params.L7.ACME
			acme.AfterFile = true
			l7.ACME, p.L7 = &acme, &l7
			a.writeConfig(t, p)
			a.signal(t, syscall.SIGHUP)
			a.waitChain(t, "", first, a.certs.PublicRoot.Pool())
			if now := a.acmeStatus(t); !now.LastAt.Equal(st.LastAt) || now.Serial != st.Serial {
				t.Fatalf("after reload: status %+v, want no new order since %s", now, st.LastAt)
			}

			// A restart with the ACME entry alone again, the CA down,
			// serves the stored certificates and orders nothing.
			a.writeConfig(t, a.params)
			a.Stop()
			a.pebble.Stop()
			a.start(t)
			if again := a.waitServed(t, roots); !equalMaps(again, serials) {
				t.Fatalf("after restart: serials %v, want the stored %v", again, serials)
			}
			if now := a.acmeStatus(t); now.LastOutcome != "" || now.Serial != st.Serial {
				t.Fatalf("after restart: status %+v, want the stored certificate %s and no order", now, st.Serial)
			}
		})
	}
}

// waitChain waits (20 s at most) until a connection with sni gets a
// chain verifying for name against roots.
func (a *acmeDeployment) waitChain(t *testing.T, sni, name string, roots *x509.CertPool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := a.chain(sni, name, roots)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("SNI %q: no chain for %s in 20 s: %v", sni, name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestPrivilegedDaemonACMERenewal: Pebble's 40 s certificates are renewed
// while they serve; with the CA down, renewals fail, are retried, show in
// /status and the metrics, and the valid certificate keeps serving.
// Through issuance and renewal at log level debug, no private key of the
// state directory appears in the daemon's output or on the admin
// endpoint.
func TestPrivilegedDaemonACMERenewal(t *testing.T) {
	a := newACMEDeployment(t, "http-01", 40*time.Second)
	a.start(t)
	roots := a.pebble.Roots(t)
	first := a.waitServed(t, roots)
	keys := a.keys(t)
	st := a.waitACME(t, "renewed", func(s admin.ACMECert) bool { return s.LastOutcome == "renewed" })
	renewed := a.waitServed(t, roots)
	for n := range first {
		if renewed[n] == first[n] {
			// Names renew one by one; wait for this one's.
			deadline := time.Now().Add(30 * time.Second)
			for renewed[n] == first[n] && time.Now().Before(deadline) {
				time.Sleep(500 * time.Millisecond)
				renewed = a.waitServed(t, roots)
			}
			if renewed[n] == first[n] {
				t.Fatalf("%s: certificate %s not renewed: status %+v", n, first[n], st)
			}
		}
	}
	keys = append(keys, a.keys(t)...)

	a.pebble.Stop()
	failed := a.waitACME(t, "failed", func(s admin.ACMECert) bool { return s.LastOutcome == "failed" && s.LastError != "" })
	fams := a.scrape(t)
	if ok, found := value(fams, "edgeproxy_acme_last_order_success", "cert", "acme:"+certgen.SkypeNames[0]); !found || ok != 0 {
		t.Errorf("CA down: edgeproxy_acme_last_order_success %v (found %v), want 0", ok, found)
	}
	for n, serial := range renewed {
		chain, err := a.chain(n, n, roots)
		if err != nil {
			t.Fatalf("CA down: %s: %v", n, err)
		}
		if s := chain[0].SerialNumber.Text(16); s != serial && s == first[n] {
			t.Fatalf("CA down: %s serves %s, want the renewed %s", n, s, serial)
		}
	}
	// The renewal is retried, failing again, while the certificate lasts
	// (a third of its lifetime).
	a.waitACME(t, "retried", func(s admin.ACMECert) bool { return s.LastOutcome == "failed" && s.LastAt.After(failed.LastAt) })
	a.noKeyShown(t, keys)
}

// keys returns every private key in the state directory (accounts and
// certificates) as the forms a leak would take: PEM, DER in hex, and
// base64 of the DER.
func (a *acmeDeployment) keys(t *testing.T) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(a.state, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(path, ".key") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s: no PEM", path)
		}
		out = append(out, strings.TrimSpace(string(b)), hex.EncodeToString(blk.Bytes),
			base64.StdEncoding.EncodeToString(blk.Bytes), base64.RawURLEncoding.EncodeToString(blk.Bytes))
		// A PEM body's lines, each a 64-character piece of the key.
		for _, line := range strings.Split(string(b), "\n") {
			if len(line) == 64 {
				out = append(out, line)
			}
		}
		return nil
	})
	if err != nil || len(out) == 0 {
		t.Fatalf("keys in %s: %v (%d found)", a.state, err, len(out))
	}
	return out
}

// noKeyShown fails when a key's text appears in the daemon's output or
// in an admin endpoint's answer.
func (a *acmeDeployment) noKeyShown(t *testing.T, keys []string) {
	t.Helper()
	shown := map[string]string{"daemon output": a.Log.String()}
	for _, path := range []string{"/", "/status", "/metrics", "/healthz"} {
		resp, err := a.AdminClient().Get(a.AdminURL(path))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		shown[path] = string(b)
	}
	for _, want := range []string{"ACME certificate obtained", "ACME certificate renewed", "ACME order failed",
		"level=DEBUG msg=\"obtaining certificate\" lib=certmagic"} {
		if !strings.Contains(shown["daemon output"], want) {
			t.Fatalf("the daemon's output lacks %q:\n%s", want, shown["daemon output"])
		}
	}
	for where, text := range shown {
		for _, k := range keys {
			if strings.Contains(text, k) {
				t.Fatalf("%s shows a private key: %.40s...", where, k)
			}
		}
	}
}

// diagnoseACME runs edgeproxy diagnose's acme check on the deployment,
// from the proxy namespace with the probes of port 80 from the client
// namespace, and returns its failing findings.
func (a *acmeDeployment) diagnoseACME(t *testing.T, resolver string) []diagnose.Finding {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, labtest.Binary(t), "diagnose", "-config", a.cfgPath, "-json", "-checks", "acme",
		"-netns", a.lab.Proxy.Name, "-client-netns", a.lab.Client.Name, "-resolver", resolver).Output()
	var doc struct {
		Findings []diagnose.Finding `json:"findings"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("diagnose: %v\n%s", err, out)
	}
	var fails []diagnose.Finding
	passes := 0
	for _, f := range doc.Findings {
		switch f.Verdict {
		case diagnose.Fail:
			fails = append(fails, f)
		case diagnose.Pass:
			passes++
		}
	}
	if passes == 0 && len(fails) == 0 {
		t.Fatalf("diagnose checked nothing:\n%s", out)
	}
	return fails
}

// oneFail fails the test unless fails is one finding about subject whose
// fix says fix.
func oneFail(t *testing.T, fault string, fails []diagnose.Finding, subject, fix string) {
	t.Helper()
	if len(fails) != 1 || !strings.Contains(fails[0].Subject, subject) || !strings.Contains(fails[0].Fix, fix) {
		t.Fatalf("%s: failing findings %+v, want one about %q whose fix says %q", fault, fails, subject, fix)
	}
}

// TestPrivilegedDaemonACMEDiagnose: edgeproxy diagnose passes the ACME
// path of a deployment that obtained its certificates, and gives one
// FAIL naming the fix for each fault: a name resolving elsewhere, port 80
// not published to the Internet, the CA down.
func TestPrivilegedDaemonACMEDiagnose(t *testing.T) {
	a := newACMEDeployment(t, "http-01", 24*time.Hour)
	a.start(t)
	a.waitServed(t, a.pebble.Roots(t))
	resolver := netip.AddrPortFrom(a.lab.ClientAddr4, 53).String()
	if fails := a.diagnoseACME(t, resolver); len(fails) != 0 {
		t.Fatalf("healthy ACME path: failing findings %+v", fails)
	}

	// A resolver that sends meet elsewhere.
	table := lab.DNSTable{}
	for _, n := range certgen.SkypeNames {
		table[n] = []netip.Addr{a.lab.VIP4}
	}
	table["meet.example.com"] = []netip.Addr{netip.MustParseAddr("198.18.0.99")}
	pc, err := a.lab.Client.ListenPacket("udp", netip.AddrPortFrom(a.lab.ClientAddr4, 5353).String())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go lab.ServeDNS(pc, table)
	oneFail(t, "meet resolving elsewhere", a.diagnoseACME(t, pc.LocalAddr().String()), "meet.example.com", "point the public record")

	// Port 80 dropped on the external NIC, as by a firewall that
	// publishes 443 only.
	a.lab.Proxy.Run(t, "nft", "add table inet acmefault; add chain inet acmefault in { type filter hook input priority 0; }; "+
		"add rule inet acmefault in iifname ext0 tcp dport 80 drop")
	oneFail(t, "port 80 dropped", a.diagnoseACME(t, resolver), "http-01", "publish TCP port 80")
	a.lab.Proxy.Run(t, "nft", "delete table inet acmefault")

	a.pebble.Stop()
	oneFail(t, "CA down", a.diagnoseACME(t, resolver), "acme CA", "let the proxy host reach")
}
