package diagnose

import (
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
)

func TestPortRedirectionRules(t *testing.T) {
	member := loopback(t)
	for _, port := range []string{"4443", "8080"} {
		listen(t, member.String()+":"+port)
	}
	vip := netip.MustParseAddr("198.18.0.10")
	fast := func(name string, from, to uint16, pool string) *config.Virtual {
		return &config.Virtual{Name: name, Mode: config.ModeFastL4, Listen: netip.AddrPortFrom(vip, from), Pool: pool, Port: to,
			SNAT: config.SNAT{Automap: true}}
	}
	cfg := &config.Config{
		Network: config.Network{Internal: config.NIC{Addresses: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}}},
		Pools: map[string]*config.Pool{
			"sfb-fe": {Members: []config.Member{{Address: member.String()}}, Monitor: config.Monitor{Port: 443}},
			"owas":   {Members: []config.Member{{Address: member.String()}}},
		},
		Virtuals: []*config.Virtual{
			fast("l4-ok", 443, 4443, "sfb-fe"),
			fast("l4-http-ok", 80, 8080, "sfb-fe"),
			fast("l4-internal", 443, 443, "sfb-fe"),
			fast("l4-swapped", 80, 4443, "sfb-fe"),
			fast("owas-l4", 443, 443, "owas"),
			{Name: "web", Mode: config.ModeHTTPS, Listen: netip.AddrPortFrom(vip, 443), Sites: []*config.Site{
				{Hosts: []string{"webext.example.com"}, Pool: "sfb-fe", Port: 443, BackendTLS: &config.BackendTLS{}, Profile: config.ProfileSkype},
				{Hosts: []string{"meet.example.com"}, Pool: "sfb-fe", Port: 4443, BackendTLS: &config.BackendTLS{}, Profile: config.ProfileSkype},
				{Hosts: []string{"dialin.example.com"}, Pool: "sfb-fe", Port: 8080, BackendTLS: &config.BackendTLS{}, Profile: config.ProfileSkype},
				{Hosts: []string{"lyncdiscover.example.com"}, Pool: "sfb-fe", Port: 8443, BackendTLS: &config.BackendTLS{}, Profile: config.ProfileSkype},
			}},
			{Name: "web-http", Mode: config.ModeHTTP, Listen: netip.AddrPortFrom(vip, 80), Sites: []*config.Site{
				{Hosts: []string{"lyncdiscover.example.com"}, Pool: "sfb-fe", Port: 8080, Profile: config.ProfileSkype},
				{Hosts: []string{"meet.example.com"}, Redirect: config.RedirectHTTPS, Profile: config.ProfileSkype},
			}},
		},
	}
	fs := runCheck(t, &Env{Config: cfg}, PortRedirection)
	expect(t, fs, "virtual l4-ok →", Pass, "443 → 4443: the External Web Site")
	expect(t, fs, "virtual l4-http-ok →", Pass, "80 → 8080")
	expect(t, fs, "virtual l4-internal →", Fail, "443 → 443", "Internal Web Site", "the port is how the server tells outside from inside", "set virtual l4-internal's port to 4443")
	expect(t, fs, "virtual l4-swapped →", Fail, "plain HTTP to the TLS port 4443", "to 8080")
	expect(t, fs, "virtual owas-l4 →", Pass, "not a Skype front-end pool")
	expect(t, fs, "site webext.example.com →", Fail, "Internal Web Site", "to 4443")
	expect(t, fs, "site meet.example.com →", Pass)
	expect(t, fs, "site dialin.example.com →", Fail, "TLS to the plain HTTP port 8080")
	expect(t, fs, "site lyncdiscover.example.com → sfb-fe:8443", Warn, "listens on 4443")
	expect(t, fs, "virtual web-http site lyncdiscover.example.com →", Pass, "80 → 8080")
	if len(find(fs, "web-http site meet")) != 0 {
		t.Error("a redirecting site was judged as forwarding")
	}
	expect(t, fs, "pool sfb-fe monitor", Warn, "probes port 443", "monitor.port to 4443")
	// The members: 4443 and 8080 answer, 443 and 8443 do not.
	expect(t, fs, "member "+member.String()+":4443", Pass, "answers from 127.0.0.1")
	expect(t, fs, "member "+member.String()+":8080", Pass)
	expect(t, fs, "member "+member.String()+":8443", Fail, "refuses connections from 127.0.0.1", "External Web Site is bound to port 8443")
}

func TestPortRedirectionMembers(t *testing.T) {
	up, down := loopback(t), loopback(t)
	listen(t, up.String()+":4443")
	cfg := &config.Config{
		Network: config.Network{
			Internal: config.NIC{Addresses: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
			Hosts:    map[string]netip.Addr{"fe01.corp.example.com": up, "fe02.corp.example.com": down},
		},
		Pools: map[string]*config.Pool{"sfb-fe": {Members: []config.Member{
			{Address: "fe01.corp.example.com"}, {Address: "fe02.corp.example.com"}, {Address: "fe03.corp.example.com"},
		}}},
		Virtuals: []*config.Virtual{{Name: "l4", Mode: config.ModeFastL4, Listen: netip.MustParseAddrPort("198.18.0.10:443"),
			Pool: "sfb-fe", Port: 4443, SNAT: config.SNAT{Automap: true}}},
	}
	fs := runCheck(t, &Env{Config: cfg}, PortRedirection)
	expect(t, fs, "member fe01.corp.example.com:4443", Pass, up.String()+":4443 answers from 127.0.0.1")
	expect(t, fs, "member fe02.corp.example.com:4443", Fail, "refuses", "nothing listens on port 4443")
	expect(t, fs, "member fe03.corp.example.com:4443", Fail, "not in network.hosts", "add fe03.corp.example.com to network.hosts")
}
