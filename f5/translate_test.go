package f5

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/certgen"
)

// load reads a test configuration.
func load(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// lineOf is the line where text starts in data.
func lineOf(t *testing.T, data []byte, text string) int {
	t.Helper()
	i := bytes.Index(data, []byte(text))
	if i < 0 {
		t.Fatalf("%q is not in the test configuration", text)
	}
	return bytes.Count(data[:i], []byte("\n")) + 1
}

// importAndCheck imports a configuration, renders it and reads the YAML
// back with the daemon's own parser, which must accept it.
func importAndCheck(t *testing.T, name string, data []byte, opt Options) (*Result, *config.Config, string) {
	t.Helper()
	res, err := Import(name, data, opt)
	if err != nil {
		t.Fatal(err)
	}
	y, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("", y)
	if err != nil {
		t.Fatalf("config.Parse rejects the imported configuration: %v\n%s\nreport:\n%s", err, y, res.Report)
	}
	return res, cfg, string(y)
}

// entry finds the report entry of kind k whose object contains obj and
// whose message contains msg.
func entry(t *testing.T, r *Report, k Kind, obj, msg string) Entry {
	t.Helper()
	for _, e := range r.Entries {
		if e.Kind == k && strings.Contains(e.Object, obj) && strings.Contains(e.Msg, msg) {
			return e
		}
	}
	t.Fatalf("no %q entry for %q with %q in the report:\n%s", k, obj, msg, r)
	return Entry{}
}

func noEntry(t *testing.T, r *Report, obj, msg string) {
	t.Helper()
	for _, e := range r.Entries {
		if strings.Contains(e.Object, obj) && strings.Contains(e.Msg, msg) {
			t.Errorf("unexpected report entry: %+v", e)
		}
	}
}

func mustPrefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

func members(p *config.Pool) []string {
	var out []string
	for _, m := range p.Members {
		s := m.Address
		if m.Disabled {
			s += " disabled"
		}
		if m.Weight > 1 {
			s += fmt.Sprintf(" weight %d", m.Weight)
		}
		out = append(out, s)
	}
	return out
}

func virtualNamed(t *testing.T, c *config.Config, name string) *config.Virtual {
	t.Helper()
	for _, v := range c.Virtuals {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no virtual %s", name)
	return nil
}

func TestImportSkypeFastL4(t *testing.T) {
	data := load(t, "sfb-fastl4.conf")
	res, c, y := importAndCheck(t, "bigip.conf", data, Options{})

	n := c.Network
	if n.External.Interface != "ext0" || n.Internal.Interface != "int0" {
		t.Errorf("interfaces: %s / %s", n.External.Interface, n.Internal.Interface)
	}
	if !slices.Equal(n.External.Addresses, mustPrefixes("203.0.113.10/24")) {
		t.Errorf("external addresses: %v", n.External.Addresses)
	}
	// The floating self IP comes first: SNAT automap uses it, as on the BIG-IP.
	if !slices.Equal(n.Internal.Addresses, mustPrefixes("10.20.0.12/24", "10.20.0.10/24")) {
		t.Errorf("internal addresses: %v", n.Internal.Addresses)
	}
	if n.External.Gateway != netip.MustParseAddr("203.0.113.1") || n.Internal.Gateway.IsValid() {
		t.Errorf("gateways: external %v internal %v", n.External.Gateway, n.Internal.Gateway)
	}
	want := []config.Route{{To: netip.MustParsePrefix("10.10.0.0/16"), Via: netip.MustParseAddr("10.20.0.1")}}
	if !slices.Equal(n.Internal.Routes, want) || len(n.External.Routes) != 0 {
		t.Errorf("routes: internal %v external %v", n.Internal.Routes, n.External.Routes)
	}
	if n.Hosts["fe01.corp.example.com"] != netip.MustParseAddr("10.10.0.11") || n.Hosts["fe02.corp.example.com"] != netip.MustParseAddr("10.10.0.12") || len(n.Hosts) != 2 {
		t.Errorf("hosts: %v", n.Hosts)
	}

	if len(c.Pools) != 2 {
		t.Fatalf("pools: %v", c.Pools)
	}
	p := c.Pools["sfb_fe_4443"]
	if !slices.Equal(members(p), []string{"fe01.corp.example.com", "fe02.corp.example.com"}) {
		t.Errorf("members: %v", members(p))
	}
	m := p.Monitor
	if m.Type != config.MonitorTCP || m.Port != 4443 || m.Interval.D() != 5*time.Second || m.Fall != 3 || m.Rise != 1 || m.Timeout.D() >= m.Interval.D() {
		t.Errorf("monitor 4443: %+v", m)
	}
	if p.LB != config.LBLeastConn {
		t.Errorf("lb: %q", p.LB)
	}
	// Inherited through defaults-from, with its own destination.
	if m := c.Pools["sfb_fe_8080"].Monitor; m.Type != config.MonitorTCP || m.Port != 8080 || m.Fall != 3 {
		t.Errorf("monitor 8080: %+v", m)
	}

	if len(c.Virtuals) != 2 {
		t.Fatalf("virtuals: %d, want 2 (the IPv6 one cannot be carried over)", len(c.Virtuals))
	}
	v := virtualNamed(t, c, "sfb_webext_443")
	if v.Mode != config.ModeFastL4 || v.Listen != netip.MustParseAddrPort("203.0.113.20:443") || v.Pool != "sfb_fe_4443" || v.Port != 4443 || !v.SNAT.Automap || v.Proto != "tcp" {
		t.Errorf("virtual 443: %+v", v)
	}
	// sfb_fastl4: idle 1800, handshake 10, loose-close; the rest F5 defaults.
	if v.IdleTimeout.D() != 1800*time.Second || v.HandshakeTimeout.D() != 10*time.Second || v.CloseTimeout.D() != 5*time.Second || !*v.ResetOnTimeout || v.LooseInit || !v.LooseClose || v.MSSOverride != 0 {
		t.Errorf("fastl4 settings 443: %+v", v.FastL4)
	}
	v = virtualNamed(t, c, "sfb_webext_80")
	if v.Listen != netip.MustParseAddrPort("203.0.113.20:80") || v.Pool != "sfb_fe_8080" || v.Port != 8080 || !v.SNAT.Automap {
		t.Errorf("virtual 80: %+v", v)
	}
	if v.IdleTimeout.D() != 300*time.Second || v.HandshakeTimeout.D() != 5*time.Second || !*v.ResetOnTimeout || v.LooseClose {
		t.Errorf("fastl4 defaults 80: %+v", v.FastL4)
	}

	r := res.Report
	e := entry(t, r, Unsupported, "ltm virtual /Common/sfb_webext_443_v6", "different address families")
	if want := lineOf(t, data, "ltm virtual /Common/sfb_webext_443_v6 {"); e.Line != want {
		t.Errorf("IPv6 virtual reported at line %d, want %d", e.Line, want)
	}
	entry(t, r, Changed, "net self /Common/self_internal_float", "floating self IP 10.20.0.12/24")
	entry(t, r, Ignored, "net self /Common/self_ha", "neither external nor internal")
	entry(t, r, Supply, "net vlan /Common/external", "is ext0")
	entry(t, r, Supply, "net vlan /Common/internal", "is int0")
	entry(t, r, Ignored, "sys global-settings", "appliance")
	// pva-acceleration is hardware offload: nothing to report.
	noEntry(t, r, "sfb_fastl4", "pva")
	if r.Count(Unsupported) != 1 {
		t.Errorf("not carried over: %d entries, want 1:\n%s", r.Count(Unsupported), r)
	}

	// The YAML says where each part came from, in the documented order.
	for _, s := range []string{
		fmt.Sprintf("# from ltm virtual /Common/sfb_webext_443 (bigip.conf:%d); FastL4 profile /Common/sfb_fastl4\n  - name: sfb_webext_443\n    mode: fastl4\n    listen: 203.0.113.20:443\n    pool: sfb_fe_4443\n    port: 4443\n    snat: automap\n    idle_timeout: 1800s\n", lineOf(t, data, "ltm virtual /Common/sfb_webext_443 {")),
		"monitor: {type: tcp, port: 4443, interval: 5s, timeout: 4s, rise: 1, fall: 3}",
		"# BIG-IP VLAN /Common/internal (interface 1.2 tag 4093, bigip.conf:",
	} {
		if !strings.Contains(y, s) {
			t.Errorf("YAML lacks %q:\n%s", s, y)
		}
	}
	var order []int
	for _, k := range []string{"\nadmin:", "\nnetwork:", "\npools:", "\nvirtuals:"} {
		order = append(order, strings.Index(y, k))
	}
	if !slices.IsSorted(order) || order[0] < 0 {
		t.Errorf("top-level keys out of order: %v\n%s", order, y)
	}
}

func TestImportSnatPoolTmshList(t *testing.T) {
	data := load(t, "sfb-snatpool.conf")
	res, c, _ := importAndCheck(t, "tmsh-list.txt", data, Options{ExternalInterface: "eth1", InternalInterface: "eth2"})

	n := c.Network
	if n.External.Interface != "eth1" || n.Internal.Interface != "eth2" {
		t.Errorf("interfaces: %s / %s", n.External.Interface, n.Internal.Interface)
	}
	if !slices.Equal(n.External.Addresses, mustPrefixes("203.0.113.10/24", "2001:db8:1::10/64")) {
		t.Errorf("external addresses: %v", n.External.Addresses)
	}
	if n.External.Gateway6 != netip.MustParseAddr("2001:db8:1::1") {
		t.Errorf("gateway6: %v", n.External.Gateway6)
	}
	if len(n.Hosts) != 0 {
		t.Errorf("nodes named by their address need no hosts entry: %v", n.Hosts)
	}

	v := virtualNamed(t, c, "sfb_webext_443")
	if !slices.Equal(v.SNAT.Addresses, addrs("10.20.0.50", "10.20.0.51")) || v.SNAT.Automap {
		t.Errorf("snat pool: %+v", v.SNAT)
	}
	if v.Port != 4443 || v.Listen.Port() != 443 {
		t.Errorf("ports from service names: %v -> %d", v.Listen, v.Port)
	}
	// The one-line `source-address-translation { pool sfb_snatpool type snat }`.
	if v := virtualNamed(t, c, "sfb_webext_80"); !slices.Equal(v.SNAT.Addresses, addrs("10.20.0.50", "10.20.0.51")) || v.Port != 8080 {
		t.Errorf("virtual 80: %+v", v)
	}

	p := c.Pools["sfb_fe_4443"]
	if got := members(p); !slices.Equal(got, []string{"10.10.0.11 weight 3", "10.10.0.12", "10.10.0.13 disabled"}) {
		t.Errorf("members: %v", got)
	}
	m := c.Pools["sfb_fe_8080"].Monitor
	if m.Type != config.MonitorHTTP || m.Port != 8080 || m.Path != "/meet/" || m.Host != "meet.example.com" || !slices.Equal(m.Expect, []int{200, 401}) {
		t.Errorf("http monitor: %+v", m)
	}
	if m.Interval.D() != 10*time.Second || m.Fall != 3 || m.Rise != 2 {
		t.Errorf("http monitor timing (interval 10, timeout 31, time-until-up 20): %+v", m)
	}

	r := res.Report
	entry(t, r, Changed, "ltm pool /Common/sfb_fe_4443", "ratio-member carried over as member weights")
	entry(t, r, Supply, "net vlan /Common/inside", "MTU 9000")
	noEntry(t, r, "sfb_webext_80", "no source address translation")
}

// certDir writes certificates in the names the BIG-IP objects of
// sfb-clientssl.conf translate to.
func certDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := certgen.Write(dir, certgen.Options{PublicNames: certgen.SkypeNames}); err != nil {
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
	return dir
}

func TestImportClientSSL(t *testing.T) {
	data := load(t, "sfb-clientssl.conf")
	dir := certDir(t)
	res, c, _ := importAndCheck(t, "bigip.conf", data, Options{CertDir: dir})

	https := virtualNamed(t, c, "sfb_web_https")
	if https.Mode != config.ModeHTTPS || https.Listen != netip.MustParseAddrPort("203.0.113.30:443") {
		t.Fatalf("https virtual: %+v", https)
	}
	wantCert := config.Certificate{Cert: filepath.Join(dir, "public.example.com.pem"), Key: filepath.Join(dir, "public.example.com.key")}
	if !slices.Equal(https.Certificates, []config.Certificate{wantCert}) {
		t.Errorf("certificates: %+v", https.Certificates)
	}
	if len(https.Sites) != 1 {
		t.Fatalf("sites: %+v", https.Sites)
	}
	s := https.Sites[0]
	// The host names come from the certificate put in place.
	if !slices.Equal(s.Hosts, certgen.SkypeNames) || s.Pool != "sfb_fe_https" || s.Port != 4443 {
		t.Errorf("site: %+v", s)
	}
	if s.BackendTLS == nil || s.BackendTLS.CA != filepath.Join(dir, "corp_internal_ca.pem") {
		t.Errorf("backend_tls: %+v", s.BackendTLS)
	}
	m := c.Pools["sfb_fe_https"].Monitor
	if m.Type != config.MonitorHTTPS || m.Port != 4443 || m.Path != "/meet/" || !slices.Equal(m.Expect, []int{200, 401}) {
		t.Errorf("https monitor: %+v", m)
	}
	if c.Network.Hosts["fe01"] != netip.MustParseAddr("10.10.0.11") {
		t.Errorf("hosts: %v", c.Network.Hosts)
	}

	http := virtualNamed(t, c, "sfb_web_http")
	if http.Mode != config.ModeHTTP || len(http.Sites) != 1 || http.Sites[0].Redirect != config.RedirectHTTPS || !slices.Equal(http.Sites[0].Hosts, certgen.SkypeNames) {
		t.Errorf("http redirect virtual: %+v %+v", http, http.Sites)
	}

	// The iRule refusing the paths of a data group is the site's deny
	// list; the pool's port 4443 makes it Skype's, with the profile.
	if !slices.Equal(s.Deny, []string{"/scheduler", "/abs/handler"}) || s.Profile != config.ProfileSkype {
		t.Errorf("site deny %q, profile %q", s.Deny, s.Profile)
	}
	r := res.Report
	noEntry(t, r, "", "sfb_block_paths")
	entry(t, r, Changed, "ltm virtual /Common/sfb_web_https", "profile: skype, as the pool looks like Skype for Business front ends (members' port 4443")
	entry(t, r, Unsupported, "ltm virtual /Common/sfb_web_https", "persistence profile /Common/sfb_cookie")
	entry(t, r, Unsupported, "ltm virtual /Common/sfb_web_https", "LTM policy /Common/sfb_asm")
	entry(t, r, Unsupported, "ltm virtual /Common/sfb_web_https", "/Common/websecurity (web-security)")
	e := entry(t, r, Unsupported, "ltm profile one-connect /Common/sfb_oneconnect", "no equivalent")
	if want := lineOf(t, data, "ltm profile one-connect /Common/sfb_oneconnect {"); e.Line != want {
		t.Errorf("oneconnect at line %d, want %d", e.Line, want)
	}
	entry(t, r, Unsupported, "ltm profile http /Common/sfb_http", "server-agent-name Microsoft-IIS/10.0")
	entry(t, r, Supply, "ltm virtual /Common/sfb_web_https", "certificate /Common/public.example.com.crt")
	entry(t, r, Changed, "ltm virtual /Common/sfb_web_https", "serves the names of its certificate: webext.example.com, meet.example.com")
	// TLS 1.0 and 1.1 were already off.
	noEntry(t, r, "sfb_web_https", "TLS 1.0/1.1")
	if len(res.Files) != 3 {
		t.Errorf("files to supply: %v", res.Files)
	}
}

func TestImportClientSSLWithoutCertificates(t *testing.T) {
	data := load(t, "sfb-clientssl.conf")
	res, err := Import("bigip.conf", data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/etc/edgeproxy/tls/corp_internal_ca.pem", "/etc/edgeproxy/tls/public.example.com.key", "/etc/edgeproxy/tls/public.example.com.pem"}
	if !slices.Equal(res.Files, want) {
		t.Errorf("files: %v", res.Files)
	}
	entry(t, res.Report, Supply, "ltm virtual /Common/sfb_web_https", "host names")
	entry(t, res.Report, Supply, "ltm virtual /Common/sfb_web_http", "host names")
	y, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), "#   /etc/edgeproxy/tls/public.example.com.pem\n") {
		t.Errorf("the YAML does not list the files to supply:\n%s", y)
	}
	// Until the files and names are supplied, check says what is missing.
	_, err = config.Parse("", y)
	if err == nil {
		t.Fatal("config.Parse accepted an https virtual without its certificate files")
	}
	for _, s := range []string{"public.example.com.pem does not exist", "the site needs hosts"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("config.Parse error lacks %q: %v", s, err)
		}
	}
}

