package l7

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// hostileHead is a client request of bytes a net/http server may accept
// while Request.Write would sanitise or refuse them; {H} is the Host.
type hostileHead struct{ name, req string }

func hostileHeads() []hostileHead {
	long := strings.Repeat("v\xff", 3000)
	many := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "X-M%02d: %d\r\n", n-i, i)
		}
		return b.String()
	}
	const ua = "User-Agent: ua\r\n"
	return []hostileHead{
		{"obs-fold", "GET /fold HTTP/1.1\r\nHost: {H}\r\n" + ua + "X-Fold: a\r\n b\r\n\tc\r\n\r\n"},
		{"bare LF", "GET /lf HTTP/1.1\nHost: {H}\nUser-Agent: ua\nX-A: 1\n\n"},
		{"bare CR in value", "GET /cr HTTP/1.1\r\nHost: {H}\r\n" + ua + "X-A: a\rGET /smuggled HTTP/1.1\r\n\r\n"},
		{"NUL in value", "GET /nul HTTP/1.1\r\nHost: {H}\r\n" + ua + "X-A: a\x00b\r\n\r\n"},
		{"high bytes in value", "GET /high HTTP/1.1\r\nHost: {H}\r\n" + ua + "X-A: \x80\xff\xfe \xe2\x80\xa8\r\n\r\n"},
		{"DEL and tab in value", "GET /del HTTP/1.1\r\nHost: {H}\r\n" + ua + "X-A: \t a\x7f\tb \t\r\n\r\n"},
		{"high bytes in name", "GET /hname HTTP/1.1\r\nHost: {H}\r\n" + ua + "X-\xff: 1\r\n\r\n"},
		{"empty name", "GET /ename HTTP/1.1\r\nHost: {H}\r\n" + ua + ": x\r\n\r\n"},
		{"space before colon", "GET /sp HTTP/1.1\r\nHost: {H}\r\n" + ua + "Content-Length : 5\r\n\r\n"},
		{"high bytes in path", "GET /p\xff\xfe/\xe2\x80\xa8 HTTP/1.1\r\nHost: {H}\r\n" + ua + "\r\n"},
		{"high bytes in query", "GET /q?\xff=\xfe HTTP/1.1\r\nHost: {H}\r\n" + ua + "\r\n"},
		{"encoded path", "GET /a%2Fb/%2e%2e/%00/%0d%0a%20%25 HTTP/1.1\r\nHost: {H}\r\n" + ua + "\r\n"},
		{"encoded query", "GET /eq?a=%00%0d%0aX:%20y&b=%zz HTTP/1.1\r\nHost: {H}\r\n" + ua + "\r\n"},
		{"Host with port", "GET /port HTTP/1.1\r\nHost: {H}:443\r\n" + ua + "\r\n"},
		{"Host with empty port", "GET /eport HTTP/1.1\r\nHost: {H}:\r\n" + ua + "\r\n"},
		{"Host with userinfo", "GET /ui HTTP/1.1\r\nHost: u:p@{H}\r\n" + ua + "\r\n"},
		{"Host IPv6", "GET /v6 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n" + ua + "\r\n"},
		{"Host IPv6 zone", "GET /zone HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n" + ua + "\r\n"},
		{"Host trailing dot", "GET /dot HTTP/1.1\r\nHost: {H}.\r\n" + ua + "\r\n"},
		{"duplicate Host", "GET /dup HTTP/1.1\r\nHost: {H}\r\nHost: other.example\r\n" + ua + "\r\n"},
		{"absolute-form", "GET https://{H}/abs?x=1 HTTP/1.1\r\nHost: other.example\r\n" + ua + "\r\n"},
		{"absolute-form userinfo", "GET https://u:p@{H}/absui HTTP/1.1\r\nHost: {H}\r\n" + ua + "\r\n"},
		{"absolute-form no path", "GET https://{H} HTTP/1.1\r\nHost: {H}\r\n" + ua + "\r\n"},
		{"OPTIONS star", "OPTIONS * HTTP/1.1\r\nHost: {H}\r\n" + ua + "\r\n"},
		{"GET star", "GET * HTTP/1.1\r\nHost: {H}\r\n" + ua + "\r\n"},
		{"CONNECT", "CONNECT {H}:443 HTTP/1.1\r\nHost: {H}:443\r\n" + ua + "\r\n"},
		{"odd method", "M-SEARCH /ms HTTP/1.1\r\nHost: {H}\r\n" + ua + "\r\n"},
		{"long value", "GET /long HTTP/1.1\r\nHost: {H}\r\n" + ua + "X-Long: " + long + "\r\n\r\n"},
		{"long path", "GET /" + strings.Repeat("a%2F", 1500) + " HTTP/1.1\r\nHost: {H}\r\n" + ua + "\r\n"},
		{"fields at the bound", "GET /many47 HTTP/1.1\r\nHost: {H}\r\n" + ua + many(maxPlainHeaders-1) + "\r\n"},
		{"fields past the bound", "GET /many60 HTTP/1.1\r\nHost: {H}\r\n" + ua + many(maxPlainHeaders+12) + "\r\n"},
		{"GET length 0", "GET /g0 HTTP/1.1\r\nHost: {H}\r\n" + ua + "Content-Length: 0\r\n\r\n"},
		{"HEAD length 0", "HEAD /h0 HTTP/1.1\r\nHost: {H}\r\n" + ua + "Content-Length: 0\r\n\r\n"},
		{"DELETE length 0", "DELETE /d0 HTTP/1.1\r\nHost: {H}\r\n" + ua + "Content-Length: 0\r\n\r\n"},
		{"OPTIONS length 0", "OPTIONS /o0 HTTP/1.1\r\nHost: {H}\r\n" + ua + "Content-Length: 0\r\n\r\n"},
		{"DELETE no length", "DELETE /dn HTTP/1.1\r\nHost: {H}\r\n" + ua + "\r\n"},
		{"POST no length", "POST /pn HTTP/1.1\r\nHost: {H}\r\n" + ua + "\r\n"},
		{"POST length 0", "POST /p0 HTTP/1.1\r\nHost: {H}\r\n" + ua + "Content-Length: 0\r\n\r\n"},
		{"length 00", "GET /l00 HTTP/1.1\r\nHost: {H}\r\n" + ua + "Content-Length: 00\r\n\r\n"},
		{"length twice", "GET /l2 HTTP/1.1\r\nHost: {H}\r\n" + ua + "Content-Length: 0\r\nContent-Length: 0\r\n\r\n"},
		{"chunked GET", "GET /tc HTTP/1.1\r\nHost: {H}\r\n" + ua + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"chunked GET, length too", "GET /tcl HTTP/1.1\r\nHost: {H}\r\n" + ua + "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n"},
		{"identity TE", "GET /ti HTTP/1.1\r\nHost: {H}\r\n" + ua + "Transfer-Encoding: identity\r\n\r\n"},
		{"Trailer on GET", "GET /tr HTTP/1.1\r\nHost: {H}\r\n" + ua + "Trailer: X-T, Content-Length\r\n\r\n"},
		{"Expect on GET", "GET /ex HTTP/1.1\r\nHost: {H}\r\n" + ua + "Expect: 100-continue\r\n\r\n"},
		{"Expect odd", "GET /ex2 HTTP/1.1\r\nHost: {H}\r\n" + ua + "Expect: x\r\n\r\n"},
		{"Upgrade h2c", "GET /up HTTP/1.1\r\nHost: {H}\r\n" + ua + "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"},
		{"Upgrade websocket", "GET /ws HTTP/1.1\r\nHost: {H}\r\n" + ua + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"},
		{"Connection names", "GET /cn HTTP/1.1\r\nHost: {H}\r\n" + ua + "Connection: X-Secret, Cookie, Host, Content-Length, Transfer-Encoding\r\nX-Secret: s\r\nCookie: c\r\n\r\n"},
		{"Connection names UA", "GET /cua HTTP/1.1\r\nHost: {H}\r\n" + ua + "Connection: User-Agent\r\n\r\n"},
		{"Connection close", "GET /cc HTTP/1.1\r\nHost: {H}\r\n" + ua + "Connection: close\r\n\r\n"},
		{"TE", "GET /te HTTP/1.1\r\nHost: {H}\r\n" + ua + "TE: trailers, gzip\r\n\r\n"},
		{"TE without trailers", "GET /te2 HTTP/1.1\r\nHost: {H}\r\n" + ua + "TE: gzip;q=1\r\n\r\n"},
		{"no User-Agent", "GET /noua HTTP/1.1\r\nHost: {H}\r\n\r\n"},
		{"empty User-Agent", "GET /eua HTTP/1.1\r\nHost: {H}\r\nUser-Agent:\r\n\r\n"},
		{"two User-Agents", "GET /2ua HTTP/1.1\r\nHost: {H}\r\nUser-Agent: a\r\nUser-Agent: b\r\n\r\n"},
		{"lower-case names", "GET /lc HTTP/1.1\r\nhost: {H}\r\nuser-agent: ua\r\ncontent-length: 0\r\nx-a: 1\r\n\r\n"},
		{"HTTP/1.0 no Host", "GET /h10 HTTP/1.0\r\n" + ua + "\r\n"},
		{"forwarding from a client", "GET /fwd HTTP/1.1\r\nHost: {H}\r\n" + ua + "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Host: evil\r\nForwarded: for=1.2.3.4\r\n\r\n"},
	}
}

