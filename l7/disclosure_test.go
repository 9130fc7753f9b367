package l7

import (
	"bufio"
	"crypto/tls"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
)

// A malformed chunked body is the client's 400, and no response to an
// untrusted client names a member, its port or its pool: not a body
// error, not a dead member. The log has the details.
func TestClientFaultsDiscloseNothing(t *testing.T) {
	e := newEnv(t, envOptions{members: 1, cfg: func(c *config.Config) {
		c.Pools["owas"].Members = []config.Member{{Address: deadAddr.String()}}
	}})
	secrets := []string{e.members[0].addr.String(), deadAddr.String(), strconv.Itoa(int(e.tlsPort)), "sfb-fe", "owas"}
	check := func(what string, res *http.Response, body string, want int) {
		t.Helper()
		if res.StatusCode != want {
			t.Errorf("%s: status %d, want %d", what, res.StatusCode, want)
		}
		var dump strings.Builder
		res.Header.Write(&dump)
		dump.WriteString(body)
		for _, s := range secrets {
			if strings.Contains(dump.String(), s) {
				t.Errorf("%s: the response discloses %q:\n%s", what, s, dump.String())
			}
		}
	}
	for _, bad := range []string{"zz\r\n", "5\r\nhelloXX", "-1\r\n"} {
		c := e.dialTLS("webext.example.com")
		res, body, err := c.raw("POST /upload HTTP/1.1\r\nHost: webext.example.com\r\nTransfer-Encoding: chunked\r\n\r\n" +
			"5\r\nhello\r\n" + bad + "\r\n0\r\n\r\n")
		if err != nil {
			t.Fatalf("bad chunk %q: %v", bad, err)
		}
		check("bad chunk "+strconv.Quote(bad), res, body, http.StatusBadRequest)
	}
	res, body := e.dialTLS(owasHost).do(get(owasHost, "/whoami"))
	check("dead member", res, body, http.StatusBadGateway)

	log := e.log.String()
	if !strings.Contains(log, `"level":"INFO","msg":"request body refused"`) {
		t.Errorf("body errors not logged at info:\n%s", log)
	}
	if n := strings.Count(log, `"msg":"upstream request failed"`); n != 1 {
		t.Errorf("%d upstream failures logged, want 1 (the dead member only):\n%s", n, log)
	}
	if !strings.Contains(log, deadAddr.String()) {
		t.Errorf("the log does not name the dead member:\n%s", log)
	}
}

// Skype sites do not tell clients what software the members run.
func TestMemberIdentityRemoved(t *testing.T) {
	m := startRawMember(t, false)
	e := rawEnv(t, m, nil)
	res, body := e.dialTLS("webext.example.com").do(get("webext.example.com", "/x"))
	if res.StatusCode != 200 || body != "GET /x HTTP/1.1" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	for _, h := range []string{"Server", "X-Powered-By", "X-AspNet-Version"} {
		if v := res.Header.Get(h); v != "" {
			t.Errorf("%s: %q reached the client", h, v)
		}
	}
}

