package diagnose

import (
	"context"
	"crypto/x509"
	"net/netip"
	"slices"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
)

// fastl4Names returns the names clients use to reach a fastl4 virtual's
// pool, and where they come from: the sites publishing the same pool,
// Env.Names, else the DNS names of the certificate the front ends present
// (a fastl4 virtual hands it to clients unchanged): through a TLS fastl4
// virtual of the pool as a client when ClientDial is set, else from the
// first member answering.
func (e *Env) fastl4Names(ctx context.Context, v *config.Virtual) ([]string, string) {
	var out []string
	for _, w := range e.Config.Virtuals {
		for _, s := range w.Sites {
			if s.Pool == v.Pool {
				for _, h := range s.Hosts {
					h = strings.TrimSuffix(strings.ToLower(h), ".")
					if !slices.Contains(out, h) {
						out = append(out, h)
					}
				}
			}
		}
	}
	if len(out) > 0 {
		return out, "the sites of pool " + v.Pool
	}
	if len(e.Names) > 0 {
		return e.Names, "the names given"
	}
	e.mu.Lock()
	cached, ok := e.poolNames[v.Pool]
	e.mu.Unlock()
	if !ok {
		cached = e.memberCertNames(ctx, v)
		e.mu.Lock()
		if e.poolNames == nil {
			e.poolNames = map[string][]string{}
		}
		e.poolNames[v.Pool] = cached
		e.mu.Unlock()
	}
	return cached, "the front ends' certificate"
}

// memberCertNames lists the DNS names of the certificate the first
// member answering TLS on a TLS port of the pool presents, without
// wildcards and backend names.
func (e *Env) memberCertNames(ctx context.Context, v *config.Virtual) []string {
	c := e.Config
	p := c.Pools[v.Pool]
	if p == nil {
		return nil
	}
	internal := map[string]bool{}
	for h := range c.Network.Hosts {
		internal[strings.ToLower(h)] = true
	}
	for _, m := range p.Members {
		internal[strings.ToLower(m.Address)] = true
	}
	if e.ClientDial != nil {
		for _, w := range c.Virtuals {
			if w.Mode != config.ModeFastL4 || w.Pool != v.Pool || !clientTLS(w) {
				continue
			}
			conn, err := e.clientDial(ctx, "tcp", e.dialAddr(w))
			if err != nil {
				continue
			}
			st, err := tlsState(ctx, conn, "", e.timeout())
			if err == nil {
				return certDNSNames(st.PeerCertificates[0], internal)
			}
		}
		return nil
	}
	var ports []uint16
	for _, t := range targets(c) {
		if t.Pool == v.Pool && t.BackendTLS && !slices.Contains(ports, t.Port) {
			ports = append(ports, t.Port)
		}
	}
	for _, port := range ports {
		for _, m := range p.Members {
			a, _, err := e.resolveMember(ctx, m.Address)
			if err != nil || m.Disabled {
				continue
			}
			st, err := e.handshake(ctx, e.internalAddr(a), netip.AddrPortFrom(a, port).String(), "")
			if err == nil {
				return certDNSNames(st.PeerCertificates[0], internal)
			}
		}
	}
	return nil
}

// certDNSNames lists a certificate's DNS names but wildcards, backend
// names and lyncdiscoverinternal.
func certDNSNames(leaf *x509.Certificate, internal map[string]bool) []string {
	var out []string
	for _, n := range leaf.DNSNames {
		n = strings.ToLower(n)
		if !strings.Contains(n, "*") && !internal[n] && !strings.HasPrefix(n, "lyncdiscoverinternal.") && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// discoverNames are the lyncdiscover names mobile clients look up for the
// SIP domains of the published names: the domains of the meet, dialin and
// lyncdiscover names, else the parent domain of each name.
func discoverNames(hosts []string) []string {
	var domains []string
	add := func(d string) {
		if d != "" && !slices.Contains(domains, d) {
			domains = append(domains, d)
		}
	}
	for _, h := range hosts {
		label, parent, _ := strings.Cut(strings.ToLower(h), ".")
		if label == "meet" || label == "dialin" || label == "lyncdiscover" {
			add(parent)
		}
	}
	if len(domains) == 0 {
		for _, h := range hosts {
			if _, err := netip.ParseAddr(h); err != nil {
				_, parent, _ := strings.Cut(strings.ToLower(h), ".")
				if strings.Contains(parent, ".") {
					add(parent)
				}
			}
		}
	}
	out := make([]string, len(domains))
	for i, d := range domains {
		out[i] = "lyncdiscover." + d
	}
	return out
}
