package config

import (
	"net/url"
	"strings"
)

// acmeCert checks an ACME certificate of an https virtual: names, CA URL,
// challenge and key type, and for http-01 the port-80 virtual of the
// same address that answers it.
func (v *validator) acmeCert(vs *Virtual, path string, c Certificate) {
	a := c.ACME
	if v.c.HA != nil && !v.acmeHA {
		v.acmeHA = true
		dir := v.c.ACME.StateDir
		if dir == "" {
			dir = "/var/lib/edgeproxy/acme"
		}
		v.warnf("acme.state_dir", "in an HA pair only the active node orders ACME certificates; the standby serves those it reads from %s: make it a directory both nodes share (NFS, a replicated volume), or after a takeover the new active node serves no ACME certificate until it has ordered its own", dir)
	}
	if c.Cert != "" || c.Key != "" {
		v.errorf(path, "acme and cert/key together: an entry is either files or ACME; split it into two entries")
	}
	if len(a.Names) == 0 {
		v.errorf(path+".acme.names", "names is required: list the DNS names to order, each resolving to %s", vs.Listen.Addr())
	}
	for i, n := range a.Names {
		if n == "" || strings.ContainsAny(n, " /:") || strings.HasPrefix(n, "*.") {
			v.errorf(joinIndex(path+".acme.names", i), "name %q: write a DNS name (wildcards need dns-01, which edgeproxy does not answer)", n)
		}
	}
	if u, err := url.Parse(a.CA); a.CA == "" || err != nil || u.Scheme != "https" || u.Host == "" {
		v.errorf(path+".acme.ca", "ca %q: write the CA's https directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory", a.CA)
	}
	if a.CARoot != "" {
		v.caFile(path+".acme.ca_root", a.CARoot)
	}
	switch a.KeyType {
	case "", KeyECDSAP256, KeyRSA2048:
	default:
		v.errorf(path+".acme.key_type", "key_type %q: use %s or %s", a.KeyType, KeyECDSAP256, KeyRSA2048)
	}
	switch a.Challenge {
	case "", ChallengeHTTP01:
		if !v.hasHTTP80(vs) {
			v.errorf(path+".acme.challenge", "http-01 is answered on port 80 of %s: add an http virtual listening on %s:80 (its sites may only redirect), or use challenge: tls-alpn-01", vs.Listen.Addr(), vs.Listen.Addr())
		}
	case ChallengeTLSALPN01:
		if vs.Listen.Port() != 443 {
			v.warnf(path+".acme.challenge", "tls-alpn-01 is validated on port 443 and virtual %s listens on %d: forward 443 to it, or use http-01", vs.Name, vs.Listen.Port())
		}
	default:
		v.errorf(path+".acme.challenge", "challenge %q: use %s or %s", a.Challenge, ChallengeHTTP01, ChallengeTLSALPN01)
	}
}

// hasHTTP80 reports whether an http virtual listens on port 80 of vs's
// address.
func (v *validator) hasHTTP80(vs *Virtual) bool {
	for _, o := range v.c.Virtuals {
		if o != nil && o.Mode == ModeHTTP && o.Listen.Addr() == vs.Listen.Addr() && o.Listen.Port() == 80 {
			return true
		}
	}
	return false
}
