package l7

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func (e *env) backendRequests() int64 {
	var n int64
	for _, m := range e.members {
		n += m.fe.Requests()
	}
	return n
}

// closedAfter reports whether the server closed the connection (EOF or
// reset) rather than leaving it open until the client's read deadline.
func closedAfter(c net.Conn, r io.Reader) bool {
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, err := io.Copy(io.Discard, r)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func TestSmugglingRejected(t *testing.T) {
	e := newEnv(t, envOptions{})
	const smuggled = "GET /cscp HTTP/1.1\r\nHost: lyncdiscover.example.com\r\n\r\n"
	for _, tc := range []struct {
		name, req string
		want      int
	}{
		{"CL then TE", "POST /echo HTTP/1.1\r\nHost: lyncdiscover.example.com\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled, 400},
		{"TE then CL", "POST /echo HTTP/1.1\r\nHost: lyncdiscover.example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + smuggled, 400},
		{"TE with CL 0", "POST /echo HTTP/1.1\r\nHost: lyncdiscover.example.com\r\ntransfer-encoding: chunked\r\ncontent-length: 0\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400},
		{"two different CL", "POST /echo HTTP/1.1\r\nHost: lyncdiscover.example.com\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc" + smuggled, 400},
		{"TE list", "POST /echo HTTP/1.1\r\nHost: lyncdiscover.example.com\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
		{"TE not chunked", "POST /echo HTTP/1.1\r\nHost: lyncdiscover.example.com\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501},
		{"space before colon", "POST /echo HTTP/1.1\r\nHost: lyncdiscover.example.com\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400},
		{"folded TE", "POST /echo HTTP/1.1\r\nHost: lyncdiscover.example.com\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 400},
		{"CL with sign", "POST /echo HTTP/1.1\r\nHost: lyncdiscover.example.com\r\nContent-Length: +3\r\n\r\nabc", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.backendRequests()
			c := e.dialPlain()
			res, _, err := c.raw(tc.req)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			if res.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.want)
			}
			if !closedAfter(c.c, c.r) {
				t.Fatal("connection left open after a rejected request")
			}
			if n := e.backendRequests() - before; n != 0 {
				t.Fatalf("%d requests reached the members", n)
			}
		})
	}
	// Over TLS too, and on the second request of a connection.
	c := e.dialTLS("webext.example.com")
	res, _, err := c.raw("POST /upload HTTP/1.1\r\nHost: webext.example.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("chunked upload: %v %v", res, err)
	}
	res, _, err = c.raw("POST /upload HTTP/1.1\r\nHost: webext.example.com\r\nContent-Length: 6\r\n\r\nhello!")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("upload after a chunked one: %v %v", res, err)
	}
	res, _, err = c.raw("POST /echo HTTP/1.1\r\nHost: webext.example.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled)
	if err != nil || res.StatusCode != 400 {
		t.Fatalf("smuggling on the third request: %v %v", res, err)
	}
	for _, m := range e.members {
		if m.fe.ManagementHits() != 0 {
			t.Fatal("smuggled request reached the member")
		}
	}
}

func TestSlowClientsCutOff(t *testing.T) {
	e := newEnv(t, envOptions{site: func(s *Site) {
		s.HeaderTimeout = time.Second
		s.StallTimeout = time.Second
	}})
	// Headers that never end.
	c := e.dialTLS("webext.example.com")
	c.c.Write([]byte("GET /whoami HTTP/1.1\r\nHost: webext.example.com\r\nX-Slow: "))
	if !closedAfter(c.c, c.r) {
		t.Fatal("a client that never finishes its headers was not cut off")
	}
	// A TLS handshake that never starts.
	raw, err := net.Dial("tcp", e.httpsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if !closedAfter(raw, raw) {
		t.Fatal("a client that never sends its ClientHello was not cut off")
	}
	waitFor(t, func() bool { return testutil.ToFloat64(e.proxy.metrics.tlsErrors.WithLabelValues("timeout")) >= 1 })

	// A body that stops in the middle: 408, connection closed.
	c = e.dialTLS("webext.example.com")
	c.c.Write([]byte("POST /upload HTTP/1.1\r\nHost: webext.example.com\r\nContent-Length: 1000\r\n\r\n0123456789"))
	c.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	buf, _ := io.ReadAll(c.r)
	if !strings.HasPrefix(string(buf), "HTTP/1.1 408") {
		t.Fatalf("stalled upload: %q, want 408", buf)
	}
	if !strings.Contains(e.access.String(), `"termination":"client_stall"`) {
		t.Fatalf("access log does not say the client stalled:\n%s", e.access.String())
	}

	// A client that reads nothing of a large download is cut off
	// without the proxy holding the body.
	c = e.dialTLS("webext.example.com")
	c.c.Write([]byte("GET /download?size=268435456 HTTP/1.1\r\nHost: webext.example.com\r\n\r\n"))
	time.Sleep(4 * time.Second) // three stall periods without reading
	c.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, err := io.Copy(io.Discard, c.r)
	if err == nil && n > 256<<20 {
		t.Fatalf("a client that stopped reading got the whole body (%d bytes)", n)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %d bytes", n)
	}
}

// Kerberos tokens need large headers on the skype site; other sites keep
// the smaller default.
func TestHeaderSizeLimits(t *testing.T) {
	e := newEnv(t, envOptions{})
	token := strings.Repeat("A", 60<<10)
	req := get("webext.example.com", "/echo")
	req.Header.Set("X-Big", token)
	if res, body := e.dialTLS("webext.example.com").do(req); res.StatusCode != 200 || !strings.Contains(body, token) {
		t.Fatalf("60 KiB header on the skype site: %d", res.StatusCode)
	}
	req = get(owasHost, "/echo")
	req.Header.Set("X-Big", strings.Repeat("A", 40<<10))
	if res, _ := e.dialTLS(owasHost).do(req); res.StatusCode != 431 {
		t.Fatalf("40 KiB header on a site with the 32 KiB default: %d, want 431", res.StatusCode)
	}
	req = get("webext.example.com", "/echo")
	req.Header.Set("X-Big", strings.Repeat("A", 80<<10))
	c := e.dialTLS("webext.example.com")
	if res, _ := c.do(req); res.StatusCode != 431 {
		t.Fatalf("80 KiB header: %d, want 431", res.StatusCode)
	}
}

// Shutdown lets a request in flight finish, then closes.
func TestShutdownDrains(t *testing.T) {
	e := newEnv(t, envOptions{members: 1})
	c := e.dialTLS("webext.example.com")
	done := make(chan int)
	go func() {
		res, _ := c.do(get("webext.example.com", "/longpoll?wait=1s"))
		done <- res.StatusCode
	}()
	waitFor(t, func() bool { return e.backendRequests() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.proxy.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if code := <-done; code != 200 {
		t.Fatalf("request in flight at shutdown: %d", code)
	}
	if _, err := net.DialTimeout("tcp", e.httpsAddr, time.Second); err == nil {
		t.Fatal("still accepting after shutdown")
	}
	if err := e.proxy.Apply(e.cfg.spec()); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply after shutdown: %v", err)
	}
}

// Shutdown ends with its context: a client stalled in its TLS handshake
// is cut then, not at the handshake timeout.
func TestShutdownCutsStalledHandshake(t *testing.T) {
	e := newEnv(t, envOptions{members: 1,
		virtual: func(v *Virtual) { v.TLS.HandshakeTimeout = time.Minute },
		site:    func(s *Site) { s.HeaderTimeout = time.Minute }})
	c, err := net.Dial("tcp", e.httpsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, func() bool { return e.proxy.open.Load() == 1 }) // accepted, waiting for the ClientHello
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan struct{})
	go func() { e.proxy.Shutdown(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Shutdown still waits 20s after its context ended, on a client stalled in its TLS handshake")
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the stalled client's connection after Shutdown: %v; want it closed", err)
	}
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, envOptions{members: 1, site: func(s *Site) { s.MaxBodyBytes = 1 << 20 }})
	big := strings.Repeat("x", 2<<20)
	// Declared too large: refused before anything is sent upstream.
	req, _ := http.NewRequest("POST", "https://webext.example.com/upload", strings.NewReader(big))
	before := e.backendRequests()
	if res, _ := e.dialTLS("webext.example.com").do(req); res.StatusCode != 413 {
		t.Fatalf("2 MiB with a 1 MiB limit: %d, want 413", res.StatusCode)
	}
	if e.backendRequests() != before {
		t.Fatal("a body declared over the limit reached the member")
	}
	// Chunked: cut at the limit.
	req, _ = http.NewRequest("POST", "https://webext.example.com/upload", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	if res, _ := e.dialTLS("webext.example.com").do(req); res.StatusCode != 413 {
		t.Fatalf("chunked 2 MiB with a 1 MiB limit: %d, want 413", res.StatusCode)
	}
	// Under the limit: passes.
	req, _ = http.NewRequest("POST", "https://webext.example.com/upload", strings.NewReader(big[:1<<20]))
	if res, body := e.dialTLS("webext.example.com").do(req); res.StatusCode != 200 || !strings.Contains(body, `"bytes":1048576`) {
		t.Fatalf("1 MiB: %d %s", res.StatusCode, body)
	}
}

// Both legs have TCP keepalive; the client leg's settings (idle,
// interval, count) come from the listening socket, free-bind or not.
func TestKeepAliveBothLegs(t *testing.T) {
	legs := map[string]net.Conn{}
	listeners := map[string]func(network, addr string) (net.Listener, error){
		"client": defaultListen, "client (free-bind listener)": freeBindListen}
	for name, listen := range listeners {
		ln, err := listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		d := &dialer{addr: ln.Addr().String(), limits: siteLimits{dial: time.Second}}
		up, err := d.dialTCP(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer up.Close()
		down, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer down.Close()
		legs["upstream"], legs[name] = up.Conn, down
	}
	want := [4]int{1, int(keepAlive.Idle / time.Second), int(keepAlive.Interval / time.Second), keepAlive.Count}
	for name, c := range legs {
		raw, _ := c.(*net.TCPConn).SyscallConn()
		var got [4]int
		raw.Control(func(fd uintptr) {
			got[0], _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
			got[1], _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
			got[2], _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL)
			got[3], _ = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT)
		})
		if got != want {
			t.Errorf("%s leg: keepalive on, idle, interval, count = %v, want %v", name, got, want)
		}
	}
}
