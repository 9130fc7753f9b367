package l7

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/labtest"
)

// longPollClients opens n TLS connections to addr, each sending a long
// poll, and returns once the member has received all of them, with the
// memory they hold (live heap and goroutine stacks of the process).
func longPollClients(t *testing.T, m *member, addr string, roots *x509.CertPool, n int) uint64 {
	t.Helper()
	before := liveMemory()
	start := m.fe.Requests()
	cfg := &tls.Config{ServerName: "webext.example.com", RootCAs: roots, NextProtos: []string{"http/1.1"}}
	for range n {
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /longpoll?wait=30s HTTP/1.1\r\nHost: webext.example.com\r\n\r\n")
	}
	deadline := time.Now().Add(20 * time.Second)
	for m.fe.Requests()-start < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d long polls reached the member", m.fe.Requests()-start, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return liveMemory() - before
}

func liveMemory() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc + ms.StackInuse
}

// A client waiting in a long poll costs the proxy at most 50 KiB, its
// upstream side included: the memory (live heap and goroutine stacks) n
// long polls through the proxy take beyond the same n sent straight to
// the member. Two goroutines wait per poll, net/http's request goroutine
// and its background read; they used to hold 20 KiB of stack (the
// upstream TLS handshake had grown the request goroutine's to 16 KiB)
// and the response parser's 4 KiB buffer: 57 KiB in all, against 44 KiB
// now (76 and 57 KiB under the race detector, bounded at 64 KiB).
func TestLongPollMemoryPerClient(t *testing.T) {
	const n = 200
	e := newEnv(t, envOptions{members: 1})
	m := e.members[0]
	direct := longPollClients(t, m, netip.AddrPortFrom(m.addr, e.tlsPort).String(), e.internal.pool(), n)
	proxied := longPollClients(t, m, e.httpsAddr, e.public.pool(), n)
	perClient := (int64(proxied) - int64(direct)) / n
	t.Logf("per long poll: %d B straight to the member, %d B through the proxy: the proxy's share %d B",
		direct/n, proxied/n, perClient)
	bound := int64(50 << 10)
	if labtest.RaceDetector {
		bound = 64 << 10
	}
	if perClient > bound {
		t.Fatalf("the proxy holds %d KiB per long-poll client, over %d KiB", perClient>>10, bound>>10)
	}
}

// scriptMember is a plain-HTTP member whose connections are served by a
// test's own function (n counts the connections from 0).
type scriptMember struct {
	ln    net.Listener
	conns atomic.Int64
}

func startScriptMember(t *testing.T, serve func(n int, c net.Conn, r *bufio.Reader)) *scriptMember {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.41:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &scriptMember{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			n := int(m.conns.Add(1) - 1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				serve(n, c, bufio.NewReader(c))
			}()
		}
	}()
	return m
}

// scriptEnv is the test deployment with the skype site forwarding to m
// in plain HTTP.
func scriptEnv(t *testing.T, m *scriptMember, site func(*Site)) *env {
	return newEnv(t, envOptions{members: 1, cfg: func(c *testConfig) {
		a := netip.MustParseAddr("127.0.0.41")
		c.Pools["script"] = []Member{{Name: a.String(), Addr: a}}
		s := c.Virtuals[0].Sites[0]
		s.Pool, s.Port, s.BackendTLS = "script", uint16(m.ln.Addr().(*net.TCPAddr).Port), nil
		if site != nil {
			site(s)
		}
	}})
}

// readRawRequest reads one request head and its body from a member's
// connection.
func readRawRequest(r *bufio.Reader) (string, error) {
	line, hdr, err := readRawHead(r)
	if err != nil {
		return "", err
	}
	cl, chunked, _ := rawFraming(hdr)
	return line, readRawBody(r, cl, chunked)
}

func okResponse(c net.Conn, body string) {
	fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

func post(host, path, body string) *http.Request {
	r, _ := http.NewRequest("POST", "https://"+host+path, strings.NewReader(body))
	return r
}

// A member that closes a kept-alive connection after 200 ms idle (a
// short keep-alive timeout) does not cost the next request: a POST sent
// after that gets its answer, not a 502.
func TestMemberClosedIdleConnection(t *testing.T) {
	t.Parallel()
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		for {
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			line, err := readRawRequest(r)
			if err != nil {
				return
			}
			okResponse(c, fmt.Sprintf("conn %d: %s", n, line))
		}
	})
	e := scriptEnv(t, m, nil)
	rc := e.dialTLS("webext.example.com")
	if res, body := rc.do(get("webext.example.com", "/first")); res.StatusCode != 200 {
		t.Fatalf("first: %d %s", res.StatusCode, body)
	}
	time.Sleep(600 * time.Millisecond)
	res, body := rc.do(post("webext.example.com", "/second", "payload"))
	if res.StatusCode != 200 || body != "conn 1: POST /second HTTP/1.1" {
		t.Fatalf("POST after the member closed its idle connection: %d %q", res.StatusCode, body)
	}
}

// A GET sent on a kept-alive connection the member closes without
// answering (it closed it just as the request went out) is sent again on
// a new connection; the client sees one answer.
func TestStaleConnectionRetried(t *testing.T) {
	t.Parallel()
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		for i := 0; ; i++ {
			line, err := readRawRequest(r)
			if err != nil || i == 1 {
				return
			}
			okResponse(c, fmt.Sprintf("conn %d: %s", n, line))
		}
	})
	e := scriptEnv(t, m, nil)
	rc := e.dialTLS("webext.example.com")
	for i, want := range []string{"conn 0: GET /a HTTP/1.1", "conn 1: GET /b HTTP/1.1"} {
		path := []string{"/a", "/b"}[i]
		if res, body := rc.do(get("webext.example.com", path)); res.StatusCode != 200 || body != want {
			t.Fatalf("%s: %d %q, want 200 %q", path, res.StatusCode, body, want)
		}
	}
}

