package l7

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strings"
	"testing"
)

// headCase is an upstream request and whether the head writer writes
// it itself (plain) or leaves it to Request.Write.
type headCase struct {
	name  string
	req   *http.Request
	plain bool
}

// TestRequestHeadMatchesRequestWrite: for every request, the bytes sent
// to a member are those (*http.Request).Write writes, and the ordinary
// ones are written without it.
func TestRequestHeadMatchesRequestWrite(t *testing.T) {
	for _, c := range append(builtHeadCases(), wireHeadCases(t)...) {
		t.Run(c.name, func(t *testing.T) {
			got, gotErr := headBytes(c.req, writeRequestHead)
			want, wantErr := headBytes(c.req, func(bw *bufio.Writer, r *http.Request) error { return r.Write(bw) })
			if (gotErr != nil) != (wantErr != nil) {
				t.Fatalf("error %v, Request.Write's %v", gotErr, wantErr)
			}
			if gotErr == nil && got != want {
				t.Errorf("head differs from Request.Write's:\ngot  %q\nwant %q", got, want)
			}
			if _, _, plain := plainHost(c.req); plain != c.plain {
				t.Errorf("written without Request.Write: %v, want %v", plain, c.plain)
			}
		})
	}
}

// TestRequestHeadRandomMatchesRequestWrite: the same for requests made
// of random methods, hosts, targets and fields, hostile bytes included.
func TestRequestHeadRandomMatchesRequestWrite(t *testing.T) {
	rnd := rand.New(rand.NewPCG(21, 1))
	plain := 0
	for i := range 5000 {
		req := randomHeadRequest(rnd)
		got, gotErr := headBytes(req, writeRequestHead)
		want, wantErr := headBytes(req, func(bw *bufio.Writer, r *http.Request) error { return r.Write(bw) })
		if (gotErr != nil) != (wantErr != nil) || got != want {
			t.Fatalf("request %d (%s %q Host %q header %q): head %q (error %v), Request.Write's %q (error %v)",
				i, req.Method, req.URL, req.Host, req.Header, got, gotErr, want, wantErr)
		}
		if _, _, ok := plainHost(req); ok {
			plain++
		}
	}
	if plain < 1000 {
		t.Errorf("only %d of 5000 random requests took the plain path", plain)
	}
}

// headBytes is what write writes for req; a body is read once and
// given anew to each writer.
func headBytes(req *http.Request, write func(*bufio.Writer, *http.Request) error) (string, error) {
	if req.Body != nil && req.Body != http.NoBody {
		if rb, ok := req.Body.(*replayBody); ok {
			rb.Reset(rb.b)
		} else {
			all, _ := io.ReadAll(req.Body)
			req.Body = &replayBody{bytes.NewReader(all), all}
		}
	}
	var b bytes.Buffer
	bw := bufio.NewWriter(&b)
	err := write(bw, req)
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return b.String(), err
}

// replayBody is a request body that can be read again.
type replayBody struct {
	*bytes.Reader
	b []byte
}

func (r *replayBody) Close() error { return nil }

// outReq is an upstream request as the relay makes it: a member URL,
// the client's Host, a User-Agent, no body.
func outReq(method, target, host string, h http.Header) *http.Request {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		u = &url.URL{Path: target}
	}
	u.Scheme, u.Host = "https", "198.18.0.10:443"
	if h == nil {
		h = http.Header{}
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{"curl/8"}
	}
	return &http.Request{Method: method, URL: u, Host: host, Header: h, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
}

