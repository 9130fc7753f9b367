package l7

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Upstream transport constants.
const (
	// maxIdlePerHost caps the idle connections a pooled transport keeps
	// per Host.
	maxIdlePerHost = 64
	// maxIdlePerMember caps them for all Hosts together: a wildcard
	// site's Hosts are the client's choice.
	maxIdlePerMember = 4 * maxIdlePerHost
	// expectContinueWait is how long a request with "Expect:
	// 100-continue" waits for the member's 100 before sending its body.
	expectContinueWait = time.Second
	// writeDoneWait is how long the end of a response waits for the
	// request body to finish before the connection is closed instead of
	// reused.
	writeDoneWait = 50 * time.Millisecond
	// max1xx bounds the informational responses before the final one.
	max1xx = 5
)

// memberTransport sends HTTP/1.1 requests to one member over connections
// it keeps idle between requests. A request is written and its response
// read in the caller's goroutine (a request body is written by a
// goroutine of its own, so that the member may answer before reading
// it): no goroutine per connection and no handoff per request. Idle
// connections hold no buffers.
type memberTransport struct {
	d         *dialer
	maxIdle   int
	idleLimit time.Duration // close idle connections after this; 0: never
	response  time.Duration // response header timeout; 0: none
	maxHeader int64

	mu      sync.Mutex
	idle    []*upstream // most recently used last
	sweep   *time.Timer
	armed   bool
	closing bool // CloseIdleConnections was called and no request came since
}

// newTransport returns the HTTP/1.1 transport of one member of a site.
// Pinned transports keep one idle connection (the one a client's
// sequential HTTP/1.1 requests authenticate) and close it after
// pinnedIdleTimeout idle; concurrent requests of an HTTP/2 client each
// get a connection of their own, as in the pool.
func newTransport(d *dialer, pinned bool) *memberTransport {
	t := &memberTransport{d: d, maxIdle: maxIdlePerHost, idleLimit: d.limits.poolIdle,
		response: d.limits.response, maxHeader: int64(max(d.limits.maxHeader, upstreamHeaderFloor))}
	if pinned {
		t.maxIdle, t.idleLimit = 1, pinnedIdleTimeout
	}
	return t
}

// upstream is one connection to the member.
type upstream struct {
	t      *memberTransport
	key    string   // the request's URL.Host: SNI and certificate name
	conn   net.Conn // *upConn or *tlsUpConn
	raw    *upConn
	lr     limitReader
	br     *bufio.Reader // while a response is read
	idleAt time.Time
	reused bool
	pk     peek
	cutFn  func() // closes conn: made once, run when a client leaves
}

// peek is a look at the member's socket without taking what it holds:
// its syscall.RawConn and the callback its Read runs, made once per
// connection so that a look allocates nothing.
type peek struct {
	rc    syscall.RawConn // nil: not a socket (always open, never waits)
	f     func(fd uintptr) bool
	buf   [1]byte
	n     int
	err   error
	wait  bool // wait for the socket to be readable
	woken bool
}

// limitReader is the connection as the response parser reads it: the
// header size limit applies while limit > 0, and the end of the stream
// is noted.
type limitReader struct {
	c       net.Conn
	limit   int64 // 0: none
	base    int64 // n where the limit starts
	n       int64 // bytes read in this exchange
	ended   bool  // EOF or an error: the connection is done
	limited bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.limit > 0 {
		left := l.limit - (l.n - l.base)
		if left <= 0 {
			l.limited, l.ended = true, true
			return 0, errHeaderLimit
		}
		if int64(len(p)) > left {
			p = p[:left]
		}
	}
	n, err := l.c.Read(p)
	l.n += int64(n)
	if err != nil && !isTimeout(err) {
		l.ended = true
	}
	return n, err
}

var (
	errHeaderLimit = errors.New("response headers over the limit")
	errSkipBody    = errors.New("request body not sent: the member answered first")
	errTooMany1xx  = errors.New("too many informational responses")
	errBadStatus   = errors.New("status code below 100")
	// errUnaskedUpgrade: a 101 to a request that did not ask for that
	// protocol; the connection is closed, not handed over.
	errUnaskedUpgrade = errors.New("member switched protocols unasked")
	// A response head rarely needs more than the reader's 4 KiB (a longer
	// one is read in several fills); a body is read straight into the
	// caller's buffer. A long poll holds this reader while it waits.
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, ioBufferSize) }}
)

