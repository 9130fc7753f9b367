package l7

import (
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func serverCert(t *testing.T, addr, sni string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestReload(t *testing.T) {
	e := newEnv(t, envOptions{})
	old := e.dialTLS("webext.example.com")
	if res, _ := old.do(get("webext.example.com", "/whoami")); res.StatusCode != 200 {
		t.Fatal(res.Status)
	}
	serial := serverCert(t, e.httpsAddr, "webext.example.com")

	// New certificate files, a new denied path, and a new virtual.
	newCert, newKey, leaf := e.public.issue(t, "webext.example.com", skypeHosts)
	cfg := e.config(envOptions{})
	v := cfg.Virtuals[0]
	v.Certificates[0] = Certificate{Cert: newCert, Key: newKey}
	v.Sites[0].Deny = []string{"/whoami"}
	extra := *cfg.Virtuals[1]
	extra.Name, extra.Listen = "extra", netip.MustParseAddrPort("127.0.0.3:0")
	cfg.Virtuals = append(cfg.Virtuals, &extra)
	if err := e.proxy.Apply(cfg.spec()); err != nil {
		t.Fatal(err)
	}
	if got := serverCert(t, e.httpsAddr, "webext.example.com"); got != leaf.SerialNumber.String() || got == serial {
		t.Fatalf("after reload the certificate is serial %s, want the new %s", got, leaf.SerialNumber)
	}
	// The connection from before the reload is still served, under the
	// new rules.
	if res, _ := old.do(get("webext.example.com", "/whoami")); res.StatusCode != 403 {
		t.Fatalf("old connection after reload: %d, want the new deny rule's 403", res.StatusCode)
	}
	extraAddr := e.proxy.Addrs()["extra"].String()
	if c, err := net.Dial("tcp", extraAddr); err != nil {
		t.Fatalf("new virtual not listening: %v", err)
	} else {
		c.Close()
	}

	// A bad configuration is refused and the current one keeps serving.
	bad := e.config(envOptions{})
	bad.Virtuals[0].Certificates[0].Cert = "/nonexistent/cert.pem"
	if err := e.proxy.Apply(bad.spec()); err == nil || !strings.Contains(err.Error(), "/nonexistent/cert.pem") {
		t.Fatalf("bad certificate path: %v", err)
	}
	bad = e.config(envOptions{})
	bad.Virtuals[0].Sites[0].BackendTLS.CA = "/nonexistent/ca.pem"
	if err := e.proxy.Apply(bad.spec()); err == nil || !strings.Contains(err.Error(), "/nonexistent/ca.pem") {
		t.Fatalf("bad backend CA path: %v", err)
	}
	if got := serverCert(t, e.httpsAddr, "webext.example.com"); got != leaf.SerialNumber.String() {
		t.Fatal("a refused configuration changed the certificate")
	}
	if res, _ := old.do(get("webext.example.com", "/whoami")); res.StatusCode != 403 {
		t.Fatalf("a refused configuration changed the rules: %d", res.StatusCode)
	}
	if _, err := net.Dial("tcp", extraAddr); err != nil {
		t.Fatalf("a refused configuration closed a listener: %v", err)
	}

	// Removing the virtual closes its listener; a changed header timeout
	// replaces the server while a request in flight completes.
	cfg = e.config(envOptions{})
	cfg.Virtuals[0].Sites[0].HeaderTimeout = 7 * time.Second
	done := make(chan int)
	before := e.backendRequests()
	go func() {
		res, _ := old.do(get("webext.example.com", "/longpoll?wait=2s"))
		done <- res.StatusCode
	}()
	waitFor(t, func() bool { return e.backendRequests() > before })
	if err := e.proxy.Apply(cfg.spec()); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != 200 {
		t.Fatalf("request in flight during a reload: %d", code)
	}
	waitFor(t, func() bool {
		c, err := net.DialTimeout("tcp", extraAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	fresh := e.dialTLS("webext.example.com")
	if res, _ := fresh.do(get("webext.example.com", "/whoami")); res.StatusCode != 200 {
		t.Fatalf("new connection after the server was replaced: %d", res.StatusCode)
	}
}
