package l7

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
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
