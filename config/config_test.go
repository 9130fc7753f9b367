package config_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/certgen"
)

const examplePath = "../examples/skype.yaml"

var (
	certOnce sync.Once
	certDir  string
	certErr  error
)

// exampleCerts issues the example's certificates once per test binary.
func exampleCerts(t *testing.T) string {
	t.Helper()
	certOnce.Do(func() {
		certDir, certErr = os.MkdirTemp("", "edgeproxy-config-test-")
		if certErr == nil {
			_, certErr = certgen.Write(filepath.Join(certDir, "tls"), certgen.Options{})
		}
	})
	if certErr != nil {
		t.Fatalf("issue example certificates: %v", certErr)
	}
	return certDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if certDir != "" {
		os.RemoveAll(certDir)
	}
	os.Exit(code)
}

// example returns examples/skype.yaml with its certificate paths moved to
// a directory holding freshly issued certificates.
func example(t *testing.T) string {
	t.Helper()
	dir := exampleCerts(t)
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(data), "/etc/edgeproxy/tls/", filepath.Join(dir, "tls")+"/")
}

func lineOf(t *testing.T, text, needle string) int {
	t.Helper()
	i := strings.Index(text, needle)
	if i < 0 {
		t.Fatalf("%q not in the configuration", needle)
	}
	return strings.Count(text[:i], "\n") + 1
}

func TestExampleIsAccepted(t *testing.T) {
	text := example(t)
	c, err := config.Parse("skype.yaml", []byte(text))
	if err != nil {
		t.Fatalf("the example is rejected:\n%v", err)
	}
	// The example shows both ways of publishing the front ends; the
	// fastl4 ones are flagged because the management paths stay open
	// there. Nothing else is.
	if other := withoutL4SkypeWarnings(c.Warnings); len(other) != 0 || len(c.Warnings) != 2 {
		t.Errorf("the example has warnings other than the two fastl4 ones:\n%v", (&config.Errors{List: c.Warnings}).Error())
	}
	if len(c.Virtuals) != 4 || len(c.Pools) != 2 {
		t.Fatalf("decoded %d virtuals and %d pools, want 4 and 2", len(c.Virtuals), len(c.Pools))
	}

	l4 := c.Virtuals[0]
	if l4.Name != "sfb-web-l4" || l4.Mode != config.ModeFastL4 || l4.Listen != netip.MustParseAddrPort("203.0.113.20:443") ||
		l4.Pool != "sfb-fe" || l4.Port != 4443 || !l4.SNAT.Automap {
		t.Errorf("virtuals[0] = %+v", l4)
	}
	if got := c.SNATAddresses(l4); len(got) != 1 || got[0] != netip.MustParseAddr("10.20.0.10") {
		t.Errorf("SNAT addresses of the automap virtual = %v, want the internal NIC's 10.20.0.10", got)
	}
	if c.Network.Internal.Routes[0].To != netip.MustParsePrefix("10.10.0.0/16") || c.Network.Internal.Routes[0].Via != netip.MustParseAddr("10.20.0.1") {
		t.Errorf("internal route = %+v", c.Network.Internal.Routes[0])
	}
	if a, ok := c.MemberAddr(c.Pools["sfb-fe"].Members[1]); !ok || a != netip.MustParseAddr("10.10.0.12") {
		t.Errorf("fe02 resolves to %v %v, want 10.10.0.12 from network.hosts", a, ok)
	}
	mon := c.Pools["owas"].Monitor
	if mon.Type != config.MonitorHTTPS || mon.Port != 443 || mon.Path != "/hosting/discovery" || len(mon.Expect) != 1 || mon.Expect[0] != 200 {
		t.Errorf("owas monitor = %+v", mon)
	}
	web := c.Virtuals[2]
	if want := filepath.Join(exampleCerts(t), "tls", "public.pem"); web.Certificates[0].Cert != want {
		t.Errorf("certificate path = %q, want %q", web.Certificates[0].Cert, want)
	}
	s := web.Sites[0]
	if s.Profile != config.ProfileSkype || !s.UsesWindowsAuth() || s.BackendTLS == nil {
		t.Errorf("sites[0] = %+v", s)
	}
	if web.Sites[1].UsesWindowsAuth() {
		t.Error("the owas site has Windows auth pinning without asking for it")
	}

	// Positions name the lines of the file.
	for path, needle := range map[string]string{
		"virtuals[2].sites[0].pool":                  "        pool: sfb-fe\n        port: 4443",
		"virtuals[3]":                                "- name: sfb-web-http",
		`network.hosts["owas01.corp.example.com"]`:   "owas01.corp.example.com: 10.10.0.30",
		"pools.owas.monitor":                         "monitor: {type: https",
		"network.internal.routes[0].via":             "{to: 10.10.0.0/16",
		"virtuals[2].certificates[0].key":            "{cert: ",
		"virtuals[0].idle_timeout":                   "idle_timeout: 300s",
		"virtuals[2].sites[0].backend_tls.ca":        "backend_tls: {ca:",
		"virtuals[2].sites[0].hosts[3]":              "hosts: [webext.example.com, meet.example.com, dialin.example.com, lyncdiscover.example.com]\n        pool: sfb-fe\n        port: 4443",
		"virtuals[0].nonexistent.key.falls.back.to.": "- name: sfb-web-l4 ",
	} {
		if got, want := c.Pos.Find(path).Line, lineOf(t, text, needle); got != want {
			t.Errorf("line of %s = %d, want %d", path, got, want)
		}
	}
	if got := c.Where("virtuals[1].port"); got != "skype.yaml:44:5" {
		t.Errorf("Where(virtuals[1].port) = %q, want skype.yaml:44:5", got)
	}
}