// TestImportEdgeCases covers virtuals and settings that cannot be carried
// over as they are.
// edgeCasesConf holds objects that are carried over only in part, or not
// at all.
const edgeCasesConf = `net vlan /Common/ext { }
net vlan /Common/int { }
net self /Common/e { address 198.51.100.2/24 vlan /Common/ext }
net self /Common/i { address 10.1.0.2/24 vlan /Common/int }
net route /Common/d { gw 198.51.100.1 network default }
net route /Common/bh { blackhole network 192.0.2.0/24 }
ltm node /Common/app_01 { address 10.1.0.21%3 }
ltm node /Common/10.1.0.22 { address 10.1.0.22 monitor /Common/icmp }
ltm pool /Common/p_mixed {
    load-balancing-mode observed-member
    members {
        /Common/app_01:8443 { address 10.1.0.21%3 }
        /Common/10.1.0.22:8444 { address 10.1.0.22 }
        /Common/10.1.0.23:8443 { address 10.1.0.23 priority-group 5 }
    }
    monitor /Common/gateway_icmp
}
ltm pool /Common/p_plain {
    members { /Common/10.1.0.31:80 { address 10.1.0.31 } }
    service-down-action reset
}
ltm profile fastl4 /Common/fl4_forever {
    defaults-from /Common/fastL4
    idle-timeout indefinite
    loose-initialization enabled
    tcp-timestamp-mode strip
}
ltm virtual-address /Common/vip_app { address 198.51.100.50 }
ltm virtual /Common/named_vip {
    destination /Common/vip_app:https
    pool /Common/p_mixed
    profiles { /Common/fl4_forever { } }
    source 192.0.2.0/24
    source-address-translation { type automap }
}
ltm virtual /Common/standard_tcp {
    destination /Common/198.51.100.51%3:443
    pool /Common/p_plain
    profiles { /Common/tcp { } }
    snat automap
}
ltm virtual /Common/udp_dns {
    destination /Common/198.51.100.52:53
    ip-protocol udp
    pool /Common/p_plain
    profiles { /Common/udp { } }
    source-address-translation { type automap }
}
ltm virtual /Common/wildcard { destination /Common/0.0.0.0:any mask any ip-forward profiles { /Common/fastL4 { } } }
ltm virtual /Common/network_vs { destination /Common/198.51.100.0:443 mask 255.255.255.0 pool /Common/p_plain profiles { /Common/fastL4 { } } }
ltm virtual /Common/no_xlate { destination /Common/198.51.100.53:443 pool /Common/p_plain translate-address disabled profiles { /Common/fastL4 { } } }
ltm virtual /Common/off { destination /Common/198.51.100.54:443 pool /Common/p_plain disabled profiles { /Common/fastL4 { } } }
ltm virtual /Common/orphan { destination /Common/198.51.100.55:443 pool /Common/missing profiles { /Common/fastL4 { } } }
ltm nat /Common/outbound { originating-address 10.1.0.40 translation-address 198.51.100.40 }
gtm wideip a /Common/www.example.com { pools { /Common/gp { order 0 } } }
apm profile access /Common/ap { }
`

