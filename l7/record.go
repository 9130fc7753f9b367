package l7

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// reqRecord collects what the access log says about one request. The
// handler, the round tripper and the transport's goroutines all write to
// it, so it is locked.
type reqRecord struct {
	mu          sync.Mutex
	member      string
	pinned      bool
	attempts    int
	cause       cause
	status      int // set when the handler writes no response itself (499)
	setCk       string
	conn        readExtender
	reused      bool
	connectTime time.Duration // dial + TLS to the member (0 when reused)
	upStart     time.Time     // when the attempt that got a connection was sent
	tryStart    time.Time     // when the current attempt was sent
	headersAt   time.Time
	reqBytes    atomic.Int64
}

type recordKey struct{}

// withRecord carries the record to the round tripper, which notes its
// upstream connection in it.
func withRecord(ctx context.Context, r *reqRecord) context.Context {
	return context.WithValue(ctx, recordKey{}, r)
}

// recordFrom returns the request's record, or a throwaway one.
func recordFrom(ctx context.Context) *reqRecord {
	if r, ok := ctx.Value(recordKey{}).(*reqRecord); ok {
		return r
	}
	return &reqRecord{}
}

func (r *reqRecord) setMember(m string, pinned bool) {
	r.mu.Lock()
	r.member, r.pinned = m, pinned
	r.mu.Unlock()
}

func (r *reqRecord) getMember() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.member
}

func (r *reqRecord) isPinned() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.pinned
}

func (r *reqRecord) setAttempts(n int) {
	r.mu.Lock()
	r.attempts = n
	r.mu.Unlock()
}

// setCause records why the request ended abnormally; the first cause
// wins.
func (r *reqRecord) setCause(c cause) {
	r.mu.Lock()
	if r.cause == "" {
		r.cause = c
	}
	r.mu.Unlock()
}

func (r *reqRecord) getCause() cause {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cause
}

func (r *reqRecord) setStatus(code int) {
	r.mu.Lock()
	r.status = code
	r.mu.Unlock()
}

func (r *reqRecord) setCookie(v string) {
	r.mu.Lock()
	r.setCk = v
	r.mu.Unlock()
}

func (r *reqRecord) cookie() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.setCk
}

// startTry notes when an attempt at a member is sent.
func (r *reqRecord) startTry() {
	r.mu.Lock()
	r.tryStart = time.Now()
	r.mu.Unlock()
}

// gotConn notes the upstream connection an attempt goes out on.
func (r *reqRecord) gotConn(c net.Conn, reused bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := r.tryStart
	if x, ok := c.(readExtender); ok {
		r.conn = x
	}
	r.reused = reused
	r.upStart = start
	if !reused && !start.IsZero() {
		r.connectTime = time.Since(start)
	}
}

func (r *reqRecord) upConn() readExtender {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conn
}

func (r *reqRecord) gotHeaders() {
	r.mu.Lock()
	r.headersAt = time.Now()
	r.mu.Unlock()
}

func (r *reqRecord) bodyRead() int64 { return r.reqBytes.Load() }

// respWriter records the status and size of the response, and puts a
// write deadline one stall period ahead before every write, so a client
// that stops reading is cut off without bounding the whole response.
type respWriter struct {
	http.ResponseWriter
	ctl         *http.ResponseController // &ctlv
	ctlv        http.ResponseController
	stall       time.Duration
	status      int
	bytes       int64
	wroteHeader bool
	onHijack    func() // after the connection is handed over
	// hsts is put back on the final response: passing on a member's
	// informational response clears the header map.
	hsts string
	hide bool // informational responses lose the member's identity too
}

// informationalDropped are the hop-by-hop headers of a member's 1xx
// response, not passed on.
var informationalDropped = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length"}

func (rw *respWriter) init(w http.ResponseWriter) {
	rw.ResponseWriter = w
	rw.ctlv = *http.NewResponseController(w)
	rw.ctl = &rw.ctlv
}

func (w *respWriter) deadline() {
	if w.stall > 0 {
		w.ctl.SetWriteDeadline(time.Now().Add(w.stall))
	}
}

func (w *respWriter) WriteHeader(code int) {
	if code >= 200 && !w.wroteHeader {
		w.wroteHeader = true
		w.status = code
	}
	switch h := w.Header(); {
	case code < 200 && code != http.StatusSwitchingProtocols:
		// A member's informational response, as ReverseProxy passes it.
		for _, k := range informationalDropped {
			h.Del(k)
		}
		if w.hide {
			hideMember(h)
		}
	case w.hsts != "":
		h.Set("Strict-Transport-Security", w.hsts)
	}
	w.deadline()
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.wroteHeader, w.status = true, http.StatusOK
	}
	w.deadline()
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// FlushError is found by http.ResponseController (ReverseProxy flushes
// through one).
func (w *respWriter) FlushError() error {
	w.deadline()
	return w.ctl.Flush()
}

func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// reqBody is the client's request body as the upstream side reads it: a
// read deadline one stall period ahead before every read, and a byte
// count. At EOF the deadline is cleared, so that net/http's own read
// between requests (it watches for the client going away during a long
// poll) is not cut.
type reqBody struct {
	io.ReadCloser
	ctl   *http.ResponseController
	stall time.Duration
	rec   *reqRecord
	done  atomic.Bool // read to the end, or abandoned
	eof   atomic.Bool
}

// errBodyAbandoned ends the upstream request when the handler is done
// before the client's body was fully read: the member sees an error, never
// a body that looks complete.
var errBodyAbandoned = errors.New("request body abandoned")

func (b *reqBody) Read(p []byte) (int, error) {
	if b.done.Load() {
		if b.eof.Load() {
			return 0, io.EOF
		}
		return 0, errBodyAbandoned
	}
	if b.stall > 0 {
		b.ctl.SetReadDeadline(time.Now().Add(b.stall))
	}
	n, err := b.ReadCloser.Read(p)
	b.rec.reqBytes.Add(int64(n))
	if err != nil {
		switch {
		case err == io.EOF:
		case isTimeout(err):
			b.rec.setCause(causeClientStall)
		case errors.As(err, new(*http.MaxBytesError)):
			b.rec.setCause(causeBodyLimit)
		default:
			// Malformed: a bad chunk, or the client went away.
			b.rec.setCause(causeClientBody)
		}
		if err == io.EOF {
			b.eof.Store(true)
		}
		if b.done.CompareAndSwap(false, true) && err == io.EOF && b.stall > 0 {
			b.ctl.SetReadDeadline(time.Time{})
		}
	}
	return n, err
}

// abandon is called when the handler returns. A body not read to its end
// keeps a read deadline, so that net/http's discarding of the rest is
// bounded too.
func (b *reqBody) abandon() {
	if b.done.CompareAndSwap(false, true) && b.stall > 0 {
		b.ctl.SetReadDeadline(time.Now().Add(b.stall))
	}
}

func (b *reqBody) Close() error { return nil }