// Informational responses (103 Early Hints) reach the client before the
// final one, and trailers of a chunked response after its body.
func TestInformationalAndTrailers(t *testing.T) {
	t.Parallel()
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		if _, err := readRawRequest(r); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nTrailer: X-Checksum\r\nTransfer-Encoding: chunked\r\n\r\n"+
			"5\r\nhello\r\n0\r\nX-Checksum: 42\r\n\r\n")
	})
	e := scriptEnv(t, m, nil)
	rc := e.dialTLS("webext.example.com")
	req := get("webext.example.com", "/hints")
	rc.c.SetDeadline(time.Now().Add(20 * time.Second))
	req.Write(rc.c)
	first, err := http.ReadResponse(rc.r, req)
	if err != nil || first.StatusCode != 103 || first.Header.Get("Link") != "</app.css>; rel=preload" {
		t.Fatalf("first response: %v %+v", err, first)
	}
	res, body := rc.read(req)
	if res.StatusCode != 200 || body != "hello" || res.Trailer.Get("X-Checksum") != "42" {
		t.Fatalf("final response: %d %q trailer %v", res.StatusCode, body, res.Trailer)
	}
}

// A request with "Expect: 100-continue" gets the member's 100 before
// its body is sent, and the member gets the whole body.
func TestExpectContinue(t *testing.T) {
	t.Parallel()
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		line, hdr, err := readRawHead(r)
		if err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		cl, _, _ := rawFraming(hdr)
		b := make([]byte, cl)
		if _, err := io.ReadFull(r, b); err != nil {
			return
		}
		okResponse(c, line+" "+string(b))
	})
	e := scriptEnv(t, m, nil)
	rc := e.dialTLS("webext.example.com")
	rc.c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(rc.c, "POST /upload HTTP/1.1\r\nHost: webext.example.com\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n")
	cont, err := http.ReadResponse(rc.r, nil)
	if err != nil || cont.StatusCode != 100 {
		t.Fatalf("before the body: %v %+v", err, cont)
	}
	io.WriteString(rc.c, "payload")
	res, body := rc.read(nil)
	if res.StatusCode != 200 || body != "POST /upload HTTP/1.1 payload" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
}

// The response timeout counts from the end of the request: an upload
// slower than it is answered.
func TestResponseTimeoutAfterUpload(t *testing.T) {
	t.Parallel()
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		if line, err := readRawRequest(r); err == nil {
			okResponse(c, line)
		}
	})
	e := scriptEnv(t, m, func(s *Site) { s.ResponseTimeout = time.Second })
	rc := e.dialTLS("webext.example.com")
	rc.c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(rc.c, "POST /slow HTTP/1.1\r\nHost: webext.example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
	for range 4 {
		io.WriteString(rc.c, "4\r\ndata\r\n")
		time.Sleep(500 * time.Millisecond)
	}
	io.WriteString(rc.c, "0\r\n\r\n")
	if res, body := rc.read(nil); res.StatusCode != 200 || body != "POST /slow HTTP/1.1" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
}

// Response headers over the limit are a 502, not a proxy that buffers
// them.
func TestMemberHeadersOverLimit(t *testing.T) {
	t.Parallel()
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		if _, err := readRawRequest(r); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		for range 200 {
			fmt.Fprintf(c, "X-Filler: %s\r\n", strings.Repeat("x", 1000))
		}
		io.WriteString(c, "Content-Length: 0\r\n\r\n")
	})
	e := scriptEnv(t, m, nil)
	if res, body := e.dialTLS("webext.example.com").do(get("webext.example.com", "/big")); res.StatusCode != 502 {
		t.Fatalf("%d %q, want 502", res.StatusCode, body)
	}
}

// A client that goes away during a long poll takes its upstream
// connection with it.
func TestClientGoneClosesUpstream(t *testing.T) {
	t.Parallel()
	closed := make(chan struct{})
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		if _, err := readRawRequest(r); err != nil {
			return
		}
		if _, err := r.ReadByte(); err == io.EOF {
			close(closed)
		}
	})
	e := scriptEnv(t, m, nil)
	rc := e.dialTLS("webext.example.com")
	get("webext.example.com", "/poll").Write(rc.c)
	for m.conns.Load() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	rc.c.Close()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the member's connection stayed open after the client left")
	}
}

// A reload closes the previous configuration's upstream connections:
// idle ones at once, busy ones when their request is done.
func TestReloadClosesBusyUpstreamAfterward(t *testing.T) {
	t.Parallel()
	closed := make(chan struct{})
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		line, err := readRawRequest(r)
		if err != nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
		okResponse(c, line)
		if _, err := r.ReadByte(); err == io.EOF && n == 0 {
			close(closed)
		}
	})
	e := scriptEnv(t, m, nil)
	rc := e.dialTLS("webext.example.com")
	req := get("webext.example.com", "/slow")
	rc.c.SetDeadline(time.Now().Add(20 * time.Second))
	req.Write(rc.c)
	time.Sleep(200 * time.Millisecond)
	if err := e.proxy.Apply(e.cfg.spec()); err != nil {
		t.Fatal(err)
	}
	if res, body := rc.read(req); res.StatusCode != 200 || body != "GET /slow HTTP/1.1" {
		t.Fatalf("%d %q", res.StatusCode, body)
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the previous configuration's upstream connection stayed open after its request")
	}
}
