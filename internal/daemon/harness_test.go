package daemon_test

import (
	"bytes"
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
	"text/template"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/certgen"
	"github.com/edgeproxy/edgeproxy/internal/fakefe"
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
	params  params
}

type params struct {
	Lab       *testnet.Lab
	Network   string // the network section
	Dir       string
	FastL4VIP netip.Addr
	Pin       string
	Interval  string
	ExtraHost string
	// NoFastL4 leaves out the fastl4 virtuals; MaxFlows, when set, sizes
	// the flow table; Extra is appended to the virtuals.
	NoFastL4 bool
	MaxFlows int
	Extra    string
}

const labConfig = `
admin:
  listen: 127.0.0.1:9469
control:
  socket: {{.Dir}}/run/control.sock
{{.Network}}fastpath:
  pin_path: {{.Pin}}
{{if .MaxFlows}}  max_flows: {{.MaxFlows}}
{{end}}pools:
  sfb-fe:
    members: [fe01.corp.example.com, fe02.corp.example.com]
    monitor: {type: tls, port: 4443, interval: {{.Interval}}, timeout: 400ms, rise: 1, fall: 2, ca: {{.Dir}}/internal-ca.pem}
  bulk:
    members: [fe01.corp.example.com]
    monitor: {type: tcp, port: 5201, interval: 1s, timeout: 500ms}
virtuals:
{{if not .NoFastL4}}  - name: sfb-web-l4
    mode: fastl4
    listen: {{.FastL4VIP}}:443
    pool: sfb-fe
    port: 4443
    snat: automap
    drain_timeout: 5s
  - name: bulk
    mode: fastl4
    listen: {{.FastL4VIP}}:5201
    pool: bulk
    port: 5201
    snat: automap
{{end}}  - name: sfb-web
    mode: https
    listen: {{.Lab.VIP4}}:443
    certificates:
      - {cert: {{.Dir}}/public.pem, key: {{.Dir}}/public.key}
    sites:
      - hosts: [webext.example.com, meet.example.com, dialin.example.com, lyncdiscover.example.com{{.ExtraHost}}]
        pool: sfb-fe
        port: 4443
        backend_tls: {ca: {{.Dir}}/internal-ca.pem}
        profile: skype
    drain_timeout: 10s
  - name: sfb-web-http
    mode: http
    listen: {{.Lab.VIP4}}:80
    sites:
      - hosts: [webext.example.com, meet.example.com, dialin.example.com, lyncdiscover.example.com]
        pool: sfb-fe
        port: 8080
    drain_timeout: 10s
{{.Extra}}`

// memberNames are the members' names, in the order of the lab's Members4.
var memberNames = []string{"fe01.corp.example.com", "fe02.corp.example.com"}

func newDeployment(t *testing.T) *deployment {
	t.Helper()
	testnet.RequireRoot(t, "curl", "iperf3")
	lab := testnet.New(t, testnet.Options{Members: 2})
	dir := t.TempDir()
	names := append(slices.Clone(certgen.SkypeNames), "new.example.com")
	certs, err := certgen.Write(dir, certgen.Options{PublicNames: names, Members: map[string][]string{
		"fe01.corp.example.com": names, "fe02.corp.example.com": names,
	}})
	if err != nil {
		t.Fatal(err)
	}
	d := &deployment{Daemon: &labtest.Daemon{NS: lab.Proxy}, lab: lab, dir: dir, certs: certs}
	d.pin = testnet.TestPinDir(t, lab.Proxy.Name)
	for i, name := range memberNames {
		leaf := certs.Members[name]
		cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		m := &member{name: name, addr: lab.Members4[i],
			fe:  fakefe.New(fakefe.Options{Name: name}),
			tls: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
		m.start(t, lab)
		t.Cleanup(m.stop)
		d.members = append(d.members, m)
	}
	d.params = params{Lab: lab, Dir: dir, FastL4VIP: netip.MustParseAddr("198.18.0.20"), Pin: d.pin, Interval: "500ms",
		Network: lab.NetworkYAML(testnet.NetworkOptions{NoGateway6: true, Hosts: lab.MemberHosts(memberNames...)})}
	d.cfgPath = filepath.Join(dir, "edgeproxy.yaml")
	d.writeConfig(t, d.params)
	return d
}

func (d *deployment) writeConfig(t *testing.T, p params) {
	t.Helper()
	var b bytes.Buffer
	if err := template.Must(template.New("cfg").Parse(labConfig)).Execute(&b, p); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.cfgPath, b.Bytes(), 0o644); err != nil {
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
	labtest.Start(t, d.Daemon, ready, labtest.Binary(t), "run", "-config", d.cfgPath,
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