// The example's certificate paths work as relative paths too: they are
// resolved against the configuration file's directory.
func TestRelativePathsResolveAgainstTheFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := certgen.Write(filepath.Join(dir, "tls"), certgen.Options{}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "edgeproxy.yaml")
	rel := strings.ReplaceAll(string(data), "/etc/edgeproxy/tls/", "tls/")
	if err := os.WriteFile(file, []byte(rel), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(file)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got, want := c.Virtuals[2].Sites[0].BackendTLS.CA, filepath.Join(dir, "tls", "internal-ca.pem"); got != want {
		t.Errorf("backend CA path = %q, want %q", got, want)
	}
	if c.File != file {
		t.Errorf("File = %q", c.File)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing file: %v, want ErrNotExist", err)
	}
}

const minimal = `
network:
  external: {interface: ext0, addresses: [198.18.0.2/24]}
  internal: {interface: int0, addresses: [198.19.0.2/24], routes: [{to: 198.19.1.0/24, via: 198.19.0.1}]}
pools:
  web: {members: [198.19.1.11]}
virtuals:
  - {name: l4, mode: fastl4, listen: 198.18.0.10:443, pool: web, port: 4443}
  - name: l7
    mode: http
    listen: 198.18.0.10:80
    sites:
      - {hosts: [a.example.com], pool: web, port: 8080}
      - {hosts: [b.example.com], pool: web, port: 8080, profile: skype, response_timeout: 1000s}
`

func TestDefaults(t *testing.T) {
	c, err := config.Parse("min.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Listen != "127.0.0.1:9469" {
		t.Errorf("admin listen = %q", c.Admin.Listen)
	}
	fp := c.FastPath
	if fp.PinPath != "/sys/fs/bpf/edgeproxy" || fp.MaxFlows != 262144 || fp.SNATPorts != (config.PortRange{First: 40000, Last: 59999}) || fp.GCInterval.D() != time.Second {
		t.Errorf("fastpath defaults = %+v", fp)
	}
	l4 := c.Virtuals[0]
	if l4.IdleTimeout.D() != 300*time.Second || l4.HandshakeTimeout.D() != 5*time.Second || l4.CloseTimeout.D() != 5*time.Second ||
		!l4.ResetsOnTimeout() || l4.LooseInit || l4.LooseClose || l4.MSSOverride != 0 || !l4.SNAT.Automap || l4.Proto != "tcp" {
		t.Errorf("fastl4 defaults = %+v", l4.FastL4)
	}
	if l4.DrainTimeout.D() != 30*time.Second {
		t.Errorf("drain timeout = %v", l4.DrainTimeout)
	}
	m := c.Pools["web"].Monitor
	if m.Type != "tcp" || m.Interval.D() != 5*time.Second || m.Timeout.D() != 2*time.Second || m.Rise != 2 || m.Fall != 3 {
		t.Errorf("monitor defaults = %+v", m)
	}
	if m.Port != 4443 {
		t.Errorf("monitor port = %d, want 4443, the port of the pool's first user", m.Port)
	}
	if c.Pools["web"].Members[0].Weight != 1 || c.Pools["web"].Name != "web" {
		t.Errorf("pool = %+v", c.Pools["web"])
	}
	if !c.Network.Managed() || c.Network.External.XDPMode != "native" {
		t.Errorf("network defaults: managed %v, xdp %q", c.Network.Managed(), c.Network.External.XDPMode)
	}

	generic, skype := c.Virtuals[1].Sites[0], c.Virtuals[1].Sites[1]
	if generic.Limits != config.ProfileLimits("") || generic.Effective() != generic.Limits {
		t.Errorf("generic site limits = %+v", generic.Limits)
	}
	want := config.Limits{
		HeaderTimeout: config.Duration(20 * time.Second), MaxHeaderBytes: 64 << 10, MaxBodyBytes: 1 << 30,
		ResponseTimeout: config.Duration(1000 * time.Second), IdleTimeout: config.Duration(1800 * time.Second),
		StallTimeout: config.Duration(120 * time.Second), DialTimeout: config.Duration(5 * time.Second),
		PoolIdleTimeout: config.Duration(90 * time.Second),
	}
	if skype.Limits != want {
		t.Errorf("skype site limits = %+v\nwant %+v", skype.Limits, want)
	}
	if got := skype.DeniedPaths(); strings.Join(got, " ") != "/cscp /OcsPowerShell /RgsConfig" {
		t.Errorf("skype denied paths = %v", got)
	}
	if generic.UsesWindowsAuth() || !skype.UsesWindowsAuth() {
		t.Error("windows auth follows the profile")
	}
	// The generic site shares its pool with the skype site: it inherits
	// the denied paths and with them strict paths.
	if !generic.UsesStrictPaths() || !skype.UsesStrictPaths() || (&config.Site{}).UsesStrictPaths() {
		t.Error("strict paths follow the profile and the deny list")
	}
	for _, s := range []config.Site{{StrictPaths: true}, {Deny: []string{"/x"}}, {Redirect: config.RedirectHTTPS}} {
		if !s.UsesStrictPaths() {
			t.Errorf("%+v: strict paths off", s)
		}
	}

	if l7 := c.Virtuals[1]; l7.ConnLimits != (config.ConnLimits{MaxConnsPerSource: 1000, MaxHandshakesPerSource: 100}) {
		t.Errorf("connection limits = %+v", l7.ConnLimits)
	}
	if tl := (config.TLSOptions{}).Effective(); tl.MinVersion != "1.2" || tl.HandshakeTimeout.D() != 10*time.Second || tl.TicketRotation.D() != 12*time.Hour {
		t.Errorf("tls defaults = %+v", tl)
	}
	// A lower per-source cap lowers the default handshake cap with it.
	if l := (config.ConnLimits{MaxConnsPerSource: 20}).Effective(); l.MaxHandshakesPerSource != 20 {
		t.Errorf("handshakes per source with max_conns_per_source 20 = %d", l.MaxHandshakesPerSource)
	}

	// An explicitly empty admin listen disables the endpoint.
	off, err := config.Parse("min.yaml", []byte("admin: {listen: }\n"+minimal))
	if err != nil {
		t.Fatal(err)
	}
	if off.Admin.Listen != "" {
		t.Errorf("admin listen with null = %q, want disabled", off.Admin.Listen)
	}
}

