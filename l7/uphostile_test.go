package l7

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A member that sends more than it declared (a response's tail after its
// Content-Length, arriving a moment later) must not have those bytes
// read as the answer to the next request, which may be another client's:
// that client gets its own answer.
func TestMemberLeftoverNotServedToNextClient(t *testing.T) {
	t.Parallel()
	tail := make(chan struct{}, 8)
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		for {
			line, err := readRawRequest(r)
			if err != nil {
				return
			}
			if strings.HasPrefix(line, "GET /a ") {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
				time.Sleep(2 * time.Millisecond)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nsecret of A")
				tail <- struct{}{}
				continue
			}
			okResponse(c, "b")
		}
	})
	e := scriptEnv(t, m, nil)
	a, b := e.dialTLS("webext.example.com"), e.dialTLS("webext.example.com")
	if res, body := b.do(get("webext.example.com", "/warm")); res.StatusCode != 200 {
		t.Fatalf("warm-up: %d %q", res.StatusCode, body)
	}
	for i := range 5 {
		if res, body := a.do(get("webext.example.com", "/a")); res.StatusCode != 200 || body != "a" {
			t.Fatalf("client A, round %d: %d %q", i, res.StatusCode, body)
		}
		<-tail // on loopback, in the proxy's socket once written
		if res, body := b.do(get("webext.example.com", "/b")); body != "b" {
			t.Fatalf("client B, round %d, got %d %q: another request's answer", i, res.StatusCode, body)
		}
	}
}

// A member that answers 101 to a request that asked for no upgrade gets
// a 502 and its connection closed: it is neither held open nor handed
// to the client as a tunnel.
func TestMemberUnaskedSwitchingProtocols(t *testing.T) {
	t.Parallel()
	closed := make(chan struct{}, 4)
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		if _, err := readRawRequest(r); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := r.ReadByte(); err == io.EOF {
			closed <- struct{}{}
		}
	})
	e := scriptEnv(t, m, nil)
	rc := e.dialTLS("webext.example.com")
	if res, body := rc.do(get("webext.example.com", "/plain")); res.StatusCode != 502 {
		t.Fatalf("unasked 101: %d %q, want 502", res.StatusCode, body)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the member's connection stayed open after an unasked 101")
	}
}

// A GET that the member leaves unanswered past the response timeout on a
// kept-alive connection is a 504; it is not sent to the member again.
func TestResponseTimeoutNotResent(t *testing.T) {
	t.Parallel()
	var slow atomic.Int64
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		for {
			line, err := readRawRequest(r)
			if err != nil {
				return
			}
			if strings.HasPrefix(line, "GET /slow ") {
				slow.Add(1)
				r.ReadByte() // until the proxy closes
				return
			}
			okResponse(c, "ok")
		}
	})
	e := scriptEnv(t, m, func(s *Site) { s.ResponseTimeout = time.Second })
	rc := e.dialTLS("webext.example.com")
	if res, body := rc.do(get("webext.example.com", "/first")); res.StatusCode != 200 {
		t.Fatalf("first: %d %q", res.StatusCode, body)
	}
	res, body := rc.do(get("webext.example.com", "/slow"))
	if res.StatusCode != 504 || slow.Load() != 1 {
		t.Fatalf("unanswered GET: %d %q, member got it %d times, want 504 and once", res.StatusCode, body, slow.Load())
	}
}

