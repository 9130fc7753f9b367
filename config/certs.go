package config

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// expirySoon is how far ahead an expiring certificate is reported.
const expirySoon = 30 * 24 * time.Hour

// readFile reads a file named in the configuration, reporting a missing
// or unreadable file with the fix.
func (v *validator) readFile(path, file, what, fix string) ([]byte, bool) {
	st, err := os.Stat(file)
	if err == nil && st.IsDir() {
		v.errorf(path, "%s %s is a directory: name the PEM file inside it", what, file)
		return nil, false
	}
	var data []byte
	if err == nil {
		data, err = os.ReadFile(file)
	}
	switch {
	case err == nil:
		return data, true
	case errors.Is(err, fs.ErrNotExist):
		v.errorf(path, "%s %s does not exist: %s, or correct the path", what, file, fix)
	case errors.Is(err, fs.ErrPermission):
		v.errorf(path, "cannot read %s %s: permission denied; make it readable by the user that runs edgeproxy", what, file)
	default:
		v.errorf(path, "cannot read %s %s: %v", what, file, err)
	}
	return nil, false
}

// parseCerts returns the CERTIFICATE blocks of a PEM file.
func parseCerts(data []byte) (certs []*x509.Certificate, bad int, err error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return certs, bad, err
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, perr := x509.ParseCertificate(b.Bytes)
		if perr != nil {
			bad++
			if err == nil {
				err = perr
			}
			continue
		}
		certs = append(certs, c)
	}
}

// caFile checks a CA bundle used to verify members.
func (v *validator) caFile(path, file string) {
	data, ok := v.readFile(path, file, "CA file", "put the PEM certificate of the CA that issued the members' certificates there")
	if !ok {
		return
	}
	certs, _, err := parseCerts(data)
	if len(certs) == 0 {
		if err != nil {
			v.errorf(path, "CA file %s: its certificate does not parse: %v", file, err)
		} else {
			v.errorf(path, "CA file %s holds no PEM certificate (-----BEGIN CERTIFICATE-----): convert a DER file with openssl x509 -inform der", file)
		}
		return
	}
	for _, c := range certs {
		if v.now.After(c.NotAfter) {
			v.warnf(path, "CA certificate %q in %s expired on %s: members' certificates it issued no longer verify", name(c), file, c.NotAfter.Format(time.DateOnly))
		}
	}
}

func name(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}

// parseKey returns the private key in a PEM file.
func parseKey(data []byte) (crypto.Signer, string, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, "", errors.New("no private key")
		}
		if strings.Contains(b.Type, "ENCRYPTED") || b.Headers["Proc-Type"] == "4,ENCRYPTED" {
			return nil, "encrypted", errors.New("encrypted")
		}
		if !strings.HasSuffix(b.Type, "PRIVATE KEY") {
			continue
		}
		var k any
		var err error
		switch b.Type {
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		}
		if err != nil {
			return nil, "", err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, "", fmt.Errorf("unsupported key type %T", k)
		}
		return s, "", nil
	}
}

func samePublicKey(a crypto.PublicKey, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

// certificates checks an https virtual's certificate files: present,
// readable, parseable, leaf first and matching its key, within their
// validity, with a chain, and covering the sites' host names.
func (v *validator) certificates(vs *Virtual, base string) {
	var covers []func(string) bool // per certificate: the names it serves
	var first []string             // names of the first, as warnings give them
	for i, c := range vs.Certificates {
		path := joinIndex(base+".certificates", i)
		if c.ACME != nil {
			v.acmeCert(vs, path, c)
			names := c.ACME.Names
			covers = append(covers, func(h string) bool { return slicesContainsFold(names, h) })
			if i == 0 && len(names) > 0 {
				// Without SNI an ACME entry serves its first name's certificate.
				first = names[:1]
			}
			continue
		}
		if c.Cert == "" {
			v.errorf(path, "cert is required: the PEM file with the leaf certificate first, then the chain (or acme: {...})")
		}
		if c.Key == "" {
			v.errorf(path, "key is required: the PEM file with the certificate's private key")
		}
		if c.Cert == "" || c.Key == "" {
			continue
		}
		leaf := v.certificate(path, c)
		if leaf != nil {
			covers = append(covers, func(h string) bool { return leaf.VerifyHostname(h) == nil })
			if i == 0 {
				first = certNames(leaf)
			}
		}
	}
	if len(covers) == 0 || len(covers) != len(vs.Certificates) {
		return
	}
	v.coverage(vs, base, covers, first)
}

// coverage warns of sites' names no certificate covers, and of those the
// first (no-SNI default) does not.
func (v *validator) coverage(vs *Virtual, base string, covers []func(string) bool, first []string) {
	firstCovers := func(h string) bool {
		if vs.Certificates[0].ACME != nil {
			return slicesContainsFold(first, h)
		}
		return covers[0](h)
	}
	for i, s := range vs.Sites {
		if s == nil {
			continue
		}
		for j, h := range s.Hosts {
			probe := h
			if strings.HasPrefix(h, "*.") {
				probe = "wildcard-check" + h[1:]
			}
			var covered bool
			for _, c := range covers {
				if c(probe) {
					covered = true
					break
				}
			}
			hpath := joinIndex(joinIndex(base+".sites", i)+".hosts", j)
			switch {
			case !covered:
				v.warnf(hpath, "no certificate of virtual %s covers %s (the first covers %s): clients will see a name mismatch; add the name to the certificate's SANs", vs.Name, h, strings.Join(first, ", "))
			case !firstCovers(probe):
				v.warnf(hpath, "the first certificate of virtual %s does not cover %s: clients without SNI (Lync mobile) get the first one; put a certificate that covers every name first", vs.Name, h)
			}
		}
	}
}

func slicesContainsFold(names []string, h string) bool {
	for _, n := range names {
		if strings.EqualFold(n, h) {
			return true
		}
	}
	return false
}

func certNames(c *x509.Certificate) []string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames
	}
	return []string{c.Subject.CommonName}
}