func TestImportEdgeCases(t *testing.T) {
	data := []byte(edgeCasesConf)
	res, c, _ := importAndCheck(t, "edge.conf", data, Options{})
	r := res.Report

	if len(c.Virtuals) != 3 {
		t.Fatalf("virtuals: %d, want named_vip, standard_tcp and udp_dns\n%s", len(c.Virtuals), r)
	}
	v := virtualNamed(t, c, "named_vip")
	if v.Listen != netip.MustParseAddrPort("198.51.100.50:443") || v.Port != 8443 || v.IdleTimeout.D() != 86400*time.Second || !v.LooseInit {
		t.Errorf("named_vip: %+v", v)
	}
	p := c.Pools["p_mixed"]
	if got := members(p); !slices.Equal(got, []string{"app_01", "10.1.0.22", "10.1.0.23"}) {
		t.Errorf("members: %v", got)
	}
	if p.Monitor.Type != config.MonitorTCP || p.Monitor.Port != 8443 {
		t.Errorf("gateway_icmp replacement: %+v", p.Monitor)
	}
	if c.Network.Hosts["app_01"] != netip.MustParseAddr("10.1.0.21") {
		t.Errorf("hosts: %v", c.Network.Hosts)
	}
	if v := virtualNamed(t, c, "standard_tcp"); v.Mode != config.ModeFastL4 || !v.SNAT.Automap || v.Port != 80 || v.Listen.Addr() != netip.MustParseAddr("198.51.100.51") {
		t.Errorf("standard_tcp: %+v", v)
	}
	if v := virtualNamed(t, c, "udp_dns"); v.Proto != "udp" || v.Port != 80 {
		t.Errorf("udp_dns: %+v", v)
	}

	for _, x := range []struct {
		k        Kind
		obj, msg string
	}{
		{Changed, "ltm virtual /Common/named_vip", "source 192.0.2.0/24"},
		{Changed, "ltm profile fastl4 /Common/fl4_forever", "idle-timeout indefinite"},
		{Unsupported, "ltm profile fastl4 /Common/fl4_forever", "tcp-timestamp-mode strip"},
		{Changed, "ltm pool /Common/p_mixed", "observed-member"},
		{Changed, "ltm pool /Common/p_mixed", "different ports (8443, 8444)"},
		{Changed, "ltm pool /Common/p_mixed", "route domain %3"},
		{Unsupported, "ltm pool /Common/p_mixed", "priority-group 5"},
		{Changed, "monitor /Common/gateway_icmp", "gateway_icmp monitor has no equivalent"},
		{Unsupported, "ltm node /Common/10.1.0.22", "node monitor /Common/icmp"},
		{Changed, "ltm pool /Common/p_plain", "no monitor"},
		{Unsupported, "ltm pool /Common/p_plain", "service-down-action reset"},
		{Changed, "ltm virtual /Common/standard_tcp", "standard virtual"},
		{Changed, "ltm virtual /Common/standard_tcp", "route domain %3"},
		{Unsupported, "ltm virtual /Common/wildcard", "forwarding (IP) virtual"},
		{Unsupported, "ltm virtual /Common/network_vs", "mask 255.255.255.0"},
		{Unsupported, "ltm virtual /Common/no_xlate", "translate-address disabled"},
		{Unsupported, "ltm virtual /Common/off", "disabled on the BIG-IP"},
		{Unsupported, "ltm virtual /Common/orphan", "pool /Common/missing is not in the input"},
		{Unsupported, "net route /Common/bh", "blackhole"},
		{Unsupported, "ltm nat /Common/outbound", "no equivalent"},
		{Unsupported, "gtm wideip a /Common/www.example.com", "no equivalent"},
		{Unsupported, "apm profile access /Common/ap", "no equivalent"},
	} {
		e := entry(t, r, x.k, x.obj, x.msg)
		if e.Line == 0 && !strings.Contains(x.obj, "monitor /Common/gateway_icmp") {
			t.Errorf("entry without a line: %+v", e)
		}
	}
	e := entry(t, r, Unsupported, "ltm virtual /Common/off", "disabled")
	if want := lineOf(t, data, "ltm virtual /Common/off"); e.Line != want {
		t.Errorf("line %d, want %d", e.Line, want)
	}
}

