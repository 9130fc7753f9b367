package l7

import (
	"bufio"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// desyncSeq is a request sequence sent step by step on one connection
// (each step's response read before the next is written), the statuses
// the client must get (0: no response, the connection is closed) and the
// request lines the member must receive, no more.
type desyncSeq struct {
	name   string
	steps  []string
	status []int
	meant  []string
}

// desyncSequences are sequences that used to switch the framing guard off
// or shift its count, each followed by a request with both Content-Length
// and Transfer-Encoding carrying a smuggled request, and again by one with
// an obsolete line folding.
func desyncSequences(host string) []desyncSeq {
	h := "Host: " + host + "\r\n"
	clte := "POST /echo HTTP/1.1\r\n" + h + "Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" +
		"GET /smuggled HTTP/1.1\r\n" + h + "\r\n"
	fold := "GET /fold HTTP/1.1\r\n" + h + "X-Folded: a\r\n b\r\n\r\n"
	upgrade := "GET /ws HTTP/1.1\r\n" + h + "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
	te10 := "POST /te10 HTTP/1.0\r\n" + h + "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
	options := "OPTIONS * HTTP/1.1\r\n" + h + "\r\n"
	var out []desyncSeq
	for _, last := range []struct{ name, req string }{{"CL+TE", clte}, {"obs-fold", fold}} {
		out = append(out,
			desyncSeq{"Upgrade then " + last.name, []string{upgrade, last.req}, []int{200, 400}, []string{"GET /ws HTTP/1.1"}},
			desyncSeq{"HTTP/1.0+TE then " + last.name, []string{te10, last.req}, []int{400, 0}, nil},
			desyncSeq{"OPTIONS * twice then " + last.name, []string{options, options, last.req}, []int{200, 200, 400}, nil},
		)
	}
	return out
}

// run sends the steps and returns the statuses.
func (seq desyncSeq) run(c *rawTLS) []int { return seq.runFor(c, 10*time.Second) }

// runFor is run with a time limit per step (-1: no response in time).
func (seq desyncSeq) runFor(c *rawTLS, limit time.Duration) []int {
	var got []int
	closed := false
	for _, step := range seq.steps {
		if closed {
			got = append(got, 0)
			continue
		}
		c.c.SetDeadline(time.Now().Add(limit))
		if _, err := io.WriteString(c.c, step); err != nil {
			closed = true
			got = append(got, 0)
			continue
		}
		res, err := http.ReadResponse(c.r, &http.Request{Method: "GET"})
		if err != nil {
			closed = true
			if isTimeout(err) {
				got = append(got, -1)
			} else {
				got = append(got, 0)
			}
			continue
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		got = append(got, res.StatusCode)
	}
	return got
}

// checkDesync runs the sequences over TLS and plain TCP against a raw member.
func checkDesync(t *testing.T, e *env, m *rawMember) {
	for _, proto := range []string{"tls", "tcp"} {
		for _, seq := range desyncSequences("lyncdiscover.example.com") {
			t.Run(proto+"/"+seq.name, func(t *testing.T) {
				var c *rawTLS
				if proto == "tls" {
					c = e.dialTLS("lyncdiscover.example.com")
				} else {
					c = e.dialPlain()
				}
				_, before := m.received()
				got := seq.run(c)
				if !slices.Equal(got, seq.status) {
					t.Errorf("statuses %v, want %v", got, seq.status)
				}
				if !closedAfter(c.c, c.r) {
					t.Error("connection left open after a refused request")
				}
				data, lines := m.received()
				if lines = lines[len(before):]; !slices.Equal(lines, seq.meant) && !(len(lines) == 0 && len(seq.meant) == 0) {
					t.Errorf("member received %q, want %q", lines, seq.meant)
				}
				for _, bad := range []string{"/smuggled", "/fold", "/te10", "OPTIONS"} {
					if strings.Contains(data, bad) {
						t.Errorf("member received %s:\n%s", bad, data)
					}
				}
			})
		}
	}
}

// Sequences that once switched the framing guard off or shifted its count
// are refused, over TLS and plain TCP, and the member gets only the
// requests the client meant. Upgrade is removed when the site does not
// allow it.
func TestDesyncSequencesRefused(t *testing.T) {
	m := startRawMember(t, true)
	e := rawEnv(t, m, nil)
	checkDesync(t, e, m)
	if h := m.lastHead(); strings.Contains(strings.ToLower(h), "upgrade") {
		t.Errorf("Upgrade reached the member of a site that does not allow it:\n%s", h)
	}
}

// A site allowing websocket forwards the Upgrade; the guard keeps
// following the connection while the member answers anything but 101,
// and a switch the member accepts works.
func TestUpgradeOnlyAfter101(t *testing.T) {
	m := startRawMember(t, false)
	e := rawEnv(t, m, func(s *Site) { s.Upgrade = []string{"websocket"} })
	checkDesync(t, e, m)
	if h := m.lastHead(); !strings.Contains(h, "Upgrade: websocket") {
		t.Errorf("Upgrade not forwarded on a site that allows it:\n%s", h)
	}

	m.upgrade = true
	c := e.dialTLS("lyncdiscover.example.com")
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c.c, "GET /ws HTTP/1.1\r\nHost: lyncdiscover.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	res, err := http.ReadResponse(c.r, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", res, err)
	}
	// After the switch the bytes are the new protocol's: even what looks
	// like an ambiguous request goes through as it is.
	const frame = "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
	io.WriteString(c.c, frame)
	buf := make([]byte, len(frame))
	if _, err := io.ReadFull(bufio.NewReader(c.r), buf); err != nil || string(buf) != frame {
		t.Fatalf("echo after the switch: %q %v", buf, err)
	}
}

// trustLoopback makes the test client (127.0.0.1) a trusted proxy, which
// gets the Edgeproxy-Error diagnostic; then applies v.
func trustLoopback(v func(*Virtual)) func(*Virtual) {
	return func(vs *Virtual) {
		vs.TrustedProxies = append(vs.TrustedProxies, netip.MustParsePrefix("127.0.0.1/32"))
		if v != nil {
			v(vs)
		}
	}
}

// When the guard cannot follow the framing (a chunk size it cannot read),
// it refuses every later request on the connection rather than stopping
// silently; only a protocol switch stops it without refusing.
func TestGuardLostFramingRefusesTheRest(t *testing.T) {
	g := newH1Guard(4096)
	g.feed([]byte("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"))
	g.feed([]byte("GET /b HTTP/1.1\r\nHost: h\r\n\r\n"))
	if why := g.rejectAt(1); why != "" {
		t.Errorf("request 1 refused by the guard (%s): net/http answers its bad body", why)
	}
	if why := g.rejectAt(2); why != rejectLost {
		t.Errorf("request 2 after a chunk the guard could not read: %q, want %q", why, rejectLost)
	}
	g = newH1Guard(4096)
	g.feed([]byte("GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"))
	g.stop()
	g.feed([]byte("zz\r\n\r\n"))
	if why := g.rejectAt(2); why != "" {
		t.Errorf("after a protocol switch: %q", why)
	}
}
