package diagnose

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
)

// Names: every published host name is covered by the default certificate
// (clients without SNI, seed 004) and by the one chosen for its SNI, in
// the SAN list (a wildcard only in the CN is flagged, seed 001); it
// resolves to a VIP of this host when a resolver is given (seed 000: "your
// DNS is pointing to a black hole"); backend names resolve through the
// hosts table (seed 002).
var Names = Check{
	Name: "names",
	Doc:  "published names covered by the default and SNI certificates, resolving to a VIP; backend names in the hosts table",
	Run:  checkNames,
}

// virtualCert is one loaded certificate of an https virtual. An ACME
// entry stands for its names (one certificate each, ordered by the
// daemon): Chain is a certificate with those names only.
type virtualCert struct {
	Path  string
	Chain []*x509.Certificate
	Err   error
	ACME  bool
}

func loadVirtualCerts(v *config.Virtual) []virtualCert {
	var out []virtualCert
	for _, c := range v.Certificates {
		if a := c.ACME; a != nil && len(a.Names) > 0 {
			out = append(out, virtualCert{Path: "acme:" + a.Names[0], ACME: true,
				Chain: []*x509.Certificate{{Subject: pkix.Name{CommonName: a.Names[0]}, DNSNames: a.Names}}})
			continue
		}
		ch, err := loadChain(c.Cert)
		out = append(out, virtualCert{Path: c.Cert, Chain: ch, Err: err})
	}
	return out
}

// defaultCert is what clients without SNI get from the first entry: an
// ACME entry serves its first name's certificate.
func defaultCert(vc virtualCert) (*x509.Certificate, string) {
	if vc.ACME {
		c := vc.Chain[0]
		return &x509.Certificate{Subject: c.Subject, DNSNames: c.DNSNames[:1]}, "the ACME certificate of " + c.DNSNames[0]
	}
	return vc.Chain[0], describeCert(vc.Chain[0])
}

// publishedHosts lists a virtual's host names in order, once each.
func publishedHosts(v *config.Virtual) []string {
	var out []string
	for _, s := range v.Sites {
		for _, h := range s.Hosts {
			h = strings.TrimSuffix(strings.ToLower(h), ".")
			if !slices.Contains(out, h) {
				out = append(out, h)
			}
		}
	}
	return out
}

// dialAddr is where the diagnosis connects to reach a virtual from the
// proxy host.
func (e *Env) dialAddr(v *config.Virtual) string {
	a := v.Listen.Addr()
	if a.IsUnspecified() {
		a = netip.MustParseAddr("127.0.0.1")
		for _, p := range e.Config.Network.External.Addresses {
			a = p.Addr()
			break
		}
	}
	return netip.AddrPortFrom(a, v.Listen.Port()).String()
}

func checkNames(ctx context.Context, e *Env) []Finding {
	var f findings
	c := e.Config
	for _, v := range c.Virtuals {
		if v.Mode != config.ModeHTTPS && v.Mode != config.ModeHTTP {
			continue
		}
		hosts := publishedHosts(v)
		if v.Mode == config.ModeHTTPS {
			f = append(f, e.certNames(ctx, v, hosts)...)
		}
	}
	// Each published name once, against the addresses of every virtual
	// that publishes it.
	if e.Resolver != "" {
		var order []string
		want := map[string][]netip.Addr{}
		for _, v := range c.Virtuals {
			hosts := publishedHosts(v)
			if v.Mode == config.ModeFastL4 {
				hosts, _ = e.fastl4Names(ctx, v)
			}
			for _, h := range hosts {
				if _, ok := want[h]; !ok {
					order = append(order, h)
				}
				if a := v.Listen.Addr().Unmap(); !slices.Contains(want[h], a) {
					want[h] = append(want[h], a)
				}
			}
		}
		for _, h := range order {
			fd := e.resolveName(ctx, h, want[h])
			fd.explains = []string{"dns " + h}
			f = append(f, fd)
		}
	}
	// Backend names, once each.
	seen := map[string]bool{}
	for _, pn := range sortedPools(c) {
		for _, m := range c.Pools[pn].Members {
			if _, err := netip.ParseAddr(m.Address); err == nil || seen[strings.ToLower(m.Address)] {
				continue
			}
			seen[strings.ToLower(m.Address)] = true
			subj := "backend " + m.Address
			a, src, err := e.resolveMember(ctx, m.Address)
			if err != nil {
				f.add(Fail, subj, err.Error(),
					fmt.Sprintf("add \"%s: <address>\" under network.hosts (the proxy does not use the internal DNS)", m.Address))
				continue
			}
			f.pass(subj, "%s → %s", src, a)
		}
	}
	return f
}

