package l7

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"

	"golang.org/x/net/http2/hpack"
)

// HTTP/2 clients that authenticate with NTLM or Negotiate must retry over
// HTTP/1.1: those schemes authenticate a connection, and an HTTP/2
// connection carries many requests (IIS refuses them over HTTP/2 too).
// RFC 9113 §9.2.1 gives the error code for this, HTTP_1_1_REQUIRED, which
// curl and browsers answer by retrying over HTTP/1.1.
//
// net/http's HTTP/2 server has no way for a handler to reset its stream
// with a chosen code: a handler that panics gets RST_STREAM with
// INTERNAL_ERROR. So the proxy serves HTTP/2 through h2Conn, a plaintext
// view of the TLS connection (the server's "unencrypted HTTP/2" mode, fed
// by a connection whose TLS the listener terminated):
//   - reading, it follows the client's frames and decodes their header
//     blocks with its own HPACK decoder (kept in step with the server's by
//     decoding every block), noting the streams whose Authorization is
//     NTLM or Negotiate;
//   - the handler refuses such a request by panicking with
//     http.ErrAbortHandler;
//   - writing, it follows the server's frames and rewrites the error code
//     of an RST_STREAM on a noted stream to HTTP_1_1_REQUIRED.
//
// Nothing else is changed: frames pass through as they are. h2Conn has no
// ConnectionState method on purpose: net/http serves unencrypted HTTP/2
// only to connections without one (the TLS state is in connState).
type h2Conn struct {
	net.Conn // the *tls.Conn
	cs       *connState

	rmu sync.Mutex
	in  h2FrameReader
	dec *hpack.Decoder

	wmu sync.Mutex
	out h2FrameReader

	mu      sync.Mutex
	refused map[uint32]bool
}

const (
	h2Preface           = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
	h2FrameHeaders      = 0x1
	h2FrameRSTStream    = 0x3
	h2FrameContinuation = 0x9
	h2FlagEndHeaders    = 0x4
	h2FlagPadded        = 0x8
	h2FlagPriority      = 0x20
	h2ErrHTTP11Required = 0xd
	// h2MaxRefused bounds the noted streams of a connection (each is
	// forgotten when its reset is written).
	h2MaxRefused = 1024
)

var errNotH2 = errors.New("read http/2 connection: no client preface")

// newH2Conn follows c, whose server accepts header blocks of up to
// maxHeader bytes.
func newH2Conn(c net.Conn, cs *connState, maxHeader int) *h2Conn {
	h := &h2Conn{Conn: c, cs: cs, refused: map[uint32]bool{}}
	h.in.preface = len(h2Preface)
	h.dec = hpack.NewDecoder(4096, h.field)
	// The server refuses longer strings (a connection error); this
	// bound only keeps the decoder from buffering more.
	h.dec.SetMaxStringLength(2*maxHeader + 64<<10)
	return h
}

// Read follows the client's frames. A connection that does not start
// with the HTTP/2 preface is closed: ALPN said h2.
func (c *h2Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.rmu.Lock()
		ok := c.in.feed(b[:n], c.inFrame, nil)
		c.rmu.Unlock()
		if !ok {
			c.Conn.Close()
			return 0, errNotH2
		}
	}
	return n, err
}

// Write rewrites the code of the resets of noted streams.
func (c *h2Conn) Write(b []byte) (int, error) {
	c.wmu.Lock()
	out, at, copied := b, 0, false
	c.out.feed(b, func(f *h2Frame, p []byte, off int) {
		// p is b[at:at+len(p)], payload bytes off and on of frame f.
		defer func() { at += len(p) }()
		if f.typ != h2FrameRSTStream || f.length != 4 {
			return
		}
		if off == 0 {
			c.out.rewrite = c.take(f.stream)
		}
		if !c.out.rewrite {
			return
		}
		if !copied {
			out, copied = bytes.Clone(b), true
		}
		code := [4]byte{0, 0, 0, h2ErrHTTP11Required}
		copy(out[at:at+len(p)], code[off:off+len(p)])
	}, func(n int) { at += n })
	c.wmu.Unlock()
	return c.Conn.Write(out)
}

// note marks a stream whose request must be retried over HTTP/1.1.
func (c *h2Conn) note(stream uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.refused) >= h2MaxRefused {
		clear(c.refused)
	}
	c.refused[stream] = true
}