// TestHeadAttackServerParsedMatchesRequestWrite: every hostile request a
// net/http server hands to its handler, made an upstream request by the
// relay's steps, is written to a member with the bytes Request.Write
// writes.
func TestHeadAttackServerParsedMatchesRequestWrite(t *testing.T) {
	type result struct{ got, want, plain string }
	results := make(chan result, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req := relayedRequest(r)
		got, gotErr := headBytes(req, writeRequestHead)
		want, wantErr := headBytes(req, func(bw *bufio.Writer, r *http.Request) error { return r.Write(bw) })
		_, _, plain := plainHost(req)
		results <- result{fmt.Sprintf("%q %v", got, gotErr), fmt.Sprintf("%q %v", want, wantErr), fmt.Sprint(plain)}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	served, plain := 0, 0
	for _, c := range hostileHeads() {
		res, err := rawExchange(ln.Addr().String(), strings.ReplaceAll(c.req, "{H}", "webext.example.com"))
		select {
		case r := <-results:
			served++
			if r.plain == "true" {
				plain++
			}
			if r.got != r.want {
				t.Errorf("%s: head differs from Request.Write's:\ngot  %s\nwant %s", c.name, r.got, r.want)
			}
		default:
			t.Logf("%s: not served (%s %v)", c.name, res, err)
		}
	}
	if served < 40 || plain < 25 {
		t.Errorf("only %d of %d hostile requests served, %d written by the plain head", served, len(hostileHeads()), plain)
	}
}

// send writes s as it is and reads one response to s's method.
func (rc *rawTLS) send(s string) (*http.Response, string, error) {
	rc.c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(rc.c, s); err != nil {
		return nil, "", err
	}
	method, _, _ := strings.Cut(s, " ")
	res, err := http.ReadResponse(rc.r, &http.Request{Method: method})
	if err != nil {
		return nil, "", err
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return res, string(b), nil
}

// rawExchange sends s on a new connection to addr and returns the status
// line of the answer.
func rawExchange(addr, s string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, s); err != nil {
		return "", err
	}
	method, _, _ := strings.Cut(s, " ")
	res, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
	if err != nil {
		return "", err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.Status, nil
}

// TestHeadAttackMemberSeesRequestWriteHeads: hostile requests through the
// proxy, over TLS, to a member that records bytes. Every request the
// member answered is one the client sent, framed as the client framed
// it, and every head the member got is in Request.Write's form (CRLF
// lines, sorted fields, trimmed values): Request.Write of the request the
// head parses to writes the same bytes.
func TestHeadAttackMemberSeesRequestWriteHeads(t *testing.T) {
	for _, lenient := range []bool{false, true} {
		t.Run(fmt.Sprintf("lenient=%v", lenient), func(t *testing.T) {
			m := startRawMember(t, false)
			e := rawEnv(t, m, func(s *Site) {
				if lenient {
					s.Skype, s.WindowsAuth, s.StrictPaths = false, false, false
				}
			})
			reached := 0
			for _, c := range hostileHeads() {
				res, body, err := e.dialTLS("webext.example.com").send(strings.ReplaceAll(c.req, "{H}", "webext.example.com"))
				if err != nil {
					t.Logf("%s: %v", c.name, err)
					continue
				}
				_, lines := m.received()
				if res.StatusCode == 200 && len(lines) > 0 && (body == lines[len(lines)-1] || strings.HasPrefix(c.req, "HEAD ")) {
					reached++
				} else {
					t.Logf("%s: %d %.60q", c.name, res.StatusCode, body)
				}
			}
			data, lines := m.received()
			if len(lines) != reached {
				t.Errorf("the member framed %d requests, the clients were answered %d: %q", len(lines), reached, lines)
			}
			if reached < 35 {
				t.Errorf("only %d of %d hostile requests reached the member", reached, len(hostileHeads()))
			}
			checkRequestWriteForm(t, data)
		})
	}
}

// checkRequestWriteForm checks that data is a series of requests whose
// heads are each what Request.Write writes for the request the head
// parses to (bodies, framed by the head, are skipped).
func checkRequestWriteForm(t *testing.T, data string) {
	t.Helper()
	for n := 0; data != ""; n++ {
		end := strings.Index(data, "\r\n\r\n")
		if end < 0 {
			t.Fatalf("request %d: no head end in %q", n, data)
		}
		head := data[:end+4]
		data = data[end+4:]
		if strings.Count(head, "\r") != strings.Count(head, "\r\n") || strings.Count(head, "\n") != strings.Count(head, "\r\n") {
			t.Errorf("request %d: bare CR or LF in the head %q", n, head)
		}
		want, cl, chunked, err := requestWriteForm(head)
		if err != nil {
			t.Errorf("request %d: head %q: %v", n, head, err)
		} else if want != head {
			t.Errorf("request %d: head not in Request.Write's form:\ngot  %q\nwant %q", n, head, want)
		}
		r := bufio.NewReader(strings.NewReader(data))
		if err := readRawBody(r, cl, chunked); err != nil {
			t.Fatalf("request %d: body: %v", n, err)
		}
		rest, _ := io.ReadAll(r)
		data = string(rest)
	}
}

// requestWriteForm parses a head and returns the head Request.Write
// writes for the same request, and the body's framing.
func requestWriteForm(head string) (string, int64, bool, error) {
	in, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
	if err != nil {
		return "", 0, false, err
	}
	h := in.Header
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""}
	}
	u := &url.URL{Path: in.URL.Path, RawPath: in.URL.RawPath, RawQuery: in.URL.RawQuery, ForceQuery: in.URL.ForceQuery}
	out := &http.Request{Method: in.Method, URL: u, Host: in.Host, Header: h, ContentLength: in.ContentLength,
		TransferEncoding: in.TransferEncoding}
	chunked := len(in.TransferEncoding) > 0
	if in.ContentLength != 0 || chunked {
		out.Body = io.NopCloser(strings.NewReader(strings.Repeat("x", max(int(in.ContentLength), 1))))
	}
	var b strings.Builder
	if err := out.Write(&b); err != nil {
		return "", 0, false, err
	}
	s := b.String()
	return s[:strings.Index(s, "\r\n\r\n")+4], max(in.ContentLength, 0), chunked, nil
}

