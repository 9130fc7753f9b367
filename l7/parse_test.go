package l7

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
)

// A configuration written as users write it, through config.Parse
// (strict decoding, defaults, validation), runs as is.
func TestParsedConfiguration(t *testing.T) {
	internal, public := newTestCA(t, "Internal"), newTestCA(t, "Public")
	members, tlsPort, plainPort := startMembers(t, 2, internal, testUsers)
	cert, key, _ := public.issue(t, "webext.example.com", skypeHosts)
	yaml := fmt.Sprintf(`
network:
  external: {interface: ext0, addresses: [203.0.113.10/24], gateway: 203.0.113.1}
  internal: {interface: int0, addresses: [10.20.0.10/24]}
  hosts:
    fe01.corp.example.com: %s
    fe02.corp.example.com: %s
pools:
  sfb-fe:
    members: [fe01.corp.example.com, fe02.corp.example.com]
    monitor: {type: tls, port: %d}
virtuals:
  - name: sfb-web
    mode: https
    listen: %s
    certificates:
      - {cert: %s, key: %s}
    sites:
      - hosts: [webext.example.com, meet.example.com, dialin.example.com, lyncdiscover.example.com]
        pool: sfb-fe
        port: %d
        backend_tls: {ca: %s}
        profile: skype
  - name: sfb-web-http
    mode: http
    listen: %s
    sites:
      - hosts: [lyncdiscover.example.com]
        pool: sfb-fe
        port: %d
`, members[0].addr, members[1].addr, tlsPort, freePort(t, "127.0.0.5"), cert, key, tlsPort, internal.rootPath,
		freePort(t, "127.0.0.5"), plainPort)
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	p := New(Options{})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	if err := p.Apply(cfg); err != nil {
		t.Fatalf("apply: %v", err)
	}
	e := &env{t: t, public: public, httpsAddr: p.Addrs()["sfb-web"].String()}
	if res, body := e.dialTLS("dialin.example.com").do(get("dialin.example.com", "/whoami")); res.StatusCode != 200 {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	if res, _ := e.dialTLS("dialin.example.com").do(get("dialin.example.com", "/RgsConfig")); res.StatusCode != 403 {
		t.Fatalf("skype profile from the file: %d, want 403", res.StatusCode)
	}
	if members[0].fe.Requests()+members[1].fe.Requests() != 1 {
		t.Fatal("request count at the members")
	}
}

// freePort returns addr:port with a port free at the moment.
func freePort(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