// An informational response passed on to the client neither discloses
// the member's software on a skype site nor costs the final response
// the proxy's HSTS header (103 Early Hints, and the 100 of an upload
// with "Expect: 100-continue").
func TestInformationalKeepsProxyHeaders(t *testing.T) {
	t.Parallel()
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		line, hdr, err := readRawHead(r)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 100 Continue\r\nServer: Microsoft-IIS/10.0\r\n\r\n"+
			"HTTP/1.1 103 Early Hints\r\nX-Powered-By: ASP.NET\r\nLink: </app.css>; rel=preload\r\n\r\n")
		cl, _, _ := rawFraming(hdr)
		if _, err := io.CopyN(io.Discard, r, cl); err != nil {
			return
		}
		okResponse(c, line)
	})
	e := scriptEnv(t, m, func(s *Site) { skypeSite(s) })
	e.cfg.Virtuals[0].TLS.HSTS = time.Hour
	if err := e.proxy.Apply(e.cfg.spec()); err != nil {
		t.Fatal(err)
	}
	rc := e.dialTLS("webext.example.com")
	rc.c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(rc.c, "POST /upload HTTP/1.1\r\nHost: webext.example.com\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n")
	for _, code := range []int{100, 103} {
		res, err := http.ReadResponse(rc.r, nil)
		if err != nil || res.StatusCode != code {
			t.Fatalf("want %d: %v %+v", code, err, res)
		}
		if res.Header.Get("Server") != "" || res.Header.Get("X-Powered-By") != "" {
			t.Errorf("%d discloses the member: %v", code, res.Header)
		}
		if code == 100 {
			io.WriteString(rc.c, "payload")
		}
	}
	res, body := rc.read(nil)
	if res.StatusCode != 200 || res.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("final response after informational ones: %d %q, headers %v", res.StatusCode, body, res.Header)
	}
}

// A member's status code below 100 ("000", "099") is a 502, not a
// client connection dropped without an answer.
func TestMemberStatusBelow100(t *testing.T) {
	t.Parallel()
	for _, code := range []string{"000", "099"} {
		m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
			if _, err := readRawRequest(r); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 "+code+" Odd\r\nContent-Length: 2\r\n\r\nhi")
		})
		e := scriptEnv(t, m, nil)
		rc := e.dialTLS("webext.example.com")
		rc.c.SetDeadline(time.Now().Add(20 * time.Second))
		res, body, err := rc.raw("GET /odd HTTP/1.1\r\nHost: webext.example.com\r\n\r\n")
		if err != nil || res.StatusCode != 502 {
			t.Fatalf("member's status %s: %v %v %q, want 502", code, err, res, body)
		}
	}
}

// Requests naming many Hosts of a wildcard site leave at most
// maxIdlePerMember idle connections to the member, not one per Host.
func TestIdleUpstreamsBoundedAcrossHosts(t *testing.T) {
	t.Parallel()
	var open atomic.Int64
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		open.Add(1)
		defer open.Add(-1)
		for {
			if _, err := readRawRequest(r); err != nil {
				return
			}
			okResponse(c, "ok")
		}
	})
	e := newEnv(t, envOptions{members: 1, cfg: func(c *testConfig) {
		a := netip.MustParseAddr("127.0.0.41")
		c.Pools["script"] = []Member{{Name: a.String(), Addr: a}}
		s := c.Virtuals[0].Sites[1]
		s.Pool, s.Port, s.BackendTLS = "script", uint16(m.ln.Addr().(*net.TCPAddr).Port), nil
	}})
	rc := e.dialTLS("h0.apps.example.com")
	hosts := maxIdlePerMember + 40
	for i := range hosts {
		host := fmt.Sprintf("h%d.apps.example.com", i)
		if res, body := rc.do(get(host, "/")); res.StatusCode != 200 {
			t.Fatalf("%s: %d %q", host, res.StatusCode, body)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for open.Load() > maxIdlePerMember && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := open.Load(); n > maxIdlePerMember {
		t.Fatalf("%d requests to %d Hosts left %d connections open at the member, over %d", hosts, hosts, n, maxIdlePerMember)
	}
}

// An HTTP/2 client connection pinned by a member's NTLM challenge still
// runs its streams side by side: a long poll does not hold up the
// client's other requests until it ends.
func TestPinnedHTTP2StreamsNotSerialized(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{users: testUsers, members: 1})
	c := e.tlsClient(true)
	res, err := c.Get("https://" + owasHost + "/protected")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.ProtoMajor != 2 || res.StatusCode != 401 {
		t.Fatalf("challenge: %s %d, want HTTP/2 401", res.Proto, res.StatusCode)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if res, err := c.Get("https://" + owasHost + "/longpoll?wait=3s"); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	}()
	for i := range 3 {
		res, err := c.Get("https://" + owasHost + "/whoami")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		select {
		case <-done:
			t.Fatalf("request %d was answered only after the long poll on the same connection ended", i)
		default:
		}
	}
	<-done
}