func builtHeadCases() []headCase {
	with := func(r *http.Request, f func(*http.Request)) *http.Request { f(r); return r }
	hdr := http.Header{"Accept": {"*/*"}, "X-Forwarded-For": {"198.18.0.1"}, "Cookie": {"a=1", "b=2"},
		"X-Empty": {""}, "X-None": {}, "Accept-Encoding": {"gzip"}}
	return []headCase{
		{"GET", outReq("GET", "/healthz", "owa.example.com", hdr.Clone()), true},
		{"GET query", outReq("GET", "/a/b?x=1&y=%20", "owa.example.com", hdr.Clone()), true},
		{"GET empty query", outReq("GET", "/a?", "owa.example.com", nil), true},
		{"HEAD", outReq("HEAD", "/", "owa.example.com", hdr.Clone()), true},
		{"POST empty", outReq("POST", "/ews", "owa.example.com", nil), true},
		{"PUT empty", outReq("PUT", "/x", "owa.example.com", nil), true},
		{"PATCH empty", outReq("PATCH", "/x", "owa.example.com", nil), true},
		{"DELETE", outReq("DELETE", "/x", "owa.example.com", nil), true},
		{"OPTIONS star", outReq("OPTIONS", "*", "owa.example.com", nil), true},
		{"lower-case method", outReq("get", "/", "owa.example.com", nil), true},
		{"encoded path", outReq("GET", "/a%2Fb/%7E/c%20d/%25", "owa.example.com", nil), true},
		{"path needing escapes", with(outReq("GET", "/", "h", nil), func(r *http.Request) { r.URL.Path = "/ü a\x01\x7f?#" }), true},
		{"empty path", with(outReq("GET", "/", "h", nil), func(r *http.Request) { r.URL.Path = "" }), true},
		{"double slash path", outReq("GET", "//evil.example/x", "owa.example.com", nil), true},
		{"CTL in query", with(outReq("GET", "/", "h", nil), func(r *http.Request) { r.URL.RawQuery = "a=\x01" }), false},
		{"space in query", with(outReq("GET", "/", "h", nil), func(r *http.Request) { r.URL.RawQuery = "a b" }), true},
		{"IPv6 Host", outReq("GET", "/", "[2001:db8::1]:443", nil), true},
		{"IPv6 zone Host", outReq("GET", "/", "[fe80::1%25eth0]:443", nil), false},
		{"IDN Host", outReq("GET", "/", "bücher.example", nil), false},
		{"invalid Host", outReq("GET", "/", "a b\r\nX: y", nil), false},
		{"empty Host", outReq("GET", "/", "", nil), true},
		{"Host field in map", outReq("GET", "/", "h", http.Header{"Host": {"other"}}), true},
		{"UA empty", outReq("GET", "/", "h", http.Header{"User-Agent": {""}}), true},
		{"UA spaces", outReq("GET", "/", "h", http.Header{"User-Agent": {"  "}}), true},
		{"UA two values", outReq("GET", "/", "h", http.Header{"User-Agent": {"a\r\nb ", "c"}}), true},
		{"UA no values", outReq("GET", "/", "h", http.Header{"User-Agent": {}}), true},
		{"UA missing", with(outReq("GET", "/", "h", nil), func(r *http.Request) { delete(r.Header, "User-Agent") }), false},
		{"values trimmed, breaks", outReq("GET", "/", "h", http.Header{"X-A": {" \t v \r\n", "a\rb\nc", "\r\n", "x\x00y\x7f"}}), true},
		{"invalid names", outReq("GET", "/", "h", http.Header{"Bad Name": {"1"}, "X:Y": {"2"}, "": {"3"}, "Ok": {"4"}, "x\r\nInjected": {"5"}}), true},
		{"non-canonical names", outReq("GET", "/", "h", http.Header{"x-lower": {"1"}, "content-length": {"9"}, "Content-Length": {"9"}, "Transfer-Encoding": {"chunked"}, "Trailer": {"X"}}), true},
		{"Connection-named removed", outReq("GET", "/", "h", filtered(http.Header{"Connection": {"X-Secret, keep-alive"}, "X-Secret": {"s"}, "Keep-Alive": {"1"}, "Te": {"trailers"}})), true},
		{"Connection header kept", outReq("GET", "/", "h", http.Header{"Connection": {"close"}}), true},
		{"many fields", outReq("GET", "/", "h", manyFields(maxPlainHeaders-2)), true},
		{"too many fields", outReq("GET", "/", "h", manyFields(maxPlainHeaders+1)), false},
		{"Close", with(outReq("GET", "/", "h", nil), func(r *http.Request) { r.Close = true }), false},
		{"Upgrade", outReq("GET", "/", "h", http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}), false},
		{"Expect", outReq("POST", "/", "h", http.Header{"Expect": {"100-continue"}}), false},
		{"trailers", with(outReq("GET", "/", "h", nil), func(r *http.Request) { r.Trailer = http.Header{"X-T": nil} }), false},
		{"CONNECT", outReq("CONNECT", "/", "h", nil), false},
		{"empty method", outReq("", "/", "h", nil), false},
		{"opaque URL", with(outReq("GET", "/", "h", nil), func(r *http.Request) { r.URL.Opaque = "//x/y" }), false},
		{"GET with body", with(outReq("GET", "/", "h", nil), func(r *http.Request) {
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader("abc")), 3
		}), false},
		{"chunked body", with(outReq("POST", "/", "h", nil), func(r *http.Request) {
			r.Body, r.ContentLength, r.TransferEncoding = io.NopCloser(strings.NewReader("abc")), -1, []string{"chunked"}
		}), false},
		{"length without body", with(outReq("GET", "/", "h", nil), func(r *http.Request) { r.ContentLength = 5 }), false},
		{"NoBody", with(outReq("GET", "/", "h", nil), func(r *http.Request) { r.Body = http.NoBody }), true},
		{"client trace hooks", with(outReq("GET", "/", "h", nil), func(r *http.Request) {
			*r = *r.WithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{WroteHeaders: func() {}}))
		}), false},
		{"client trace 1xx only", with(outReq("GET", "/", "h", nil), func(r *http.Request) {
			*r = *r.WithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error { return nil }}))
		}), true},
	}
}

