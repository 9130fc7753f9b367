package l7

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// hostileLogged is a request whose logged fields a client chooses: the
// raw request target and User-Agent, and the path and query they are
// logged as (before truncation).
type hostileLogged struct {
	name, target, ua string
	path, query      string
}

func hostileLoggedRequests() []hostileLogged {
	longPath := strings.Repeat("%E2%80%A8", 400) // 1200 bytes decoded: cut inside a rune
	longUA := strings.Repeat("€", 200)           // 600 bytes: cut inside a rune
	return []hostileLogged{
		{"quote backslash", `/a%22b%5Cc/"x"`, `ua "quoted" \back\slash`, `/a"b\c/"x"`, ""},
		{"line breaks", "/l%0Ainjected%0D%0A{%22time%22:%22x%22}", "ua", "/l\ninjected\r\n{\"time\":\"x\"}", ""},
		{"control bytes", "/c%00%01%1F%7F%09", "a\tb", "/c\x00\x01\x1f\x7f\t", ""},
		{"line separators", "/s%E2%80%A8%E2%80%A9", "ua \xe2\x80\xa8\xe2\x80\xa9", "/s\u2028\u2029", ""},
		{"invalid UTF-8", "/u%FF%FE%C3", "ua \xff\xfe\xc3", "/u\xff\xfe\xc3", ""},
		{"raw high bytes", "/r\xff\xc3\xbc?q=\xff\"\\", "ü€😀", "/r\xff\xc3\xbc", "q=\xff\"\\"},
		{"query escapes", "/q?x=%0A%22&y=\"</script>", "<script>&amp;", "/q", "x=%0A%22&y=\"</script>"},
		{"long", "/" + longPath, longUA, "/" + strings.Repeat("\u2028", 400), ""},
		{"surrogate", "/%ED%A0%80", "\xed\xa0\x80", "/\xed\xa0\x80", ""},
	}
}

// TestAccessLogHostileLinesMatchSlog: requests with hostile paths,
// queries and User-Agents, over TLS, each get one access log line, which
// decodes with encoding/json to the values the request carried and is
// byte for byte the line slog's JSON handler writes for the same record:
// nothing a client sends splits a line or adds a field.
func TestAccessLogHostileLinesMatchSlog(t *testing.T) {
	m := startRawMember(t, false)
	e := rawEnv(t, m, func(s *Site) { s.Skype, s.WindowsAuth, s.StrictPaths = false, false, false })
	cases := hostileLoggedRequests()
	for i, c := range cases {
		req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: webext.example.com\r\nUser-Agent: %s\r\nX-Case: %d\r\n\r\n", c.target, c.ua, i)
		if _, _, err := e.dialTLS("webext.example.com").send(req); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	lines := accessLines(t, e, len(cases))
	for i, c := range cases {
		fields, line := findLine(t, lines, "user_agent", truncate(c.ua, 512))
		if fields == nil {
			t.Errorf("%s: no line with its User-Agent", c.name)
			continue
		}
		want := map[string]string{"path": truncate(c.path, 1024), "query": truncate(c.query, 1024), "user_agent": truncate(c.ua, 512)}
		for k, v := range want {
			if fields[k] != string([]rune(v)) {
				t.Errorf("%s: %s logged as %q, want %q", c.name, k, fields[k], v)
			}
		}
		if slogLine := slogAccessLine(t, line, want); slogLine != line {
			t.Errorf("case %d %s: line differs from slog's:\ngot  %s\nwant %s", i, c.name, line, slogLine)
		}
	}
}

// accessLines waits for n access log lines and returns them; each must
// end with a newline and decode as one JSON object.
func accessLines(t *testing.T, e *env, n int) []string {
	t.Helper()
	var all string
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if all = e.access.String(); strings.Count(all, "\n") >= n {
			break
		}
	}
	if !strings.HasSuffix(all, "\n") {
		t.Fatalf("access log does not end with a newline: %q", all)
	}
	lines := strings.Split(strings.TrimSuffix(all, "\n"), "\n")
	if len(lines) != n {
		t.Errorf("%d access log lines for %d requests", len(lines), n)
	}
	for _, l := range lines {
		d := json.NewDecoder(strings.NewReader(l))
		var v map[string]any
		if err := d.Decode(&v); err != nil || d.More() {
			t.Fatalf("access log line is not one JSON object (%v): %s", err, l)
		}
	}
	return lines
}

// findLine returns the decoded string fields and the text of the first
// line whose field key decodes to v (invalid UTF-8 bytes as U+FFFD).
func findLine(t *testing.T, lines []string, key, v string) (map[string]string, string) {
	for _, l := range lines {
		var all map[string]any
		json.Unmarshal([]byte(l), &all)
		if all[key] != string([]rune(v)) {
			continue
		}
		out := map[string]string{}
		for k, x := range all {
			if s, ok := x.(string); ok {
				out[k] = s
			}
		}
		return out, l
	}
	return nil, ""
}

