// Package certgen issues the certificates of the example deployment: a
// public CA chain with a SAN certificate for the published names, and an
// internal CA with certificates for the pool members. Tests, the demo and
// examples/gen-certs.sh use it; production deployments bring their own.
package certgen

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Sentinel errors.
var (
	ErrExists = errors.New("file exists")
)

// The example's names.
var (
	// PublicNames are the names published by the reverse proxy.
	PublicNames = []string{"webext.example.com", "meet.example.com", "dialin.example.com", "lyncdiscover.example.com", "owas.example.com"}
	// SkypeNames are the names the front ends answer for behind the proxy.
	SkypeNames = []string{"webext.example.com", "meet.example.com", "dialin.example.com", "lyncdiscover.example.com"}
)

// DefaultMembers maps the example's member names to the extra names their
// certificates carry (the proxy sends the client's Host as SNI).
func DefaultMembers() map[string][]string {
	return map[string][]string{
		"fe01.corp.example.com":   slices.Clone(SkypeNames),
		"fe02.corp.example.com":   slices.Clone(SkypeNames),
		"owas01.corp.example.com": {"owas.example.com"},
	}
}

// File names written by Write.
const (
	PublicRootFile  = "public-root-ca.pem" // the public root CA clients trust
	PublicCertFile  = "public.pem"         // leaf + intermediate
	PublicKeyFile   = "public.key"
	InternalCAFile  = "internal-ca.pem"
	InternalKeyFile = "internal-ca.key"
)

// CA is a certificate authority that can issue certificates.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain is the PEM of this CA and the intermediate CAs above it,
	// without the root (what a server sends after its leaf).
	Chain []byte
}

// Leaf is an issued certificate.
type Leaf struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte // leaf followed by the issuing chain (no root)
	KeyPEM  []byte // PKCS#8
}

// Validity is a certificate's lifetime.
type Validity struct {
	NotBefore, NotAfter time.Time
}

// For returns a validity from now-1h to now+d.
func For(d time.Duration) Validity {
	now := time.Now()
	return Validity{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(d)}
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewRootCA creates a self-signed root CA.
func NewRootCA(commonName string, v Validity) (*CA, error) {
	return newCA(commonName, nil, v)
}

// NewIntermediate creates a CA signed by ca.
func (ca *CA) NewIntermediate(commonName string, v Validity) (*CA, error) {
	return newCA(commonName, ca, v)
}

func newCA(cn string, parent *CA, v Validity) (*CA, error) {
	key, err := newKey()
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"edgeproxy example"}},
		NotBefore:             v.NotBefore,
		NotAfter:              v.NotAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	signer, issuer := crypto.Signer(key), tmpl
	if parent != nil {
		signer, issuer = parent.Key, parent.Cert
		tmpl.MaxPathLenZero = true
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate %s: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate %s: %w", cn, err)
	}
	ca := &CA{Cert: cert, Key: key}
	if parent != nil {
		ca.Chain = append(pemCert(der), parent.Chain...)
	}
	return ca, nil
}

// PEM returns the CA's own certificate in PEM.
func (ca *CA) PEM() []byte { return pemCert(ca.Cert.Raw) }

// Pool returns a certificate pool holding the CA, for clients.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue creates a server certificate for names (DNS names or IP
// addresses; the first is also the common name), signed by ca.
func (ca *CA) Issue(names []string, v Validity) (*Leaf, error) {
	if len(names) == 0 {
		return nil, errors.New("issue certificate: no names")
	}
	key, err := newKey()
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    v.NotBefore,
		NotAfter:     v.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, fmt.Errorf("create certificate %s: %w", names[0], err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate %s: %w", names[0], err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key %s: %w", names[0], err)
	}
	return &Leaf{
		Cert:    cert,
		Key:     key,
		CertPEM: append(pemCert(der), ca.Chain...),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// KeyPEM returns the CA's private key in PKCS#8 PEM.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, fmt.Errorf("marshal CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// Options select what Write issues. Zero values take the example's.
type Options struct {
	// PublicNames go into the public SAN certificate (default PublicNames).
	PublicNames []string
	// Members maps member names to extra names for their certificates
	// (default DefaultMembers()).
	Members map[string][]string
	// Leaf is the validity of the issued certificates (default 397 days
	// from now); CAs are valid for ten years.
	Leaf Validity
	// Force overwrites existing files.
	Force bool
}

// Set is what Write produced.
type Set struct {
	Dir        string
	PublicRoot *CA // the root clients trust
	Public     *Leaf
	Internal   *CA
	Members    map[string]*Leaf
}

// Write issues the example's certificates into dir (created 0755):
// public-root-ca.pem, public.pem (SAN leaf + intermediate), public.key,
// internal-ca.pem, internal-ca.key, and <member>.pem/<member>.key for
// each member. Keys are written 0600. Existing files are kept and
// reported (ErrExists) unless opts.Force.
func Write(dir string, opts Options) (*Set, error) {
	if opts.PublicNames == nil {
		opts.PublicNames = PublicNames
	}
	if opts.Members == nil {
		opts.Members = DefaultMembers()
	}
	if opts.Leaf.NotAfter.IsZero() {
		opts.Leaf = For(397 * 24 * time.Hour)
	}
	caValidity := For(10 * 365 * 24 * time.Hour)

	root, err := NewRootCA("Example Public Root CA", caValidity)
	if err != nil {
		return nil, err
	}
	inter, err := root.NewIntermediate("Example Public Issuing CA", caValidity)
	if err != nil {
		return nil, err
	}
	pub, err := inter.Issue(opts.PublicNames, opts.Leaf)
	if err != nil {
		return nil, err
	}
	internal, err := NewRootCA("Example Internal CA", caValidity)
	if err != nil {
		return nil, err
	}
	set := &Set{Dir: dir, PublicRoot: root, Public: pub, Internal: internal, Members: map[string]*Leaf{}}
	internalKey, err := internal.KeyPEM()
	if err != nil {
		return nil, err
	}
	files := []outFile{
		{PublicRootFile, root.PEM(), 0o644},
		{PublicCertFile, pub.CertPEM, 0o644},
		{PublicKeyFile, pub.KeyPEM, 0o600},
		{InternalCAFile, internal.PEM(), 0o644},
		{InternalKeyFile, internalKey, 0o600},
	}
	names := make([]string, 0, len(opts.Members))
	for m := range opts.Members {
		names = append(names, m)
	}
	slices.Sort(names)
	for _, m := range names {
		leaf, err := internal.Issue(append([]string{m}, opts.Members[m]...), opts.Leaf)
		if err != nil {
			return nil, err
		}
		set.Members[m] = leaf
		files = append(files, outFile{m + ".pem", leaf.CertPEM, 0o644}, outFile{m + ".key", leaf.KeyPEM, 0o600})
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create certificate directory: %w", err)
	}
	if !opts.Force {
		for _, f := range files {
			p := filepath.Join(dir, f.name)
			if _, err := os.Lstat(p); err == nil {
				return nil, fmt.Errorf("write %s: %w (use -force to replace the example certificates)", p, ErrExists)
			}
		}
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := writeFile(p, f.data, f.mode); err != nil {
			return nil, err
		}
	}
	return set, nil
}

type outFile struct {
	name string
	data []byte
	mode fs.FileMode
}

// writeFile replaces p atomically with data and mode.
func writeFile(p string, data []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(p), ".certgen-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}
