package l7

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// readTrailedRequest reads one request head and its chunked body with
// whatever trailer fields follow it, and returns everything read.
func readTrailedRequest(r *bufio.Reader) (string, error) {
	line, hdr, err := readRawHead(r)
	if err != nil {
		return "", err
	}
	got := line + "\r\n" + strings.Join(hdr, "\r\n") + "\r\n\r\n"
	last := false // the last chunk was read: trailer fields follow
	for range 1000 {
		l, err := r.ReadString('\n')
		if err != nil {
			return got, err
		}
		got += l
		switch {
		case last && l == "\r\n":
			return got, nil
		case l == "0\r\n":
			last = true
		}
	}
	return got, nil
}

// A client's request trailers are not a way around the proxy's own
// headers: trailer fields (X-Forwarded-For, a hop-by-hop header) that a
// member may merge with the header section never reach it.
func TestRequestTrailersNotForwarded(t *testing.T) {
	t.Parallel()
	var (
		mu  sync.Mutex
		got string
	)
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		req, err := readTrailedRequest(r)
		mu.Lock()
		got += req
		mu.Unlock()
		if err == nil {
			okResponse(c, "ok")
		}
	})
	e := scriptEnv(t, m, nil)
	rc := e.dialTLS("webext.example.com")
	res, body, err := rc.raw("POST /up HTTP/1.1\r\nHost: webext.example.com\r\nTransfer-Encoding: chunked\r\n" +
		"Trailer: X-Forwarded-For, Proxy-Authorization\r\n\r\n" +
		"3\r\nabc\r\n0\r\nX-Forwarded-For: 198.51.100.66\r\nProxy-Authorization: Basic c2VjcmV0\r\n\r\n")
	if err != nil || res.StatusCode != 200 || body != "ok" {
		t.Fatalf("POST with trailers: %v %v %q", err, res, body)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(got, "198.51.100.66") || strings.Contains(got, "c2VjcmV0") {
		t.Fatalf("the client's trailers reached the member:\n%s", got)
	}
}

// A response without a body (204 here; HEAD and 304 alike) gives its
// member connection back before the client is answered: the stall
// deadline of that answer's body read must not stay on the connection
// and cut the next request sent over it, an upload that takes longer
// than the stall timeout while its bytes keep coming.
func TestNoBodyAnswerLeavesNoDeadline(t *testing.T) {
	t.Parallel()
	const stall = time.Second
	m := startScriptMember(t, func(n int, c net.Conn, r *bufio.Reader) {
		for {
			line, err := readRawRequest(r)
			if err != nil {
				return
			}
			if strings.HasPrefix(line, "GET /empty ") {
				io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
				continue
			}
			okResponse(c, fmt.Sprintf("conn %d: %s", n, line))
		}
	})
	e := scriptEnv(t, m, func(s *Site) { s.StallTimeout = stall })
	rc := e.dialTLS("webext.example.com")
	if res, body := rc.do(get("webext.example.com", "/empty")); res.StatusCode != 204 {
		t.Fatalf("GET /empty: %d %q", res.StatusCode, body)
	}
	const n = 12 // a byte every quarter of the stall timeout: 3 s in all
	io.WriteString(rc.c, fmt.Sprintf("POST /up HTTP/1.1\r\nHost: webext.example.com\r\nContent-Length: %d\r\n\r\n", n))
	for range n {
		time.Sleep(stall / 4)
		if _, err := rc.c.Write([]byte("x")); err != nil {
			t.Fatalf("upload: %v", err)
		}
	}
	res, body := rc.read(&http.Request{Method: "POST"})
	if res.StatusCode != 200 || body != "conn 0: POST /up HTTP/1.1" {
		t.Fatalf("slow upload over the connection a 204 gave back: %d %q", res.StatusCode, body)
	}
}
