package diagnose

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/certgen"
	labcfg "github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// fastl4Lab is the fastl4-only deployment with its own public PKI.
type fastl4Lab struct {
	*e2eDeployment
	pki  *testPKI
	good tls.Certificate // the front ends' External Web Site certificate
}

func newFastL4Lab(t *testing.T) *fastl4Lab {
	t.Helper()
	d := newE2E(t)
	// The F5-certified layout: the front ends published through fastl4
	// virtuals only, 443 → 4443 and 80 → 8080, monitored by a TCP connect.
	d.skype.Kind, d.skype.L7 = config.PoolKindSkypeFE, nil
	d.skype.Monitor = labcfg.SkypeMonitor{Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 1, Fall: 1}
	d.skype.FastL4 = &labcfg.SkypeFastL4{VIP: d.lab.VIP4, HTTP: true}
	l := &fastl4Lab{e2eDeployment: d, pki: newTestPKI(t)}
	l.good = tlsCert(issue(t, l.pki.Inter, certSpec{CN: "webext.example.com", DNS: skypeNames}), l.pki.Inter)
	for i := range d.members {
		l.serveCert(t, i, l.good)
	}
	return l
}

// serveCert puts cert on member i's External Web Site.
func (l *fastl4Lab) serveCert(t *testing.T, i int, cert tls.Certificate) {
	t.Helper()
	m := l.members[i]
	m.stop(4443)
	m.serve(t, l.lab, 4443, externalSite(l.fes[i]), l.fes[i], &cert)
}

