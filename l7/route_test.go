package l7

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/fakefe"
)

// curlEcho asks /echo through the proxy with curl and decodes what the
// front end received; it also returns the HTTP version curl used.
func curlEcho(t *testing.T, args ...string) (fakefe.Echo, string, string) {
	t.Helper()
	out, err := curl(t, append([]string{"-w", "\n%{http_code} %{http_version}"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	out = strings.TrimSpace(out)
	i := strings.LastIndexByte(out, '\n')
	body, tail := out[:max(i, 0)], out[i+1:]
	code, version, _ := strings.Cut(tail, " ")
	var e fakefe.Echo
	if code == "200" {
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Fatalf("decode echo %q: %v", body, err)
		}
	}
	return e, code, version
}

func TestCurlRoutesEverySite(t *testing.T) {
	e := newEnv(t, envOptions{})
	port := portOf(e.httpsAddr)
	all := append(append([]string{}, skypeHosts...), owasHost, "x.apps.example.com")
	resolve := e.resolveArgs(port, all...)
	base := append([]string{"--cacert", e.public.rootPath}, resolve...)

	for _, h := range skypeHosts {
		echo, code, version := curlEcho(t, append(base, "https://"+h+":"+port+"/echo?q=1;x")...)
		if code != "200" {
			t.Fatalf("%s: status %s", h, code)
		}
		if echo.Host != h+":"+port {
			t.Errorf("%s: Host upstream %q, want the client's", h, echo.Host)
		}
		if echo.ServerName != h {
			t.Errorf("%s: SNI upstream %q, want the client's Host", h, echo.ServerName)
		}
		if echo.RequestURI != "/echo?q=1;x" {
			t.Errorf("%s: request URI upstream %q", h, echo.RequestURI)
		}
		if version != "1.1" {
			t.Errorf("%s: client spoke HTTP/%s, want 1.1 on a Windows-auth site", h, version)
		}
		if got := echo.Header["X-Forwarded-For"]; len(got) != 1 || got[0] != "127.0.0.1" {
			t.Errorf("%s: X-Forwarded-For %q", h, got)
		}
		if got := echo.Header["X-Forwarded-Proto"]; len(got) != 1 || got[0] != "https" {
			t.Errorf("%s: X-Forwarded-Proto %q", h, got)
		}
		if echo.Proto != "HTTP/1.1" {
			t.Errorf("%s: upstream protocol %s", h, echo.Proto)
		}
	}
	for _, h := range []string{owasHost, "x.apps.example.com"} {
		echo, code, version := curlEcho(t, append(base, "https://"+h+":"+port+"/echo")...)
		if code != "200" || echo.FE != "fe01" {
			t.Fatalf("%s: status %s from %q, want the owas pool (fe01)", h, code, echo.FE)
		}
		if echo.ServerName != owasHost {
			t.Errorf("%s: SNI upstream %q, want the configured server_name", h, echo.ServerName)
		}
		if version != "2" {
			t.Errorf("%s: HTTP/%s, want h2 on a site without Windows auth", h, version)
		}
	}

	// Unknown host: 404.
	if _, code, _ := curlEcho(t, "-k", "--resolve", "nothere.example.org:"+port+":127.0.0.1",
		"https://nothere.example.org:"+port+"/echo"); code != "404" {
		t.Errorf("unknown host: %s, want 404", code)
	}
	// SNI names one site, Host another: 421.
	if _, code, _ := curlEcho(t, append(base, "-H", "Host: webext.example.com", "https://"+owasHost+":"+port+"/echo")...); code != "421" {
		t.Errorf("SNI/Host mismatch: %s, want 421", code)
	}
	// No SNI at all (mobile clients): routed by Host, never 421.
	echo, code, _ := curlEcho(t, "-k", "-H", "Host: meet.example.com", "https://127.0.0.1:"+port+"/echo")
	if code != "200" || echo.Host != "meet.example.com" || echo.ServerName != "meet.example.com" {
		t.Errorf("no SNI: %s host %q sni %q", code, echo.Host, echo.ServerName)
	}
}

func TestCurlHTTPVirtual(t *testing.T) {
	e := newEnv(t, envOptions{})
	port := portOf(e.httpAddr)
	args := []string{"--resolve", "lyncdiscover.example.com:" + port + ":127.0.0.2",
		"--resolve", "webext.example.com:" + port + ":127.0.0.2"}
	echo, code, _ := curlEcho(t, append(args, "http://lyncdiscover.example.com:"+port+"/echo")...)
	if code != "200" || echo.ServerName != "" || echo.Header["X-Forwarded-Proto"][0] != "http" {
		t.Fatalf("port 80 forward: %s %+v", code, echo)
	}
	for method, want := range map[string]string{"GET": "301", "POST": "308"} {
		out, err := curl(t, append(args, "-X", method, "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
			"http://webext.example.com:"+port+"/Autodiscover/x?y=1")...)
		if err != nil {
			t.Fatal(err)
		}
		if out != want+" https://webext.example.com/Autodiscover/x?y=1" {
			t.Errorf("%s redirect: %q, want %s to https", method, out, want)
		}
	}
}

func TestHeadersAndMethods(t *testing.T) {
	e := newEnv(t, envOptions{virtual: func(v *Virtual) { v.TLS.HSTS = time.Hour }})

	// Hop-by-hop headers never reach the member; inbound X-Forwarded-*
	// from an untrusted client are replaced.
	c := e.dialTLS("webext.example.com")
	res, body, err := c.raw("GET /echo HTTP/1.1\r\nHost: webext.example.com\r\nConnection: keep-alive, X-Hop\r\n" +
		"X-Hop: 1\r\nKeep-Alive: 300\r\nProxy-Authorization: Basic eDp5\r\nX-Forwarded-For: 6.6.6.6\r\n" +
		"X-Forwarded-Host: evil.example\r\nForwarded: for=6.6.6.6\r\nTE: trailers\r\n\r\n")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("echo: %v %v", res, err)
	}
	var echo fakefe.Echo
	json.Unmarshal([]byte(body), &echo)
	for _, h := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization", "Forwarded"} {
		if v, ok := echo.Header[h]; ok {
			t.Errorf("%s reached the member: %q", h, v)
		}
	}
	if got := strings.Join(echo.Header["X-Forwarded-For"], ","); got != "127.0.0.1" {
		t.Errorf("X-Forwarded-For from an untrusted client: %q", got)
	}
	// The member learns that trailers are welcome, and gets no User-Agent
	// the client did not send.
	if got := strings.Join(echo.Header["Te"], ","); got != "trailers" {
		t.Errorf("TE: %q, want trailers", got)
	}
	if v, ok := echo.Header["User-Agent"]; ok {
		t.Errorf("User-Agent the client did not send: %q", v)
	}
	if got := strings.Join(echo.Header["X-Forwarded-Host"], ","); got != "webext.example.com" {
		t.Errorf("X-Forwarded-Host: %q", got)
	}
	if res.Header.Get("Strict-Transport-Security") != "max-age=3600" {
		t.Errorf("HSTS: %q", res.Header.Get("Strict-Transport-Security"))
	}

	// A trusted proxy's X-Forwarded-For is extended.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 99)}}
	tr := e.tlsClient(false).Transport.(*http.Transport)
	tr.DialContext = d.DialContext
	tr.TLSClientConfig.ServerName = "webext.example.com"
	req, _ := http.NewRequest("GET", "https://"+e.httpsAddr+"/echo", nil)
	req.Host = "webext.example.com"
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	r2, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(r2.Body).Decode(&echo)
	r2.Body.Close()
	if got := strings.Join(echo.Header["X-Forwarded-For"], ","); got != "203.0.113.7, 127.0.0.99" {
		t.Errorf("X-Forwarded-For from a trusted proxy: %q", got)
	}

	// CONNECT and TRACE: 405.
	for _, m := range []string{"CONNECT webext.example.com:443 HTTP/1.1\r\nHost: webext.example.com:443\r\n\r\n",
		"TRACE / HTTP/1.1\r\nHost: webext.example.com\r\n\r\n"} {
		c := e.dialTLS("webext.example.com")
		res, _, err := c.raw(m)
		if err != nil || res.StatusCode != 405 {
			t.Errorf("%s: %v %v, want 405", strings.Fields(m)[0], res, err)
		}
	}

	// All WWW-Authenticate challenges pass untouched.
	res, _ = e.dialTLS("webext.example.com").do(get("webext.example.com", "/CertProv/CertProvisioningService.svc"))
	if got := res.Header.Values("WWW-Authenticate"); res.StatusCode != 401 || len(got) != 2 || got[0] != "Negotiate" || got[1] != "NTLM" {
		t.Errorf("challenge: %d %q", res.StatusCode, got)
	}
}

// A protocol upgrade the site allows passes through, pooled and pinned.
func TestUpgradePassesThrough(t *testing.T) {
	e := newEnv(t, envOptions{virtual: func(v *Virtual) {
		for _, s := range v.Sites {
			s.Upgrade = []string{"websocket"}
		}
	}})
	for _, host := range []string{owasHost, "webext.example.com"} {
		c := e.dialTLS(host)
		res, _, err := c.raw("GET /upgrade HTTP/1.1\r\nHost: " + host + "\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
		if err != nil || res.StatusCode != 101 {
			t.Fatalf("%s: %v %v, want 101", host, res, err)
		}
		for _, msg := range []string{"hello", "GET /cscp HTTP/1.1\r\n\r\n"} {
			c.c.Write([]byte(msg))
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(c.r, buf); err != nil || string(buf) != msg {
				t.Fatalf("%s: echoed %q %v", host, buf, err)
			}
		}
	}
}