// Hand-built sites (no file) get the same numbers through Effective.
func TestEffectiveWithoutParse(t *testing.T) {
	s := &config.Site{Profile: config.ProfileSkype, Limits: config.Limits{MaxBodyBytes: 5}}
	l := s.Effective()
	if l.MaxBodyBytes != 5 || l.ResponseTimeout.D() != 960*time.Second || l.IdleTimeout.D() != 1800*time.Second || l.MaxHeaderBytes != 64<<10 {
		t.Errorf("Effective = %+v", l)
	}
	g := (&config.Site{}).Effective()
	if g.ResponseTimeout.D() != 60*time.Second || g.MaxHeaderBytes != 32<<10 || g.MaxBodyBytes != 100<<20 || g.IdleTimeout.D() != 120*time.Second {
		t.Errorf("generic Effective = %+v", g)
	}
}

// edit is one mutation of the example file.
type edit struct{ old, new string }

func apply(t *testing.T, text string, edits []edit) string {
	t.Helper()
	for _, e := range edits {
		if !strings.Contains(text, e.old) {
			t.Fatalf("%q not in the example", e.old)
		}
		text = strings.Replace(text, e.old, e.new, 1)
	}
	return text
}

func TestBadConfigs(t *testing.T) {
	base := example(t)
	certs := filepath.Join(exampleCerts(t), "tls")
	cases := []struct {
		name  string
		edits []edit
		at    string // text on the line the error must name
		path  string
		msg   []string // substrings of the message
	}{
		{"unknown key with a suggestion",
			[]edit{{"idle_timeout: 300s", "idle_timout: 300s"}},
			"idle_timout", "virtuals[0].idle_timout",
			[]string{`unknown key "idle_timout" in virtuals[0]`, `did you mean "idle_timeout"?`, "expected one of: name, mode, listen"}},
		{"connection log rate out of range",
			[]edit{{"pools:\n", "log:\n  fastl4: {path: /var/log/edgeproxy/fastl4.log, rate: 0}\npools:\n"}},
			"rate: 0", "log.fastl4.rate",
			[]string{"rate 0 is out of range", "1 to 1000000"}},
		{"unknown top-level key",
			[]edit{{"pools:\n", "pool:\n"}},
			"pool:\n  sfb-fe", "pool",
			[]string{`unknown key "pool" in the top level`, `did you mean "pools"?`}},
		{"wrong type: quoted number",
			[]edit{{"port: 4443\n    snat: automap  ", "port: \"4443\"\n    snat: automap  "}},
			`port: "4443"`, "virtuals[0].port",
			[]string{"expected a whole number", "remove the quotes"}},
		{"wrong type: list for a string",
			[]edit{{"pool: sfb-fe\n    port: 8080", "pool: [sfb-fe]\n    port: 8080"}},
			"pool: [sfb-fe]", "virtuals[1].pool",
			[]string{"expected a string, found a list"}},
		{"port out of range",
			[]edit{{"port: 8080\n    snat", "port: 80800\n    snat"}},
			"port: 80800", "virtuals[1].port",
			[]string{"80800 is out of range", "port number from 0 to 65535"}},
		{"missing required mode",
			[]edit{{"    mode: https\n", ""}},
			"- name: sfb-web ", "virtuals[2].mode",
			[]string{`mode is required: one of "fastl4", "https" or "http"`}},
		{"duplicate virtual name",
			[]edit{{"name: sfb-web-http", "name: sfb-web"}},
			"name: sfb-web\n    mode: http", "virtuals[3].name",
			[]string{`duplicate virtual name "sfb-web"`, "virtuals[2] (line 47)"}},
		{"duplicate key",
			[]edit{{"    pool: sfb-fe\n    port: 4443\n", "    pool: sfb-fe\n    pool: owas\n    port: 4443\n"}},
			"pool: owas\n", "virtuals[0].pool",
			[]string{`duplicate key "pool" (first set on line 35)`}},
		{"same listener twice",
			[]edit{{"listen: 203.0.113.20:80", "listen: 203.0.113.20:443"}},
			"listen: 203.0.113.20:443\n    pool: sfb-fe\n    port: 8080", "virtuals[1].listen",
			[]string{"203.0.113.20:443/tcp is already the listener of virtuals[0] (sfb-web-l4) (line 32)"}},
		{"wildcard listener overlaps a specific one",
			[]edit{{"listen: 203.0.113.10:443", "listen: 0.0.0.0:443"}},
			"listen: 0.0.0.0:443", "virtuals[2].listen",
			[]string{"0.0.0.0:443 overlaps 203.0.113.20:443", "use specific addresses"}},
		{"virtual names an unknown pool",
			[]edit{{"pool: sfb-fe\n    port: 8080", "pool: sfb-f\n    port: 8080"}},
			"pool: sfb-f\n", "virtuals[1].pool",
			[]string{`unknown pool "sfb-f"; did you mean "sfb-fe"?`, "defined pools: owas, sfb-fe"}},
		{"site names an unknown pool",
			[]edit{{"pool: owas\n", "pool: owa\n"}},
			"pool: owa\n", "virtuals[2].sites[1].pool",
			[]string{`unknown pool "owa"; did you mean "owas"?`}},
		{"fastl4 with certificates",
			[]edit{{"    snat: automap\n\n", "    snat: automap\n    certificates: [{cert: a.pem, key: a.key}]\n\n"}},
			"certificates: [{cert: a.pem", "virtuals[1].certificates",
			[]string{"certificates does not apply to fastl4", "use mode https"}},
		{"fastl4 with sites",
			[]edit{{"    snat: automap\n\n", "    snat: automap\n    sites: [{hosts: [a.example.com], pool: sfb-fe, port: 8080}]\n\n"}},
			"sites: [{hosts: [a.", "virtuals[1].sites",
			[]string{"sites does not apply to fastl4"}},
		{"https virtual with the fastl4 connection log",
			[]edit{{"    certificates:                   # leaf + chain", "    log: true\n    certificates:                   # leaf + chain"}},
			"log: true", "virtuals[2].log",
			[]string{"log applies only to fastl4 virtuals, not mode https"}},
		{"https without certificates",
			[]edit{{"    certificates:                   # leaf + chain in one PEM; the first is the default for no-SNI clients\n      - {cert: " + certs + "/public.pem, key: " + certs + "/public.key}\n", ""}},
			"- name: sfb-web ", "virtuals[2]",
			[]string{"https virtual sfb-web needs certificates"}},
		{"certificate file missing",
			[]edit{{certs + "/public.pem", certs + "/missing.pem"}},
			"missing.pem", "virtuals[2].certificates[0].cert",
			[]string{"certificate file " + certs + "/missing.pem does not exist", "correct the path"}},
		{"key does not match the certificate",
			[]edit{{certs + "/public.key", certs + "/fe01.corp.example.com.key"}},
			"fe01.corp.example.com.key", "virtuals[2].certificates[0].key",
			[]string{"does not match certificate " + certs + "/public.pem", "webext.example.com", "use the key this certificate was issued for"}},
		{"key and certificate swapped",
			[]edit{{"{cert: " + certs + "/public.pem, key: " + certs + "/public.key}", "{cert: " + certs + "/public.key, key: " + certs + "/public.pem}"}},
			"{cert: " + certs + "/public.key", "virtuals[2].certificates[0].cert",
			[]string{"holds a private key but no certificate: swap cert and key?"}},
		{"backend CA missing",
			[]edit{{"backend_tls: {ca: " + certs + "/internal-ca.pem}   #", "backend_tls: {ca: " + certs + "/nope-ca.pem}   #"}},
			"nope-ca.pem", "virtuals[2].sites[0].backend_tls.ca",
			[]string{"CA file " + certs + "/nope-ca.pem does not exist"}},
		{"VIP outside the external subnets",
			[]edit{{"listen: 203.0.113.20:443", "listen: 198.51.100.20:443"}},
			"listen: 198.51.100.20:443", "virtuals[0].listen",
			[]string{"VIP 198.51.100.20 is outside the external NIC's subnets (203.0.113.0/24) and no route covers it", "network.external.routes"}},
		{"gateway on the internal NIC",
			[]edit{{"    interface: int0\n", "    interface: int0\n    gateway: 10.20.0.1\n"}},
			"gateway: 10.20.0.1", "network.internal.gateway",
			[]string{"the internal NIC has no default gateway", "routes: [{to: 10.10.0.0/16, via: 10.20.0.1}]"}},
		{"member not in hosts and no resolver",
			[]edit{{"members: [owas01.corp.example.com]", "members: [owas02.corp.example.com]"}},
			"members: [owas02", "pools.owas.members[0]",
			[]string{`member "owas02.corp.example.com" is not in network.hosts and no network.resolver is set`, `did you mean "owas01.corp.example.com"?`}},
		{"SNAT address not on the internal subnets",
			[]edit{{"snat: automap                   #", "snat: [10.30.0.5]                   #"}},
			"snat: [10.30.0.5]", "virtuals[0].snat",
			[]string{"SNAT address 10.30.0.5 is not on the internal NIC's subnets (10.20.0.0/24)"}},
		{"bad mode",
			[]edit{{"mode: fastl4", "mode: fast4"}},
			"mode: fast4", "virtuals[0].mode",
			[]string{`unknown mode "fast4"`, `did you mean "fastl4"?`}},
		{"bad monitor type",
			[]edit{{"type: tls", "type: tlss"}},
			"type: tlss", "pools.sfb-fe.monitor.type",
			[]string{`unknown monitor type "tlss"`, `did you mean "tls"?`}},
		{"bad profile",
			[]edit{{"profile: skype", "profile: skpye"}},
			"profile: skpye", "virtuals[2].sites[0].profile",
			[]string{`unknown profile "skpye"`, `did you mean "skype"?`}},
		{"bad upgrade protocol",
			[]edit{{"profile: skype              # deny", "upgrade: [websocket, h2c]\n        profile: skype              # deny"}},
			"upgrade: [websocket, h2c]", "virtuals[2].sites[0].upgrade[1]",
			[]string{`unknown upgrade protocol "h2c"`, `only "websocket" can be allowed`}},
		{"bad redirect",
			[]edit{{"        pool: sfb-fe\n        port: 8080                  # or: redirect: https", "        redirect: htps"}},
			"redirect: htps", "virtuals[3].sites[0].redirect",
			[]string{`unknown redirect "htps"`, `did you mean "https"?`}},
		{"strict_paths turned off on a skype site",
			[]edit{{"        profile: skype              # deny management paths", "        strict_paths: false\n        profile: skype              # deny management paths"}},
			"strict_paths: false", "virtuals[2].sites[0].strict_paths",
			[]string{"strict_paths: false cannot be set on this site (profile skype implies it)", "remove the key"}},
		{"denied path not in canonical form",
			[]edit{{"        pool: owas\n        port: 443\n", "        pool: owas\n        port: 443\n        deny: [/Internal/../Admin]\n"}},
			"deny: [/Internal/../Admin]", "virtuals[2].sites[1].deny[0]",
			[]string{`denied path "/Internal/../Admin" is not a plain path (a dot segment)`, "e.g. /Internal/Admin"}},
		{"port 0",
			[]edit{{"listen: 203.0.113.20:80", "listen: 203.0.113.20:0"}},
			"listen: 203.0.113.20:0", "virtuals[1].listen",
			[]string{"port 0: name the published port"}},
		{"legacy TLS without allow_legacy",
			[]edit{{"    listen: 203.0.113.10:443\n", "    listen: 203.0.113.10:443\n    tls: {min_version: \"1.0\"}\n"}},
			`tls: {min_version: "1.0"}`, "virtuals[2].tls.min_version",
			[]string{"TLS 1.0 is deprecated and insecure", "allow_legacy: true"}},
		{"handshake timeout out of range",
			[]edit{{"    listen: 203.0.113.10:443\n", "    listen: 203.0.113.10:443\n    tls: {handshake_timeout: 500ms}\n"}},
			"tls: {handshake_timeout: 500ms}", "virtuals[2].tls.handshake_timeout",
			[]string{"handshake_timeout 500ms is out of range: 1s to 1m (default 10s)"}},
		{"ticket rotation too short",
			[]edit{{"    listen: 203.0.113.10:443\n", "    listen: 203.0.113.10:443\n    tls: {ticket_rotation: 10s}\n"}},
			"tls: {ticket_rotation: 10s}", "virtuals[2].tls.ticket_rotation",
			[]string{"ticket_rotation 10s is out of range: 1m to 72h (default 12h0m0s)"}},
		{"negative connection limit",
			[]edit{{"    listen: 203.0.113.10:443\n", "    listen: 203.0.113.10:443\n    limits: {max_conns: -1}\n"}},
			"limits: {max_conns: -1}", "virtuals[2].limits.max_conns",
			[]string{"max_conns -1 is negative: give a positive number, or leave it out for the default"}},
		{"per-source cap above the virtual's",
			[]edit{{"    listen: 203.0.113.10:443\n", "    listen: 203.0.113.10:443\n    limits: {max_conns: 500}\n"}},
			"limits: {max_conns: 500}", "virtuals[2].limits.max_conns_per_source",
			[]string{"max_conns_per_source 1000 is above max_conns 500", "lower it below max_conns"}},
		{"handshakes per source above connections per source",
			[]edit{{"    listen: 203.0.113.10:443\n", "    listen: 203.0.113.10:443\n    limits: {max_conns_per_source: 10, max_handshakes_per_source: 20}\n"}},
			"max_handshakes_per_source: 20", "virtuals[2].limits.max_handshakes_per_source",
			[]string{"max_handshakes_per_source 20 is above max_conns_per_source 10"}},
		{"limits on a fastl4 virtual",
			[]edit{{"    idle_timeout: 300s ", "    limits: {max_conns: 10}\n    idle_timeout: 300s "}},
			"limits: {max_conns: 10}", "virtuals[0].limits",
			[]string{"limits does not apply to fastl4"}},
		{"duration without unit",
			[]edit{{"interval: 5s", "interval: 5"}},
			"interval: 5,", "pools.sfb-fe.monitor.interval",
			[]string{`duration "5" has no unit: write 5s`}},
		{"monitor timeout not shorter than interval",
			[]edit{{"timeout: 2s", "timeout: 5s"}},
			"timeout: 5s", "pools.sfb-fe.monitor.timeout",
			[]string{"timeout 5s must be shorter than interval 5s"}},
		{"backwards port range",
			[]edit{{"pools:\n", "fastpath: {snat_ports: 59999-40000}\npools:\n"}},
			"snat_ports:", "fastpath.snat_ports",
			[]string{`port range "59999-40000" is backwards`, "(40000-59999)"}},
		{"bad address",
			[]edit{{"gateway: 203.0.113.1 ", "gateway: 203.0.113.300 "}},
			"gateway: 203.0.113.300", "network.external.gateway",
			[]string{`"203.0.113.300" is not an IP address`}},
		{"address without prefix length",
			[]edit{{"addresses: [10.20.0.10/24]", "addresses: [10.20.0.10]"}},
			"addresses: [10.20.0.10]", "network.internal.addresses[0]",
			[]string{"add the prefix length, e.g. 10.20.0.10/32"}},
		{"route via outside the internal subnets",
			[]edit{{"via: 10.20.0.1}", "via: 10.21.0.1}"}},
			"via: 10.21.0.1", "network.internal.routes[0].via",
			[]string{"next hop 10.21.0.1 is not on the internal NIC's subnets (10.20.0.0/24)"}},
		{"member not reachable through the internal NIC",
			[]edit{{"owas01.corp.example.com: 10.10.0.30", "owas01.corp.example.com: 10.99.0.30"}},
			"members: [owas01", "pools.owas.members[0]",
			[]string{"not reachable through the internal NIC", "{to: 10.99.0.0/16"}},
		{"unknown key in a member mapping",
			[]edit{{"members: [owas01.corp.example.com]", "members: [{adress: owas01.corp.example.com}]"}},
			"{adress:", "pools.owas.members[0].adress",
			[]string{`did you mean "address"?`}},
		{"syntax error",
			[]edit{{"    mode: http\n", "    mode: http\n   bad: [\n"}},
			"   bad: [", "",
			[]string{"YAML syntax"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text := apply(t, base, tc.edits)
			_, err := config.Parse("skype.yaml", []byte(text))
			if err == nil {
				t.Fatal("accepted")
			}
			var errs *config.Errors
			if !errors.As(err, &errs) || !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("error %T is not *config.Errors matching ErrInvalid", err)
			}
			var found *config.Error
			for _, e := range errs.List {
				if e.Path == tc.path && containsAll(e.Msg, tc.msg) {
					found = e
				}
			}
			if found == nil {
				t.Fatalf("no error at %s with %q; got:\n%v", tc.path, tc.msg, err)
			}
			if found.File != "skype.yaml" {
				t.Errorf("file = %q", found.File)
			}
			if tc.at != "" {
				if want := lineOf(t, text, tc.at); found.Line != want {
					t.Errorf("line %d, want %d: %v", found.Line, want, found)
				}
				if found.Column == 0 && tc.path != "" {
					t.Errorf("no column: %v", found)
				}
			} else if found.Line == 0 {
				t.Errorf("no line: %v", found)
			}
			s := found.Error()
			if !strings.HasPrefix(s, "skype.yaml:") || (tc.path != "" && !strings.Contains(s, ": "+tc.path+": ")) {
				t.Errorf("message %q does not name the file, line and key", s)
			}
		})
	}
}