// HTTP/2 lets a :method and a :path carry bytes an HTTP/1.1 request line
// cannot (net/http's server checks neither for a token or a space). A
// method with a space ("GET /cscp/x" with :path /q) or a query with one
// ("/q?a HTTP/1.0 b") would reach the member as a request line of more
// than three parts, which a member splitting at the first spaces reads
// as another target than the one the deny rules saw, or another version.
// The proxy refuses them with 400, on sites with and without strict
// paths, and the member gets none of them; the access log still gets a
// line for each, as JSON.
func TestH2RequestLineNotForgedToMember(t *testing.T) {
	for _, strict := range []bool{true, false} {
		t.Run(fmt.Sprintf("strict=%v", strict), func(t *testing.T) {
			m := startRawMember(t, false)
			e := rawEnv(t, m, func(s *Site) {
				s.Skype, s.WindowsAuth, s.StrictPaths = false, false, strict
			})
			h := e.dialH2(t, "webext.example.com")
			id := uint32(1)
			send := func(method, path string) string {
				st, code := h.sendH2(id, ":method", method, ":scheme", "https", ":authority", "webext.example.com", ":path", path, "user-agent", "h2")
				id += 2
				if code != 0 {
					return code.String()
				}
				return st
			}
			for _, c := range [][2]string{{"GET /cscp/x", "/q"}, {"GET\t/cscp/x", "/q"}, {`GET"x`, "/q"}, {"G\xffT", "/q"},
				{"GET", "/q?a HTTP/1.0 b"}, {"GET", "/q?a\x0bb"}, {"", "/q"}} {
				if st := send(c[0], c[1]); st != "400" && st != "PROTOCOL_ERROR" {
					t.Errorf(":method %q :path %q: %s, want 400", c[0], c[1], st)
				}
			}
			if st := send("get", "/ok?a=b"); st != "200" {
				t.Errorf("a valid request: %s", st)
			}
			if _, lines := m.received(); len(lines) != 1 || lines[0] != "get /ok?a=b HTTP/1.1" {
				t.Errorf("the member got %q, want only the valid request", lines)
			}
			accessLines(t, e, 6) // net/http refuses the empty method and the control byte itself
		})
	}
}