// slogAccessLine is the line slog's JSON handler writes for the record
// line holds: its time, then its fields in order, with the strings of
// orig (raw values, invalid UTF-8 kept) in place of their decoded form.
func slogAccessLine(t *testing.T, line string, orig map[string]string) string {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(line))
	d.UseNumber()
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("line does not open an object: %s", line)
	}
	var when time.Time
	var attrs []slog.Attr
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("read key: %v: %s", err, line)
		}
		key := tok.(string)
		val, err := d.Token()
		if err != nil {
			t.Fatalf("read %s: %v: %s", key, err, line)
		}
		switch v := val.(type) {
		case string:
			switch key {
			case "time":
				if when, err = time.Parse(time.RFC3339Nano, v); err != nil {
					t.Fatalf("time %q: %v", v, err)
				}
			case "level", "msg":
			default:
				if o, ok := orig[key]; ok {
					v = o
				}
				attrs = append(attrs, slog.String(key, v))
			}
		case bool:
			attrs = append(attrs, slog.Bool(key, v))
		case json.Number:
			if strings.ContainsAny(string(v), ".eE") {
				f, _ := v.Float64()
				attrs = append(attrs, slog.Float64(key, f))
			} else {
				n, _ := v.Int64()
				attrs = append(attrs, slog.Int64(key, n))
			}
		default:
			t.Fatalf("field %s of unexpected type %T: %s", key, val, line)
		}
	}
	var b bytes.Buffer
	r := slog.NewRecord(when, slog.LevelInfo, "request", 0)
	r.AddAttrs(attrs...)
	slog.NewJSONHandler(&b, nil).Handle(context.Background(), r)
	return strings.TrimSuffix(b.String(), "\n")
}