func containsAll(s string, subs []string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

// Every mistake in a file is reported, in file order, not just the first.
func TestAllErrorsReported(t *testing.T) {
	text := apply(t, example(t), []edit{
		{"gateway: 203.0.113.1 ", "gatway: 203.0.113.1 "},
		{"interval: 5s", "interval: soon"},
		{"mode: fastl4", "mode: l4"},
		{"profile: skype", "profile: lync"},
		{"port: 8080                  # or", "port: 0                  # or"},
	})
	_, err := config.Parse("skype.yaml", []byte(text))
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("err = %v", err)
	}
	wantPaths := []string{"network.external.gatway", "pools.sfb-fe.monitor.interval", "virtuals[0].mode", "virtuals[2].sites[0].profile", "virtuals[3].sites[0].port"}
	var got []string
	for _, e := range errs.List {
		got = append(got, e.Path)
	}
	if strings.Join(got, " ") != strings.Join(wantPaths, " ") {
		t.Errorf("errors at %v, want %v:\n%v", got, wantPaths, err)
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != len(errs.List) {
		t.Errorf("Error() has %d lines for %d errors", len(lines), len(errs.List))
	}
}

func TestWarnings(t *testing.T) {
	dir := t.TempDir()
	expired := certgen.Validity{NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)}
	if _, err := certgen.Write(dir, certgen.Options{Leaf: expired}); err != nil {
		t.Fatal(err)
	}
	text := apply(t, example(t), []edit{
		{"listen: 127.0.0.1:9469", "listen: 0.0.0.0:9469"},
		{"port: 4443\n        backend_tls", "port: 443\n        backend_tls"},
	})
	text = strings.Replace(text, filepath.Join(exampleCerts(t), "tls", "public.pem"), filepath.Join(dir, "public.pem"), 1)
	text = strings.Replace(text, filepath.Join(exampleCerts(t), "tls", "public.key"), filepath.Join(dir, "public.key"), 1)
	c, err := config.Parse("skype.yaml", []byte(text))
	if err != nil {
		t.Fatalf("warnings must not fail the file: %v", err)
	}
	want := map[string]string{
		"admin.listen":                     "reachable beyond this host",
		"virtuals[2].certificates[0].cert": "expired on",
		"virtuals[2].sites[0].port":        "port 443 reaches the front end's internal web site",
	}
	for _, w := range c.Warnings {
		if sub, ok := want[w.Path]; ok && strings.Contains(w.Msg, sub) && w.Line > 0 {
			delete(want, w.Path)
		}
	}
	for path, sub := range want {
		t.Errorf("no warning at %s with %q; got:\n%v", path, sub, (&config.Errors{List: c.Warnings}).Error())
	}
}

