package plan

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/health"
	"github.com/edgeproxy/edgeproxy/l7"
)

// roundRobin answers each lookup of a name with the next address, as a
// DNS server with several A records rotating them would.
type roundRobin struct{ calls map[string]int }

func (r *roundRobin) resolve(_ context.Context, name string) (netip.Addr, error) {
	if !strings.HasSuffix(name, ".corp.example.com") {
		return netip.Addr{}, fmt.Errorf("no such host %s", name)
	}
	r.calls[name]++
	return netip.AddrFrom4([4]byte{198, 18, 0, byte(r.calls[name])}), nil
}

func testConfig() *config.Config {
	return &config.Config{
		Network: config.Network{Hosts: map[string]netip.Addr{"fe02.corp.example.com": netip.MustParseAddr("198.18.1.2")}},
		Pools: map[string]*config.Pool{
			"sfb-fe": {Name: "sfb-fe", Members: []config.Member{{Address: "fe01.corp.example.com"}, {Address: "fe02.corp.example.com"}},
				Monitor: config.Monitor{Type: config.MonitorTLS, Port: 4443}},
			"sfb-tcp": {Name: "sfb-tcp", Members: []config.Member{{Address: "fe01.corp.example.com"}, {Address: "198.18.1.3", Disabled: true}}},
		},
		Virtuals: []*config.Virtual{
			{Name: "web", Mode: config.ModeHTTPS, Listen: netip.MustParseAddrPort("198.18.2.1:443"),
				Sites: []*config.Site{{Hosts: []string{"webext.example.com"}, Pool: "sfb-fe", Port: 4443, Profile: config.ProfileSkype}}},
			{Name: "sip", Mode: config.ModeFastL4, Listen: netip.MustParseAddrPort("198.18.2.1:5061"), Pool: "sfb-tcp", Port: 5061},
		},
	}
}

