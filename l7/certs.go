package l7

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// certEntry is one configured certificate: the leaf and its chain exactly
// as the PEM file gives them, and the names the leaf covers.
type certEntry struct {
	path  string
	cert  *tls.Certificate
	leaf  *x509.Certificate
	names []string // lower-case DNS SANs (wildcards as "*.example.com") and IP SANs
	// stapler keeps the certificate's OCSP staple; nil when the
	// certificate names no responder.
	stapler *stapler
}

// current returns the certificate to serve: with its OCSP staple while
// one is valid.
func (e *certEntry) current() *tls.Certificate {
	if e.stapler != nil {
		return e.stapler.certificate()
	}
	return e.cert
}

// certStore picks a certificate for a TLS handshake. It is immutable: a
// reload builds a new store and swaps it in with the virtual.
type certStore struct {
	entries []*certEntry
	exact   map[string][]*certEntry // name -> entries, in configuration order
	wild    map[string][]*certEntry // "example.com" for "*.example.com"
}

// loadCertStore reads the virtual's certificates. The first one is the
// default served to clients that send no SNI or an unknown name.
func loadCertStore(certs []Certificate) (*certStore, error) {
	if len(certs) == 0 {
		return nil, fmt.Errorf("load certificates: %w (add certificates: [{cert: leaf-and-chain.pem, key: key.pem}])", ErrNoCertificate)
	}
	s := &certStore{exact: map[string][]*certEntry{}, wild: map[string][]*certEntry{}}
	for _, c := range certs {
		kp, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("load certificate %s with key %s: %w", c.Cert, c.Key, err)
		}
		leaf := kp.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(kp.Certificate[0]); err != nil {
				return nil, fmt.Errorf("parse certificate %s: %w", c.Cert, err)
			}
			kp.Leaf = leaf
		}
		e := &certEntry{path: c.Cert, cert: &kp, leaf: leaf}
		for _, n := range leaf.DNSNames {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			e.names = append(e.names, n)
			if parent, ok := strings.CutPrefix(n, "*."); ok {
				s.wild[parent] = append(s.wild[parent], e)
			} else {
				s.exact[n] = append(s.exact[n], e)
			}
		}
		for _, ip := range leaf.IPAddresses {
			if a, ok := netip.AddrFromSlice(ip); ok {
				n := a.Unmap().String()
				e.names = append(e.names, n)
				s.exact[n] = append(s.exact[n], e)
			}
		}
		s.entries = append(s.entries, e)
	}
	return s, nil
}

// candidates returns the certificates whose SANs match name: exact names
// first, then wildcards (one label only, as RFC 6125 says).
func (s *certStore) candidates(name string) []*certEntry {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	out := s.exact[name]
	if i := strings.IndexByte(name, '.'); i > 0 {
		out = append(out[:len(out):len(out)], s.wild[name[i+1:]]...)
	}
	return out
}

// getCertificate is tls.Config.GetCertificate. It never returns nil: a
// client without SNI, or with a name no certificate covers, gets the
// first configured certificate, explicitly rather than by crypto/tls's
// fallback. Among several matches the first one the client supports
// (ECDSA vs RSA, signature schemes) wins.
func (s *certStore) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName != "" {
		c := s.candidates(hello.ServerName)
		for _, e := range c {
			if hello.SupportsCertificate(e.cert) == nil {
				return e.current(), nil
			}
		}
		if len(c) > 0 {
			return c[0].current(), nil
		}
	}
	return s.entries[0].current(), nil
}

// defaultCovers reports whether the default certificate is valid for name.
func (s *certStore) defaultCovers(name string) bool {
	return s.entries[0].leaf.VerifyHostname(name) == nil
}

// expiry returns each certificate's path and NotAfter.
func (s *certStore) expiry() map[string]time.Time {
	m := make(map[string]time.Time, len(s.entries))
	for _, e := range s.entries {
		m[e.path] = e.leaf.NotAfter
	}
	return m
}