// TestReportText checks the report's text form: grouped, sorted by line,
// file:line: object: message.
func TestReportText(t *testing.T) {
	data := load(t, "sfb-clientssl.conf")
	res, err := Import("bigip.conf", data, Options{})
	if err != nil {
		t.Fatal(err)
	}
	text := res.Report.String()
	if !strings.HasPrefix(text, fmt.Sprintf("# not carried over (%d)\n", res.Report.Count(Unsupported))) {
		t.Errorf("report does not start with the not-carried-over group:\n%s", text)
	}
	rule := fmt.Sprintf("bigip.conf:%d: ltm virtual /Common/sfb_web_https: LTM policy /Common/sfb_asm not carried over",
		lineOf(t, data, "        /Common/sfb_asm { }"))
	if !strings.Contains(text, rule) {
		t.Errorf("report lacks %q:\n%s", rule, text)
	}
	groups := []string{"# not carried over", "# to supply", "# ignored"}
	last := -1
	for _, g := range groups {
		i := strings.Index(text, g)
		if i < last {
			t.Errorf("group %q out of order", g)
		}
		last = i
	}
}

// TestImportAllProperties reads objects listed with all-properties, the
// BIG-IP defaults spelled out: none of it is worth a report entry.
func TestImportAllProperties(t *testing.T) {
	res, c, _ := importAndCheck(t, "list.txt", load(t, "all-properties.conf"), Options{})
	if n := res.Report.Count(Unsupported) + res.Report.Count(Changed); n != 0 {
		t.Errorf("%d entries for default settings:\n%s", n, res.Report)
	}
	v := virtualNamed(t, c, "sfb_webext_443")
	if v.Port != 4443 || !v.SNAT.Automap || v.IdleTimeout.D() != 300*time.Second {
		t.Errorf("virtual: %+v", v)
	}
	if m := c.Pools["sfb_fe_4443"].Monitor; m.Type != config.MonitorTCP || m.Port != 4443 {
		t.Errorf("monitor: %+v", m)
	}
	entry(t, res.Report, Ignored, "ltm profile tcp", "not used")
}