func TestCertificateCoverage(t *testing.T) {
	dir := t.TempDir()
	if _, err := certgen.Write(dir, certgen.Options{PublicNames: []string{"webext.example.com", "meet.example.com"}}); err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(example(t), filepath.Join(exampleCerts(t), "tls", "public.pem"), filepath.Join(dir, "public.pem"), 1)
	text = strings.Replace(text, filepath.Join(exampleCerts(t), "tls", "public.key"), filepath.Join(dir, "public.key"), 1)
	c, err := config.Parse("skype.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	var uncovered []string
	for _, w := range c.Warnings {
		if strings.Contains(w.Msg, "clients will see a name mismatch") {
			uncovered = append(uncovered, w.Path)
		}
	}
	want := "virtuals[2].sites[0].hosts[2] virtuals[2].sites[0].hosts[3] virtuals[2].sites[1].hosts[0]"
	if strings.Join(uncovered, " ") != want {
		t.Errorf("uncovered names at %v, want %s", uncovered, want)
	}
}

// A chain stored in the wrong order is named as such.
func TestLeafNotFirst(t *testing.T) {
	dir := t.TempDir()
	set, err := certgen.Write(dir, certgen.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ca, leaf, _ := strings.Cut(string(set.Public.CertPEM), "-----END CERTIFICATE-----\n")
	reordered := leaf + ca + "-----END CERTIFICATE-----\n"
	if err := os.WriteFile(filepath.Join(dir, "public.pem"), []byte(reordered), 0o644); err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(example(t), filepath.Join(exampleCerts(t), "tls", "public.pem"), filepath.Join(dir, "public.pem"), 1)
	text = strings.Replace(text, filepath.Join(exampleCerts(t), "tls", "public.key"), filepath.Join(dir, "public.key"), 1)
	_, err = config.Parse("skype.yaml", []byte(text))
	if err == nil || !strings.Contains(err.Error(), "matches certificate #2 (webext.example.com)") || !strings.Contains(err.Error(), "put the leaf certificate first") {
		t.Fatalf("err = %v", err)
	}
}

func TestEmptyAndNonMapping(t *testing.T) {
	for _, tc := range []struct{ text, msg string }{
		{"", "the file is empty"},
		{"# only a comment\n", "the file is empty"},
		{"- a\n- b\n", "expected a mapping of keys, found a list"},
		{"a: 1\n---\nb: 2\n", "a second YAML document"},
	} {
		_, err := config.Parse("f.yaml", []byte(tc.text))
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Parse(%q) = %v, want %q", tc.text, err, tc.msg)
		}
	}
}

// A syntax error names the line at fault, not the start of the enclosing
// block that the YAML parser reports.
func TestSyntaxErrorLines(t *testing.T) {
	for _, tc := range []struct {
		text string
		line int
		msg  string
	}{
		{"network:\n  external:\n    interface: ext0\n\tbad: 1\n", 4, "tab character"},
		{"network:\n  external: {interface: ext0\n", 2, "did not find expected ',' or '}'"},
		{"virtuals:\n  - name: a\n    mode: http\n   listen: 1.2.3.4:80\n", 4, "did not find expected '-' indicator"},
		{"a: [1,\n    2]\nb: x: y\n", 3, "mapping values are not allowed"},
	} {
		_, err := config.Parse("f.yaml", []byte(tc.text))
		var errs *config.Errors
		if !errors.As(err, &errs) || len(errs.List) != 1 {
			t.Errorf("Parse(%q) = %v, want one error", tc.text, err)
			continue
		}
		if e := errs.List[0]; e.Line != tc.line || !strings.Contains(e.Msg, tc.msg) {
			t.Errorf("Parse(%q): %v; want line %d with %q", tc.text, e, tc.line, tc.msg)
		}
	}
}

// A missing network section is one error, not one per missing key.
func TestMissingNetwork(t *testing.T) {
	_, err := config.Parse("f.yaml", []byte("pools: {p: {members: [10.0.0.1]}}\n"))
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatal(err)
	}
	var network []string
	for _, e := range errs.List {
		if strings.HasPrefix(e.Path, "network") {
			network = append(network, e.Error())
		}
	}
	if len(network) != 1 || !strings.Contains(network[0], "f.yaml:1:1: network: network is required") {
		t.Errorf("network errors: %q", network)
	}
}

