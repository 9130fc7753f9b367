package l7

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
)

// rawMember is a plain-HTTP member that records the bytes it receives
// and frames requests itself, strictly (Content-Length or chunked, never
// both), so that a test sees what went over the wire rather than what
// net/http makes of it. It answers every request with 200 and the request
// line as the body, with the headers IIS adds; to an Upgrade: websocket
// request it answers 101 when upgrade is set, and then echoes.
type rawMember struct {
	ln      net.Listener
	upgrade bool

	mu    sync.Mutex
	data  strings.Builder
	lines []string
	heads []string
}

func startRawMember(t testing.TB, upgrade bool) *rawMember {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.40:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &rawMember{ln: ln, upgrade: upgrade}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go m.serve(c)
		}
	}()
	return m
}

func (m *rawMember) port() uint16 { return uint16(m.ln.Addr().(*net.TCPAddr).Port) }

func (m *rawMember) Write(b []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.data.Write(b)
}

// received returns everything received and the request lines framed.
func (m *rawMember) received() (string, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.data.String(), append([]string(nil), m.lines...)
}

// lastHead returns the head of the last request.
func (m *rawMember) lastHead() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.heads) == 0 {
		return ""
	}
	return m.heads[len(m.heads)-1]
}

func (m *rawMember) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(io.TeeReader(c, m))
	for range 100 {
		line, hdr, err := readRawHead(r)
		if err != nil {
			return
		}
		m.mu.Lock()
		m.lines = append(m.lines, line)
		m.heads = append(m.heads, line+"\r\n"+strings.Join(hdr, "\r\n"))
		m.mu.Unlock()
		cl, chunked, upgrade := rawFraming(hdr)
		if err := readRawBody(r, cl, chunked); err != nil {
			return
		}
		if upgrade && m.upgrade {
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			io.Copy(c, r)
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nServer: Microsoft-IIS/10.0\r\nX-Powered-By: ASP.NET\r\nX-AspNet-Version: 4.0.30319\r\n"+
			"Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s", len(line), line)
	}
}

func readRawHead(r *bufio.Reader) (string, []string, error) {
	var lines []string
	for range 200 {
		l, err := r.ReadString('\n')
		if err != nil {
			return "", nil, err
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			if len(lines) == 0 {
				continue
			}
			return lines[0], lines[1:], nil
		}
		lines = append(lines, l)
	}
	return "", nil, fmt.Errorf("head too long")
}

func rawFraming(hdr []string) (cl int64, chunked, upgrade bool) {
	for _, h := range hdr {
		name, val, _ := strings.Cut(h, ":")
		val = strings.TrimSpace(val)
		switch strings.ToLower(name) {
		case "content-length":
			cl, _ = strconv.ParseInt(val, 10, 64)
		case "transfer-encoding":
			chunked = strings.EqualFold(val, "chunked")
		case "upgrade":
			upgrade = strings.EqualFold(val, "websocket")
		}
	}
	return cl, chunked, upgrade
}

func readRawBody(r *bufio.Reader, cl int64, chunked bool) error {
	if !chunked {
		_, err := io.CopyN(io.Discard, r, cl)
		return err
	}
	for range 10000 {
		l, err := r.ReadString('\n')
		if err != nil {
			return err
		}
		n, err := strconv.ParseInt(strings.TrimRight(l, "\r\n"), 16, 64)
		if err != nil {
			return err
		}
		if n == 0 {
			l, err := r.ReadString('\n') // the proxy sends no trailers
			if err != nil || strings.TrimRight(l, "\r\n") != "" {
				return fmt.Errorf("read chunked body end: %q %v", l, err)
			}
			return nil
		}
		if _, err := io.CopyN(io.Discard, r, n+2); err != nil {
			return err
		}
	}
	return fmt.Errorf("too many chunks")
}

// rawEnv is the test deployment with both the skype site of the https
// virtual and the lyncdiscover site of the http virtual forwarding to a
// raw member in plain HTTP.
func rawEnv(t *testing.T, m *rawMember, site func(*config.Site)) *env {
	return newEnv(t, envOptions{members: 1, cfg: func(c *config.Config) {
		c.Pools["raw"] = &config.Pool{Name: "raw", Members: []config.Member{{Address: netip.MustParseAddr("127.0.0.40").String()}}, LB: config.LBRoundRobin}
		for _, s := range []*config.Site{c.Virtuals[0].Sites[0], c.Virtuals[1].Sites[0]} {
			s.Pool, s.Port, s.BackendTLS, s.Profile = "raw", m.port(), nil, config.ProfileSkype
			if site != nil {
				site(s)
			}
		}
	}})
}
