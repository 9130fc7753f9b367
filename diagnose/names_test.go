package diagnose

import (
	"crypto/tls"
	"net/http"
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// namesLab is an https virtual serving certs live, configured with files.
func namesLab(t *testing.T, files []config.Certificate, served ...tls.Certificate) (*config.Config, netip.AddrPort) {
	t.Helper()
	pub := serve(t, listen(t, "127.0.0.1:0"), http.NotFoundHandler(), served...)
	cfg := &config.Config{
		Network: config.Network{Hosts: map[string]netip.Addr{"fe01.corp.example.com": netip.MustParseAddr("198.19.1.11")}},
		Pools: map[string]*config.Pool{"sfb-fe": {Members: []config.Member{
			{Address: "fe01.corp.example.com"}, {Address: "198.19.1.12"},
		}}},
		Virtuals: []*config.Virtual{{
			Name: "sfb-web", Mode: config.ModeHTTPS, Listen: pub, Certificates: files,
			Sites: []*config.Site{{Hosts: skypeNames, Pool: "sfb-fe", Port: 4443, Profile: config.ProfileSkype}},
		}},
	}
	return cfg, pub
}

func TestNames(t *testing.T) {
	p := newTestPKI(t)
	all := issue(t, p.Inter, certSpec{CN: "webext.example.com", DNS: skypeNames})
	wild := issue(t, p.Inter, certSpec{CN: "*.example.com", DNS: []string{"*.example.com", "example.com"}})
	cnWild := issue(t, p.Inter, certSpec{CN: "*.example.com"})
	noDiscover := issue(t, p.Inter, certSpec{CN: "webext.example.com", DNS: skypeNames[:3]})
	webextOnly := issue(t, p.Inter, certSpec{CN: "webext.example.com", DNS: []string{"webext.example.com"}})
	vip := netip.MustParseAddr("127.0.0.1")

	t.Run("healthy", func(t *testing.T) {
		for _, leaf := range []*pki{all, wild} {
			cfg, _ := namesLab(t, []config.Certificate{writeCert(t, t.TempDir(), "pub", leaf, p.Inter)}, tlsCert(leaf, p.Inter))
			table := map[string][]netip.Addr{}
			for _, n := range skypeNames {
				table[n] = []netip.Addr{vip}
			}
			fs := runCheck(t, &Env{Config: cfg, Resolver: testnet.DNSServer(t, table)}, Names)
			expectAtMost(t, fs, Pass)
			expect(t, fs, "lyncdiscover.example.com certificate", Pass, "covers it", "presents")
			expect(t, fs, "meet.example.com DNS", Pass, "127.0.0.1")
			expect(t, fs, "backend fe01.corp.example.com", Pass, "network.hosts → 198.19.1.11")
			if len(find(fs, "198.19.1.12")) != 0 {
				t.Error("a member written as an address was looked up as a name")
			}
		}
	})

	t.Run("wrong name", func(t *testing.T) {
		cfg, _ := namesLab(t, []config.Certificate{writeCert(t, t.TempDir(), "pub", noDiscover, p.Inter)}, tlsCert(noDiscover, p.Inter))
		fs := runCheck(t, &Env{Config: cfg}, Names)
		expect(t, fs, "lyncdiscover.example.com certificate", Fail, "does not cover it", "clients without SNI", "no configured certificate has it")
		expect(t, fs, "meet.example.com certificate", Pass)
	})

	t.Run("wildcard only in the CN", func(t *testing.T) {
		cfg, _ := namesLab(t, []config.Certificate{writeCert(t, t.TempDir(), "pub", cnWild, p.Inter)}, tlsCert(cnWild, p.Inter))
		fs := runCheck(t, &Env{Config: cfg}, Names)
		for _, n := range skypeNames {
			expect(t, fs, n+" certificate", Fail, "only by the wildcard in its subject CN (CN *.example.com)", "Subject Alternative Names")
		}
	})

	t.Run("default certificate does not cover every name", func(t *testing.T) {
		dir := t.TempDir()
		files := []config.Certificate{writeCert(t, dir, "webext", webextOnly, p.Inter), writeCert(t, dir, "all", all, p.Inter)}
		cfg, _ := namesLab(t, files, tlsCert(webextOnly, p.Inter), tlsCert(all, p.Inter))
		fs := runCheck(t, &Env{Config: cfg}, Names)
		f := expect(t, fs, "dialin.example.com certificate", Fail, "clients without SNI (Lync mobile)", "presents to clients without SNI")
		if f.Fix == "" {
			t.Error("no fix")
		}
		expect(t, fs, "dialin.example.com certificate", Fail, "all.pem") // chosen for its SNI
		expect(t, fs, "webext.example.com certificate", Pass)
	})

	t.Run("listener serves another certificate", func(t *testing.T) {
		cfg, addr := namesLab(t, []config.Certificate{writeCert(t, t.TempDir(), "pub", all, p.Inter)}, tlsCert(webextOnly, p.Inter))
		fs := runCheck(t, &Env{Config: cfg}, Names)
		expect(t, fs, "meet.example.com certificate", Fail, addr.String()+" presents for SNI meet.example.com", "restart or reload")
	})

	t.Run("DNS", func(t *testing.T) {
		cfg, _ := namesLab(t, []config.Certificate{writeCert(t, t.TempDir(), "pub", all, p.Inter)}, tlsCert(all, p.Inter))
		srv := testnet.DNSServer(t, map[string][]netip.Addr{
			"webext.example.com":       {vip},
			"meet.example.com":         {netip.MustParseAddr("192.0.2.99")},
			"lyncdiscover.example.com": {vip, netip.MustParseAddr("192.0.2.98")},
		})
		fs := runCheck(t, &Env{Config: cfg, Resolver: srv}, Names)
		expect(t, fs, "webext.example.com DNS", Pass)
		expect(t, fs, "meet.example.com DNS", Fail, "192.0.2.99, not 127.0.0.1", "point the public record")
		if n := len(find(fs, "webext.example.com DNS")); n != 1 {
			t.Errorf("%d findings on webext.example.com DNS, want one", n)
		}
		expect(t, fs, "dialin.example.com DNS", Fail, "does not resolve")
		expect(t, fs, "lyncdiscover.example.com DNS", Warn, "not this host's VIPs")
	})

	t.Run("backend names", func(t *testing.T) {
		cfg, _ := namesLab(t, []config.Certificate{writeCert(t, t.TempDir(), "pub", all, p.Inter)}, tlsCert(all, p.Inter))
		cfg.Pools["sfb-fe"].Members = append(cfg.Pools["sfb-fe"].Members, config.Member{Address: "fe02.corp.example.com"})
		fs := runCheck(t, &Env{Config: cfg}, Names)
		expect(t, fs, "backend fe02.corp.example.com", Fail, "not in network.hosts", `"fe02.corp.example.com: <address>"`)

		cfg.Network.Resolver = testnet.DNSServer(t, map[string][]netip.Addr{"fe02.corp.example.com": {netip.MustParseAddr("198.19.1.12")}})
		fs = runCheck(t, &Env{Config: cfg}, Names)
		expect(t, fs, "backend fe02.corp.example.com", Pass, "network.resolver", "198.19.1.12")
	})
}