// RoundTrip sends req over an idle connection or a new one. A request
// that can be sent again (no body, idempotent) is retried once per idle
// connection that turns out closed by the member before answering (not
// on a timeout).
func (t *memberTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec, _ := req.Context().Value(recordKey{}).(*reqRecord)
	return t.roundTrip(req, rec, traceInformer(req.Context()))
}

// roundTrip is RoundTrip with the request's record (nil: none) and the
// receiver of informational responses (nil: none) given.
func (t *memberTransport) roundTrip(req *http.Request, rec *reqRecord, info informer) (*http.Response, error) {
	ctx := req.Context()
	for {
		u, err := t.get(ctx, req.URL.Host)
		if err != nil {
			return nil, err
		}
		res, err := u.exchange(req, rec, info)
		if err == nil {
			return res, nil
		}
		u.close()
		// Only a close by the member before any answer is a stale
		// connection; a timeout means the member has the request.
		if !u.reused || u.lr.n > 0 || isTimeout(err) || !replayable(req) || ctx.Err() != nil {
			return nil, err
		}
	}
}

// replayable: the request can be sent again without the client's help.
func replayable(r *http.Request) bool {
	if r.Body != nil && r.Body != http.NoBody {
		return false
	}
	switch r.Method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

// get returns the most recently used idle connection for key that is
// still open, or dials one.
func (t *memberTransport) get(ctx context.Context, key string) (*upstream, error) {
	for {
		u := t.takeIdle(key)
		if u == nil {
			break
		}
		idle := time.Since(u.idleAt)
		// Every reuse peeks: bytes the member sent after a response are
		// not the next request's answer (it may be another client's).
		if (t.idleLimit > 0 && idle >= t.idleLimit) || !u.open() {
			u.close()
			continue
		}
		u.reused = true
		return u, nil
	}
	var (
		c   net.Conn
		err error
	)
	if t.d.tls != nil {
		c, err = t.d.dialTLS(ctx, "tcp", key)
	} else {
		c, err = t.d.dialPlain(ctx, "tcp", key)
	}
	if err != nil {
		return nil, err
	}
	u := &upstream{t: t, key: key, conn: c}
	switch c := c.(type) {
	case *upConn:
		u.raw = c
	case *tlsUpConn:
		u.raw = c.up
	}
	u.lr.c = c
	return u, nil
}

func (t *memberTransport) takeIdle(key string) *upstream {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closing = false
	for i := len(t.idle) - 1; i >= 0; i-- {
		if u := t.idle[i]; u.key == key {
			t.idle = slices.Delete(t.idle, i, i+1)
			return u
		}
	}
	return nil
}

// putIdle keeps u for the next request, or closes it when the transport
// holds enough idle connections for its Host; past maxIdlePerMember in
// all, the oldest idle connection closes.
func (t *memberTransport) putIdle(u *upstream) {
	u.idleAt = time.Now()
	t.mu.Lock()
	n := 0
	for _, o := range t.idle {
		if o.key == u.key {
			n++
		}
	}
	keep := n < t.maxIdle && !t.closing
	var evict *upstream
	if keep {
		if len(t.idle) >= maxIdlePerMember {
			evict, t.idle = t.idle[0], slices.Delete(t.idle, 0, 1)
		}
		t.idle = append(t.idle, u)
		if t.idleLimit > 0 && !t.armed {
			t.armed = true
			if t.sweep == nil {
				t.sweep = time.AfterFunc(t.idleLimit, t.sweepIdle)
			} else {
				t.sweep.Reset(t.idleLimit)
			}
		}
	}
	t.mu.Unlock()
	if evict != nil {
		evict.close()
	}
	if !keep {
		u.close()
	}
}

// sweepIdle closes the connections idle for idleLimit and runs again
// when the oldest of the others reaches it.
func (t *memberTransport) sweepIdle() {
	now := time.Now()
	var expired []*upstream
	t.mu.Lock()
	t.idle = slices.DeleteFunc(t.idle, func(u *upstream) bool {
		if now.Sub(u.idleAt) >= t.idleLimit {
			expired = append(expired, u)
			return true
		}
		return false
	})
	t.armed = len(t.idle) > 0
	if t.armed {
		t.sweep.Reset(t.idleLimit - now.Sub(t.idle[0].idleAt))
	}
	t.mu.Unlock()
	for _, u := range expired {
		u.close()
	}
}

// CloseIdleConnections closes the idle connections; busy ones finish
// their requests and close too, unless a request comes in the meantime
// (a reload closes the previous configuration's connections this way).
func (t *memberTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle, t.closing = nil, true
	t.mu.Unlock()
	for _, u := range idle {
		u.close()
	}
}

func (u *upstream) close() {
	u.conn.Close()
	u.dropReader()
}

func (u *upstream) dropReader() {
	if u.br != nil {
		u.br.Reset(nil)
		readerPool.Put(u.br)
		u.br = nil
	}
}

// open reports whether an idle connection is still open: the member has
// neither closed it nor sent anything unasked. One non-blocking peek.
func (u *upstream) open() bool {
	if err := u.look(false); err != nil {
		return false
	}
	switch {
	case u.pk.rc == nil || errors.Is(u.pk.err, syscall.EAGAIN):
		return true
	case u.pk.err != nil || u.pk.n == 0:
		return false
	}
	// Bytes on an idle connection: in TLS they may be a record the
	// member may send at any time (a session ticket, close_notify).
	if tc, ok := u.conn.(*tlsUpConn); ok {
		return tlsStillOpen(tc)
	}
	return false
}

// awaitBytes blocks until the member's socket has something to read, is
// closed, or its read deadline passes, holding no buffer meanwhile: a
// long poll waits here rather than in the response parser. The read
// that follows reports any error.
func (u *upstream) awaitBytes() { u.look(true) }

// look peeks at the member's socket once; with wait, when nothing is
// there, it waits for the socket to become readable. Once woken it does
// not peek again: the read that follows costs no system call more than
// it would alone.
func (u *upstream) look(wait bool) error {
	if u.pk.f == nil {
		sc, ok := u.raw.Conn.(syscall.Conn)
		if !ok {
			return nil
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return err
		}
		u.pk.rc, u.pk.f = rc, u.peekOnce
	}
	if u.pk.rc == nil {
		return nil
	}
	u.pk.n, u.pk.err, u.pk.wait, u.pk.woken = 0, nil, wait, false
	return u.pk.rc.Read(u.pk.f)
}

func (u *upstream) peekOnce(fd uintptr) bool {
	if u.pk.woken {
		return true
	}
	u.pk.woken = true
	u.pk.n, _, u.pk.err = syscall.Recvfrom(int(fd), u.pk.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return !u.pk.wait || !errors.Is(u.pk.err, syscall.EAGAIN)
}

// tlsStillOpen lets TLS read the records waiting on an idle connection:
// open if none of them is data or the end.
func tlsStillOpen(tc *tlsUpConn) bool {
	var b [1]byte
	tc.up.Conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	n, err := tc.Conn.Read(b[:])
	tc.up.Conn.SetReadDeadline(time.Time{})
	return n == 0 && isTimeout(err)
}

// informer receives a member's informational responses (1xx but 101)
// before the final one.
type informer interface {
	informational(code int, h textproto.MIMEHeader) error
}

// traceInformer is the informer of a context's client trace, or nil.
func traceInformer(ctx context.Context) informer {
	if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
		return (*got1xx)(trace)
	}
	return nil
}

type got1xx httptrace.ClientTrace

func (g *got1xx) informational(code int, h textproto.MIMEHeader) error {
	return g.Got1xxResponse(code, h)
}

// exchange writes req and reads its response on u. It never retries.
func (u *upstream) exchange(req *http.Request, rec *reqRecord, info informer) (*http.Response, error) {
	ctx := req.Context()
	if rec != nil {
		rec.gotConn(u.conn, u.reused)
	}
	// A client that goes away ends the exchange (and the body read).
	if u.cutFn == nil {
		u.cutFn = func() { u.conn.Close() }
	}
	cut := context.AfterFunc(ctx, u.cutFn)
	u.lr.n, u.lr.ended = 0, false
	var w *bodyWrite
	if req.Body == nil || req.Body == http.NoBody {
		if err := u.writeHead(req); err != nil {
			cut()
			return nil, fmt.Errorf("write request: %w", err)
		}
	} else {
		w = u.startBody(req)
	}
	res, err := u.readResponse(req, info, w)
	if err != nil {
		cut()
		if w != nil {
			u.conn.Close()
			if berr := w.clientError(); berr != nil {
				return nil, berr
			}
		}
		return nil, err
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		cut()
		if !upgradeAsked(req.Header, res.Header) {
			u.close()
			return nil, errUnaskedUpgrade
		}
		u.raw.Conn.SetReadDeadline(time.Time{})
		res.Body = &upgradeBody{u: u}
		return res, nil
	}
	done := &upBody{u: u, res: res, req: req, w: w, cut: cut}
	if res.Body == http.NoBody {
		done.finish(true)
	} else {
		done.rc = res.Body
		res.Body = done
	}
	return res, nil
}

// writeHead writes a request without a body: one write.
func (u *upstream) writeHead(req *http.Request) error {
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(u.conn)
	err := writeRequestHead(bw, req)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writerPool.Put(bw)
	return err
}

// bodyWrite is a request with a body being written.
type bodyWrite struct {
	done    chan struct{}
	err     error     // the write's error, once done is closed
	proceed chan bool // 100-continue: send the body (true) or skip it

	mu      sync.Mutex
	headers bool  // the final response head was read
	bodyErr error // the body's own read error (the client's fault)
}

// ended waits a little for the write to end and reports whether it did.
// A write blocked on a slow client's body is left to its stall timeout.
func (w *bodyWrite) ended() bool {
	select {
	case <-w.done:
		return true
	default:
	}
	t := time.NewTimer(writeDoneWait)
	defer t.Stop()
	select {
	case <-w.done:
		return true
	case <-t.C:
		return false
	}
}

// clientError is the body's own error (the client's fault), if the
// write ended with one.
func (w *bodyWrite) clientError() error {
	if !w.ended() {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bodyErr
}

// finished reports whether the whole request was written.
func (w *bodyWrite) finished() bool { return w.ended() && w.err == nil }

// startBody writes a request with a body in a goroutine of its own; an
// error closes the connection, which ends the response read too.
func (u *upstream) startBody(req *http.Request) *bodyWrite {
	w := &bodyWrite{done: make(chan struct{})}
	out := *req
	tb := &trackedBody{ReadCloser: req.Body, w: w}
	out.Body = tb
	if hasToken(req.Header, "Expect", "100-continue") {
		w.proceed = make(chan bool, 1)
	}
	go func() {
		defer close(w.done)
		bw := writerPool.Get().(*bufio.Writer)
		bw.Reset(u.conn)
		err := out.Write(bw)
		if err == nil {
			err = bw.Flush()
		}
		bw.Reset(nil)
		writerPool.Put(bw)
		switch {
		case err == nil:
			u.wrote(w)
		case errors.Is(err, errSkipBody):
			// The member answered without the body; the connection
			// closes after its response.
			w.err = err
		default:
			w.err = err
			u.conn.Close()
		}
	}()
	return w
}

// trackedBody is a request body as the upstream write reads it: it
// waits for the member's 100 Continue when asked for one, and keeps the
// body's own error apart from the connection's.
type trackedBody struct {
	io.ReadCloser
	w      *bodyWrite
	waited bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	if !b.waited && b.w.proceed != nil {
		b.waited = true
		t := time.NewTimer(expectContinueWait)
		select {
		case ok := <-b.w.proceed:
			if !ok {
				t.Stop()
				return 0, errSkipBody
			}
		case <-t.C:
		}
		t.Stop()
	}
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.w.mu.Lock()
		b.w.bodyErr = err
		b.w.mu.Unlock()
	}
	return n, err
}

// readResponse reads the final response head, passing informational
// ones to info (which forwards them to the client).
func (u *upstream) readResponse(req *http.Request, info informer, w *bodyWrite) (*http.Response, error) {
	u.lr.limit, u.lr.base = u.t.maxHeader, u.lr.n
	proceed := w != nil && w.proceed != nil
	if w == nil && u.t.response > 0 {
		u.raw.Conn.SetReadDeadline(time.Now().Add(u.t.response))
	}
	if u.br == nil {
		u.awaitBytes()
		u.br = readerPool.Get().(*bufio.Reader)
		u.br.Reset(&u.lr)
	}
	for n := 0; ; n++ {
		res, err := http.ReadResponse(u.br, req)
		if err != nil {
			if u.lr.limited {
				err = fmt.Errorf("read response: %w (%d bytes)", errHeaderLimit, u.t.maxHeader)
			}
			return nil, err
		}
		code := res.StatusCode
		if code < 100 {
			// net/http would panic writing it to the client.
			return nil, fmt.Errorf("read response: %w: %03d", errBadStatus, code)
		}
		if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
			if proceed {
				w.proceed <- !(res.Close || req.Close)
			}
			u.lr.limit = 0
			if err := u.headersRead(w); err != nil {
				return nil, err // the connection closes: no drain
			}
			return res, nil
		}
		if n >= max1xx {
			return nil, errTooMany1xx
		}
		if info != nil {
			if err := info.informational(code, textproto.MIMEHeader(res.Header)); err != nil {
				return nil, err
			}
			u.lr.base = u.lr.n
		}
		// The body is read only once the client has the member's 100:
		// read before, it would make net/http send a 100 of its own.
		if code == http.StatusContinue && proceed {
			w.proceed <- true
			proceed = false
		}
	}
}

