package l7

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"

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

// On a Windows-auth site every client connection that authenticates, or
// is challenged to, has its own upstream.
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
	// Besides the pooled ones the anonymous first requests used.
	closeIdlePooled(e)
	waitFor(t, func() bool { return openUpstream(e) == 2 })
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
		virtual: func(v *Virtual) { v.Sites[1].WindowsAuth = no }})
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

// closeIdlePooled closes the idle pooled upstream connections.
func closeIdlePooled(e *env) {
	for _, vh := range e.proxy.vhosts() {
		for _, s := range vh.sites {
			s.closeIdle()
		}
	}
}

// Anonymous clients of a Windows-auth site share pooled upstream
// connections: a connection is pinned only once NTLM/Negotiate appears on
// it.
func TestAnonymousNotPinnedOnSkypeSite(t *testing.T) {
	e := newEnv(t, envOptions{users: testUsers, members: 1})
	const host = "webext.example.com"
	var ups []string
	for range 5 {
		c := e.dialTLS(host)
		for range 2 {
			user, up := whoami(t, c, host)
			if user != "anonymous" {
				t.Fatalf("anonymous client is %q", user)
			}
			ups = append(ups, up)
		}
		c.c.Close()
	}
	if got := testutil.ToFloat64(e.proxy.metrics.pinned.WithLabelValues("sfb-web")); got != 0 {
		t.Fatalf("pinned gauge = %v after anonymous requests only, want 0", got)
	}
	if ups[0] != ups[len(ups)-1] {
		t.Errorf("anonymous clients one after another used upstream connections %v, want the pooled one reused", ups)
	}
	// NTLM credentials pin the connection.
	a := e.dialTLS(host)
	authenticate(t, a, host, "/CertProv/CertProvisioningService.svc", "alice")
	if got := testutil.ToFloat64(e.proxy.metrics.pinned.WithLabelValues("sfb-web")); got != 1 {
		t.Fatalf("pinned gauge = %v after an NTLM login, want 1", got)
	}
}

// A member holds at most maxPins pinned connections: past it a client
// that starts NTLM gets a 503, and the slot is free again when a pinned
// client leaves.
func TestPinnedPerMemberCapped(t *testing.T) {
	e := newEnv(t, envOptions{users: testUsers, members: 1})
	e.proxy.maxPins.Store(1)
	const host = "webext.example.com"
	a := e.dialTLS(host)
	authenticate(t, a, host, "/CertProv/CertProvisioningService.svc", "alice")

	b := e.dialTLS(host)
	cl := &fakefe.NTLMClient{User: "bob", Password: testUsers["bob"], Domain: "CONTOSO"}
	req := get(host, "/CertProv/CertProvisioningService.svc")
	req.Header.Set("Authorization", cl.NegotiateHeader())
	if res, body := b.do(req); res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("NTLM past the member's pinned cap: %d %q, want 503", res.StatusCode, body)
	}
	if !strings.Contains(e.log.String(), "every member holds its limit of pinned connections") {
		t.Errorf("the full member is not logged:\n%s", e.log.String())
	}
	// Anonymous requests still go through the pool.
	if res, _ := e.dialTLS(host).do(get(host, "/whoami")); res.StatusCode != http.StatusOK {
		t.Fatalf("anonymous request with the pinned slots full: %d", res.StatusCode)
	}
	a.c.Close()
	waitFor(t, func() bool { return e.members[0].fe.OpenConnections() <= 1 })
	b = e.dialTLS(host)
	authenticate(t, b, host, "/CertProv/CertProvisioningService.svc", "bob")
}

// A pinned upstream belongs to its site: on one client connection (no
// SNI, so several sites), a second site with the same pool and port but
// its own upstream settings does not use the first site's pinned
// connection.
func TestPinnedUpstreamKeyedBySite(t *testing.T) {
	e := newEnv(t, envOptions{users: testUsers, members: 1, virtual: func(v *Virtual) {
		v.Sites[1].Pool = "sfb-fe"
		v.Sites[1].BackendTLS.ServerName = "meet.example.com"
	}})
	c := e.dialTLS("")
	authenticate(t, c, "webext.example.com", "/CertProv/CertProvisioningService.svc", "alice")
	req := get(owasHost, "/echo")
	res, body := c.do(req)
	var echo fakefe.Echo
	if err := json.Unmarshal([]byte(body), &echo); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("echo: %d %q", res.StatusCode, body)
	}
	if echo.ServerName != "meet.example.com" {
		t.Fatalf("the owas site's request reached the member with SNI %q, want its own server_name meet.example.com (the skype site's pinned connection was used)", echo.ServerName)
	}
}

// The access log carries what a SIEM correlates on: the query string,
// the user agent, X-Forwarded-For as received, the client's address and
// port, the VIP, SNI, TLS version and cipher.
func TestAccessLogSIEMFields(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dialTLS("webext.example.com")
	req := get("webext.example.com", "/whoami?id=42&x=y")
	req.Header.Set("User-Agent", "UCCAPI/16.0 OC/16.0")
	req.Header.Add("X-Forwarded-For", "192.0.2.7, 10.1.1.1")
	req.Header.Add("X-Forwarded-For", "192.0.2.9")
	c.do(req)
	var line map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(strings.TrimSpace(e.access.String()), "\n", 2)[0]), &line); err != nil {
		t.Fatalf("access log line: %v\n%s", err, e.access.String())
	}
	for k, want := range map[string]string{
		"query": "id=42&x=y", "user_agent": "UCCAPI/16.0 OC/16.0", "xff": "192.0.2.7, 10.1.1.1, 192.0.2.9",
		"sni": "webext.example.com", "tls_version": "TLS 1.3",
	} {
		if line[k] != want {
			t.Errorf("access log %s = %v, want %q", k, line[k], want)
		}
	}
	for _, k := range []string{"tls_cipher", "vip", "client"} {
		if s, _ := line[k].(string); s == "" {
			t.Errorf("access log lacks %s: %v", k, line)
		}
	}
	if _, err := netip.ParseAddrPort(fmt.Sprint(line["client"])); err != nil {
		t.Errorf("client %v is not address:port: %v", line["client"], err)
	}
}
