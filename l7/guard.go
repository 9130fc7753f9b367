package l7

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
)

// h1guard follows the HTTP/1.1 framing of a client connection's byte
// stream, as net/http reads it, to find request heads that net/http
// accepts but a server in front of or behind the proxy may frame
// differently (request smuggling):
//   - both Content-Length and Transfer-Encoding: net/http goes by the
//     Transfer-Encoding and drops the Content-Length before a handler can
//     see it; RFC 9112 §6.1 asks a server to reject such a request or to
//     close the connection after it;
//   - obsolete line folding (a header line starting with a space or tab),
//     which net/http joins to the previous line and others do not;
//   - Transfer-Encoding in an HTTP/1.0 request, which net/http ignores
//     (reading the body by Content-Length) and others do not; RFC 9112
//     §6.1 asks to treat the framing as faulty and close.
//
// The handler asks rejectAt for the index of the request it serves and
// refuses it with 400, closing the connection. When the guard loses the
// framing (a head, chunk size or length it cannot read; net/http fails
// the request too), every later request on the connection is refused:
// the guard stops following a connection without refusing only when it
// switches protocol, after the member accepted the switch.
//
// Its state is touched only by the connection's reader (net/http reads a
// connection from one goroutine at a time); the handler reads the atomic
// fields only.
type h1guard struct {
	st      guardState
	buf     []byte // the head or line being accumulated
	remain  int64  // body or chunk bytes left
	maxHead int

	heads  atomic.Int64 // complete request heads seen
	reject atomic.Int64 // 1-based index of the first refused head; 0: none
	reason string       // why; written before reject is set
	off    atomic.Bool  // framing no longer followed (upgrade, or the connection is ending)
}

// Reasons a head is refused.
const (
	rejectCLTE = "both Content-Length and Transfer-Encoding"
	rejectFold = "obsolete header line folding"
	rejectH10  = "Transfer-Encoding in an HTTP/1.0 request"
	rejectLost = "request framing not followed after a malformed request"
)

type guardState uint8

const (
	gHead guardState = iota
	gBody
	gChunkLine
	gChunkData
	gChunkCRLF
	gTrailer
)

// maxChunkLine bounds a chunk-size or trailer line; net/http refuses
// longer ones too.
const maxChunkLine = 4096

func newH1Guard(maxHeaderBytes int) *h1guard {
	// net/http allows MaxHeaderBytes plus 4096 bytes of slack.
	return &h1guard{maxHead: maxHeaderBytes + 4096 + 1024}
}

// rejectAt reports why request number idx (1-based) on the connection
// must be refused (it, or one before it, has an ambiguous head); "" when
// it need not.
func (g *h1guard) rejectAt(idx int64) string {
	if c := g.reject.Load(); c != 0 && c <= idx {
		return g.reason
	}
	return ""
}

func (g *h1guard) refuse(idx int64, why string) {
	if g.reject.Load() == 0 {
		g.reason = why
		g.reject.Store(idx)
	}
	g.stop() // the handler closes the connection
}

// stop gives up following the framing (the connection switches protocol).
func (g *h1guard) stop() { g.off.Store(true) }

// lose gives up following the framing of a connection that keeps
// speaking HTTP/1: the requests after the current head are refused.
func (g *h1guard) lose() { g.refuse(g.heads.Load()+1, rejectLost) }

// feed follows the framing over b.
func (g *h1guard) feed(b []byte) {
	for len(b) > 0 && !g.off.Load() {
		switch g.st {
		case gHead:
			if len(g.buf) == 0 {
				// Empty lines before a request line are ignored.
				for len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
					b = b[1:]
				}
				if len(b) == 0 {
					return
				}
			}
			from := max(len(g.buf)-3, 0)
			g.buf = append(g.buf, b...)
			end := headEnd(g.buf, from)
			if end < 0 {
				if len(g.buf) > g.maxHead {
					g.lose()
				}
				return
			}
			rest := len(g.buf) - end
			b = b[len(b)-rest:]
			g.head(g.buf[:end])
			g.buf = g.buf[:0]
		case gBody, gChunkData:
			n := min(int64(len(b)), g.remain)
			g.remain -= n
			b = b[n:]
			if g.remain == 0 {
				if g.st == gBody {
					g.st = gHead
				} else {
					g.st, g.remain = gChunkCRLF, 2
				}
			}
		case gChunkCRLF:
			n := min(int64(len(b)), g.remain)
			g.remain -= n
			b = b[n:]
			if g.remain == 0 {
				g.st = gChunkLine
			}
		case gChunkLine, gTrailer:
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				g.buf = append(g.buf, b...)
				if len(g.buf) > maxChunkLine {
					g.lose()
				}
				return
			}
			g.buf = append(g.buf, b[:i]...)
			b = b[i+1:]
			line := bytes.TrimRight(g.buf, "\r")
			if g.st == gTrailer {
				if len(line) == 0 {
					g.st = gHead
				}
			} else {
				g.chunkLine(line)
			}
			g.buf = g.buf[:0]
		}
	}
}