// TestPooledBuffersNoCrossTalk: concurrent clients on keep-alive
// connections send requests whose path, query, User-Agent and fields
// all carry the request's own mark, with heads of many sizes (some past
// the field bound of the plain head writer, some past the write
// buffer). Every head a member gets and every access log line carries
// one request's mark only: no pooled buffer leaks one request's bytes
// into another's head or line.
func TestPooledBuffersNoCrossTalk(t *testing.T) {
	m := startRawMember(t, false)
	e := rawEnv(t, m, func(s *Site) { s.Skype, s.WindowsAuth, s.StrictPaths = false, false, false })
	const clients, each = 6, 30
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for g := range clients {
		rc := e.dialTLS("webext.example.com")
		wg.Go(func() {
			for i := range each {
				mark := fmt.Sprintf("%d-%d", g, i)
				res, body, err := rc.send(markedRequest(mark, (g*7+i*5)%(maxPlainHeaders+10), (g*977+i*1231)%40000))
				if err != nil || res.StatusCode != 200 || body != "GET /m/"+mark+"?q="+mark+" HTTP/1.1" {
					errs <- fmt.Errorf("request %s: %v %q", mark, err, body)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	_, lines := m.received()
	m.mu.Lock()
	heads := append([]string(nil), m.heads...)
	m.mu.Unlock()
	if len(heads) != clients*each || len(lines) != clients*each {
		t.Errorf("the member got %d requests, want %d", len(heads), clients*each)
	}
	for _, h := range heads {
		checkMarkedHead(t, h)
	}
	for _, l := range accessLines(t, e, clients*each) {
		var v struct {
			Path, Query string
			UserAgent   string `json:"user_agent"`
		}
		json.Unmarshal([]byte(l), &v)
		mark := strings.TrimPrefix(v.Path, "/m/")
		if v.Query != "q="+mark || v.UserAgent != "ua-"+mark {
			t.Errorf("access log line mixes requests: %s", l)
		}
	}
}

// checkMarkedHead checks that every line of a head a member got from
// markedRequest carries the mark of its request line, and that it has
// all its fields.
func checkMarkedHead(t *testing.T, head string) {
	t.Helper()
	lines := strings.Split(head, "\r\n")
	var g, i int
	if _, err := fmt.Sscanf(lines[0], "GET /m/%d-%d?", &g, &i); err != nil {
		t.Errorf("request line %q: %v", lines[0], err)
		return
	}
	mark := fmt.Sprintf("%d-%d", g, i)
	fields := 0
	for _, l := range lines[1:] {
		name, v, _ := strings.Cut(l, ": ")
		numbered := len(name) == 5 && strings.HasPrefix(name, "X-F")
		switch {
		case name == "User-Agent" && v != "ua-"+mark,
			name == "X-Pad" && !strings.HasSuffix(v, "p"+mark) && v != mark,
			numbered && v != mark:
			t.Errorf("request %s: field %.100q", mark, l)
		case numbered:
			fields++
		}
	}
	if want := (g*7 + i*5) % (maxPlainHeaders + 10); fields != want {
		t.Errorf("request %s: %d fields X-F, want %d", mark, fields, want)
	}
}

// markedRequest is a GET whose target, User-Agent and fields carry mark,
// with fields more fields and a pad of padLen bytes.
func markedRequest(mark string, fields, padLen int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "GET /m/%s?q=%s HTTP/1.1\r\nHost: webext.example.com\r\nUser-Agent: ua-%s\r\nX-Pad: %s%s\r\n",
		mark, mark, mark, strings.Repeat("p", padLen), mark)
	for f := range fields {
		fmt.Fprintf(&b, "X-F%02d: %s\r\n", f, mark)
	}
	b.WriteString("\r\n")
	return b.String()
}

// TestAccessLogHostileH2LinesMatchSlog: HTTP/2 lets a client put in the
// logged method and Host bytes HTTP/1.1 cannot carry (quotes, backslash,
// spaces, non-ASCII, U+2028); each request still gets one line, the
// bytes slog's JSON handler writes.
func TestAccessLogHostileH2LinesMatchSlog(t *testing.T) {
	m := startRawMember(t, false)
	e := rawEnv(t, m, func(s *Site) { s.Skype, s.WindowsAuth, s.StrictPaths = false, false, false })
	h := e.dialH2(t, "webext.example.com")
	cases := []struct{ method, host, path, ua string }{
		{`GET"x\`, "webext.example.com", "/m", "h2-1"},
		{"G\xffT\u2028", "webext.example.com", "/m", "h2-2"},
		{"GET", "webext.example.com\",\"status\":1,\"x\":\"", "/h", "h2-3"},
		{"GET", "webext.example.com\xff\xe2\x80\xa9 \\", "/h", "h2-4"},
		{"GET", "webext.example.com", "/p%0a%22?q=\"\\\xff", "h2-5\" \\ \xe2\x80\xa8"},
	}
	for i, c := range cases {
		st, code := h.sendH2(uint32(2*i+1), ":method", c.method, ":scheme", "https", ":authority", c.host, ":path", c.path, "user-agent", c.ua)
		if code != 0 {
			t.Fatalf("%q: stream ended with %v", c.ua, code)
		}
		t.Logf("%q %q %q: %s", c.method, c.host, c.path, st)
	}
	lines := accessLines(t, e, len(cases))
	for _, c := range cases {
		fields, line := findLine(t, lines, "user_agent", c.ua)
		if fields == nil {
			t.Errorf("%q: no line with its User-Agent", c.ua)
			continue
		}
		path, query, _ := strings.Cut(c.path, "?")
		if path == "/p%0a%22" {
			path = "/p\n\""
		}
		orig := map[string]string{"method": c.method, "host": c.host, "path": path, "query": query, "user_agent": c.ua}
		for k, v := range orig {
			if fields[k] != string([]rune(v)) {
				t.Errorf("%q: %s logged as %q, want %q", c.ua, k, fields[k], v)
			}
		}
		if want := slogAccessLine(t, line, orig); want != line {
			t.Errorf("%q: line differs from slog's:\ngot  %s\nwant %s", c.ua, line, want)
		}
	}
}

// TestAccessLogHostileSNILine: the SNI a client sends (any bytes the TLS
// stack takes: quotes, backslash, non-ASCII, a line break) is logged as
// slog's JSON handler writes it, on one line.
func TestAccessLogHostileSNILine(t *testing.T) {
	m := startRawMember(t, false)
	e := rawEnv(t, m, nil)
	snis := []string{`a"b\c`, "x\xff\xe2\x80\xa8", "webext.example.com\n{\"sni\":\"x\"}"}
	for i, sni := range snis {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.httpsAddr,
			&tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatalf("%q: %v", sni, err)
		}
		rc := &rawTLS{t: t, c: c, r: bufio.NewReader(c)}
		if _, _, err := rc.send(fmt.Sprintf("GET / HTTP/1.1\r\nHost: webext.example.com\r\nUser-Agent: sni-%d\r\n\r\n", i)); err != nil {
			t.Fatalf("%q: %v", sni, err)
		}
		c.Close()
	}
	lines := accessLines(t, e, len(snis))
	for i, sni := range snis {
		fields, line := findLine(t, lines, "user_agent", fmt.Sprintf("sni-%d", i))
		if fields == nil || fields["sni"] != string([]rune(sni)) {
			t.Errorf("%q: logged as %q", sni, fields["sni"])
			continue
		}
		if want := slogAccessLine(t, line, map[string]string{"sni": sni}); want != line {
			t.Errorf("%q: line differs from slog's:\ngot  %s\nwant %s", sni, line, want)
		}
	}
}
