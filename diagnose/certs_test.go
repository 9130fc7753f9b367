package diagnose

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net/http"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
)

var skypeNames = []string{"webext.example.com", "meet.example.com", "dialin.example.com", "lyncdiscover.example.com"}

// certLab is a public listener and one member, each serving what a case
// gives them.
type certLab struct {
	pki *testPKI
	dir string
	cfg *config.Config
	env *Env
}

// newCertLab starts the public listener with served and a member with
// member; file is the configured certificate.
func newCertLab(t *testing.T, p *testPKI, file config.Certificate, served tls.Certificate, member tls.Certificate) *certLab {
	t.Helper()
	dir := t.TempDir()
	pub := serve(t, listen(t, "127.0.0.1:0"), http.NotFoundHandler(), served)
	mem := serve(t, listen(t, loopback(t).String()+":0"), http.NotFoundHandler(), member)
	ca := writePool(t, filepath.Join(dir, "internal-ca.pem"), p.Internal)
	cfg := &config.Config{
		Network: config.Network{
			Internal: config.NIC{Addresses: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/8")}},
			Hosts:    map[string]netip.Addr{"fe01.corp.example.com": mem.Addr()},
		},
		Pools: map[string]*config.Pool{"sfb-fe": {Members: []config.Member{{Address: "fe01.corp.example.com"}}}},
		Virtuals: []*config.Virtual{{
			Name: "sfb-web", Mode: config.ModeHTTPS, Listen: pub,
			Certificates: []config.Certificate{file},
			Sites: []*config.Site{{Hosts: skypeNames, Pool: "sfb-fe", Port: mem.Port(),
				BackendTLS: &config.BackendTLS{CA: ca}, Profile: config.ProfileSkype}},
		}},
	}
	return &certLab{pki: p, dir: dir, cfg: cfg, env: &Env{Config: cfg, Roots: pool(p.Root), RootsName: "the test roots"}}
}

func TestCertificates(t *testing.T) {
	p := newTestPKI(t)
	goodLeaf := issue(t, p.Inter, certSpec{CN: "webext.example.com", DNS: skypeNames})
	goodMember := issue(t, p.Internal, certSpec{CN: "sfbpool.corp.example.com", DNS: append([]string{"sfbpool.corp.example.com", "fe01.corp.example.com"}, skypeNames...)})
	otherRoot := issue(t, nil, certSpec{CN: "Some Other Root", CA: true})

	t.Run("healthy", func(t *testing.T) {
		dir := t.TempDir()
		lab := newCertLab(t, p, writeCert(t, dir, "public", goodLeaf, p.Inter), tlsCert(goodLeaf, p.Inter), tlsCert(goodMember))
		fs := runCheck(t, lab.env, Certificates)
		expectAtMost(t, fs, Pass)
		expect(t, fs, "certificate ", Pass, "key matches", `chains to "Test Public Root CA"`, "serves it")
		expect(t, fs, "member fe01", Pass, `chains to "Corp Internal CA"`, "SNI webext.example.com, meet.example.com, dialin.example.com, lyncdiscover.example.com")
	})

	for _, c := range certCases(t, p, goodLeaf, otherRoot) {
		t.Run(c.name, func(t *testing.T) {
			member := c.member
			if member.Certificate == nil {
				member = tlsCert(goodMember)
			}
			lab := newCertLab(t, p, c.file(t.TempDir()), c.served, member)
			if c.roots != nil {
				lab.env.Roots = pool(c.roots...)
			}
			fs := runCheck(t, lab.env, Certificates)
			expect(t, fs, c.subj, c.verdict, c.evidence...)
			if Worst(fs) != c.verdict {
				t.Errorf("worst verdict %s, want %s", Worst(fs), c.verdict)
			}
		})
	}
}

// certCase is a defect of the public or a member's certificate and the
// finding it must produce.
type certCase struct {
	name     string
	file     func(dir string) config.Certificate
	served   tls.Certificate
	member   tls.Certificate
	roots    []*pki
	subj     string
	verdict  Verdict
	evidence []string
}

func certCases(t *testing.T, p *testPKI, goodLeaf, otherRoot *pki) []certCase {
	return append(publicCertCases(t, p, goodLeaf, otherRoot), memberCertCases(t, p, goodLeaf)...)
}

// publicCertCases are defects of the public certificate.
func publicCertCases(t *testing.T, p *testPKI, goodLeaf, otherRoot *pki) []certCase {
	expired := issue(t, p.Inter, certSpec{CN: "webext.example.com", DNS: skypeNames,
		NotBefore: time.Now().Add(-400 * 24 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	expiring := issue(t, p.Inter, certSpec{CN: "webext.example.com", DNS: skypeNames, NotAfter: time.Now().Add(10 * 24 * time.Hour)})
	self := issue(t, nil, certSpec{CN: "webext.example.com", DNS: skypeNames})
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return []certCase{
		{
			name:     "missing intermediate",
			file:     func(dir string) config.Certificate { return writeCert(t, dir, "public", goodLeaf) },
			served:   tlsCert(goodLeaf),
			subj:     "certificate ",
			verdict:  Fail,
			evidence: []string{"incomplete", `missing intermediate "Test Public Intermediate CA"`, "append the intermediate"},
		},
		{
			name:     "expired",
			file:     func(dir string) config.Certificate { return writeCert(t, dir, "public", expired, p.Inter) },
			served:   tlsCert(expired, p.Inter),
			subj:     "certificate ",
			verdict:  Fail,
			evidence: []string{"expired on", "renew"},
		},
		{
			name:     "expiring within 30 days",
			file:     func(dir string) config.Certificate { return writeCert(t, dir, "public", expiring, p.Inter) },
			served:   tlsCert(expiring, p.Inter),
			subj:     "certificate ",
			verdict:  Warn,
			evidence: []string{"expires on", "in 9 days"},
		},
		{
			name:     "self-signed",
			file:     func(dir string) config.Certificate { return writeCert(t, dir, "public", self) },
			served:   tlsCert(self),
			subj:     "certificate ",
			verdict:  Fail,
			evidence: []string{"self-signed", "public CA"},
		},
		{
			name: "key does not match",
			file: func(dir string) config.Certificate {
				c := writeCert(t, dir, "public", goodLeaf, p.Inter)
				writeKey(t, c.Key, otherKey)
				return c
			},
			served:   tlsCert(goodLeaf, p.Inter),
			subj:     "certificate ",
			verdict:  Fail,
			evidence: []string{"does not match the certificate"},
		},
		{
			name:     "intermediate as root",
			file:     func(dir string) config.Certificate { return writeCert(t, dir, "public", goodLeaf) },
			served:   tlsCert(goodLeaf),
			roots:    []*pki{p.Inter},
			subj:     "certificate ",
			verdict:  Warn,
			evidence: []string{`"Test Public Intermediate CA"`, "trusted as a root", `issued by "Test Public Root CA"`},
		},
		{
			name:     "untrusted root",
			file:     func(dir string) config.Certificate { return writeCert(t, dir, "public", goodLeaf, p.Inter, p.Root) },
			served:   tlsCert(goodLeaf, p.Inter, p.Root),
			roots:    []*pki{otherRoot},
			subj:     "certificate ",
			verdict:  Fail,
			evidence: []string{`root "Test Public Root CA"`, "does not trust"},
		},
		{
			name:     "served chain clients cannot build",
			file:     func(dir string) config.Certificate { return writeCert(t, dir, "public", goodLeaf, p.Inter) },
			served:   tlsCert(goodLeaf),
			subj:     "certificate ",
			verdict:  Fail,
			evidence: []string{"different chain", "1 certificates, file has 2", "clients cannot build a chain"},
		},
		{
			name:     "served chain differs from the file",
			file:     func(dir string) config.Certificate { return writeCert(t, dir, "public", goodLeaf, p.Inter) },
			served:   tlsCert(goodLeaf, p.Inter, p.Root),
			subj:     "certificate ",
			verdict:  Warn,
			evidence: []string{"different chain", "3 certificates, file has 2"},
		},
	}
}

// memberCertCases are defects of a member's certificate.
func memberCertCases(t *testing.T, p *testPKI, goodLeaf *pki) []certCase {
	wrongMember := issue(t, p.Internal, certSpec{CN: "sip.example.com", DNS: []string{"sip.example.com"}})
	publicMember := issue(t, p.Inter, certSpec{CN: "webext.example.com", DNS: skypeNames})
	return []certCase{
		{
			name:     "member certificate for the wrong name",
			file:     func(dir string) config.Certificate { return writeCert(t, dir, "public", goodLeaf, p.Inter) },
			served:   tlsCert(goodLeaf, p.Inter),
			member:   tlsCert(wrongMember),
			subj:     "member fe01",
			verdict:  Fail,
			evidence: []string{"CN=sip.example.com", "does not carry webext.example.com, meet.example.com, dialin.example.com, lyncdiscover.example.com", "28032"},
		},
		{
			name:     "member certificate not from the internal CA",
			file:     func(dir string) config.Certificate { return writeCert(t, dir, "public", goodLeaf, p.Inter) },
			served:   tlsCert(goodLeaf, p.Inter),
			member:   tlsCert(publicMember, p.Inter),
			subj:     "member fe01",
			verdict:  Fail,
			evidence: []string{"backend_tls.ca", `issued by "Test Public Root CA"`},
		},
	}
}

func TestCovers(t *testing.T) {
	p := newTestPKI(t)
	san := issue(t, p.Inter, certSpec{CN: "webext.example.com", DNS: []string{"*.example.com"}})
	cnWild := issue(t, p.Inter, certSpec{CN: "*.example.com"})
	cnOnly := issue(t, p.Inter, certSpec{CN: "webext.example.com"})
	for _, c := range []struct {
		cert *pki
		host string
		want coverage
	}{
		{san, "meet.example.com", covSAN},
		{san, "MEET.example.com.", covSAN},
		{san, "example.com", covNone},
		{san, "a.meet.example.com", covNone},
		{cnWild, "meet.example.com", covCNWildcardOnly},
		{cnOnly, "webext.example.com", covCNOnly},
		{cnOnly, "meet.example.com", covNone},
	} {
		if got, _ := covers(c.cert.Cert, c.host); got != c.want {
			t.Errorf("covers(%s, %s) = %d, want %d", c.cert.Cert.Subject.CommonName, c.host, got, c.want)
		}
	}
}