// diagnoseAll runs every check from the proxy namespace, the application
// as a client in the client namespace.
func (l *fastl4Lab) diagnoseAll(t *testing.T, cfg *config.Config) []Finding {
	t.Helper()
	env := &Env{
		Config:     cfg,
		NS:         l.lab.Proxy.Do,
		ClientDial: l.lab.Client.DialContext,
		Resolver:   netip.AddrPortFrom(l.lab.ClientAddr4, 53).String(),
		Names:      skypeNames,
		Roots:      pool(l.pki.Root),
		RootsName:  "the test's public root",
		Timeout:    3 * time.Second, // a member's TLS handshake under -race beside other packages can pass 1 s
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

func (l *fastl4Lab) loadConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Load(l.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// fails lists the top-level FAIL findings.
func fails(fs []Finding) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Verdict == Fail {
			out = append(out, f)
		}
	}
	return out
}

// expectOneFail asserts that exactly one top-level finding fails, on
// subj with the words.
func expectOneFail(t *testing.T, fs []Finding, subj string, words ...string) {
	t.Helper()
	f := fails(fs)
	if len(f) != 1 {
		var b bytes.Buffer
		_ = WriteText(&b, f, true)
		t.Errorf("%d FAIL findings, want one:\n%s", len(f), b.String())
	}
	expect(t, fs, subj, Fail, words...)
}

// TestPrivilegedDiagnoseFastL4 diagnoses the fastl4-only layout: a
// healthy one passes every check, names, DNS, certificates and the
// application included; each seeded fault is one FAIL.
func TestPrivilegedDiagnoseFastL4(t *testing.T) {
	l := newFastL4Lab(t)
	l.start(t)
	cfg := l.loadConfig(t)

	fs := l.diagnoseAll(t, cfg)
	expectAtMost(t, fs, Pass)
	expect(t, fs, "lyncdiscover.example.com DNS", Pass, "198.18.0.10")
	expect(t, fs, "member fe01.corp.example.com:4443 for sfb-web-l4", Pass, "chains to")
	expect(t, fs, "sfb-web-l4 https://lyncdiscover.example.com autodiscover", Pass)
	expect(t, fs, "sfb-web-l4 https://lyncdiscover.example.com denied paths", Pass)

	t.Run("command", func(t *testing.T) {
		// The test's public root stands in for the bundle.
		writePool(t, filepath.Join(l.dir, certgen.PublicRootFile), l.pki.Root)
		doc, code := l.command(t, "-names", strings.Join(skypeNames, ","))
		if code != 0 || doc.Verdict != Pass {
			t.Errorf("edgeproxy diagnose: exit %d, verdict %s", code, doc.Verdict)
		}
		expect(t, doc.Findings, "lyncdiscover.example.com DNS", Pass, "198.18.0.10")
		expect(t, doc.Findings, "member fe01.corp.example.com:4443 for sfb-web-l4", Pass, "SNI webext.example.com, meet.example.com, dialin.example.com, lyncdiscover.example.com")
	})

	t.Run("wrong certificate on the member's 4443", func(t *testing.T) {
		wrong := tlsCert(issue(t, l.pki.Inter, certSpec{CN: "sip.example.com", DNS: []string{"sip.example.com"}}), l.pki.Inter)
		l.serveCert(t, 0, wrong)
		defer l.serveCert(t, 0, l.good)
		expectOneFail(t, l.diagnoseAll(t, cfg), "fe01.corp.example.com:4443", "CN=sip.example.com", "does not carry", "IIS")
	})

	t.Run("missing intermediate", func(t *testing.T) {
		leafOnly := tlsCert(issue(t, l.pki.Inter, certSpec{CN: "webext.example.com", DNS: skypeNames}))
		l.serveCert(t, 1, leafOnly)
		defer l.serveCert(t, 1, l.good)
		expectOneFail(t, l.diagnoseAll(t, cfg), "fe02.corp.example.com:4443", "incomplete", "Intermediate Certification Authorities")
	})

	t.Run("SAN missing lyncdiscover", func(t *testing.T) {
		noDiscover := tlsCert(issue(t, l.pki.Inter, certSpec{CN: "webext.example.com", DNS: skypeNames[:3]}), l.pki.Inter)
		for i := range l.members {
			l.serveCert(t, i, noDiscover)
			defer l.serveCert(t, i, l.good)
		}
		expectOneFail(t, l.diagnoseAll(t, cfg), "fe01.corp.example.com, fe02.corp.example.com:4443", "lyncdiscover.example.com")
	})

	t.Run("wildcard only in the CN", func(t *testing.T) {
		cnWild := tlsCert(issue(t, l.pki.Inter, certSpec{CN: "*.example.com"}), l.pki.Inter)
		for i := range l.members {
			l.serveCert(t, i, cnWild)
			defer l.serveCert(t, i, l.good)
		}
		expectOneFail(t, l.diagnoseAll(t, cfg), "fe01.corp.example.com, fe02.corp.example.com:4443", "only by the wildcard in its subject CN")
	})

	t.Run("missing internal route", func(t *testing.T) {
		l.lab.Proxy.Run(t, "ip", "route", "del", l.lab.MemberNet4.String())
		defer l.lab.Proxy.Run(t, "ip", "route", "add", l.lab.MemberNet4.String(), "via", l.lab.RouterAddr4.String(), "dev", testnet.IntIf)
		fs := l.diagnoseAll(t, cfg)
		expectOneFail(t, fs, "member fe01.corp.example.com, fe02.corp.example.com", "not the internal NIC int0", "netcfg apply")
	})

	// Last: the daemon it restarts stops with the subtest.
	t.Run("443 instead of 4443", func(t *testing.T) {
		// The Internal Web Sites answer on 443 with the internal names.
		for i, m := range l.members {
			m.serve(t, l.lab, 443, l.fes[i], l.fes[i], &l.good)
			defer m.stop(443)
		}
		l.Stop()
		l.skype.FastL4.Port, l.skype.Kind = 443, ""
		l.start(t)
		defer func() {
			l.Stop()
			l.skype.FastL4.Port, l.skype.Kind = 4443, config.PoolKindSkypeFE
			l.start(t)
		}()
		expectOneFail(t, l.diagnoseAll(t, l.loadConfig(t)), "virtual sfb-web-l4 → sfb-fe:443", "Internal Web Site")
	})

}
