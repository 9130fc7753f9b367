package diagnose

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
)

// Certificates: the public chains are complete up to a trusted root, not
// expired or expiring, not self-signed, their keys match, no intermediate
// stands in as a root; the members' certificates on 4443 carry the
// published names and chain to the internal CA (seeds 000 and 003).
var Certificates = Check{
	Name: "certificates",
	Doc:  "public chains complete, trusted, valid, keys matching; members' certificates carry the published names and chain to the internal CA",
	Run:  checkCertificates,
}

func checkCertificates(ctx context.Context, e *Env) []Finding {
	var f findings
	c := e.Config
	for _, v := range c.Virtuals {
		if v.Mode != config.ModeHTTPS {
			continue
		}
		hosts := publishedHosts(v)
		for _, vc := range v.Certificates {
			if vc.ACME != nil {
				continue // the acme check's
			}
			f = append(f, e.publicCert(ctx, v, vc, hosts)...)
		}
	}

	// Members' certificates.
	done := map[memberCertKey]bool{}
	pools := map[string]*x509.CertPool{}
	skype := skypePools(c)
	for _, t := range targets(c) {
		if t.BackendTLS && c.Pools[t.Pool] != nil {
			f = append(f, e.memberCerts(ctx, t, skype[t.Pool], pools, done)...)
		}
	}
	return f
}

type memberCertKey struct {
	member netip.AddrPort
	ca     string
}

// memberCerts checks the certificates the members of a target's pool
// present: against backend_tls.ca for a site, and as Internet clients get
// them for a fastl4 virtual (public, with the published names and, for
// Skype front ends, lyncdiscover). Members presenting the same defects
// are one finding.
func (e *Env) memberCerts(ctx context.Context, t target, skype bool, pools map[string]*x509.CertPool, done map[memberCertKey]bool) []Finding {
	var f findings
	c := e.Config
	var names []string
	var roots *x509.CertPool
	rootsName := e.rootsName()
	public := false
	caPath := ""
	if t.Site != nil {
		bt := t.Site.BackendTLS
		if bt.InsecureSkipVerify {
			f.add(Warn, t.Via+" backend TLS", "backend_tls.insecure_skip_verify: the members' certificates are not verified; anyone on the internal path can impersonate them",
				"set backend_tls.ca to the internal CA bundle and remove insecure_skip_verify")
		}
		names = slices.Clone(t.Site.Hosts)
		if bt.ServerName != "" {
			names = []string{bt.ServerName}
		}
		caPath = bt.CA
		if caPath != "" {
			if pools[caPath] == nil {
				pool, _, err := loadPool(caPath)
				if err != nil {
					f.add(Fail, "backend_tls.ca "+caPath, errText(err), "point backend_tls.ca at the internal CA's PEM bundle")
					return f
				}
				pools[caPath] = pool
			}
			roots, rootsName = pools[caPath], "backend_tls.ca "+caPath
		} else {
			roots, rootsName = nil, "the system's trusted roots (backend_tls.ca is not set)"
		}
	} else {
		// fastl4: the member's certificate is the one Internet clients
		// get; it must be public and carry the names clients use.
		public, roots = true, e.Roots
		names, _ = e.fastl4Names(ctx, t.Virtual)
		names = slices.Clone(names)
		if skype {
			for _, d := range discoverNames(names) {
				if !slices.Contains(names, d) {
					names = append(names, d)
				}
			}
		}
	}
	type result struct {
		members []string
		fd      Finding
	}
	var results []*result
	for _, m := range c.Pools[t.Pool].Members {
		if m.Disabled {
			continue
		}
		a, _, err := e.resolveMember(ctx, m.Address)
		if err != nil {
			continue // reported by names and ports
		}
		ap := netip.AddrPortFrom(a, t.Port)
		if k := (memberCertKey{ap, caPath}); done[k] {
			continue
		} else {
			done[k] = true
		}
		fd := e.memberCert(ctx, m.Address, ap, e.sourceFor(t, a), names, t.Virtual.Name, chainCheck{
			Roots: roots, RootsName: rootsName, Now: e.now(), Warn: e.expiryWarning(), Public: public, Member: true,
			What: fmt.Sprintf("the certificate of %s:%d", m.Address, t.Port),
		})
		needs := []string{"member " + a.String(), "member " + ap.String(), "virtual " + t.Virtual.Name}
		i := slices.IndexFunc(results, func(r *result) bool {
			return r.fd.Verdict != Pass && r.fd.Verdict == fd.Verdict && r.fd.Fix == fd.Fix &&
				strings.ReplaceAll(r.fd.Evidence, r.members[0], m.Address) == fd.Evidence
		})
		if i < 0 {
			fd.needs = needs
			results = append(results, &result{members: []string{m.Address}, fd: fd})
			continue
		}
		results[i].members = append(results[i].members, m.Address)
		results[i].fd.needs = append(results[i].fd.needs, needs...)
	}
	for _, r := range results {
		if len(r.members) > 1 {
			r.fd.Subject = fmt.Sprintf("members %s:%d for %s", strings.Join(r.members, ", "), t.Port, t.Virtual.Name)
		}
		f = append(f, r.fd)
	}
	return f
}