// certificate checks one cert/key pair and returns the leaf, or nil.
func (v *validator) certificate(path string, c Certificate) *x509.Certificate {
	certPath, keyPath := path+".cert", path+".key"
	certData, okCert := v.readFile(certPath, c.Cert, "certificate file", "put the PEM leaf certificate and its chain there")
	keyData, okKey := v.readFile(keyPath, c.Key, "key file", "put the certificate's PEM private key there")
	if okKey {
		if st, err := os.Stat(c.Key); err == nil && st.Mode().Perm()&0o004 != 0 {
			v.warnf(keyPath, "key file %s is readable by every user: chmod 0600 %s", c.Key, c.Key)
		}
	}
	if !okCert {
		return nil
	}
	certs, bad, err := parseCerts(certData)
	if len(certs) == 0 {
		switch {
		case err != nil:
			v.errorf(certPath, "certificate file %s: the certificate does not parse: %v", c.Cert, err)
		case strings.Contains(string(certData), "PRIVATE KEY"):
			v.errorf(certPath, "certificate file %s holds a private key but no certificate: swap cert and key?", c.Cert)
		default:
			v.errorf(certPath, "certificate file %s holds no PEM certificate (-----BEGIN CERTIFICATE-----): convert DER or PFX files with openssl", c.Cert)
		}
		return nil
	}
	if bad > 0 {
		v.errorf(certPath, "certificate file %s: %d certificate(s) of the chain do not parse: %v", c.Cert, bad, err)
	}
	leaf := certs[0]
	if okKey {
		key, state, kerr := parseKey(keyData)
		switch {
		case state == "encrypted":
			v.errorf(keyPath, "key file %s is encrypted: edgeproxy needs it unencrypted (openssl pkey -in %s -out <new file>), readable only by the user that runs edgeproxy", c.Key, c.Key)
		case kerr != nil:
			if _, _, cerr := parseCerts(keyData); cerr == nil && strings.Contains(string(keyData), "CERTIFICATE") && !strings.Contains(string(keyData), "PRIVATE KEY") {
				v.errorf(keyPath, "key file %s holds a certificate, not a private key: swap cert and key?", c.Key)
			} else {
				v.errorf(keyPath, "key file %s holds no usable private key (PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY): %v", c.Key, kerr)
			}
		case !samePublicKey(leaf.PublicKey, key.Public()):
			other := -1
			for i, x := range certs[1:] {
				if samePublicKey(x.PublicKey, key.Public()) {
					other = i + 1
				}
			}
			if other > 0 {
				v.errorf(certPath, "the key %s matches certificate #%d (%s) in %s, not the first: put the leaf certificate first, then the chain", c.Key, other+1, name(certs[other]), c.Cert)
			} else {
				v.errorf(keyPath, "key %s does not match certificate %s (%s, issued by %s): use the key this certificate was issued for", c.Key, c.Cert, name(leaf), leaf.Issuer.CommonName)
			}
		}
	}
	switch {
	case v.now.After(leaf.NotAfter):
		v.warnf(certPath, "certificate %s (%s) expired on %s: renew it, clients refuse it", c.Cert, name(leaf), leaf.NotAfter.Format(time.DateOnly))
	case v.now.Before(leaf.NotBefore):
		v.warnf(certPath, "certificate %s (%s) is not valid before %s: check the host's clock or the certificate", c.Cert, name(leaf), leaf.NotBefore.Format(time.DateOnly))
	case leaf.NotAfter.Sub(v.now) < expirySoon:
		v.warnf(certPath, "certificate %s (%s) expires on %s: renew it", c.Cert, name(leaf), leaf.NotAfter.Format(time.DateOnly))
	}
	for i, x := range certs[1:] {
		if v.now.After(x.NotAfter) {
			v.warnf(certPath, "chain certificate #%d (%s) in %s expired on %s: replace the chain with the CA's current one", i+2, name(x), c.Cert, x.NotAfter.Format(time.DateOnly))
		}
	}
	if len(certs) == 1 && leaf.Issuer.String() != leaf.Subject.String() {
		v.warnf(certPath, "certificate file %s holds only the leaf: append the intermediate CA certificate(s) after it, clients need the whole chain", c.Cert)
	}
	if len(certs) > 1 && leaf.CheckSignatureFrom(certs[1]) != nil && leaf.Issuer.String() != certs[1].Subject.String() {
		v.warnf(certPath, "certificate #2 (%s) in %s did not issue the leaf (issuer %s): order the chain leaf first, then its issuer", name(certs[1]), c.Cert, leaf.Issuer.CommonName)
	}
	return leaf
}