// headEnd returns the length of the head (through the empty line) if buf
// holds a complete one, searching from from; else -1.
func headEnd(buf []byte, from int) int {
	for i := from; i < len(buf); i++ {
		if buf[i] != '\n' {
			continue
		}
		if i >= 1 && buf[i-1] == '\n' {
			return i + 1
		}
		if i >= 2 && buf[i-1] == '\r' && buf[i-2] == '\n' {
			return i + 1
		}
	}
	return -1
}

// head inspects a complete request head and sets the body framing.
func (g *h1guard) head(h []byte) {
	idx := g.heads.Add(1)
	var cl, te [][]byte
	lines := bytes.Split(h, []byte("\n"))
	for _, l := range lines[1:] {
		l = bytes.TrimRight(l, "\r")
		if len(l) > 0 && (l[0] == ' ' || l[0] == '\t') {
			g.refuse(idx, rejectFold)
			return
		}
		name, val, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue
		}
		switch {
		case bytes.EqualFold(bytes.TrimSpace(name), []byte("content-length")):
			cl = append(cl, bytes.TrimSpace(val))
		case bytes.EqualFold(bytes.TrimSpace(name), []byte("transfer-encoding")):
			te = append(te, bytes.TrimSpace(val))
		}
	}
	switch {
	case len(te) > 0 && bytes.HasSuffix(bytes.TrimRight(lines[0], "\r"), []byte(" HTTP/1.0")):
		g.refuse(idx, rejectH10)
	case len(cl) > 0 && len(te) > 0:
		g.refuse(idx, rejectCLTE)
	case len(te) > 0:
		if len(te) != 1 || !bytes.EqualFold(te[0], []byte("chunked")) {
			g.lose() // net/http refuses it and closes
			return
		}
		g.st = gChunkLine
	case len(cl) > 0:
		n, err := strconv.ParseInt(string(cl[0]), 10, 64)
		if err != nil || n < 0 {
			g.lose()
			return
		}
		if n > 0 {
			g.st, g.remain = gBody, n
		}
	}
}

func (g *h1guard) chunkLine(line []byte) {
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	line = bytes.TrimSpace(line)
	n, err := strconv.ParseUint(string(line), 16, 63)
	if err != nil || len(line) > 16 {
		g.lose()
		return
	}
	if n == 0 {
		g.st = gTrailer
		return
	}
	g.st, g.remain = gChunkData, int64(n)
}

// guardConn feeds what the HTTP server reads from a client connection
// (plaintext, above TLS) to the connection's h1guard.
//
// It also keeps the connection HTTP/1: the server speaks HTTP/2 to
// connections that start with its preface (for h2Conn), so a connection
// whose first bytes are the preface's request line is closed before the
// server sees them whole.
type guardConn struct {
	net.Conn
	g     *h1guard
	cs    *connState
	first []byte // the first bytes, up to len(h2PrefaceLine)
}

const h2PrefaceLine = "PRI * HTTP/2.0"

var errH2OnH1 = errors.New("read http/1 connection: http/2 preface")

func (c *guardConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && len(c.first) < len(h2PrefaceLine) {
		k := min(n, len(h2PrefaceLine)-len(c.first))
		c.first = append(c.first, b[:k]...)
		if string(c.first) == h2PrefaceLine {
			c.Conn.Close()
			return 0, errH2OnH1
		}
	}
	if n > 0 {
		c.g.feed(b[:n])
	}
	return n, err
}
