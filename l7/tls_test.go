package l7

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
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

// resumes connects with the client session cache, makes one request (so
// that a TLS 1.3 ticket arrives) and reports whether the session was
// resumed.
func (e *env) resumes(t *testing.T, cache tls.ClientSessionCache) bool {
	t.Helper()
	return e.resumesAt(t, cache, tls.VersionTLS13)
}

// resumesAt is resumes with the client's highest TLS version.
func (e *env) resumesAt(t *testing.T, cache tls.ClientSessionCache, maxVersion uint16) bool {
	t.Helper()
	c, err := tls.Dial("tcp", e.httpsAddr, &tls.Config{ServerName: owasHost, RootCAs: e.public.pool(),
		ClientSessionCache: cache, NextProtos: []string{"http/1.1"}, MaxVersion: maxVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc := &rawTLS{t: t, c: c, r: bufio.NewReader(c)}
	if res, _ := rc.do(get(owasHost, "/whoami")); res.StatusCode != 200 {
		t.Fatalf("status %d", res.StatusCode)
	}
	return c.ConnectionState().DidResume
}

// Session-ticket keys are the virtual's, rotated every ticket_rotation
// (12h by default) with the previous key accepted one more period, and
// kept across a reload.
func TestSessionTicketRotation(t *testing.T) {
	e := newEnv(t, envOptions{})
	advance := func(d time.Duration) { e.proxy.skew.Add(int64(d)) }
	a := tls.NewLRUClientSessionCache(4)
	if e.resumes(t, a) {
		t.Fatal("the first handshake resumed")
	}
	advance(11 * time.Hour)
	if !e.resumes(t, a) {
		t.Fatal("a ticket 11h old was not accepted")
	}
	// 13h after the first handshake the key has rotated: a new ticket is
	// under another key, and the old one is still accepted.
	b := tls.NewLRUClientSessionCache(4)
	old := tls.NewLRUClientSessionCache(4)
	e.resumes(t, old) // a ticket of the first key, taken at 11h
	advance(2 * time.Hour)
	if e.resumes(t, b) {
		t.Fatal("a new client resumed")
	}
	// A reload keeps the keys.
	if err := e.proxy.Apply(e.config(envOptions{}).spec()); err != nil {
		t.Fatal(err)
	}
	// At 25h the first key is gone, the second still decrypts.
	advance(12 * time.Hour)
	if e.resumes(t, old) {
		t.Fatal("a ticket of the key from two periods ago was accepted")
	}
	if !e.resumes(t, b) {
		t.Fatal("a ticket of the previous key (13h, across a reload) was not accepted at 25h")
	}
}

// With session_tickets off no client resumes, over TLS 1.3 or 1.2, and a
// reload turns tickets on and off for new connections.
func TestSessionTicketsOff(t *testing.T) {
	off := func(v *Virtual) { v.TLS.NoSessionTickets = true }
	e := newEnv(t, envOptions{virtual: off})
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		cache := tls.NewLRUClientSessionCache(4)
		for i := range 3 {
			if e.resumesAt(t, cache, v) {
				t.Fatalf("%s: connection %d resumed with session_tickets off", tls.VersionName(v), i+1)
			}
		}
	}
	if err := e.proxy.Apply(e.config(envOptions{}).spec()); err != nil {
		t.Fatal(err)
	}
	cache := tls.NewLRUClientSessionCache(4)
	e.resumes(t, cache)
	if !e.resumes(t, cache) {
		t.Fatal("tickets back on after a reload: the second connection did not resume")
	}
	if err := e.proxy.Apply(e.config(envOptions{virtual: off}).spec()); err != nil {
		t.Fatal(err)
	}
	if e.resumes(t, cache) {
		t.Fatal("tickets off again after a reload: a ticket issued before was accepted")
	}
}

// TLS 1.2 is offered with ECDHE and AEAD suites only: a client that
// offers only a CBC suite is refused, one with AES-GCM is served.
func TestTLS12CipherSuitesAEADOnly(t *testing.T) {
	e := newEnv(t, envOptions{})
	base := []string{"-CAfile", e.public.rootPath, "-servername", "webext.example.com", "-tls1_2"}
	for _, cbc := range []string{"ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256", "AES128-SHA"} {
		out := sClient(t, e.httpsAddr, append(base, "-cipher", cbc)...)
		if !strings.Contains(out, "Cipher is (NONE)") {
			t.Errorf("TLS 1.2 with only %s was served:\n%s", cbc, out)
		}
	}
	out := sClient(t, e.httpsAddr, append(base, "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")...)
	if !strings.Contains(out, "Cipher is ECDHE-ECDSA-AES128-GCM-SHA256") {
		t.Errorf("TLS 1.2 with AES-GCM:\n%s", out)
	}
}

// Choosing the TLS configuration of a handshake allocates nothing while
// the session-ticket keys in force are installed.
func TestConfigForClientAllocatesNothing(t *testing.T) {
	e := newEnv(t, envOptions{members: 1})
	var vh *vhost
	for _, v := range e.proxy.vhosts() {
		if v.https {
			vh = v
		}
	}
	hello := &tls.ClientHelloInfo{ServerName: owasHost}
	if n := testing.AllocsPerRun(100, func() { vh.configForClient(hello) }); n != 0 {
		t.Errorf("configForClient: %v allocations per handshake, want 0", n)
	}
}

// A response goes to the client in TLS records as large as the server's
// writes (up to 16 KiB), as nginx and HAProxy send it, not in 1.2 KiB
// records (each its own write and packet) for the first 128 KiB of every
// connection. 3,000 bytes fit in one write of net/http's 4 KiB buffer.
func TestResponseInFullSizeTLSRecords(t *testing.T) {
	e := newEnv(t, envOptions{members: 1})
	raw, err := net.DialTimeout("tcp", e.httpsAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordSizes{Conn: raw}
	c := tls.Client(rec, &tls.Config{ServerName: "webext.example.com", RootCAs: e.public.pool(), NextProtos: []string{"http/1.1"}})
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	const size = 3000
	req, _ := http.NewRequest("GET", "https://webext.example.com/download?size="+strconv.Itoa(size), nil)
	if err := req.Write(c); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || n != size || err != nil {
		t.Fatalf("GET /download: %d, %d bytes, %v", res.StatusCode, n, err)
	}
	if rec.largest < size {
		t.Errorf("a %d-byte response came in records of at most %d bytes, want one record holding it", size, rec.largest)
	}
}

// recordSizes notes the largest TLS record read through it.
type recordSizes struct {
	net.Conn
	hdr     []byte
	left    int // bytes of the current record not read yet
	largest int
}

func (r *recordSizes) Read(b []byte) (int, error) {
	n, err := r.Conn.Read(b)
	for p := b[:n]; len(p) > 0; {
		if r.left > 0 {
			k := min(r.left, len(p))
			r.left, p = r.left-k, p[k:]
			continue
		}
		k := min(5-len(r.hdr), len(p))
		r.hdr, p = append(r.hdr, p[:k]...), p[k:]
		if len(r.hdr) == 5 {
			r.left = int(r.hdr[3])<<8 | int(r.hdr[4])
			r.largest = max(r.largest, r.left)
			r.hdr = r.hdr[:0]
		}
	}
	return n, err
}