// An HTTP/2 :authority that is no valid Host field (a port with a space,
// a quote, a tab or a non-ASCII byte; net/http's HTTP/1.1 server refuses
// such a Host itself) still names a site, since only the name before the
// colon routes; forwarded, Request.Write would send the member an empty
// Host and the raw value in X-Forwarded-Host. The proxy refuses them
// with 400; a valid :authority reaches the member as its Host.
func TestH2InvalidAuthorityRefused(t *testing.T) {
	m := startRawMember(t, false)
	e := rawEnv(t, m, func(s *Site) { s.Skype, s.WindowsAuth, s.StrictPaths = false, false, false })
	h := e.dialH2(t, "webext.example.com")
	id := uint32(1)
	send := func(authority string) string {
		st, code := h.sendH2(id, ":method", "GET", ":scheme", "https", ":authority", authority, ":path", "/a", "user-agent", "h2")
		id += 2
		if code != 0 {
			return code.String()
		}
		return st
	}
	for _, a := range []string{"webext.example.com:443 x", `webext.example.com:a"b`, "webext.example.com:\xff", "webext.example.com:443\t", "webext.example.com\xc3\xbc"} {
		if st := send(a); st != "400" && st != "404" {
			t.Errorf(":authority %q: %s, want 400", a, st)
		}
	}
	for _, a := range []string{"webext.example.com:443", "Webext.Example.Com."} {
		if st := send(a); st != "200" {
			t.Errorf(":authority %q: %s, want 200", a, st)
		}
		if head := m.lastHead(); !strings.Contains(head, "\r\nHost: "+a+"\r\n") {
			t.Errorf(":authority %q reached the member as\n%s", a, head)
		}
	}
	if _, lines := m.received(); len(lines) != 2 {
		t.Errorf("the member got %d requests, want the 2 valid ones", len(lines))
	}
}
