package diagnose

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/certgen"
	"github.com/edgeproxy/edgeproxy/internal/fakefe"
	labcfg "github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// The end-to-end test runs the real daemon in the lab's proxy namespace
// in front of fake front ends, then diagnoses the proxy host from inside
// that namespace: a healthy deployment passes, and each fault of the
// seeds is found.

// e2eSkype is the deployment's configuration: the front ends published
// through a fastl4 virtual on 198.18.0.20 and through the L7 proxy on the
// lab's VIP4, monitored by an https check of the External Web Site.
func e2eSkype(lab *testnet.Lab, dir, pin string) labcfg.Skype {
	return labcfg.Skype{
		Network: testnet.NetworkOptions{Unmanaged: true, Hosts: lab.MemberHosts(e2eMembers...)},
		PinPath: pin, Members: e2eMembers,
		Monitor: labcfg.SkypeMonitor{HTTPS: true, Path: "/", Host: "webext.example.com", CA: filepath.Join(dir, "public-root-ca.pem"),
			Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 1, Fall: 1},
		FastL4: &labcfg.SkypeFastL4{VIP: netip.MustParseAddr("198.18.0.20")},
		L7: &labcfg.SkypeL7{VIP: lab.VIP4, Hosts: certgen.SkypeNames, Cert: filepath.Join(dir, "public.pem"), Key: filepath.Join(dir, "public.key"),
			InternalCA: filepath.Join(dir, "public-root-ca.pem"), Skype: true, HTTP: true, HTTPNoProfile: true},
	}
}

// externalSite is what a front end's External Web Site serves: the fake
// front end without the management applications (seed 001: they are
// missing from the external web site).
func externalSite(fe *fakefe.Server) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := strings.ToLower(normPath(r.URL.Path))
		for _, m := range []string{"/cscp", "/ocspowershell", "/rgsconfig"} {
			if strings.HasPrefix(p, m) {
				http.NotFound(w, r)
				return
			}
		}
		fe.ServeHTTP(w, r)
	})
}

// e2eMember is a front end in the backend namespace with its External
// Web Site on 4443/8080 and, when asked, its Internal Web Site on 443.
type e2eMember struct {
	name string
	addr netip.Addr
	mu   sync.Mutex
	srvs map[uint16]*http.Server
	lns  map[uint16]net.Listener // closed by stop even before Serve takes them
}

func (m *e2eMember) serve(t *testing.T, lab *testnet.Lab, port uint16, h http.Handler, fe *fakefe.Server, cert *tls.Certificate) {
	t.Helper()
	ln, err := lab.Backend.Listen("tcp", netip.AddrPortFrom(m.addr, port).String())
	if err != nil {
		t.Fatalf("member %s port %d: %v", m.name, port, err)
	}
	var tc *tls.Config
	if cert != nil {
		tc = &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, tc)
	}
	hs := fe.HTTPServer(tc)
	hs.Handler = h
	m.mu.Lock()
	if m.srvs == nil {
		m.srvs, m.lns = map[uint16]*http.Server{}, map[uint16]net.Listener{}
	}
	m.srvs[port], m.lns[port] = hs, ln
	m.mu.Unlock()
	go func() { _ = hs.Serve(ln) }()
}

func (m *e2eMember) stopAll() {
	m.mu.Lock()
	ports := make([]uint16, 0, len(m.srvs))
	for p := range m.srvs {
		ports = append(ports, p)
	}
	m.mu.Unlock()
	for _, p := range ports {
		m.stop(p)
	}
}

func (m *e2eMember) stop(port uint16) {
	m.mu.Lock()
	hs, ln := m.srvs[port], m.lns[port]
	delete(m.srvs, port)
	delete(m.lns, port)
	m.mu.Unlock()
	if hs != nil {
		_ = hs.Close()
		_ = ln.Close()
	}
}

