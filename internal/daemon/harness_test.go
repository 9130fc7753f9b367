package daemon_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/certgen"
	"github.com/edgeproxy/edgeproxy/internal/fakefe"
	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// member is one fake front end in the backend namespace.
type member struct {
	name string
	addr netip.Addr
	fe   *fakefe.Server
	tls  *tls.Config
	lns  []net.Listener
}

func (m *member) start(t *testing.T, lab *testnet.Lab) {
	t.Helper()
	for _, p := range []struct {
		port int
		tls  *tls.Config
	}{{4443, m.tls}, {8080, nil}} {
		ln, err := lab.Backend.Listen("tcp", netip.AddrPortFrom(m.addr, uint16(p.port)).String())
		if err != nil {
			t.Fatalf("member %s: %v", m.name, err)
		}
		m.lns = append(m.lns, ln)
		go m.fe.Serve(ln, p.tls)
	}
}

func (m *member) stop() {
	for _, ln := range m.lns {
		ln.Close()
	}
	m.lns = nil
}

// deployment is a lab with two members, certificates and a running daemon.
type deployment struct {
	*labtest.Daemon
	lab     *testnet.Lab
	dir     string
	certs   *certgen.Set
	members []*member
	cfgPath string
	pin     string
	vip     netip.Addr // the fastl4 virtuals'
	params  lab.Skype
}

// memberNames are the members' names, in the order of the lab's Members4.
var memberNames = []string{"fe01.corp.example.com", "fe02.corp.example.com"}

func newDeployment(t *testing.T) *deployment {
	t.Helper()
	testnet.RequireRoot(t, "curl", "iperf3")
	return newDeploymentIn(t, testnet.Options{Members: 2}, t.TempDir())
}

// newDeploymentIn is newDeployment on a lab built with opts, with the
// certificates and the configuration file written in dir.
func newDeploymentIn(t *testing.T, opts testnet.Options, dir string) *deployment {
	t.Helper()
	l := testnet.New(t, opts)
	names := append(slices.Clone(certgen.SkypeNames), "new.example.com")
	certs, err := certgen.Write(dir, certgen.Options{PublicNames: names, Members: map[string][]string{
		"fe01.corp.example.com": names, "fe02.corp.example.com": names,
	}})
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{Daemon: &labtest.Daemon{NS: l.Proxy}, lab: l, dir: dir, certs: certs, vip: netip.MustParseAddr("198.18.0.20")}
	d.pin = testnet.TestPinDir(t, l.Proxy.Name)
	for i, name := range memberNames {
		leaf := certs.Members[name]
		cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		m := &member{name: name, addr: l.Members4[i],
			fe:  fakefe.New(fakefe.Options{Name: name}),
			tls: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
		m.start(t, l)
		t.Cleanup(m.stop)
		d.members = append(d.members, m)
	}
	d.params = d.skype()
	d.cfgPath = filepath.Join(dir, "edgeproxy.yaml")
	d.writeConfig(t, d.params)
	return d
}

// skype is the deployment's configuration: sfb-fe (both members, a TLS
// monitor) in XDP on vip:443 and through the L7 proxy on the lab's VIP4,
// and bulk (fe01's iperf3) in XDP on vip:5201.
func (d *deployment) skype() lab.Skype {
	ca := filepath.Join(d.dir, certgen.InternalCAFile)
	return lab.Skype{
		ControlSocket: filepath.Join(d.dir, "run", "control.sock"),
		Network:       testnet.NetworkOptions{NoGateway6: true, Hosts: d.lab.MemberHosts(memberNames...)},
		PinPath:       d.pin,
		Members:       memberNames,
		Monitor: lab.SkypeMonitor{TLS: true, CA: ca, Interval: 500 * time.Millisecond, Timeout: 400 * time.Millisecond,
			Rise: 1, Fall: 2},
		FastL4: &lab.SkypeFastL4{VIP: d.vip, Drain: 5 * time.Second},
		Bulk:   &lab.SkypeBulk{Members: memberNames[:1], Interval: time.Second, Timeout: 500 * time.Millisecond},
		L7: &lab.SkypeL7{VIP: d.lab.VIP4, Hosts: certgen.SkypeNames, Cert: filepath.Join(d.dir, certgen.PublicCertFile),
			Key: filepath.Join(d.dir, certgen.PublicKeyFile), InternalCA: ca, Skype: true, HTTP: true, HTTPNoProfile: true,
			Drain: 10 * time.Second},
	}
}

// writeConfig writes s as the configuration file, with extra (sections
// or virtuals the builder does not describe) appended.
func (d *deployment) writeConfig(t *testing.T, s lab.Skype, extra ...string) {
	t.Helper()
	text := d.lab.SkypeYAML(s) + strings.Join(extra, "")
	if err := os.WriteFile(d.cfgPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// start runs the daemon in the proxy namespace and waits until it is
// ready with every member of sfb-fe up.
func (d *deployment) start(t *testing.T) {
	t.Helper()
	d.startWhen(t, labtest.PoolUp("sfb-fe", len(d.members)))
}

// startWhen runs the daemon and waits until its status satisfies ready.
func (d *deployment) startWhen(t *testing.T, ready labtest.Ready) {
	t.Helper()
	d.startBinary(t, ready, labtest.Binary(t))
}

// startBinary runs the daemon from the binary bin and waits until its
// status satisfies ready.
func (d *deployment) startBinary(t *testing.T, ready labtest.Ready, bin string) {
	t.Helper()
	labtest.Start(t, d.Daemon, ready, bin, "run", "-config", d.cfgPath,
		"-pid-file", filepath.Join(d.dir, "edgeproxy.pid"), "-netcfg-state", filepath.Join(d.dir, "netcfg.json"),
		"-member-state", filepath.Join(d.dir, "members.json"))
}

func (d *deployment) signal(t *testing.T, s os.Signal) {
	t.Helper()
	if err := d.Signal(s); err != nil {
		t.Fatal(err)
	}
}

func (d *deployment) metrics(t *testing.T) string {
	t.Helper()
	return metricsText(t, d.Daemon)
}

// metricsText reads a daemon's /metrics.
func metricsText(t *testing.T, d *labtest.Daemon) string {
	t.Helper()
	resp, err := d.AdminClient().Get(d.AdminURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// waitMember waits until the daemon reports the pool's member in state
// (a member of several pools has a state in each).
func (d *deployment) waitMember(t *testing.T, pool, name, state string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := d.Status(); err == nil {
			for _, m := range st.Members {
				if m.Pool == pool && m.Member == name && m.State == state {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("member %s of %s not %s within 20s", name, pool, state)
}

// client returns an HTTPS client in the client namespace that trusts the
// public root and connects every name to addr. Keep-alives are off so
// every request is a new connection (and a new L4 flow).
func (d *deployment) client(addr netip.AddrPort, keepAlive bool) *http.Client {
	// fastl4 hands the TLS session to the member, whose certificate comes
	// from the internal CA; the L7 proxy serves the public one.
	roots := d.certs.PublicRoot.Pool()
	roots.AddCert(d.certs.Internal.Cert)
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.lab.Client.DialContext(ctx, "tcp", addr.String())
	}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:       dial,
			DisableKeepAlives: !keepAlive,
			TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		},
	}
}

// echo makes one request and returns what the member saw.
func echo(c *http.Client, url string) (*fakefe.Echo, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	var e fakefe.Echo
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		return nil, fmt.Errorf("GET %s: decode echo: %w", url, err)
	}
	return &e, nil
}

func TestMain(m *testing.M) { labtest.Main(m) }