// TestImportSNI: several client-ssl profiles on one virtual, each with its
// server name; the SNI default's certificate comes first.
func TestImportSNI(t *testing.T) {
	src := `net self /Common/e { address 203.0.113.10/24 vlan /Common/external }
net self /Common/i { address 10.20.0.10/24 vlan /Common/internal }
net route /Common/fe { gw 10.20.0.1 network 10.10.0.0/16 }
ltm pool /Common/p { members { /Common/10.10.0.11:4443 { address 10.10.0.11 } } monitor /Common/https }
ltm profile client-ssl /Common/cs_webext { cert-key-chain { webext { cert /Common/webext.crt key /Common/webext.key } } defaults-from /Common/clientssl server-name webext.example.com }
ltm profile client-ssl /Common/cs_meet { cert /Common/meet.crt key /Common/meet.key defaults-from /Common/clientssl server-name meet.example.com sni-default true }
ltm virtual /Common/vs { destination /Common/203.0.113.30:443 pool /Common/p profiles { /Common/cs_webext { context clientside } /Common/cs_meet { context clientside } /Common/http { } /Common/serverssl-insecure-compatible { context serverside } } source-address-translation { type automap } }
ltm pool /Common/p80 { members { /Common/10.10.0.11:8080 { address 10.10.0.11 } } monitor /Common/mon80 }
ltm monitor http /Common/mon80 { defaults-from /Common/corp_http_base destination *:8080 }
ltm profile http /Common/http_xff { defaults-from /Common/http insert-xforwarded-for enabled }
ltm virtual /Common/vs80 { destination /Common/203.0.113.30:80 pool /Common/p80 profiles { /Common/http_xff { } } }
`
	dir := t.TempDir()
	if _, err := certgen.Write(dir, certgen.Options{PublicNames: certgen.SkypeNames}); err != nil {
		t.Fatal(err)
	}
	pub, _ := os.ReadFile(filepath.Join(dir, certgen.PublicCertFile))
	key, _ := os.ReadFile(filepath.Join(dir, certgen.PublicKeyFile))
	for _, n := range []string{"webext", "meet"} {
		if err := os.WriteFile(filepath.Join(dir, n+".pem"), pub, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n+".key"), key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	res, c, _ := importAndCheck(t, "sni.conf", []byte(src), Options{CertDir: dir})
	v := virtualNamed(t, c, "vs")
	var certs []string
	for _, x := range v.Certificates {
		certs = append(certs, filepath.Base(x.Cert)+"+"+filepath.Base(x.Key))
	}
	if !slices.Equal(certs, []string{"meet.pem+meet.key", "webext.pem+webext.key"}) {
		t.Errorf("certificates: %v", certs)
	}
	if s := v.Sites[0]; !slices.Equal(s.Hosts, []string{"webext.example.com", "meet.example.com"}) || s.Port != 4443 || s.BackendTLS == nil {
		t.Errorf("site: %+v", s)
	}
	if m := c.Pools["p"].Monitor; m.Type != config.MonitorHTTPS || m.Port != 4443 || m.Path != "/" {
		t.Errorf("built-in https monitor: %+v", m)
	}
	// The http virtual on the same address serves the same names.
	v80 := virtualNamed(t, c, "vs80")
	if s := v80.Sites[0]; v80.Mode != config.ModeHTTP || !slices.Equal(s.Hosts, []string{"webext.example.com", "meet.example.com"}) || s.Pool != "p80" || s.Port != 8080 || s.BackendTLS != nil {
		t.Errorf("http virtual: %+v %+v", v80, s)
	}
	entry(t, res.Report, Changed, "ltm monitor http /Common/mon80", "defaults-from /Common/corp_http_base is not in the input")
	entry(t, res.Report, Changed, "ltm virtual /Common/vs", "allowed TLS 1.0/1.1")
	entry(t, res.Report, Supply, "ltm virtual /Common/vs", "does not verify the members")
	entry(t, res.Report, Changed, "monitor /Common/https", "no receive string")
}

// TestImportSeveralFiles: the network lives in bigip_base.conf, the
// virtuals in bigip.conf; the report names the file of each entry.
func TestImportSeveralFiles(t *testing.T) {
	data := load(t, "sfb-fastl4.conf")
	split := bytes.Index(data, []byte("ltm node "))
	base, err := Parse("bigip_base.conf", data[:split])
	if err != nil {
		t.Fatal(err)
	}
	conf, err := Parse("bigip.conf", data[split:])
	if err != nil {
		t.Fatal(err)
	}
	res := Translate(Merge(base, conf), Options{})
	y, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse("", y)
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if len(c.Virtuals) != 2 || !slices.Equal(c.Network.External.Addresses, mustPrefixes("203.0.113.10/24")) {
		t.Errorf("virtuals %d, external %v", len(c.Virtuals), c.Network.External.Addresses)
	}
	e := entry(t, res.Report, Unsupported, "sfb_webext_443_v6", "address families")
	if e.File != "bigip.conf" || e.Line != lineOf(t, data[split:], "ltm virtual /Common/sfb_webext_443_v6 {") {
		t.Errorf("entry at %s:%d", e.File, e.Line)
	}
	e = entry(t, res.Report, Ignored, "net self /Common/self_ha", "neither")
	if e.File != "bigip_base.conf" {
		t.Errorf("entry in %s", e.File)
	}
	text := res.Report.String()
	if !strings.Contains(text, "bigip_base.conf:45: net self /Common/self_ha:") {
		t.Errorf("report:\n%s", text)
	}
	if !strings.Contains(string(y), "imported from bigip_base.conf, bigip.conf by") {
		t.Errorf("YAML head:\n%s", y)
	}
}

// TestImportSkypeIRules imports what makes a bridged Skype for Business
// virtual safe on the BIG-IP: the iRule refusing the management paths
// becomes profile skype, the http→https iRule (not the built-in one) a
// redirect, MS-WSMAN cookie persistence the ms-wsman affinity; none of
// them is reported as without equivalent, and check accepts the file.
func TestImportSkypeIRules(t *testing.T) {
	data := load(t, "sfb-irules.conf")
	res, c, y := importAndCheck(t, "bigip.conf", data, Options{CertDir: certDir(t)})
	https := virtualNamed(t, c, "sfb_web_https")
	if https.Mode != config.ModeHTTPS || len(https.Sites) != 1 {
		t.Fatalf("https virtual: %+v", https)
	}
	s := https.Sites[0]
	if s.Profile != config.ProfileSkype || len(s.Deny) != 0 || s.Affinity != config.AffinityMSWSMan || s.Pool != "sfb_fe_web" || s.Port != 4443 {
		t.Errorf("site: profile %q deny %q affinity %q pool %s:%d", s.Profile, s.Deny, s.Affinity, s.Pool, s.Port)
	}
	http := virtualNamed(t, c, "sfb_web_http")
	if len(http.Sites) != 1 || http.Sites[0].Redirect != config.RedirectHTTPS {
		t.Errorf("http virtual: %+v", http.Sites)
	}
	r := res.Report
	for _, name := range []string{"sfb_block_admin", "web_to_ssl", "sfb_wsman"} {
		noEntry(t, r, "", name)
	}
	if n := r.Count(Unsupported); n != 0 {
		t.Errorf("%d entries not carried over, want none:\n%s", n, r)
	}
	// The profile comes from the iRule: no note that guesses it.
	noEntry(t, r, "sfb_web_https", "looks like Skype")
	for _, want := range []string{
		fmt.Sprintf("iRule /Common/sfb_block_admin (bigip.conf:%d) refuses /cscp, /ocspowershell, /rgsconfig", lineOf(t, data, "ltm rule /Common/sfb_block_admin {")),
		"MS-WSMAN cookie: affinity: ms-wsman",
		"iRule /Common/web_to_ssl",
	} {
		if !strings.Contains(y, want) {
			t.Errorf("YAML comments lack %q:\n%s", want, y)
		}
	}
}

// sfbInternalSite publishes front ends' Internal Web Sites: 443→443 and
// 80→80 through FastL4 virtuals named for Skype for Business.
const sfbInternalSite = `
ltm pool /Common/sfb_fe_443 {
    members { /Common/10.10.0.11:443 { address 10.10.0.11 } }
}
ltm pool /Common/sfb_fe_80 {
    members { /Common/10.10.0.11:80 { address 10.10.0.11 } }
}
ltm virtual /Common/sfb_webext_443 {
    destination /Common/203.0.113.20:443
    pool /Common/sfb_fe_443
    profiles { /Common/fastL4 { } }
    source-address-translation { type automap }
}
ltm virtual /Common/sfb_webext_80 {
    destination /Common/203.0.113.20:80
    pool /Common/sfb_fe_80
    profiles { /Common/fastL4 { } }
    source-address-translation { type automap }
}
net self /Common/ext_self { address 203.0.113.10/24 vlan /Common/external }
net self /Common/int_self { address 10.10.0.10/24 vlan /Common/internal }
`

// A Skype-looking virtual sending to the front ends' Internal Web Site is
// translated as it is, with the pool marked as Skype front ends, a report
// entry that says what to fix, and check refusing the file until it is.
func TestImportSkypeInternalSitePort(t *testing.T) {
	res, err := Import("bigip.conf", []byte(sfbInternalSite), Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := res.Config
	for name, port := range map[string]uint16{"sfb_webext_443": 443, "sfb_webext_80": 80} {
		v := virtualNamed(t, c, name)
		if v.Port != port || c.Pools[v.Pool].Kind != config.PoolKindSkypeFE {
			t.Errorf("%s: port %d, pool kind %q", name, v.Port, c.Pools[v.Pool].Kind)
		}
	}
	e := entry(t, res.Report, Fix, "ltm virtual /Common/sfb_webext_443", "members' port 443")
	for _, want := range []string{"Internal Web Site", "External Web Site", "set port: 4443", "/Common/sfb_fe_443 to :4443"} {
		if !strings.Contains(e.Msg, want) {
			t.Errorf("fix %q lacks %q", e.Msg, want)
		}
	}
	entry(t, res.Report, Fix, "ltm virtual /Common/sfb_webext_80", "set port: 8080")
	if !strings.HasPrefix(res.Report.String(), "# to fix (2)\n") {
		t.Errorf("the report does not start with what to fix:\n%s", res.Report)
	}
	y, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(y), "Review the import report: 2 to fix, ") {
		t.Errorf("the YAML's head does not count what to fix:\n%s", y)
	}
	_, err = config.Parse("out.yaml", y)
	if err == nil || !strings.Contains(err.Error(), "virtuals[0].port") || !strings.Contains(err.Error(), "Internal Web Site") {
		t.Errorf("check of the output: %v\n%s", err, y)
	}
}

// TestImportIRuleEffects reads iRules by what they do, not by their
// names: refusing paths (any spelling of the test and the refusal),
// redirecting to https, or something else, which stays in the report.
func TestImportIRuleEffects(t *testing.T) {
	const frame = `
ltm pool /Common/web { members { /Common/10.10.0.11:8080 { address 10.10.0.11 } } }
ltm rule /Common/r {
%s
}
ltm virtual /Common/v_http {
    destination /Common/203.0.113.20:80
    pool /Common/web
    profiles { /Common/http { } /Common/tcp { } }
    rules { /Common/r }
    source-address-translation { type automap }
}
net self /Common/ext_self { address 203.0.113.10/24 vlan /Common/external }
net self /Common/int_self { address 10.10.0.10/24 vlan /Common/internal }
`
	for _, c := range []struct {
		name, rule string
		profile    string
		deny       []string
		redirect   bool
		kept       bool // reported as without equivalent
	}{
		{name: "if starts_with, reject", profile: config.ProfileSkype, deny: []string{"/admin"},
			rule: `when HTTP_REQUEST {
    if { [string tolower [HTTP::path]] starts_with "/cscp" or [HTTP::path] starts_with "/OcsPowerShell" or [HTTP::path] starts_with "/admin/" } {
        reject
    }
}`},
		{name: "switch, drop", deny: []string{"/private", "/internal/tools"},
			rule: `when HTTP_REQUEST {
    switch -glob [HTTP::uri] {
        "/private*" -
        "/internal/tools/*" { drop }
    }
}`},
		{name: "respond 301 with host and URI", redirect: true,
			rule: `when HTTP_REQUEST { HTTP::respond 301 Location "https://[HTTP::host][HTTP::uri]" }`},
		{name: "chooses a pool", kept: true,
			rule: `when HTTP_REQUEST { if { [HTTP::path] starts_with "/cscp" } { reject } else { pool /Common/web } }`},
		{name: "redirect elsewhere", kept: true,
			rule: `when HTTP_REQUEST { HTTP::redirect "https://www.example.com/" }`},
		{name: "paths in a missing data group", kept: true,
			rule: `when HTTP_REQUEST { if { [class match [HTTP::path] starts_with blocked] } { reject } }`},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, err := Import("bigip.conf", []byte(fmt.Sprintf(frame, c.rule)), Options{})
			if err != nil {
				t.Fatal(err)
			}
			kept := len(res.Report.Find("iRule /Common/r")) > 0
			if kept != c.kept {
				t.Errorf("iRule reported: %v, want %v\n%s", kept, c.kept, res.Report)
			}
			if c.kept {
				return
			}
			s := virtualNamed(t, res.Config, "v_http").Sites[0]
			if s.Profile != c.profile || !slices.Equal(s.Deny, c.deny) || (s.Redirect == config.RedirectHTTPS) != c.redirect {
				t.Errorf("site: profile %q deny %q redirect %q", s.Profile, s.Deny, s.Redirect)
			}
		})
	}
}