// publicCert checks one certificate file of an https virtual.
func (e *Env) publicCert(ctx context.Context, v *config.Virtual, vc config.Certificate, hosts []string) []Finding {
	var f findings
	subj := "certificate " + vc.Cert
	chain, err := loadChain(vc.Cert)
	if err != nil {
		f.add(Fail, subj, errText(err), "point the virtual's cert at a PEM file holding the leaf followed by its intermediates")
		return f
	}
	if _, err := tls.LoadX509KeyPair(vc.Cert, vc.Key); err != nil {
		ev := fmt.Sprintf("key %s: %v", vc.Key, err)
		if strings.Contains(err.Error(), "does not match") {
			ev = fmt.Sprintf("the private key %s does not match the certificate %s (%s)", vc.Key, vc.Cert, describeCert(chain[0]))
		}
		f.add(Fail, subj, ev, "install the key the certificate was issued for (the CSR's key)")
	}
	cc := chainCheck{Roots: e.Roots, RootsName: e.rootsName(), Now: e.now(), Warn: e.expiryWarning(), Public: true,
		What: "the certificate " + vc.Cert}
	ps, verified := analyzeChain(chain, cc)
	for _, p := range ps {
		f.add(p.Verdict, subj, p.Evidence, p.Fix)
	}

	// Live: the listener serves this file's chain.
	sni := ""
	for _, h := range hosts {
		if cov, _ := covers(chain[0], h); cov == covSAN {
			sni = h
			break
		}
	}
	live := ""
	if st := e.liveState(ctx, v, sni); st != nil {
		served := st.PeerCertificates
		switch {
		case sameChain(served, chain):
			live = fmt.Sprintf("; %s serves it with its %d-certificate chain", e.dialAddr(v), len(chain))
		case served[0].Equal(chain[0]):
			verdict, why := Warn, ""
			if ps, _ := analyzeChain(served, cc); slices.ContainsFunc(ps, func(p problem) bool { return p.Verdict == Fail }) {
				verdict, why = Fail, ": clients cannot build a chain from it to "+cc.RootsName
			}
			f.add(verdict, subj, fmt.Sprintf("%s serves the leaf with a different chain (%d certificates, file has %d)%s", e.dialAddr(v), len(served), len(chain), why),
				"restart or reload edgeproxy so that it serves the file's chain")
		case sni != "":
			f.add(Warn, subj, fmt.Sprintf("%s serves %s for SNI %s, not this file's certificate", e.dialAddr(v), describeCert(served[0]), sni),
				"restart or reload edgeproxy after changing certificates")
		}
	}
	if len(f) == 0 {
		ev := describeCert(chain[0]) + ", key matches"
		if verified != nil {
			ev += fmt.Sprintf(", chains to %q", subjectName(verified[len(verified)-1]))
		}
		f.pass(subj, "%s%s", ev, live)
	}
	return f
}

