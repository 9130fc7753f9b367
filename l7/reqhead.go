package l7

import (
	"bufio"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// maxPlainHeaders bounds the header fields a plain head is written
// with (sorted on the stack); a request with more goes through
// Request.Write.
const maxPlainHeaders = 48

// writeRequestHead writes a request without a body. The common request
// (see plainHost) is written here, in one pass over its header map; the
// bytes are those (*http.Request).Write writes for it, which writes
// every other request.
func writeRequestHead(bw *bufio.Writer, req *http.Request) error {
	host, target, ok := plainHost(req)
	if !ok {
		return req.Write(bw)
	}
	var kv [maxPlainHeaders]headerField
	fields := sortedFields(kv[:0], req.Header)
	writePlainHead(bw, req, host, target, fields)
	return nil
}

// plainHost returns the Host line's value and the request target of a
// request this file writes as Request.Write would: no body, no
// trailers, no Connection: close, no upgrade or 100-continue, a Host
// that needs no rewriting (ASCII, valid, no IPv6 zone), an origin-form
// target without control bytes, a User-Agent set by the caller, no hook
// of a client trace.
func plainHost(req *http.Request) (host, target string, ok bool) {
	if (req.Body != nil && req.Body != http.NoBody) || req.ContentLength != 0 || req.Close ||
		req.Trailer != nil || len(req.TransferEncoding) > 0 || req.Method == "" || req.Method == "CONNECT" ||
		req.URL == nil || req.URL.Opaque != "" || len(req.Header) > maxPlainHeaders {
		return "", "", false
	}
	h := req.Header
	if _, ok := h["User-Agent"]; !ok {
		return "", "", false
	}
	if _, ok := h["Upgrade"]; ok {
		return "", "", false
	}
	if _, ok := h["Expect"]; ok {
		return "", "", false
	}
	host = req.Host
	if host == "" {
		host = req.URL.Host
	}
	if target = req.URL.EscapedPath(); target == "" {
		target = "/"
	}
	if !asciiNoPercent(host) || !httpguts.ValidHostHeader(host) || hasCTL(target) || hasCTL(req.URL.RawQuery) {
		return "", "", false
	}
	if t := httptrace.ContextClientTrace(req.Context()); t != nil &&
		(t.WroteHeaderField != nil || t.WroteHeaders != nil || t.WroteRequest != nil) {
		return "", "", false
	}
	return host, target, true
}

// asciiNoPercent: s is ASCII and holds no '%' (an IPv6 zone, which
// Request.Write removes).
func asciiNoPercent(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || s[i] == '%' {
			return false
		}
	}
	return true
}

// hasCTL: s holds a control byte (Request.Write refuses the target).
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// headerField is one header of a plain head.
type headerField struct {
	key    string
	values []string
}

// sortedFields appends h's fields but those the head writes itself, in
// key order (as Request.Write sends them), to kv.
func sortedFields(kv []headerField, h http.Header) []headerField {
	for k, vv := range h {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		kv = append(kv, headerField{k, vv})
		for i := len(kv) - 1; i > 0 && kv[i].key < kv[i-1].key; i-- {
			kv[i], kv[i-1] = kv[i-1], kv[i]
		}
	}
	return kv
}

// writePlainHead writes what Request.Write writes for a request
// plainHost accepted: request line, Host, User-Agent, Content-Length: 0
// where net/http sends it for an empty body, the other fields sorted
// (invalid names left out, values trimmed and line breaks made spaces).
// Errors stay in bw and come out of its Flush.
func writePlainHead(bw *bufio.Writer, req *http.Request, host, target string, fields []headerField) {
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(target)
	if req.URL.ForceQuery || req.URL.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(req.URL.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	if ua := req.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		writeField(bw, "User-Agent", ua[0])
	}
	switch req.Method {
	case "POST", "PUT", "PATCH":
		bw.WriteString("Content-Length: 0\r\n")
	}
	for _, f := range fields {
		if !httpguts.ValidHeaderFieldName(f.key) {
			continue
		}
		for _, v := range f.values {
			writeField(bw, f.key, v)
		}
	}
	bw.WriteString("\r\n")
}

// writeField writes one header line, its value trimmed of ASCII space
// and with CR and LF written as spaces, as net/http does.
func writeField(bw *bufio.Writer, key, v string) {
	bw.WriteString(key)
	bw.WriteString(": ")
	v = textproto.TrimString(v)
	for {
		i := strings.IndexAny(v, "\r\n")
		if i < 0 {
			break
		}
		bw.WriteString(v[:i])
		bw.WriteByte(' ')
		v = v[i+1:]
	}
	bw.WriteString(v)
	bw.WriteString("\r\n")
}