func filtered(h http.Header) http.Header {
	removeHopByHop(h)
	return h
}

func manyFields(n int) http.Header {
	h := http.Header{}
	for i := range n {
		h[fmt.Sprintf("X-F%02d", n-i)] = []string{fmt.Sprint(i)}
	}
	return h
}

// wireHeadCases are client requests read by net/http's parser and made
// upstream requests by the relay's own steps (hop-by-hop filtering,
// forwarding headers, member URL).
func wireHeadCases(t *testing.T) []headCase {
	raw := []struct {
		name, req string
		plain     bool
	}{
		{"wire GET", "GET /owa/?ae=Item&t=IPM.Note HTTP/1.1\r\nHost: owa.example.com\r\nUser-Agent: Mozilla/5.0\r\nAccept: text/html\r\nAccept: */*\r\nCookie: a=1\r\nX-Empty:\r\n\r\n", true},
		{"wire absolute-form", "GET http://other.example/x?y HTTP/1.1\r\nHost: owa.example.com\r\nUser-Agent: u\r\n\r\n", true},
		{"wire star", "OPTIONS * HTTP/1.1\r\nHost: owa.example.com\r\nUser-Agent: u\r\n\r\n", true},
		{"wire encoded", "GET /a%2F..%2Fb/%C3%BC%00?q=%0d%0a HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\n\r\n", true},
		{"wire HEAD", "HEAD /x HTTP/1.1\r\nHost: h:443\r\nUser-Agent: u\r\n\r\n", true},
		{"wire Connection names", "GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\nConnection: keep-alive, X-Forwarded-For, Cookie\r\nCookie: c\r\nTE: trailers, gzip\r\n\r\n", true},
		{"wire GET with length", "GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\nContent-Length: 3\r\n\r\nabc", false},
		{"wire POST chunked trailers", "POST / HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", false},
		{"wire POST length 0", "POST / HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\nContent-Length: 0\r\n\r\n", true},
		{"wire HTTP/1.0", "GET / HTTP/1.0\r\nHost: h\r\nUser-Agent: u\r\n\r\n", true},
		{"wire no Host", "GET / HTTP/1.0\r\nUser-Agent: u\r\n\r\n", true},
		{"wire Host with port", "GET / HTTP/1.1\r\nHost: [2001:db8::5]:8443\r\nUser-Agent: u\r\n\r\n", true},
		{"wire Expect", "PUT / HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n", false},
		{"wire Upgrade", "GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", true},
	}
	var out []headCase
	for _, c := range raw {
		in, err := http.ReadRequest(bufio.NewReader(strings.NewReader(c.req)))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		out = append(out, headCase{c.name, relayedRequest(in), c.plain})
	}
	return out
}