// A name the DMZ resolver answers in rotation is asked once per
// compile: the L7 site and the health checker of both pools get the
// same address for it.
func TestCompileResolvesEachMemberOnce(t *testing.T) {
	r := &roundRobin{calls: map[string]int{}}
	p, err := Compile(context.Background(), testConfig(), r.resolve)
	if err != nil {
		t.Fatal(err)
	}
	if r.calls["fe01.corp.example.com"] != 1 || len(r.calls) != 1 {
		t.Fatalf("resolver calls %v, want fe01 once and nothing else (fe02 is in network.hosts)", r.calls)
	}
	want := map[string][]netip.Addr{
		"sfb-fe":  {netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.1.2")},
		"sfb-tcp": {netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.1.3")},
	}
	got := map[string][]netip.Addr{}
	for _, tg := range p.Health.Targets {
		got[tg.Pool] = append(got[tg.Pool], tg.Addr)
	}
	for pool, addrs := range want {
		if !slices.Equal(got[pool], addrs) {
			t.Errorf("health targets of %s: %v, want %v", pool, got[pool], addrs)
		}
	}
	if len(p.L7.Virtuals) != 1 || len(p.L7.Virtuals[0].Sites) != 1 {
		t.Fatalf("l7 spec: %+v, want the https virtual with its one site", p.L7)
	}
	var site []netip.Addr
	for _, m := range p.L7.Virtuals[0].Sites[0].Members {
		site = append(site, m.Addr)
	}
	if !slices.Equal(site, want["sfb-fe"]) {
		t.Errorf("l7 site members %v, want %v", site, want["sfb-fe"])
	}
	var fast []netip.Addr
	for _, m := range p.L4.Pools["sfb-tcp"] {
		fast = append(fast, m.Addr)
	}
	if !slices.Equal(fast, want["sfb-tcp"]) {
		t.Errorf("fast path members of sfb-tcp %v, want %v", fast, want["sfb-tcp"])
	}
	if n := p.Network.Members; !slices.Contains(n, netip.MustParseAddr("198.18.0.1")) || slices.Contains(n, netip.MustParseAddr("198.18.0.2")) {
		t.Errorf("host network members %v: want fe01 at 198.18.0.1 only", n)
	}
	if m := p.Health.Monitors["sfb-fe"]; m.Type != health.MonitorTLS || m.Port != 4443 {
		t.Errorf("monitor of sfb-fe: %+v", m)
	}
	if tg := p.Health.Targets[len(p.Health.Targets)-1]; !tg.Disabled || tg.Member != "198.18.1.3" {
		t.Errorf("disabled member: %+v", tg)
	}
}

// A site's profile gives its spec the profile's denied paths, limits,
// Windows authentication and strict paths; the TLS and connection
// defaults are filled in.
func TestCompileAppliesDefaults(t *testing.T) {
	p, err := Compile(context.Background(), testConfig(), (&roundRobin{calls: map[string]int{}}).resolve)
	if err != nil {
		t.Fatal(err)
	}
	v := p.L7.Virtuals[0]
	s := v.Sites[0]
	if !s.Skype || !s.WindowsAuth || !s.StrictPaths || !slices.Contains(s.Deny, "/RgsConfig") {
		t.Errorf("skype site: %+v", s)
	}
	if s.MaxHeaderBytes != 64<<10 || s.IdleTimeout != config.ProfileLimits(config.ProfileSkype).IdleTimeout.D() {
		t.Errorf("skype limits: %+v", s.Limits)
	}
	if v.TLS.MinVersion == 0 || v.TLS.HandshakeTimeout != config.DefaultTLSHandshakeTimeout.D() ||
		v.DrainTimeout != config.DefaultDrainTimeout.D() || v.Limits.MaxConnsPerSource != config.DefaultMaxConnsPerSource {
		t.Errorf("virtual defaults: %+v", v)
	}
}

// What the planes cannot run is refused with the key and the fix.
func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*config.Config)
		want   []string
		is     error
	}{
		{"unknown pool", func(c *config.Config) { c.Virtuals[0].Sites[0].Pool = "nope" },
			[]string{"virtual web", `pool "nope"`, "define it under pools:"}, ErrUnknownPool},
		{"unresolved member", func(c *config.Config) {
			c.Pools["sfb-fe"].Members = append(c.Pools["sfb-fe"].Members, config.Member{Address: "fe09.elsewhere.example"})
		}, []string{`member "fe09.elsewhere.example" of pool "sfb-fe"`, "no such host"}, nil},
		{"legacy TLS", func(c *config.Config) { c.Virtuals[0].TLS.MinVersion = "1.0" },
			[]string{"tls.min_version 1.0", "allow_legacy"}, ErrBadValue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			tc.change(c)
			_, err := Compile(context.Background(), c, (&roundRobin{calls: map[string]int{}}).resolve)
			if err == nil {
				t.Fatal("compiled")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
	c := testConfig()
	c.Network.Hosts = nil
	if _, err := Compile(context.Background(), c, nil); !errors.Is(err, ErrUnresolved) || !strings.Contains(err.Error(), "network.hosts") {
		t.Errorf("without a resolver: %v", err)
	}
}

// An ACME certificate beside a file one reaches the l7 spec in order,
// with the challenge and key type defaults and the state directory.
func TestCompileACMECertificate(t *testing.T) {
	c := testConfig()
	c.Virtuals[0].Certificates = []config.Certificate{
		{ACME: &config.ACMECert{Names: []string{"webext.example.com"}, CA: "https://acme.example.net/dir", CARoot: "/etc/ca.pem"}},
		{Cert: "public.pem", Key: "public.key"},
	}
	p, err := Compile(context.Background(), c, (&roundRobin{calls: map[string]int{}}).resolve)
	if err != nil {
		t.Fatal(err)
	}
	certs := p.L7.Virtuals[0].Certificates
	if len(certs) != 2 || certs[1].Cert != "public.pem" || certs[0].ACME == nil {
		t.Fatalf("certificates %+v", certs)
	}
	a := certs[0].ACME
	if a.CA != "https://acme.example.net/dir" || a.CARoot != "/etc/ca.pem" || a.Challenge != l7.ChallengeHTTP01 || a.KeyType != l7.KeyECDSAP256 {
		t.Errorf("acme %+v", a)
	}
	if p.L7.ACME.StateDir != l7.DefaultACMEStateDir {
		t.Errorf("state dir %q, want %s", p.L7.ACME.StateDir, l7.DefaultACMEStateDir)
	}
}