// liveState is the TLS state of a handshake with a local virtual, nil
// when it is not reachable (the listeners check says why).
func (e *Env) liveState(ctx context.Context, v *config.Virtual, sni string) *tls.ConnectionState {
	if e.localVIP(v) != nil {
		return nil
	}
	st, err := e.handshake(ctx, netip.Addr{}, e.dialAddr(v), sni)
	if err != nil {
		return nil
	}
	return st
}

// memberCert checks the certificates a member presents for the SNI
// names the proxy sends it (none: one handshake without SNI).
func (e *Env) memberCert(ctx context.Context, member string, ap netip.AddrPort, src netip.Addr, names []string, via string, cc chainCheck) Finding {
	subj := fmt.Sprintf("member %s:%d for %s", member, ap.Port(), via)
	if len(names) == 0 {
		names = []string{""}
	}
	type seen struct {
		chain   []*x509.Certificate
		sni     []string
		missing []string
		cnWild  []string // covered only by a wildcard subject CN
	}
	var leaves []*seen
	for _, sni := range names {
		st, err := e.handshake(ctx, src, ap.String(), sni)
		if err != nil {
			return Finding{Subject: subj, Verdict: Fail, Evidence: fmt.Sprintf("no TLS from %s for SNI %q: %v", ap, sni, unwrapOp(err)),
				Fix: "check that the External Web Site answers TLS on this port (see the ports check)"}
		}
		i := slices.IndexFunc(leaves, func(s *seen) bool { return s.chain[0].Equal(st.PeerCertificates[0]) })
		if i < 0 {
			leaves = append(leaves, &seen{chain: st.PeerCertificates})
			i = len(leaves) - 1
		}
		l := leaves[i]
		if sni != "" {
			l.sni = append(l.sni, sni)
			switch cov, _ := covers(l.chain[0], sni); cov {
			case covSAN:
			case covCNWildcardOnly:
				l.cnWild = append(l.cnWild, sni)
			default:
				l.missing = append(l.missing, sni)
			}
		}
	}
	verdict := Pass
	var ev, fixes []string
	for _, l := range leaves {
		leaf := l.chain[0]
		if len(l.cnWild) > 0 {
			verdict = Fail
			ev = append(ev, fmt.Sprintf("the member presents %s, which covers %s only by the wildcard in its subject CN: a wildcard only in the CN is not supported; clients match the SAN list",
				describeCert(leaf), strings.Join(l.cnWild, ", ")))
		}
		if len(l.missing) > 0 {
			verdict = Fail
			what := "the proxy's verification fails"
			if cc.Public {
				what = "clients reject it for these names"
			}
			ev = append(ev, fmt.Sprintf("the member presents %s, which does not carry %s: %s, and a wrong certificate on the External Web Site breaks web tickets (X-Ms-diagnostics 28032)",
				describeCert(leaf), strings.Join(l.missing, ", "), what))
		}
		if len(l.missing)+len(l.cnWild) > 0 {
			fixes = append(fixes, "get a certificate with the pool's FQDN and the published names in its Subject Alternative Names, and "+iisBinding)
		}
		ps, verified := analyzeChain(l.chain, cc)
		for _, p := range ps {
			verdict = max(verdict, p.Verdict)
			ev = append(ev, p.Evidence)
			if p.Fix != "" && !slices.Contains(fixes, p.Fix) {
				fixes = append(fixes, p.Fix)
			}
		}
		if len(ps) == 0 && len(l.missing)+len(l.cnWild) == 0 {
			s := describeCert(leaf)
			if len(l.sni) > 0 {
				s += " for SNI " + strings.Join(l.sni, ", ")
			}
			if verified != nil {
				s += fmt.Sprintf(", chains to %q (%s)", subjectName(verified[len(verified)-1]), cc.RootsName)
			}
			if cov, _ := covers(leaf, member); cov == covSAN {
				s += ", carries the member's name"
			}
			ev = append(ev, s)
		}
	}
	return Finding{Subject: subj, Verdict: verdict, Evidence: strings.Join(ev, "\n"), Fix: strings.Join(fixes, "; ")}
}
