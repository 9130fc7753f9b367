package l7

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/fakefe"
	"github.com/edgeproxy/edgeproxy/internal/logs"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
	"github.com/prometheus/client_golang/prometheus"
)

// TestPrivilegedL7Lab runs the proxy in the lab's proxy namespace on the
// VIPs (IPv4 and IPv6), the front ends in the backend namespace on 4443
// and 8080, and curl and openssl in the client namespace.
func TestPrivilegedL7Lab(t *testing.T) {
	testnet.RequireRoot(t, "curl", "openssl")
	lab := testnet.New(t, testnet.Options{Members: 2})
	internal, public := newTestCA(t, "Internal"), newTestCA(t, "Public")

	certPath, keyPath, _ := internal.issue(t, "fe.corp.example.com", skypeHosts)
	kp, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	hosts := map[string]netip.Addr{}
	var fes []*fakefe.Server
	for i, addrs := range [][]netip.Addr{lab.Members4, lab.Members6} {
		for j, a := range addrs {
			name := fmt.Sprintf("fe%d%d", i, j)
			hosts[name+".corp.example.com"] = a
			fe := fakefe.New(fakefe.Options{Name: name, Users: testUsers})
			fes = append(fes, fe)
			for _, port := range []int{4443, 8080} {
				ln, err := lab.Backend.Listen("tcp", net.JoinHostPort(a.String(), fmt.Sprint(port)))
				if err != nil {
					t.Fatal(err)
				}
				var tc *tls.Config
				if port == 4443 {
					tc = &tls.Config{Certificates: []tls.Certificate{kp}}
				}
				go fe.Serve(ln, tc)
				t.Cleanup(func() { ln.Close() })
			}
		}
	}

	c1, k1, _ := public.issue(t, "webext.example.com", skypeHosts)
	access := &syncBuffer{}
	p := New(Options{
		AccessLog:    slog.New(logs.NewJSONLines(access)),
		Registry:     prometheus.NewRegistry(),
		ListenConfig: lab.Proxy.Listen,
		Dial:         lab.Proxy.DialContext,
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
	})
	site := func(pool string) *Site {
		return skypeSite(&Site{Hosts: skypeHosts, Pool: pool, Port: 4443,
			BackendTLS: &BackendTLS{CA: internal.rootPath}})
	}
	pool := func(names ...string) []Member {
		var out []Member
		for _, n := range names {
			out = append(out, Member{Name: n, Addr: hosts[n]})
		}
		return out
	}
	certs := []Certificate{{Cert: c1, Key: k1}}
	cfg := &testConfig{
		Pools: map[string][]Member{
			"fe4": pool("fe00.corp.example.com", "fe01.corp.example.com"),
			"fe6": pool("fe10.corp.example.com", "fe11.corp.example.com"),
		},
		Spec: Spec{Virtuals: []*Virtual{
			{Name: "web4", Mode: ModeHTTPS, Listen: netip.AddrPortFrom(lab.VIP4, 443), Certificates: certs,
				Sites: []*Site{site("fe4")}},
			{Name: "web6", Mode: ModeHTTPS, Listen: netip.AddrPortFrom(lab.VIP6, 443), Certificates: certs,
				Sites: []*Site{site("fe6")}},
			{Name: "web4-http", Mode: ModeHTTP, Listen: netip.AddrPortFrom(lab.VIP4, 80),
				Sites: []*Site{{Hosts: []string{"lyncdiscover.example.com"}, Pool: "fe4", Port: 8080},
					{Hosts: []string{"webext.example.com"}, Redirect: true}}},
		}},
	}
	if err := p.Apply(cfg.spec()); err != nil {
		t.Fatal(err)
	}

	run := func(name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := lab.Client.Command(ctx, name, args...)
		if name == "openssl" {
			cmd.Stdin = strings.NewReader("")
		}
		out, err := cmd.CombinedOutput()
		if err != nil && name == "curl" {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	for _, tc := range []struct {
		vip    netip.Addr
		member string
	}{{lab.VIP4, "fe0"}, {lab.VIP6, "fe1"}} {
		for _, h := range skypeHosts {
			out := run("curl", "-sS", "--max-time", "20", "--cacert", public.rootPath,
				"--resolve", h+":443:"+tc.vip.String(), "https://"+h+"/echo")
			var echo fakefe.Echo
			if err := json.Unmarshal([]byte(out), &echo); err != nil {
				t.Fatalf("%s via %s: %v %q", h, tc.vip, err, out)
			}
			client, internalAddr := lab.ClientAddr4, lab.IntAddr4
			if tc.vip.Is6() {
				client, internalAddr = lab.ClientAddr6, lab.IntAddr6
			}
			from, _ := netip.ParseAddrPort(echo.RemoteAddr)
			if !strings.HasPrefix(echo.FE, tc.member) || echo.ServerName != h || from.Addr() != internalAddr ||
				strings.Join(echo.Header["X-Forwarded-For"], ",") != client.String() {
				t.Fatalf("%s via %s: %+v", h, tc.vip, echo)
			}
		}
		// NTLM with curl's own implementation, across namespaces.
		out := run("curl", "-sS", "--max-time", "20", "--cacert", public.rootPath, "--ntlm", "-u", "alice:"+testUsers["alice"],
			"--resolve", "webext.example.com:443:"+tc.vip.String(), "https://webext.example.com/CertProv/CertProvisioningService.svc")
		if !strings.Contains(out, "hello alice") {
			t.Fatalf("NTLM via %s: %q", tc.vip, out)
		}
	}
	// Clients without SNI get the default certificate and its chain.
	out := run("openssl", "s_client", "-connect", netip.AddrPortFrom(lab.VIP4, 443).String(), "-noservername",
		"-showcerts", "-CAfile", public.rootPath)
	if !strings.Contains(out, "Verify return code: 0 (ok)") || strings.Count(out, "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("openssl without SNI:\n%s", out)
	}
	// Port 80: forwarded to 8080, or redirected.
	out = run("curl", "-sS", "--max-time", "20", "--resolve", "lyncdiscover.example.com:80:"+lab.VIP4.String(),
		"http://lyncdiscover.example.com/Autodiscover/AutodiscoverService.svc/root")
	if !strings.Contains(out, "https://webext.example.com/Autodiscover/AutodiscoverService.svc/root") {
		t.Fatalf("autodiscover over port 80: %q", out)
	}
	out = run("curl", "-sS", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
		"--resolve", "webext.example.com:80:"+lab.VIP4.String(), "http://webext.example.com/meet/x")
	if out != "301 https://webext.example.com/meet/x" {
		t.Fatalf("redirect: %q", out)
	}
	for _, fe := range fes {
		if fe.ManagementHits() != 0 {
			t.Fatal("management path reached")
		}
	}
}
