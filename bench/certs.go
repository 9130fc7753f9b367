package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// siteNames are the published names the public certificate covers.
var siteNames = []string{"webext.example.com", "meet.example.com", "dialin.example.com", "lyncdiscover.example.com"}

// benchHost is the name the L7 clients ask for.
const benchHost = "webext.example.com"

// certFiles are the PEM files every L7 candidate and the backend use.
type certFiles struct {
	PublicCA    string // the CA clients trust
	PublicChain string // leaf + CA for the proxies
	PublicKey   string
	PublicBoth  string // chain + key in one file (HAProxy's crt)
	InternalCA  string // the CA the proxies verify the backend with
	BackendCert string // the backend's leaf + internal CA
	BackendKey  string
}

// writeCerts generates a public CA with an ECDSA P-256 leaf for the site
// names, and an internal CA with the backend's leaf, into dir.
func writeCerts(dir string) (*certFiles, error) {
	f := &certFiles{
		PublicCA:    filepath.Join(dir, "public-ca.pem"),
		PublicChain: filepath.Join(dir, "public.pem"),
		PublicKey:   filepath.Join(dir, "public.key"),
		PublicBoth:  filepath.Join(dir, "public-with-key.pem"),
		InternalCA:  filepath.Join(dir, "internal-ca.pem"),
		BackendCert: filepath.Join(dir, "backend.pem"),
		BackendKey:  filepath.Join(dir, "backend.key"),
	}
	pubCA, pubCAKey, pubCADER, err := newCA("edgeproxy bench public CA")
	if err != nil {
		return nil, err
	}
	leafDER, leafKey, err := newLeaf(pubCA, pubCAKey, siteNames, nil)
	if err != nil {
		return nil, err
	}
	intCA, intCAKey, intCADER, err := newCA("edgeproxy bench internal CA")
	if err != nil {
		return nil, err
	}
	beDER, beKey, err := newLeaf(intCA, intCAKey, siteNames, []net.IP{net.ParseIP("198.19.1.11"), net.ParseIP("198.19.1.12")})
	if err != nil {
		return nil, err
	}
	certPEM := func(ders ...[]byte) []byte {
		var out []byte
		for _, d := range ders {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
		}
		return out
	}
	keyPEM := func(k *ecdsa.PrivateKey) ([]byte, error) {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, fmt.Errorf("marshal key: %w", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	}
	lk, err := keyPEM(leafKey)
	if err != nil {
		return nil, err
	}
	bk, err := keyPEM(beKey)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		f.PublicCA:    certPEM(pubCADER),
		f.PublicChain: certPEM(leafDER, pubCADER),
		f.PublicKey:   lk,
		f.PublicBoth:  append(certPEM(leafDER, pubCADER), lk...),
		f.InternalCA:  certPEM(intCADER),
		f.BackendCert: certPEM(beDER, intCADER),
		f.BackendKey:  bk,
	}
	for path, data := range files {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, fmt.Errorf("write certificate: %w", err)
		}
	}
	return f, nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
}

func newCA(cn string) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return cert, key, der, nil
}

func newLeaf(ca *x509.Certificate, caKey *ecdsa.PrivateKey, names []string, ips []net.IP) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate leaf key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, fmt.Errorf("generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: names[0]},
		DNSNames:     names,
		IPAddresses:  ips,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create leaf certificate: %w", err)
	}
	return der, key, nil
}
