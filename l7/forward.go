package l7

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
)

// hopHeaders are never forwarded (RFC 9110 section 7.6.1, and those RFC
// 2616 listed), besides those the Connection header names.
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// Shared header values: a header map holding one is never appended to in
// place (its capacity is 1).
var (
	noUserAgent = []string{""} // keeps Go's default User-Agent out
	teTrailers  = []string{"trailers"}
)

// removeHopByHop removes the hop-by-hop headers from h.
func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// upstreamRequest is the request sent to a member and its URL, allocated
// together.
type upstreamRequest struct {
	req http.Request
	url url.URL
}

// relay forwards a request without Upgrade to the site's members and
// copies the answer back, as httputil.ReverseProxy does with the site's
// rewrite, modifyResponse and errorHandler (requests with an Upgrade
// still go through it). The client's header map becomes the upstream
// request's: it is filtered in place, not cloned. Past this point only
// the access log reads the client's request, and it has what it needs
// (exchange.xff).
func (x *exchange) relay(body *reqBody) {
	s, in, rw, rec := x.s, x.r, x.rw, x.rec
	up := &upstreamRequest{req: *in, url: *in.URL}
	req := &up.req
	req.URL = &up.url
	switch {
	case in.ContentLength == 0:
		req.Body = nil
	case body != nil:
		req.Body = body
	}
	req.Close = false
	// The client's trailers are not forwarded: they arrive after the
	// header filtering, and a member may merge them with the headers.
	req.Trailer = nil
	if in.Header == nil {
		in.Header = http.Header{}
	}
	h := in.Header
	req.Header = h
	te := hasToken(h, "Te", "trailers")
	f := s.forwardingOf(in)
	removeHopByHop(h)
	if te {
		h["Te"] = teTrailers
	}
	f.apply(h)
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = noUserAgent
	}
	s.target(in, req)

	res, err := s.roundTrip(req, rec, x.cs, rw)
	if err != nil {
		s.fail(rw, req, rec, err)
		return
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		// The transport refuses a 101 nobody asked for: not reached.
		res.Body.Close()
		s.fail(rw, req, rec, errUnaskedUpgrade)
		return
	}
	removeHopByHop(res.Header)
	s.adjustResponse(res, rec, x.cs)
	x.relayResponse(res)
}

// relayResponse writes the member's response to the client: head, body
// (flushed as it comes when its length is unknown or it is an event
// stream) and trailers. A body cut short aborts the client's response.
func (x *exchange) relayResponse(res *http.Response) {
	rw := x.rw
	dst := rw.Header()
	for k, vv := range res.Header {
		// The response is dropped after this: its values are shared.
		if d, ok := dst[k]; ok {
			dst[k] = append(d, vv...)
		} else {
			dst[k] = vv
		}
	}
	announced := len(res.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range res.Trailer {
			keys = append(keys, k)
		}
		dst.Add("Trailer", strings.Join(keys, ", "))
	}
	rw.WriteHeader(res.StatusCode)
	flush := res.ContentLength == -1 || isEventStream(res.Header.Get("Content-Type"))
	if flush {
		rw.FlushError()
	}
	if err := x.copyBody(res.Body, flush); err != nil {
		res.Body.Close()
		panic(http.ErrAbortHandler)
	}
	res.Body.Close() // fills res.Trailer
	if len(res.Trailer) > 0 {
		// Chunked, so that the trailers can follow.
		rw.FlushError()
	}
	prefix := ""
	if len(res.Trailer) != announced {
		prefix = http.TrailerPrefix
	}
	for k, vv := range res.Trailer {
		for _, v := range vv {
			dst.Add(prefix+k, v)
		}
	}
}

// copyBody copies a response body to the client with a pooled buffer.
func (x *exchange) copyBody(src io.Reader, flush bool) error {
	bp := x.s.buffers.get()
	defer x.s.buffers.put(bp)
	buf := *bp
	for {
		nr, rerr := src.Read(buf)
		if rerr != nil && rerr != io.EOF && rerr != context.Canceled {
			x.s.vh.p.log.LogAttrs(x.r.Context(), slog.LevelDebug, "upstream body read failed",
				slog.String("virtual", x.s.vh.name), slog.String("site", x.s.name), slog.String("error", rerr.Error()))
		}
		if nr > 0 {
			nw, werr := x.rw.Write(buf[:nr])
			if werr != nil {
				return werr
			}
			if nw != nr {
				return io.ErrShortWrite
			}
			if flush {
				x.rw.FlushError()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// isEventStream reports whether a Content-Type is text/event-stream.
func isEventStream(ct string) bool {
	base, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(base), "text/event-stream")
}

// informational passes a member's 1xx response on to the client.
func (w *respWriter) informational(code int, h textproto.MIMEHeader) error {
	dst := w.Header()
	for k, vv := range h {
		for _, v := range vv {
			dst.Add(k, v)
		}
	}
	w.WriteHeader(code)
	// WriteHeader does not clear the map after a 1xx.
	clear(dst)
	return nil
}