// wrote starts the response header timeout once the request is written
// (a long upload is not bounded by it), unless the response came first.
func (u *upstream) wrote(w *bodyWrite) {
	w.mu.Lock()
	if !w.headers && u.t.response > 0 {
		u.raw.Conn.SetReadDeadline(time.Now().Add(u.t.response))
	}
	w.mu.Unlock()
}

// headersRead clears the response header timeout. A response that
// comes after the client's body failed is the member's answer to a
// truncated request (the connection's close told it): the client's error
// is returned instead.
func (u *upstream) headersRead(w *bodyWrite) error {
	if w == nil {
		u.raw.Conn.SetReadDeadline(time.Time{})
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.headers = true
	u.raw.Conn.SetReadDeadline(time.Time{})
	return w.bodyErr
}

// upBody is a response body: at its end the connection goes back to the
// idle list when it can carry another request, else it closes.
type upBody struct {
	u    *upstream
	rc   io.ReadCloser
	res  *http.Response
	req  *http.Request
	w    *bodyWrite
	cut  func() bool
	done bool
}

func (b *upBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil {
		b.finish(err == io.EOF)
	}
	return n, err
}

func (b *upBody) Close() error {
	b.finish(false)
	return nil
}

// finish ends the exchange: complete says the body was read to its end.
func (b *upBody) finish(complete bool) {
	if b.done {
		return
	}
	b.done = true
	u := b.u
	reuse := b.cut() && complete && !b.res.Close && !b.req.Close && !u.lr.ended &&
		u.br.Buffered() == 0 && (b.w == nil || b.w.finished())
	if !reuse {
		u.close()
		return
	}
	u.raw.Conn.SetReadDeadline(time.Time{})
	u.dropReader()
	u.reused = false
	u.t.putIdle(u)
}

// upgradeBody is the connection after a 101: what the parser read ahead
// first, then the connection itself.
type upgradeBody struct{ u *upstream }

func (b *upgradeBody) Read(p []byte) (int, error) { return b.u.br.Read(p) }

func (b *upgradeBody) Write(p []byte) (int, error) { return b.u.conn.Write(p) }

func (b *upgradeBody) Close() error { return b.u.conn.Close() }

// upgradeAsked reports whether a 101's Upgrade is the protocol the
// request asked for.
func upgradeAsked(req, res http.Header) bool {
	want, got := req.Get("Upgrade"), res.Get("Upgrade")
	return want != "" && hasToken(req, "Connection", "Upgrade") && strings.EqualFold(want, got)
}

// hasToken reports whether a comma-separated header lists token.
func hasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for part := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(part), token) {
				return true
			}
		}
	}
	return false
}
