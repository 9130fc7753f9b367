package l7

import (
	"context"
	"crypto/tls"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// sClient runs openssl s_client against the proxy and returns its output.
func sClient(t *testing.T, addr string, args ...string) string {
	t.Helper()
	needTool(t, "openssl")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", append([]string{"s_client", "-connect", addr, "-showcerts"}, args...)...)
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.CombinedOutput()
	return string(out)
}

var subjectRE = regexp.MustCompile(`(?m)^subject=.*CN ?= ?([^,\n]+)`)

func TestOpenSSLCertificateSelection(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, tc := range []struct {
		name, sni, wantCN, wantALPN string
	}{
		{"no SNI gets the default certificate and http/1.1", "", "webext.example.com", "http/1.1"},
		{"skype site name, Windows auth: http/1.1 only", "meet.example.com", "webext.example.com", "http/1.1"},
		{"second certificate by exact SAN, h2 offered", owasHost, owasHost, "h2"},
		{"wildcard SAN", "x.apps.example.com", "*.apps.example.com", "h2"},
		{"unknown name falls back to the default", "unknown.example.org", "webext.example.com", "h2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-CAfile", e.public.rootPath, "-alpn", "h2,http/1.1"}
			if tc.sni != "" {
				args = append(args, "-servername", tc.sni)
			} else {
				args = append(args, "-noservername")
			}
			out := sClient(t, e.httpsAddr, args...)
			m := subjectRE.FindStringSubmatch(out)
			if m == nil || strings.TrimSpace(m[1]) != tc.wantCN {
				t.Fatalf("subject: %v, want CN %s\n%s", m, tc.wantCN, out)
			}
			// The whole chain is served: leaf and intermediate, which
			// verify against the root alone.
			if n := strings.Count(out, "-----BEGIN CERTIFICATE-----"); n != 2 {
				t.Fatalf("%d certificates served, want leaf + intermediate\n%s", n, out)
			}
			if !strings.Contains(out, "Verify return code: 0 (ok)") {
				t.Fatalf("chain does not verify against the root\n%s", out)
			}
			if !strings.Contains(out, "ALPN protocol: "+tc.wantALPN) {
				t.Fatalf("ALPN: want %s\n%s", tc.wantALPN, out)
			}
		})
	}
}

func TestTLSVersionsAndHandshakeErrors(t *testing.T) {
	e := newEnv(t, envOptions{})
	// TLS 1.1 is refused by default.
	c, err := tls.Dial("tcp", e.httpsAddr, &tls.Config{ServerName: "webext.example.com", RootCAs: e.public.pool(),
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		c.Close()
		t.Fatal("TLS 1.1 handshake succeeded")
	}
	// TLS 1.3 and 1.2 work.
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		c, err := tls.Dial("tcp", e.httpsAddr, &tls.Config{ServerName: "webext.example.com", RootCAs: e.public.pool(),
			MinVersion: v, MaxVersion: v})
		if err != nil {
			t.Fatalf("TLS %x: %v", v, err)
		}
		c.Close()
	}
	// Plain HTTP on the TLS port gets a 400, as net/http would say.
	pc, err := net.Dial("tcp", e.httpsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(10 * time.Second))
	pc.Write([]byte("GET / HTTP/1.1\r\nHost: webext.example.com\r\n\r\n"))
	buf := make([]byte, 64)
	n, _ := pc.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "HTTP/1.0 400") {
		t.Fatalf("plain HTTP to the TLS port: %q", buf[:n])
	}
	waitFor(t, func() bool {
		return testutil.ToFloat64(e.proxy.metrics.tlsErrors.WithLabelValues("protocol_version")) == 1 &&
			testutil.ToFloat64(e.proxy.metrics.tlsErrors.WithLabelValues("not_tls")) == 1
	})
}

// waitFor polls cond for up to 10 s (state updated by other goroutines).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 1000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached in 10s")
}
