package diagnose

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// Errors about certificate files.
var (
	ErrNoCertificate = errors.New("no CERTIFICATE block")
)

// loadChain reads a PEM file holding a leaf and its chain.
func loadChain(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read certificate: %w", err)
	}
	return parseChain(b, path)
}

func parseChain(b []byte, name string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate %d of %s: %w", len(out)+1, name, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("parse %s: %w", name, ErrNoCertificate)
	}
	return out, nil
}

// loadPool reads a PEM bundle of trusted certificates.
func loadPool(path string) (*x509.CertPool, []*x509.Certificate, error) {
	certs, err := loadChain(path)
	if err != nil {
		return nil, nil, err
	}
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p, certs, nil
}

// coverage is how a certificate covers a host name.
type coverage int

const (
	covNone           coverage = iota
	covSAN                     // a DNS name (or IP) in the SAN list matches
	covCNOnly                  // only the subject CN matches; clients ignore it
	covCNWildcardOnly          // only a wildcard subject CN matches
)

// covers tells how c covers host. Clients (RFC 6125, Go, browsers) use
// the SAN list only; a name only in the CN is flagged.
func covers(c *x509.Certificate, host string) (coverage, string) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if a, err := netip.ParseAddr(host); err == nil {
		for _, ip := range c.IPAddresses {
			if addrOf(ip) == a.Unmap() {
				return covSAN, "IP SAN " + a.String()
			}
		}
		return covNone, ""
	}
	for _, san := range c.DNSNames {
		if matchName(san, host) {
			return covSAN, "SAN " + san
		}
	}
	cn := c.Subject.CommonName
	if matchName(cn, host) {
		if strings.HasPrefix(cn, "*.") {
			return covCNWildcardOnly, "CN " + cn
		}
		return covCNOnly, "CN " + cn
	}
	return covNone, ""
}

// matchName matches a certificate name (possibly "*.example.com", one
// label) against a host name.
func matchName(pattern, host string) bool {
	pattern = strings.TrimSuffix(strings.ToLower(pattern), ".")
	if pattern == "" {
		return false
	}
	if pattern == host {
		return true
	}
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		label, parent, ok := strings.Cut(host, ".")
		return ok && label != "" && parent == rest
	}
	return false
}

// describeCert names a certificate for people: subject CN, SANs, issuer
// and expiry.
func describeCert(c *x509.Certificate) string {
	s := "CN=" + orIf(c.Subject.CommonName, "(none)")
	if len(c.DNSNames) > 0 {
		names := c.DNSNames
		more := ""
		if len(names) > 6 {
			names, more = names[:6], fmt.Sprintf(" +%d", len(c.DNSNames)-6)
		}
		s += " SAN=" + strings.Join(names, ",") + more
	}
	return s + fmt.Sprintf(" issuer=%q expires %s", issuerName(c), c.NotAfter.UTC().Format("2006-01-02"))
}

func issuerName(c *x509.Certificate) string {
	if c.Issuer.CommonName != "" {
		return c.Issuer.CommonName
	}
	return c.Issuer.String()
}

func subjectName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}

// selfSigned reports whether c is issued by itself.
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// problem is one defect of a chain.
type problem struct {
	Verdict  Verdict
	Evidence string
	Fix      string
}

// chainCheck says what to verify a chain against.
type chainCheck struct {
	Roots     *x509.CertPool // nil: the system's
	RootsName string
	Now       time.Time
	Warn      time.Duration // expiry warning window
	// Public: the chain faces Internet clients: self-signed is an error.
	Public bool
	// Member: the chain is a front end's, served by IIS: the fixes speak
	// of the certificate stores and the External Web Site's binding.
	Member bool
	// What the chain is, for messages ("the public certificate").
	What string
}

// iisBinding is how a front end's certificate is put in place.
const iisBinding = "assign it to the External Web Site (Skype/Lync deployment wizard, certificate step; IIS shows it as the https binding of the External Web Site on 4443)"

// fix picks the fix for a file's chain or for a front end's (IIS).
func (cc chainCheck) fix(file, member string) string {
	if cc.Member {
		return member
	}
	return file
}

