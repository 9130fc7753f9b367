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
	// src, when set, provides the certificate instead of the files
	// (ACME); cert and leaf are then nil.
	src certSource
}

// certSource provides a certificate that changes while in service.
type certSource interface {
	// certificate returns the certificate for the hello, or nil while
	// there is none.
	certificate(hello *tls.ClientHelloInfo) *tls.Certificate
	// leaf returns the leaf in service for name, or nil.
	leaf(name string) *x509.Certificate
}

// current returns the certificate to serve: with its OCSP staple while
// one is valid; nil while a source has none.
func (e *certEntry) current(hello *tls.ClientHelloInfo) *tls.Certificate {
	if e.src != nil {
		return e.src.certificate(hello)
	}
	if e.stapler != nil {
		return e.stapler.certificate()
	}
	return e.cert
}

// covers reports whether the certificate served without SNI is valid for
// name: an ACME entry serves its first name's then.
func (e *certEntry) covers(name string) bool {
	if e.leaf != nil {
		return e.leaf.VerifyHostname(name) == nil
	}
	return len(e.names) > 0 && e.names[0] == strings.ToLower(name)
}

// certStore picks a certificate for a TLS handshake. It is immutable: a
// reload builds a new store and swaps it in with the virtual.
type certStore struct {
	entries []*certEntry
	exact   map[string][]*certEntry // name -> entries, in configuration order
	wild    map[string][]*certEntry // "example.com" for "*.example.com"
	// alpn answers tls-alpn-01 challenges; nil when no certificate of
	// the virtual uses them.
	alpn *acmeCert
}

// acmeSource returns the source of an ACME certificate.
type acmeSource func(a *ACME) (*acmeCert, error)

// loadCertStore reads the virtual's certificates. The first one is the
// default served to clients that send no SNI or an unknown name.
func loadCertStore(certs []Certificate, acme acmeSource) (*certStore, error) {
	if len(certs) == 0 {
		return nil, fmt.Errorf("load certificates: %w (add certificates: [{cert: leaf-and-chain.pem, key: key.pem}])", ErrNoCertificate)
	}
	s := &certStore{exact: map[string][]*certEntry{}, wild: map[string][]*certEntry{}}
	for _, c := range certs {
		if c.ACME != nil {
			if err := s.addACME(c.ACME, acme); err != nil {
				return nil, err
			}
			continue
		}
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
		s.addNames(e, leaf.DNSNames)
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

// addNames indexes e under DNS names.
func (s *certStore) addNames(e *certEntry, names []string) {
	for _, n := range names {
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		e.names = append(e.names, n)
		if parent, ok := strings.CutPrefix(n, "*."); ok {
			s.wild[parent] = append(s.wild[parent], e)
		} else {
			s.exact[n] = append(s.exact[n], e)
		}
	}
}

// addACME adds an ACME certificate, named "acme:" and its first name.
func (s *certStore) addACME(a *ACME, acme acmeSource) error {
	if acme == nil {
		return fmt.Errorf("%w: no ACME manager", ErrACME)
	}
	ac, err := acme(a)
	if err != nil {
		return fmt.Errorf("acme certificate %s: %w", strings.Join(a.Names, ","), err)
	}
	e := &certEntry{path: "acme:" + a.Names[0], src: ac}
	s.addNames(e, a.Names)
	s.entries = append(s.entries, e)
	if a.Challenge == ChallengeTLSALPN01 && s.alpn == nil {
		s.alpn = ac
	}
	return nil
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

// getCertificate is tls.Config.GetCertificate. A client without SNI, or
// with a name no certificate covers, gets the first configured
// certificate, explicitly rather than by crypto/tls's fallback (the next
// one while an ACME certificate has not been obtained yet). Among several
// matches the first one the client supports (ECDSA vs RSA, signature
// schemes) wins. A tls-alpn-01 validation gets its challenge certificate.
func (s *certStore) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.alpn != nil && len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmeTLSProto {
		return s.alpn.cfg.GetCertificate(hello)
	}
	if hello.ServerName != "" {
		var fallback *tls.Certificate
		for _, e := range s.candidates(hello.ServerName) {
			c := e.current(hello)
			if c == nil {
				continue
			}
			if hello.SupportsCertificate(c) == nil {
				return c, nil
			}
			if fallback == nil {
				fallback = c
			}
		}
		if fallback != nil {
			return fallback, nil
		}
	}
	for _, e := range s.entries {
		if c := e.current(hello); c != nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("choose certificate: %w: no ACME certificate obtained yet (see the log for the order's error)", ErrNoCertificate)
}

// defaultCovers reports whether the default certificate is valid for name.
func (s *certStore) defaultCovers(name string) bool {
	return s.entries[0].covers(name)
}

// expiry returns each certificate's path and NotAfter (ACME ones once
// obtained).
func (s *certStore) expiry() map[string]time.Time {
	m := make(map[string]time.Time, len(s.entries))
	for _, e := range s.entries {
		if e.src == nil {
			m[e.path] = e.leaf.NotAfter
			continue
		}
		for _, n := range e.names {
			if leaf := e.src.leaf(n); leaf != nil {
				m["acme:"+n] = leaf.NotAfter
			}
		}
	}
	return m
}
