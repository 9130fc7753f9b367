package l7

import (
	"net/http"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/fakefe"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var testUsers = map[string]string{"alice": "Alice-pw1", "bob": "Bob-pw2"}

// authenticate runs the NTLM exchange on one client connection and
// returns the upstream connection ids the member saw.
func authenticate(t *testing.T, c *rawTLS, host, path, user string) []string {
	t.Helper()
	cl := &fakefe.NTLMClient{User: user, Password: testUsers[user], Domain: "CONTOSO"}
	var conns []string
	res, _ := c.do(get(host, path))
	if res.StatusCode != 401 {
		t.Fatalf("anonymous %s: %d, want 401", path, res.StatusCode)
	}
	conns = append(conns, res.Header.Get("X-Fake-Conn"))
	req := get(host, path)
	req.Header.Set("Authorization", cl.NegotiateHeader())
	res, _ = c.do(req)
	if res.StatusCode != 401 {
		t.Fatalf("negotiate: %d, want 401 with a challenge", res.StatusCode)
	}
	conns = append(conns, res.Header.Get("X-Fake-Conn"))
	auth, err := cl.AuthenticateHeader(res.Header.Values("WWW-Authenticate"))
	if err != nil {
		t.Fatal(err)
	}
	req = get(host, path)
	req.Header.Set("Authorization", auth)
	res, body := c.do(req)
	if res.StatusCode != 200 || !strings.Contains(body, "hello "+user) {
		t.Fatalf("authenticate: %d %q, want 200", res.StatusCode, body)
	}
	return append(conns, res.Header.Get("X-Fake-Conn"))
}

func whoami(t *testing.T, c *rawTLS, host string) (string, string) {
	t.Helper()
	res, body := c.do(get(host, "/whoami"))
	return strings.TrimSpace(body), res.Header.Get("X-Fake-FE") + "/" + res.Header.Get("X-Fake-Conn")
}

func openUpstream(e *env) int64 {
	var n int64
	for _, m := range e.members {
		n += m.fe.OpenConnections()
	}
	return n
}

// On a Windows-auth site every client connection has its own upstream.
func TestNTLMPinnedOnSkypeSite(t *testing.T) {
	e := newEnv(t, envOptions{users: testUsers})
	const host = "webext.example.com"
	a := e.dialTLS(host)
	authenticate(t, a, host, "/CertProv/CertProvisioningService.svc", "alice")
	user, upA := whoami(t, a, host)
	if user != "alice" {
		t.Fatalf("after authenticating, the connection is %q, want alice", user)
	}

	// Another client connection, without credentials, is not alice.
	b := e.dialTLS(host)
	res, _ := b.do(get(host, "/CertProv/CertProvisioningService.svc"))
	if res.StatusCode != 401 {
		t.Fatalf("second client without credentials: %d, want 401", res.StatusCode)
	}
	user, upB := whoami(t, b, host)
	if user != "anonymous" || upB == upA {
		t.Fatalf("second client: %q over %s (first client's upstream %s)", user, upB, upA)
	}
	// And alice's connection still is, over the same upstream connection.
	if user, up := whoami(t, a, host); user != "alice" || up != upA {
		t.Fatalf("first client again: %q over %s, want alice over %s", user, up, upA)
	}
	if got := testutil.ToFloat64(e.proxy.metrics.pinned.WithLabelValues("sfb-web")); got != 2 {
		t.Fatalf("pinned connections gauge = %v, want 2", got)
	}
	if n := openUpstream(e); n != 2 {
		t.Fatalf("upstream connections open = %d, want one per client connection", n)
	}
	// Closing the client connection closes its upstream.
	a.c.Close()
	waitFor(t, func() bool { return openUpstream(e) == 1 })
	b.c.Close()
	waitFor(t, func() bool {
		return openUpstream(e) == 0 && testutil.ToFloat64(e.proxy.metrics.pinned.WithLabelValues("sfb-web")) == 0
	})
}

// On a site without Windows auth, requests share pooled upstream
// connections until one authenticates or is challenged; from then on the
// client connection has its own upstream, which nobody else gets.
func TestNTLMPinnedAfterChallenge(t *testing.T) {
	no := false
	e := newEnv(t, envOptions{users: testUsers, members: 1,
		virtual: func(v *config.Virtual) { v.Sites[1].WindowsAuth = &no }})
	const host = owasHost
	a := e.dialTLS(host)
	b := e.dialTLS(host)

	// b's anonymous requests go through the pool.
	if user, _ := whoami(t, b, host); user != "anonymous" {
		t.Fatal(user)
	}
	if testutil.ToFloat64(e.proxy.metrics.pinned.WithLabelValues("sfb-web")) != 0 {
		t.Fatal("anonymous requests pinned a connection")
	}
	conns := authenticate(t, a, host, "/protected", "alice")
	if conns[1] != conns[2] {
		t.Fatalf("negotiate and authenticate went over upstream connections %s and %s", conns[1], conns[2])
	}
	pinnedUp := conns[2]
	for range 5 {
		user, up := whoami(t, b, host)
		if user != "anonymous" || strings.HasSuffix(up, "/"+pinnedUp) {
			t.Fatalf("other client got %q over %s; alice's upstream is %s", user, up, pinnedUp)
		}
		if res, _ := b.do(get(host, "/protected")); res.StatusCode != 401 {
			t.Fatalf("other client on a protected path: %d, want 401", res.StatusCode)
		}
		if user, up := whoami(t, a, host); user != "alice" || !strings.HasSuffix(up, "/"+pinnedUp) {
			t.Fatalf("alice's connection: %q over %s, want alice over %s", user, up, pinnedUp)
		}
	}
	// b was challenged on /protected, so it has its own upstream too.
	if got := testutil.ToFloat64(e.proxy.metrics.pinned.WithLabelValues("sfb-web")); got != 2 {
		t.Fatalf("pinned gauge = %v, want 2", got)
	}
}

// curl's own NTLM implementation, through the proxy.
func TestCurlNTLMThroughProxy(t *testing.T) {
	e := newEnv(t, envOptions{users: testUsers})
	port := portOf(e.httpsAddr)
	url := "https://webext.example.com:" + port + "/CertProv/CertProvisioningService.svc"
	args := append([]string{"--cacert", e.public.rootPath, "--ntlm", "-u", "bob:" + testUsers["bob"]},
		e.resolveArgs(port, "webext.example.com")...)
	out, err := curl(t, append(args, url)...)
	if err != nil || !strings.Contains(out, "hello bob") {
		t.Fatalf("curl --ntlm: %v %q", err, out)
	}
	out, _ = curl(t, append(e.resolveArgs(port, "webext.example.com"), "--cacert", e.public.rootPath,
		"-o", "/dev/null", "-w", "%{http_code}", url)...)
	if out != "401" {
		t.Fatalf("curl without credentials: %s, want 401", out)
	}
}

// The access log says which requests were pinned, and never carries
// credentials or cookies.
func TestAccessLogNoSecrets(t *testing.T) {
	e := newEnv(t, envOptions{users: testUsers})
	a := e.dialTLS("webext.example.com")
	authenticate(t, a, "webext.example.com", "/CertProv/CertProvisioningService.svc", "alice")
	req := get("webext.example.com", "/whoami")
	req.AddCookie(&http.Cookie{Name: "session", Value: "cookie-secret-value"})
	a.do(req)
	log := e.access.String()
	for _, secret := range []string{"TlRMTVNT", "cookie-secret-value", "Authorization", "Cookie"} {
		if strings.Contains(log, secret) {
			t.Fatalf("access log carries %q:\n%s", secret, log)
		}
	}
	for _, want := range []string{`"pinned":true`, `"sni":"webext.example.com"`, `"alpn":"http/1.1"`,
		`"upstream":"127.0.0.1`, `"status":401`, `"path":"/whoami"`, `"upstream_header_ms"`} {
		if !strings.Contains(log, want) {
			t.Fatalf("access log lacks %s:\n%s", want, log)
		}
	}
}