type e2eDeployment struct {
	*labtest.Daemon
	lab     *testnet.Lab
	dir     string
	certs   *certgen.Set
	skype   labcfg.Skype
	cfgPath string
	members []*e2eMember
	fes     []*fakefe.Server
	pubCert tls.Certificate
}

// e2eMembers are the front ends' names, in the order of the lab's Members4.
var e2eMembers = []string{"fe01.corp.example.com", "fe02.corp.example.com"}

func newE2E(t *testing.T) *e2eDeployment {
	t.Helper()
	testnet.RequireRoot(t, "go")
	lab := testnet.New(t, testnet.Options{Members: 2})
	dir := t.TempDir()
	members := map[string][]string{}
	for _, n := range e2eMembers {
		members[n] = certgen.SkypeNames
	}
	certs, err := certgen.Write(dir, certgen.Options{PublicNames: certgen.SkypeNames, Members: members})
	if err != nil {
		t.Fatal(err)
	}
	d := &e2eDeployment{Daemon: &labtest.Daemon{NS: lab.Proxy}, lab: lab, dir: dir, certs: certs}
	d.pubCert, err = tls.X509KeyPair(certs.Public.CertPEM, certs.Public.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	// The External Web Sites carry the public certificate (seed 000): the
	// fastl4 virtual hands it to clients unchanged.
	for i, name := range e2eMembers {
		fe := fakefe.New(fakefe.Options{Name: name, Users: map[string]string{alice.User: alice.Password}, Domain: alice.Domain})
		m := &e2eMember{name: name, addr: lab.Members4[i]}
		t.Cleanup(m.stopAll)
		m.serve(t, lab, 4443, externalSite(fe), fe, &d.pubCert)
		m.serve(t, lab, 8080, externalSite(fe), fe, nil)
		d.members = append(d.members, m)
		d.fes = append(d.fes, fe)
	}
	// The Internet's DNS, in the client namespace.
	pc, err := lab.Client.ListenPacket("udp", netip.AddrPortFrom(lab.ClientAddr4, 53).String())
	if err != nil {
		t.Fatal(err)
	}
	table := map[string][]netip.Addr{}
	for _, n := range certgen.SkypeNames {
		table[n] = []netip.Addr{lab.VIP4}
	}
	testnet.ServeDNS(t, pc, table)

	fast := netip.MustParseAddr("198.18.0.20")
	lab.Proxy.Run(t, "ip", "addr", "add", fast.String()+"/32", "dev", testnet.ExtIf)
	lab.Proxy.Run(t, "sysctl", "-qw", "net.ipv4.ip_local_reserved_ports=40000-59999")
	d.skype = e2eSkype(lab, dir, testnet.TestPinDir(t, lab.Proxy.Name))
	d.cfgPath = filepath.Join(dir, "edgeproxy.yaml")
	return d
}

func (d *e2eDeployment) writeConfig(t *testing.T) {
	t.Helper()
	if err := os.WriteFile(d.cfgPath, []byte(d.lab.SkypeYAML(d.skype)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// start runs the daemon on the current configuration until it is ready
// with every member up.
func (d *e2eDeployment) start(t *testing.T) {
	t.Helper()
	d.writeConfig(t)
	labtest.Start(t, d.Daemon, labtest.PoolUp("sfb-fe", len(d.members)), labtest.Binary(t), "run", "-config", d.cfgPath,
		"-pid-file", "", "-netcfg-state", "-", "-control-socket", "-", "-member-state", "-", "-cleanup")
}

// diagnose runs every check from inside the proxy namespace.
func (d *e2eDeployment) diagnose(t *testing.T) []Finding {
	t.Helper()
	cfg, err := config.Load(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	env := &Env{
		Config:      cfg,
		NS:          d.lab.Proxy.Do,
		ClientDial:  d.lab.Client.DialContext,
		Resolver:    netip.AddrPortFrom(d.lab.ClientAddr4, 53).String(),
		Roots:       d.certs.PublicRoot.Pool(),
		RootsName:   "the example's public root",
		Credentials: alice,
		Timeout:     2 * time.Second,
	}
	fs, err := Run(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	_ = WriteText(&b, fs, true)
	t.Logf("diagnose:\n%s", b.String())
	return fs
}

func TestPrivilegedDiagnoseEndToEnd(t *testing.T) {
	d := newE2E(t)
	d.start(t)

	fs := d.diagnose(t)
	expectAtMost(t, fs, Pass)
	for _, c := range All() {
		if c.Name == ACME.Name {
			continue // no ACME certificate here: the daemon tests diagnose one
		}
		if len(findChecks(fs, c.Name)) == 0 {
			t.Errorf("check %s found nothing to look at", c.Name)
		}
	}
	expect(t, fs, "sfb-web-l4 198.18.0.20:443", Pass, "handled by XDP program")
	expect(t, fs, "sfb-web 198.18.0.10:443", Pass, "edgeproxy (pid")
	expect(t, fs, "sfb-web https://lyncdiscover.example.com NTLM", Pass, "handshake completed")
	expect(t, fs, "sfb-web-l4 https://lyncdiscover.example.com autodiscover", Pass) // through XDP, as a client
	expect(t, fs, "sfb-web https://lyncdiscover.example.com denied paths", Pass, "→ 403")

	t.Run("command", func(t *testing.T) { e2eCommand(t, d, len(fs)) })

	t.Run("VIP missing", func(t *testing.T) {
		d.lab.Proxy.Run(t, "ip", "addr", "del", d.lab.VIP4.String()+"/32", "dev", testnet.ExtIf)
		defer d.lab.Proxy.Run(t, "ip", "addr", "add", d.lab.VIP4.String()+"/32", "dev", testnet.ExtIf)
		fs := d.diagnose(t)
		expect(t, fs, "VIP 198.18.0.10", Fail, "not an address of this host")
	})

	t.Run("default route on the internal NIC", func(t *testing.T) {
		d.lab.Proxy.Run(t, "ip", "route", "add", "default", "via", d.lab.RouterAddr4.String(), "dev", testnet.IntIf, "metric", "50")
		defer d.lab.Proxy.Run(t, "ip", "route", "del", "default", "via", d.lab.RouterAddr4.String(), "dev", testnet.IntIf, "metric", "50")
		fs := d.diagnose(t)
		expect(t, fs, "default route IPv4", Fail, "on the internal NIC")
	})

	t.Run("members not routed through the internal NIC", func(t *testing.T) {
		d.lab.Proxy.Run(t, "ip", "route", "del", d.lab.MemberNet4.String())
		defer d.lab.Proxy.Run(t, "ip", "route", "add", d.lab.MemberNet4.String(), "via", d.lab.RouterAddr4.String(), "dev", testnet.IntIf)
		fs := d.diagnose(t)
		expect(t, fs, "member fe01.corp.example.com", Fail, "not the internal NIC int0")
		expect(t, fs, "member fe01.corp.example.com:4443", Fail)
	})

	t.Run("External Web Site down, Internal Web Site up", func(t *testing.T) {
		m := d.members[1]
		m.stop(4443)
		m.serve(t, d.lab, 443, d.fes[1], d.fes[1], &d.pubCert)
		defer func() {
			m.stop(443)
			m.serve(t, d.lab, 4443, externalSite(d.fes[1]), d.fes[1], &d.pubCert)
		}()
		fs := d.diagnose(t)
		expect(t, fs, "member fe02.corp.example.com:4443", Fail, "refuses", "port 443 answers (the Internal Web Site)")
	})

	t.Run("wrong certificate on the External Web Site", func(t *testing.T) {
		leaf, err := d.certs.PublicRoot.Issue([]string{"sip.example.com"}, certgen.For(90*24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		wrong, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		m := d.members[0]
		m.stop(4443)
		m.serve(t, d.lab, 4443, externalSite(d.fes[0]), d.fes[0], &wrong)
		defer func() {
			m.stop(4443)
			m.serve(t, d.lab, 4443, externalSite(d.fes[0]), d.fes[0], &d.pubCert)
		}()
		fs := d.diagnose(t)
		expect(t, fs, "member fe01.corp.example.com:4443", Fail, "CN=sip.example.com", "does not carry webext.example.com")
	})

	t.Run("sent to the Internal Web Site without the skype profile", func(t *testing.T) {
		// The members' Internal Web Sites on 443: internal links, the
		// management applications.
		for _, m := range d.members {
			internal := fakefe.New(fakefe.Options{Name: m.name, ExternalName: m.name})
			m.serve(t, d.lab, 443, internal, internal, &d.pubCert)
			defer m.stop(443)
		}
		d.Stop()
		d.skype.L7.Port, d.skype.L7.Skype = 443, false
		d.start(t)
		defer func() {
			d.Stop()
			d.skype.L7.Port, d.skype.L7.Skype = 4443, true
			d.start(t)
		}()
		fs := d.diagnose(t)
		expect(t, fs, "site webext.example.com → sfb-fe:443", Fail, "Internal Web Site")
		expect(t, fs, "sfb-web https://lyncdiscover.example.com autodiscover", Fail, "links to fe0")
		expect(t, fs, "sfb-web https://lyncdiscover.example.com denied paths", Fail, "→ 200: GET /cscp")
	})
}

// e2eCommand runs edgeproxy diagnose on the healthy deployment (n
// findings, as the package found), then with a default route on the
// internal NIC.
func e2eCommand(t *testing.T, d *e2eDeployment, n int) {
	doc, code := d.command(t)
	if code != 0 || doc.Verdict != Pass || doc.Fail != 0 || len(doc.Findings) != n {
		t.Errorf("edgeproxy diagnose: exit %d, verdict %s, %d failed, %d findings (the package found %d)",
			code, doc.Verdict, doc.Fail, len(doc.Findings), n)
	}
	d.lab.Proxy.Run(t, "ip", "route", "add", "default", "via", d.lab.RouterAddr4.String(), "dev", testnet.IntIf, "metric", "50")
	defer d.lab.Proxy.Run(t, "ip", "route", "del", "default", "via", d.lab.RouterAddr4.String(), "dev", testnet.IntIf, "metric", "50")
	doc, code = d.command(t)
	if code != 1 || doc.Verdict != Fail {
		t.Errorf("with a default route on int0: exit %d, verdict %s, want 1 and FAIL", code, doc.Verdict)
	}
	expect(t, doc.Findings, "default route IPv4", Fail, "on the internal NIC")
}

type diagnoseDoc struct {
	Verdict  Verdict
	Fail     int
	Findings []Finding
}

// command runs `edgeproxy diagnose -json` from the host, pointed at the
// lab's namespaces, and returns its document and exit status.
func (d *e2eDeployment) command(t *testing.T, extra ...string) (diagnoseDoc, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"diagnose", "-config", d.cfgPath, "-json", "-timeout", "2s",
		"-netns", d.lab.Proxy.Name, "-client-netns", d.lab.Client.Name,
		"-resolver", netip.AddrPortFrom(d.lab.ClientAddr4, 53).String(),
		"-ca-bundle", filepath.Join(d.dir, certgen.PublicRootFile),
		"-user", alice.Domain + `\` + alice.User}
	cmd := exec.CommandContext(ctx, labtest.Binary(t), append(args, extra...)...)
	cmd.Env = append(os.Environ(), "EDGEPROXY_DIAGNOSE_PASSWORD="+alice.Password)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("edgeproxy diagnose: %v\n%s", err, stderr.String())
	}
	var doc diagnoseDoc
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("edgeproxy diagnose -json: %v\n%s\n%s", err, out, stderr.String())
	}
	return doc, code
}

func findChecks(fs []Finding, check string) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

func TestMain(m *testing.M) { labtest.Main(m) }