// Forwarding and rewrite headers IIS would believe never reach a member
// from an untrusted client, whatever their spelling; the proxy's own
// X-Forwarded-For/Proto/Host do. From a trusted proxy only the
// underscore spellings go.
func TestForwardingHeadersDropped(t *testing.T) {
	m := startRawMember(t, false)
	e := rawEnv(t, m, nil)
	forged := []string{"X_Forwarded_For: 6.6.6.6", "x_forwarded_host: evil.example", "X-Forwarded-Server: evil.example",
		"X-Forwarded-For: 6.6.6.6", "X-Forwarded-Proto: http", "X-Forwarded-Port: 1", "Forwarded: for=6.6.6.6",
		"X-Original-URL: /cscp", "X-Rewrite-URL: /cscp", "X_Original_URL: /cscp", "X-Real-IP: 6.6.6.6",
		"True-Client-IP: 6.6.6.6", "X-Client-IP: 6.6.6.6", "Front-End-Https: off", "front_end_https: off",
		"X-HTTP-Method-Override: DEBUG"}
	req := "GET /x HTTP/1.1\r\nHost: webext.example.com\r\n" + strings.Join(forged, "\r\n") + "\r\n\r\n"
	if res, _, err := e.dialTLS("webext.example.com").raw(req); err != nil || res.StatusCode != 200 {
		t.Fatalf("%v %v", res, err)
	}
	head := m.lastHead()
	for _, bad := range []string{"6.6.6.6", "evil.example", "/cscp", "_", "Forwarded:", "Real-IP", "Client-IP", "Front-End", "Override", "X-Forwarded-Port", "X-Forwarded-Server"} {
		if strings.Contains(head, bad) {
			t.Errorf("%q reached the member:\n%s", bad, head)
		}
	}
	for _, want := range []string{"X-Forwarded-For: 127.0.0.1\r\n", "X-Forwarded-Proto: https\r\n", "X-Forwarded-Host: webext.example.com"} {
		if !strings.Contains(head+"\r\n", want) {
			t.Errorf("%q missing:\n%s", want, head)
		}
	}

	// A trusted proxy.
	c := e.dialTLSFrom("webext.example.com", net.IPv4(127, 0, 0, 99))
	req = "GET /x HTTP/1.1\r\nHost: webext.example.com\r\nX-Forwarded-For: 203.0.113.7\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n"
	if res, _, err := c.raw(req); err != nil || res.StatusCode != 200 {
		t.Fatalf("%v %v", res, err)
	}
	if head := m.lastHead(); strings.Contains(head, "6.6.6.6") || !strings.Contains(head, "X-Forwarded-For: 203.0.113.7, 127.0.0.99") {
		t.Errorf("from a trusted proxy:\n%s", head)
	}
}

// dialTLSFrom is dialTLS from a given loopback address.
func (e *env) dialTLSFrom(sni string, from net.IP) *rawTLS {
	e.t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: from}}
	c, err := tls.DialWithDialer(d, "tcp", e.httpsAddr, &tls.Config{ServerName: sni, RootCAs: e.public.pool(), NextProtos: []string{"http/1.1"}})
	if err != nil {
		e.t.Fatalf("dial proxy: %v", err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &rawTLS{t: e.t, c: c, r: bufio.NewReader(c)}
}

// Methods are matched whatever their case: TRACE, TRACK, DEBUG and
// CONNECT are refused everywhere, skype sites forward only what a front
// end serves (in upper case), generic sites the rest.
func TestMethodsCaseInsensitive(t *testing.T) {
	m := startRawMember(t, false)
	e := rawEnv(t, m, nil)
	for _, tc := range []struct {
		host, method string
		want         int
		line         string // what the member must receive; "": nothing
	}{
		{"webext.example.com", "trace", 405, ""},
		{"webext.example.com", "TRACE", 405, ""},
		{"webext.example.com", "Track", 405, ""},
		{"webext.example.com", "debug", 405, ""},
		{"webext.example.com", "PROPFIND", 405, ""},
		{"webext.example.com", "PATCH", 405, ""},
		{"webext.example.com", "get", 200, "GET /echo HTTP/1.1"},
		{"webext.example.com", "Delete", 200, "DELETE /echo HTTP/1.1"},
		{"lyncdiscover.example.com", "post", 200, "POST /echo HTTP/1.1"},
		{owasHost, "trace", 405, ""},
		{owasHost, "tRaCk", 405, ""},
		{owasHost, "PATCH", 200, ""}, // the generic site's member (not the raw one) answers
	} {
		_, before := m.received()
		res, _, err := e.dialTLS(tc.host).raw(tc.method + " /echo HTTP/1.1\r\nHost: " + tc.host + "\r\nContent-Length: 0\r\n\r\n")
		if err != nil || res.StatusCode != tc.want {
			t.Errorf("%s %s: %v %v, want %d", tc.host, tc.method, res, err, tc.want)
			continue
		}
		_, lines := m.received()
		if lines = lines[len(before):]; !slices.Equal(lines, []string{tc.line}) && !(tc.line == "" && len(lines) == 0) {
			t.Errorf("%s %s: the member received %q, want %q", tc.host, tc.method, lines, tc.line)
		}
	}
}