// certNames checks the coverage of each published name of an https
// virtual, from the files and, when the listener answers, live.
func (e *Env) certNames(ctx context.Context, v *config.Virtual, hosts []string) []Finding {
	var f findings
	certs := loadVirtualCerts(v)
	if len(certs) == 0 {
		f.add(Fail, "virtual "+v.Name, "https virtual without certificates", "add certificates: [{cert: , key: }] to the virtual")
		return f
	}
	if certs[0].Err != nil {
		f.add(Fail, "virtual "+v.Name, "default certificate: "+errText(certs[0].Err), "see the certificates check")
		return f
	}
	def, defDesc := defaultCert(certs[0])
	addr := e.dialAddr(v)
	var noSNI *tls.ConnectionState
	liveErr := e.localVIP(v)
	if liveErr == nil {
		noSNI, liveErr = e.handshake(ctx, netip.Addr{}, addr, "")
	}
	for _, h := range hosts {
		subj := h + " certificate"
		var bad []string
		var fixes []string
		verdict := Pass
		var ev []string
		flag := func(v Verdict, msg, fix string) {
			verdict = max(verdict, v)
			bad = append(bad, msg)
			if fix != "" && !slices.Contains(fixes, fix) {
				fixes = append(fixes, fix)
			}
		}
		// The default certificate, for clients without SNI.
		switch cov, how := covers(def, h); cov {
		case covSAN:
			ev = append(ev, fmt.Sprintf("default certificate %s covers it (%s)", certs[0].Path, how))
		case covCNWildcardOnly:
			flag(Fail, fmt.Sprintf("the default certificate %s covers it only by the wildcard in its subject CN (%s): a wildcard only in the CN is not supported; clients match the SAN list", certs[0].Path, how),
				"use a certificate with the names (or the wildcard) in its Subject Alternative Names")
		case covCNOnly:
			flag(Fail, fmt.Sprintf("the default certificate %s has it only in the subject CN, not in the SAN list that clients match", certs[0].Path),
				"use a certificate with every published name in its Subject Alternative Names")
		default:
			flag(Fail, fmt.Sprintf("the default certificate %s (%s) does not cover it: clients without SNI (Lync mobile) get this certificate", certs[0].Path, defDesc),
				"put first a certificate whose SAN list covers every published name")
		}
		// The certificate chosen for its SNI: the first whose SAN list
		// covers the name, else the default.
		chosen := -1
		for i, vc := range certs {
			if vc.Err == nil {
				if cov, _ := covers(vc.Chain[0], h); cov == covSAN {
					chosen = i
					break
				}
			}
		}
		if chosen < 0 {
			flag(Fail, "no configured certificate has it in its SAN list: clients sending SNI get the default one and reject it",
				"add the name to the SAN list of a certificate of virtual "+v.Name)
		} else if chosen > 0 {
			ev = append(ev, fmt.Sprintf("for SNI %s: %s", h, certs[chosen].Path))
		}
		// Live: what the listener presents.
		switch {
		case liveErr != nil:
			ev = append(ev, fmt.Sprintf("live check skipped: %v", unwrapOp(liveErr)))
		default:
			if cov, _ := covers(noSNI.PeerCertificates[0], h); cov != covSAN {
				flag(Fail, fmt.Sprintf("%s presents to clients without SNI %s, which does not cover it", addr, describeCert(noSNI.PeerCertificates[0])),
					"restart or reload edgeproxy after fixing the certificates")
			}
			st, err := e.handshake(ctx, netip.Addr{}, addr, h)
			if err != nil {
				flag(Fail, fmt.Sprintf("handshake with SNI %s fails: %v", h, unwrapOp(err)), "read edgeproxy's log for the TLS error")
				break
			}
			leaf := st.PeerCertificates[0]
			if cov, how := covers(leaf, h); cov != covSAN {
				flag(Fail, fmt.Sprintf("%s presents for SNI %s %s, which does not cover it", addr, h, describeCert(leaf)),
					"restart or reload edgeproxy after fixing the certificates")
			} else {
				ev = append(ev, fmt.Sprintf("%s presents CN=%s for SNI %s (%s)", addr, subjectName(leaf), h, how))
			}
		}
		evidence := strings.Join(append(bad, ev...), "\n")
		f.add(verdict, subj, evidence, strings.Join(fixes, "; "))
	}
	return f
}

// resolveName resolves a published name through the given resolver and
// expects the addresses of the virtuals publishing it.
func (e *Env) resolveName(ctx context.Context, h string, want []netip.Addr) Finding {
	subj := h + " DNS"
	wantList := joinAddrs(want)
	ctx, cancel := context.WithTimeout(ctx, e.timeout())
	defer cancel()
	addrs, err := e.resolver(e.Resolver).LookupNetIP(ctx, "ip", h)
	if err != nil {
		return Finding{Subject: subj, Verdict: Fail, Evidence: fmt.Sprintf("%s does not resolve through %s: %v", h, e.Resolver, err),
			Fix: fmt.Sprintf("publish an A record (or a CNAME to the web services name) for %s pointing at %s", h, wantList)}
	}
	vips := map[netip.Addr]bool{}
	for _, w := range e.Config.Virtuals {
		vips[w.Listen.Addr().Unmap()] = true
	}
	wildcard := slices.ContainsFunc(want, netip.Addr.IsUnspecified)
	var got []netip.Addr
	var hit, other bool
	for _, a := range addrs {
		a = a.Unmap()
		got = append(got, a)
		switch {
		case slices.Contains(want, a) || (wildcard && vips[a]):
			hit = true
		case !vips[a]:
			other = true
		}
	}
	list := joinAddrs(got)
	switch {
	case hit && !other:
		return Finding{Subject: subj, Verdict: Pass, Evidence: fmt.Sprintf("%s → %s", h, list)}
	case hit:
		return Finding{Subject: subj, Verdict: Warn, Evidence: fmt.Sprintf("%s → %s: some addresses are not this host's VIPs", h, list),
			Fix: fmt.Sprintf("remove the records other than %s", wantList)}
	default:
		return Finding{Subject: subj, Verdict: Fail,
			Evidence: fmt.Sprintf("%s → %s, not %s: clients go elsewhere", h, list, wantList),
			Fix:      fmt.Sprintf("point the public record for %s at %s", h, wantList)}
	}
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}
