package config_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
)

// acmeExample puts an ACME certificate first on the example's https
// virtual, before its file certificate.
func acmeExample(t *testing.T, acme string) string {
	t.Helper()
	certs := filepath.Join(exampleCerts(t), "tls")
	return apply(t, example(t), []edit{{
		"    certificates:                   # leaf + chain in one PEM; the first is the default for no-SNI clients\n      - {cert: " + certs + "/public.pem",
		"    certificates:\n      - acme: " + acme + "\n      - {cert: " + certs + "/public.pem",
	}})
}

// An ACME certificate beside a file one is accepted and compiled; the
// first (ACME) covers only its first name for clients without SNI.
func TestACMECertificateAccepted(t *testing.T) {
	text := acmeExample(t, "{names: [webext.example.com, meet.example.com], ca: https://acme.example.net/directory, email: ops@example.com}")
	c, err := config.Parse("skype.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	a := c.Virtuals[2].Certificates[0].ACME
	if a == nil || len(a.Names) != 2 || a.CA != "https://acme.example.net/directory" {
		t.Fatalf("acme decoded as %+v", a)
	}
	var firstWarn []string
	for _, w := range c.Warnings {
		if strings.Contains(w.Msg, "the first certificate of virtual sfb-web does not cover") {
			firstWarn = append(firstWarn, w.Path)
		}
	}
	if len(firstWarn) == 0 || !strings.Contains(strings.Join(firstWarn, " "), "virtuals[2].sites[0].hosts[1]") {
		t.Errorf("no-SNI default warnings at %v, want meet.example.com (hosts[1]) among them", firstWarn)
	}
}

func TestACMEBadConfigs(t *testing.T) {
	cases := []struct {
		name, acme, path, msg string
	}{
		{"unknown key", "{names: [webext.example.com], ca: https://a.example.net/dir, challange: http-01}", "acme.challange", `did you mean "challenge"?`},
		{"no names", "{ca: https://a.example.net/dir}", "acme.names", "names is required"},
		{"plain http CA", "{names: [webext.example.com], ca: http://a.example.net/dir}", "acme.ca", "https directory URL"},
		{"bad challenge", "{names: [webext.example.com], ca: https://a.example.net/dir, challenge: dns-01}", "acme.challenge", "use http-01 or tls-alpn-01"},
		{"bad key type", "{names: [webext.example.com], ca: https://a.example.net/dir, key_type: ed25519}", "acme.key_type", "use ecdsa-p256 or rsa2048"},
		{"wildcard", "{names: ['*.example.com'], ca: https://a.example.net/dir}", "acme.names[0]", "wildcards need dns-01"},
		{"missing ca_root", "{names: [webext.example.com], ca: https://a.example.net/dir, ca_root: /nonexistent/root.pem}", "acme.ca_root", "does not exist"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Parse("skype.yaml", []byte(acmeExample(t, tc.acme)))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), "virtuals[2].certificates[0]."+tc.path) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q, want %s and %q", err, tc.path, tc.msg)
			}
			if !strings.Contains(err.Error(), "skype.yaml:51") {
				t.Errorf("error %q does not name line 51", err)
			}
		})
	}
}

// http-01 needs an http virtual on port 80 of the same address.
func TestACMEHTTP01NeedsPort80(t *testing.T) {
	text := acmeExample(t, "{names: [webext.example.com], ca: https://a.example.net/dir}")
	text = strings.Replace(text, "listen: 203.0.113.10:80\n", "listen: 203.0.113.10:8081\n", 1)
	_, err := config.Parse("skype.yaml", []byte(text))
	if err == nil || !strings.Contains(err.Error(), "add an http virtual listening on 203.0.113.10:80") {
		t.Fatalf("error %v, want the missing port-80 virtual named", err)
	}
	text = strings.Replace(text, "ca: https://a.example.net/dir}", "ca: https://a.example.net/dir, challenge: tls-alpn-01}", 1)
	if _, err := config.Parse("skype.yaml", []byte(text)); err != nil {
		t.Fatalf("tls-alpn-01 without port 80: %v", err)
	}
}

// In an HA pair, check says the ACME state directory must be shared.
func TestACMEInHAPairWarnsSharedStateDir(t *testing.T) {
	text := apply(t, haNode(t, "node-a"), []edit{{"    certificates:\n",
		"    certificates:\n      - acme: {names: [www.example.com], ca: https://acme.example.net/directory, challenge: tls-alpn-01}\n"}})
	c, err := config.Parse("node-a.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range c.Warnings {
		if w.Path == "acme.state_dir" {
			got = append(got, w.Msg)
		}
	}
	if len(got) != 1 || !strings.Contains(got[0], "/var/lib/edgeproxy/acme: make it a directory both nodes share") {
		t.Fatalf("state_dir warnings %q, want one saying the directory must be shared", got)
	}
}