func (c *h2Conn) take(stream uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	ok := c.refused[stream]
	delete(c.refused, stream)
	return ok
}

// inFrame receives the client's frames' payload piece by piece; header
// block fragments go to the HPACK decoder.
func (c *h2Conn) inFrame(f *h2Frame, p []byte, off int) {
	if f.typ != h2FrameHeaders && f.typ != h2FrameContinuation || c.in.broken {
		return
	}
	// A HEADERS frame may start with a pad length and a priority, and
	// end with padding.
	start, end := 0, int(f.length)
	if f.typ == h2FrameHeaders {
		if f.flags&h2FlagPadded != 0 {
			if off == 0 && len(p) > 0 {
				f.pad = int(p[0])
			}
			start++
		}
		if f.flags&h2FlagPriority != 0 {
			start += 5
		}
		end -= f.pad
	}
	lo, hi := max(start-off, 0), min(end-off, len(p))
	c.in.stream = f.stream
	if lo < hi {
		if _, err := c.dec.Write(p[lo:hi]); err != nil {
			c.in.broken = true // the server fails the connection too
			return
		}
	}
	if off+len(p) == int(f.length) && f.flags&h2FlagEndHeaders != 0 {
		if err := c.dec.Close(); err != nil {
			c.in.broken = true
		}
	}
}

// field looks at one decoded request header.
func (c *h2Conn) field(f hpack.HeaderField) {
	if f.Name == "authorization" && isConnAuth(f.Value) {
		c.note(c.in.stream)
	}
}

// h2Frame is the frame being followed.
type h2Frame struct {
	length uint32
	typ    uint8
	flags  uint8
	stream uint32
	pad    int
}

// h2FrameReader follows a stream of HTTP/2 frames fed in pieces: the
// optional client preface, then 9-byte frame headers, each followed by
// its payload, which goes to a callback piece by piece with its offset.
type h2FrameReader struct {
	preface int // preface bytes still expected
	hdr     [9]byte
	nhdr    int
	f       h2Frame
	remain  int    // payload bytes of f still to come
	stream  uint32 // the stream of the header block being decoded
	broken  bool   // HPACK lost: stop decoding
	rewrite bool   // the current RST_STREAM is being rewritten
}

// feed follows b; false when the preface is wrong. skip, if set, is told
// of the bytes of b that are frame headers.
func (r *h2FrameReader) feed(b []byte, payload func(f *h2Frame, p []byte, off int), skip func(n int)) bool {
	for len(b) > 0 {
		if r.preface > 0 {
			i := len(h2Preface) - r.preface
			n := min(r.preface, len(b))
			if !strings.HasPrefix(h2Preface[i:], string(b[:n])) {
				return false
			}
			r.preface -= n
			b = b[n:]
			continue
		}
		if r.remain == 0 && r.nhdr < 9 {
			n := copy(r.hdr[r.nhdr:], b)
			r.nhdr += n
			b = b[n:]
			if skip != nil {
				skip(n)
			}
			if r.nhdr < 9 {
				return true
			}
			r.f = h2Frame{
				length: uint32(r.hdr[0])<<16 | uint32(r.hdr[1])<<8 | uint32(r.hdr[2]),
				typ:    r.hdr[3], flags: r.hdr[4],
				stream: binary.BigEndian.Uint32(r.hdr[5:]) & 0x7fffffff,
			}
			r.remain = int(r.f.length)
			if r.remain == 0 {
				payload(&r.f, nil, 0)
				r.nhdr = 0
			}
			continue
		}
		n := min(r.remain, len(b))
		payload(&r.f, b[:n], int(r.f.length)-r.remain)
		r.remain -= n
		b = b[n:]
		if r.remain == 0 {
			r.nhdr = 0
		}
	}
	return true
}

// checkH2ConnAuth ends an HTTP/2 request authenticating with NTLM or
// Negotiate: its stream is reset with HTTP_1_1_REQUIRED (see h2Conn). The
// access log says 505, the status closest to that code.
func checkH2ConnAuth(_ *vhost, x *exchange) cause {
	if x.r.ProtoMajor == 2 && hasConnAuth(x.r.Header, "Authorization") {
		x.rec.setCause(causeH2ConnAuth)
		x.rec.setStatus(http.StatusHTTPVersionNotSupported)
		panic(http.ErrAbortHandler)
	}
	return causeNone
}