// Anchors and merge keys work like in any YAML file.
func TestAnchorsAndMerge(t *testing.T) {
	text := strings.Replace(minimal, "  - {name: l4, mode: fastl4, listen: 198.18.0.10:443, pool: web, port: 4443}",
		"  - &l4 {name: l4, mode: fastl4, listen: 198.18.0.10:443, pool: web, port: 4443, idle_timeout: 60s}\n  - {<<: *l4, name: l4b, listen: 198.18.0.11:443}", 1)
	c, err := config.Parse("f.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Virtuals[1]
	if b.Name != "l4b" || b.Listen.Port() != 443 || b.Listen.Addr() != netip.MustParseAddr("198.18.0.11") || b.IdleTimeout.D() != time.Minute || b.Pool != "web" {
		t.Errorf("merged virtual = %+v", b)
	}
}

// A site that forwards to front ends published with the skype profile
// elsewhere never publishes their management applications, profile or
// not: the example's port-80 site without its profile line.
func TestSkypePoolDeniedOnEverySite(t *testing.T) {
	text := strings.Replace(example(t), "        profile: skype              # port 80 must not publish /cscp either\n", "", 1)
	c, err := config.Parse("skype.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	http := c.Virtuals[3].Sites[0]
	for _, p := range config.SkypeDeniedPaths() {
		if !slices.Contains(http.DeniedPaths(), p) {
			t.Errorf("port-80 site of pool sfb-fe does not deny %s: %v", p, http.DeniedPaths())
		}
	}
	ws := withoutL4SkypeWarnings(c.Warnings)
	if len(ws) != 1 || !strings.Contains(ws[0].Error(), "virtuals[3].sites[0]") || !strings.Contains(ws[0].Error(), "profile: skype") {
		t.Errorf("want one warning naming the site and the fix, got %v", ws)
	}
	// The owas site forwards to another pool: nothing is added.
	if len(c.Virtuals[2].Sites[1].DeniedPaths()) != 0 {
		t.Errorf("owas site denies %v", c.Virtuals[2].Sites[1].DeniedPaths())
	}
}

// withoutL4SkypeWarnings drops the warnings about the example's fastl4
// virtuals publishing the skype pool.
func withoutL4SkypeWarnings(ws []*config.Error) []*config.Error {
	var out []*config.Error
	for _, w := range ws {
		if (w.Path == "virtuals[0].pool" || w.Path == "virtuals[1].pool") && strings.Contains(w.Msg, "cannot be filtered") {
			continue
		}
		out = append(out, w)
	}
	return out
}

// A pool published with profile skype and through a fastl4 virtual is
// reachable on the L4 VIP without the path filter: check says so, naming
// both virtuals and the fix. Another pool at L4 is not flagged.
func TestSkypePoolAtL4Warns(t *testing.T) {
	c, err := config.Parse("skype.yaml", []byte(example(t)))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range c.Warnings {
		if strings.Contains(w.Msg, "cannot be filtered") {
			got = append(got, w.Path+": "+w.Msg)
		}
	}
	if len(got) != 2 {
		t.Fatalf("want a warning for each fastl4 virtual of pool sfb-fe, got %q", got)
	}
	for i, name := range []string{"sfb-web-l4", "sfb-web-l4-http"} {
		for _, want := range []string{fmt.Sprintf("virtuals[%d].pool", i), "fastl4 virtual " + name + " ", "virtual sfb-web publishes with profile skype",
			"/cscp", "remove virtual " + name, "close those paths on the front ends"} {
			if !strings.Contains(got[i], want) {
				t.Errorf("warning %q lacks %q", got[i], want)
			}
		}
	}

	// The same fastl4 virtuals in front of a pool no skype site uses.
	text := apply(t, example(t), []edit{
		{"    pool: sfb-fe\n    port: 4443\n    snat", "    pool: owas\n    port: 4443\n    snat"},
		{"    pool: sfb-fe\n    port: 8080\n    snat", "    pool: owas\n    port: 8080\n    snat"},
	})
	c, err = config.Parse("skype.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range c.Warnings {
		if strings.Contains(w.Msg, "cannot be filtered") {
			t.Errorf("pool owas has no skype site, yet: %v", w)
		}
	}
}

// fastl4Skype is the F5-certified layout: front ends published through
// fastl4 virtuals only, the pool marked as Skype front ends.
const fastl4Skype = `
network:
  external: {interface: ext0, addresses: [198.18.0.2/24]}
  internal: {interface: int0, addresses: [198.19.0.2/24]}
pools:
  sfb-fe: {kind: skype-fe, members: [198.19.0.11]}
virtuals:
  - {name: web-l4, mode: fastl4, listen: 198.18.0.10:443, pool: sfb-fe, port: 4443, snat: automap}
  - {name: web-l4-http, mode: fastl4, listen: 198.18.0.10:80, pool: sfb-fe, port: 8080, snat: automap}
`

// A Skype front-end pool's fastl4 virtuals are held to the External Web
// Site's ports, whether the pool says kind: skype-fe or a site publishes
// it with profile skype: 443 to 443 fails check with the reason and the fix.
func TestFastL4SkypePoolPorts(t *testing.T) {
	if _, err := config.Parse("l4.yaml", []byte(fastl4Skype)); err != nil {
		t.Fatalf("443 to 4443 and 80 to 8080: %v", err)
	}
	for _, tc := range []struct {
		name  string
		edits []edit
		path  string
		want  []string
	}{
		{"kind 443", []edit{{"pool: sfb-fe, port: 4443", "pool: sfb-fe, port: 443"}}, "virtuals[0].port",
			[]string{"Internal Web Site", "External Web Site on 4443", "/cscp", "set port: 4443"}},
		{"kind 80", []edit{{"pool: sfb-fe, port: 8080", "pool: sfb-fe, port: 80"}}, "virtuals[1].port",
			[]string{"Internal Web Site", "set port: 8080"}},
		{"site profile", []edit{{"kind: skype-fe, ", ""}, {"pool: sfb-fe, port: 4443", "pool: sfb-fe, port: 443"},
			{"snat: automap}\n  - {name: web-l4-http", "snat: automap}\n  - {name: web-l7, mode: http, listen: 198.18.0.11:80, sites: [{hosts: [a.example.com], pool: sfb-fe, port: 8080, profile: skype, response_timeout: 1000s}]}\n  - {name: web-l4-http"}},
			"virtuals[0].port", []string{"Internal Web Site", "set port: 4443"}},
	} {
		_, err := config.Parse("l4.yaml", []byte(apply(t, fastl4Skype, tc.edits)))
		var errs *config.Errors
		if !errors.As(err, &errs) {
			t.Errorf("%s: check accepts it: %v", tc.name, err)
			continue
		}
		found := false
		for _, e := range errs.List {
			found = found || e.Path == tc.path && containsAll(e.Msg, tc.want)
		}
		if !found {
			t.Errorf("%s: no error at %s with %q:\n%v", tc.name, tc.path, tc.want, err)
		}
	}

	// Without the pool's kind nothing says these are front ends.
	text := apply(t, fastl4Skype, []edit{{"kind: skype-fe, ", ""}, {"pool: sfb-fe, port: 4443", "pool: sfb-fe, port: 443"}})
	if _, err := config.Parse("l4.yaml", []byte(text)); err != nil {
		t.Errorf("a pool of unknown kind to 443: %v", err)
	}
	if _, err := config.Parse("l4.yaml", []byte(apply(t, fastl4Skype, []edit{{"kind: skype-fe", "kind: skype"}}))); err == nil || !strings.Contains(err.Error(), `unknown kind "skype"`) {
		t.Errorf("kind: skype: %v", err)
	}
}