// relayedRequest makes the upstream request of a parsed client request
// with the relay's steps (not its site: no member is needed).
func relayedRequest(in *http.Request) *http.Request {
	up := &upstreamRequest{req: *in, url: *in.URL}
	req := &up.req
	req.URL = &up.url
	if in.ContentLength == 0 {
		req.Body = nil
	}
	req.Close, req.Trailer = false, nil
	te := hasToken(in.Header, "Te", "trailers")
	removeHopByHop(in.Header)
	if te {
		in.Header["Te"] = teTrailers
	}
	in.Header["X-Forwarded-For"] = []string{"198.18.0.1"}
	in.Header["X-Forwarded-Proto"] = []string{"https"}
	req.URL.Scheme, req.URL.Host = "https", "198.18.0.10:443"
	return req
}

// randomHeadRequest is a bodiless request of random parts, some of them
// hostile: control bytes, line breaks, non-ASCII, odd Host forms.
func randomHeadRequest(rnd *rand.Rand) *http.Request {
	pick := func(s ...string) string { return s[rnd.IntN(len(s))] }
	noise := func() string {
		const alpha = "aZ09-_.~/%?#:;, \t\r\n\x00\x01\x7f\x80\xc3\xbc\"'[]@!$&()*+="
		b := make([]byte, rnd.IntN(12))
		for i := range b {
			b[i] = alpha[rnd.IntN(len(alpha))]
		}
		return string(b)
	}
	r := outReq(pick("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get", "M-SEARCH", ""),
		pick("/", "/a/b", "*", "/a%2Fb", "/%7e?x=1", "//x"), pick("owa.example.com", "h:443", "[2001:db8::1]", "", "a b", "x%y", "ü", noise()), nil)
	if rnd.IntN(4) == 0 {
		r.URL.Path = noise()
	}
	if rnd.IntN(4) == 0 {
		r.URL.RawQuery = noise()
	}
	r.URL.ForceQuery = rnd.IntN(8) == 0
	for range rnd.IntN(10) {
		k := pick("Accept", "Cookie", "X-Forwarded-For", "x-lower", "Bad Name", "Content-Length", "Transfer-Encoding", "Trailer", "Host", "Connection", "User-Agent", noise())
		for range rnd.IntN(3) {
			r.Header[k] = append(r.Header[k], pick("", " ", "v", "a, b", noise()))
		}
	}
	if rnd.IntN(10) == 0 {
		delete(r.Header, "User-Agent")
	}
	return r
}

// FuzzRequestHead: for any method, target, Host and fields, the head
// written is Request.Write's.
func FuzzRequestHead(f *testing.F) {
	f.Add("GET", "/a%2Fb", "x=1", "owa.example.com", "Cookie", "a=1", "Mozilla/5.0")
	f.Add("POST", "*", "", "[2001:db8::1]:443", "Bad Name", " v\r\n", "")
	f.Fuzz(func(t *testing.T, method, path, query, host, key, value, ua string) {
		r := outReq(method, "/", host, http.Header{key: {value, ""}, "User-Agent": {ua}})
		r.URL.Path, r.URL.RawQuery = path, query
		got, gotErr := headBytes(r, writeRequestHead)
		want, wantErr := headBytes(r, func(bw *bufio.Writer, r *http.Request) error { return r.Write(bw) })
		if (gotErr != nil) != (wantErr != nil) || got != want {
			t.Fatalf("head %q (error %v), Request.Write's %q (error %v)", got, gotErr, want, wantErr)
		}
	})
}