// analyzeChain verifies a presented chain (leaf first) and lists its
// defects: incomplete chain (the missing issuer named), untrusted root,
// expiry, self-signed public leaf, an intermediate used as a root. It
// returns the verified chain when there is one.
func analyzeChain(chain []*x509.Certificate, cc chainCheck) ([]problem, []*x509.Certificate) {
	var ps []problem
	leaf := chain[0]
	now := cc.Now

	for i, c := range chain {
		role := "the leaf"
		if i > 0 {
			role = fmt.Sprintf("chain certificate %d (%s)", i+1, subjectName(c))
		}
		switch {
		case now.After(c.NotAfter):
			ps = append(ps, problem{Fail, fmt.Sprintf("%s of %s expired on %s", role, cc.What, c.NotAfter.UTC().Format(time.DateOnly)),
				cc.fix("renew it and install the new certificate with its chain", "renew it, then "+iisBinding)})
		case now.Before(c.NotBefore):
			ps = append(ps, problem{Fail, fmt.Sprintf("%s of %s is not valid before %s", role, cc.What, c.NotBefore.UTC().Format(time.RFC3339)),
				"check the host's clock, or wait for the certificate's start date"})
		case c.NotAfter.Sub(now) < cc.Warn:
			ps = append(ps, problem{Warn, fmt.Sprintf("%s of %s expires on %s, in %d days", role, cc.What,
				c.NotAfter.UTC().Format(time.DateOnly), int(c.NotAfter.Sub(now).Hours()/24)),
				cc.fix("renew it before it expires", "renew it before it expires, then "+iisBinding)})
		}
	}

	if cc.Public && selfSigned(leaf) {
		ps = append(ps, problem{Fail, fmt.Sprintf("%s (%s) is self-signed: Lync/Skype clients accept only certificates issued by a CA they trust", cc.What, subjectName(leaf)),
			cc.fix("install a certificate from a public CA (or from a CA every client trusts)", "get a certificate from a public CA (or from a CA every client trusts), then "+iisBinding)})
		return ps, nil
	}

	// Verify at a moment every certificate is valid, so that the chain's
	// completeness is judged apart from expiry.
	at := now
	lo, hi := leaf.NotBefore, leaf.NotAfter
	for _, c := range chain[1:] {
		if c.NotBefore.After(lo) {
			lo = c.NotBefore
		}
		if c.NotAfter.Before(hi) {
			hi = c.NotAfter
		}
	}
	if now.Before(lo) || now.After(hi) {
		if lo.Before(hi) {
			at = lo.Add(hi.Sub(lo) / 2)
		}
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots: cc.Roots, Intermediates: inter, CurrentTime: at,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		ps = append(ps, explainVerify(err, chain, cc))
		return ps, nil
	}
	best := chains[0]
	for _, ch := range chains[1:] {
		if selfSigned(ch[len(ch)-1]) && !selfSigned(best[len(best)-1]) {
			best = ch
		}
	}
	anchor := best[len(best)-1]
	if !bytes.Equal(anchor.RawIssuer, anchor.RawSubject) {
		ps = append(ps, problem{Warn,
			fmt.Sprintf("%s chains to %q, trusted as a root by %s although it is an intermediate CA issued by %q: "+
				"clients that trust only the real root need the intermediate in the chain, and a Lync/Skype server with an intermediate in its Trusted Root store misbehaves",
				cc.What, subjectName(anchor), cc.RootsName, issuerName(anchor)),
			fmt.Sprintf("keep only self-signed roots in the trust store; serve %q in the chain after the leaf", subjectName(anchor))})
	}
	return ps, best
}

// explainVerify turns a verification error into a problem that names the
// missing piece.
func explainVerify(err error, chain []*x509.Certificate, cc chainCheck) problem {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		top := chainTop(chain)
		if selfSigned(top) {
			return problem{Fail,
				fmt.Sprintf("%s chains to the root %q, which %s does not trust", cc.What, subjectName(top), cc.RootsName),
				fmt.Sprintf("use a certificate from a CA the clients trust, or add %q to the trust store", subjectName(top))}
		}
		where := "the leaf"
		if top != chain[0] {
			where = fmt.Sprintf("%q", subjectName(top))
		}
		return problem{Fail,
			fmt.Sprintf("the chain of %s is incomplete: %s is issued by %q, which is neither in the presented chain nor trusted by %s "+
				"(missing intermediate %q, or an untrusted CA)",
				cc.What, where, issuerName(top), cc.RootsName, issuerName(top)),
			cc.fix(fmt.Sprintf("append the intermediate certificate %q (from the CA's chain file) after the leaf in the PEM file", issuerName(top)),
				fmt.Sprintf("import the intermediate certificate %q into the front end's Intermediate Certification Authorities store (certlm.msc, local computer), so that IIS sends it with the External Web Site's certificate", issuerName(top)))}
	case errors.As(err, &ci):
		return problem{Fail, fmt.Sprintf("%s does not verify: %v", cc.What, ci), "install a certificate valid for TLS servers, with a CA chain"}
	default:
		return problem{Fail, fmt.Sprintf("%s does not verify: %v", cc.What, err), "install a certificate with its complete chain"}
	}
}

// chainTop follows issuers from the leaf through the presented chain and
// returns the last certificate reached.
func chainTop(chain []*x509.Certificate) *x509.Certificate {
	cur := chain[0]
	used := map[*x509.Certificate]bool{cur: true}
	for {
		var next *x509.Certificate
		for _, c := range chain {
			if !used[c] && bytes.Equal(cur.RawIssuer, c.RawSubject) && cur.CheckSignatureFrom(c) == nil {
				next = c
				break
			}
		}
		if next == nil || selfSigned(cur) {
			return cur
		}
		used[next] = true
		cur = next
	}
}

// handshake connects to addr (from src when valid) and completes a TLS
// handshake with the given SNI ("" sends none), without verifying: the
// callers judge what they see.
func (e *Env) handshake(ctx context.Context, src netip.Addr, addr, sni string) (*tls.ConnectionState, error) {
	var conn net.Conn
	var err error
	if src.IsValid() {
		conn, err = e.dialFrom(ctx, "tcp", src, addr)
	} else {
		conn, err = e.dial(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	return tlsState(ctx, conn, sni, e.timeout())
}

// tlsState completes a TLS handshake on conn with the given SNI, without
// verifying, and closes conn.
func tlsState(ctx context.Context, conn net.Conn, sni string, timeout time.Duration) (*tls.ConnectionState, error) {
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tc := tls.Client(conn, &tls.Config{
		ServerName:         sni,
		InsecureSkipVerify: true, //nolint:gosec // the diagnosis inspects the certificate itself
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"http/1.1"},
	})
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake with %s (SNI %q): %w", conn.RemoteAddr(), sni, err)
	}
	st := tc.ConnectionState()
	return &st, nil
}

func sameChain(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}
