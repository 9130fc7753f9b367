package l7

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// accessFields receives the access log's fields in order: an slog
// record's attributes, or a JSON line encoded directly.
type accessFields interface {
	str(key, v string)
	addr(key string, v netip.AddrPort)
	int(key string, v int64)
	uint(key string, v uint64)
	float(key string, v float64)
	bool(key string, v bool)
}

// attrFields are the fields as slog attributes.
type attrFields []slog.Attr

func (a *attrFields) str(key, v string) { *a = append(*a, slog.String(key, v)) }
func (a *attrFields) addr(key string, v netip.AddrPort) {
	*a = append(*a, slog.String(key, v.String()))
}
func (a *attrFields) int(key string, v int64)     { *a = append(*a, slog.Int64(key, v)) }
func (a *attrFields) uint(key string, v uint64)   { *a = append(*a, slog.Uint64(key, v)) }
func (a *attrFields) float(key string, v float64) { *a = append(*a, slog.Float64(key, v)) }
func (a *attrFields) bool(key string, v bool)     { *a = append(*a, slog.Bool(key, v)) }

// jsonLine is one access log line encoded as slog's JSON handler encodes
// a record: time, level and msg, then the fields in order. Keys are the
// log's own constants, written as they are.
type jsonLine struct{ b []byte }

var linePool = sync.Pool{New: func() any { return &jsonLine{b: make([]byte, 0, 1024)} }}

// jsonLineWriter is a handler that takes lines encoded by the caller
// (logs.JSONLines, directly or behind the daemon's switch).
type jsonLineWriter interface{ JSONLineWriter() io.Writer }

// writeAccessLine writes one access log line with the fields emit
// gives: encoded here when the log's handler takes JSON lines, else as
// an slog record (text logs, handlers with attributes).
func writeAccessLine(ctx context.Context, log *slog.Logger, now time.Time, emit func(accessFields)) {
	h := log.Handler()
	if lw, ok := h.(jsonLineWriter); ok {
		if w := lw.JSONLineWriter(); w != nil {
			l := linePool.Get().(*jsonLine)
			l.start(now, "request")
			emit(l)
			l.b = append(l.b, '}', '\n')
			w.Write(l.b)
			if cap(l.b) <= 16<<10 {
				linePool.Put(l)
			}
			return
		}
	}
	attrs := make(attrFields, 0, 24)
	emit(&attrs)
	// A record without a caller's PC: the access log has no source, and
	// finding the PC costs a stack walk per request.
	line := slog.NewRecord(now, slog.LevelInfo, "request", 0)
	line.AddAttrs(attrs...)
	h.Handle(ctx, line)
}

func (l *jsonLine) start(now time.Time, msg string) {
	l.b = append(l.b[:0], `{"time":"`...)
	l.b = now.Round(0).AppendFormat(l.b, time.RFC3339Nano)
	l.b = append(l.b, `","level":"INFO","msg":`...)
	l.b = appendJSONString(l.b, msg)
}

func (l *jsonLine) key(key string) {
	l.b = append(l.b, ',', '"')
	l.b = append(l.b, key...)
	l.b = append(l.b, '"', ':')
}

func (l *jsonLine) str(key, v string) {
	l.key(key)
	l.b = appendJSONString(l.b, v)
}

// addr writes an address without a zone as it is (digits, dots, colons
// and brackets need no escape); one with a zone, or none, is written as
// its String.
func (l *jsonLine) addr(key string, v netip.AddrPort) {
	if !v.IsValid() || v.Addr().Zone() != "" {
		l.str(key, v.String())
		return
	}
	l.key(key)
	l.b = append(l.b, '"')
	l.b = v.AppendTo(l.b)
	l.b = append(l.b, '"')
}

func (l *jsonLine) int(key string, v int64) {
	l.key(key)
	l.b = strconv.AppendInt(l.b, v, 10)
}

func (l *jsonLine) uint(key string, v uint64) {
	l.key(key)
	l.b = strconv.AppendUint(l.b, v, 10)
}

func (l *jsonLine) bool(key string, v bool) {
	l.key(key)
	l.b = strconv.AppendBool(l.b, v)
}

// float writes v as encoding/json does (slog's JSON handler calls it):
// exponent form only outside [1e-6, 1e21), with a two-digit negative
// exponent shortened. NaN and infinities, which it refuses, are quoted
// as slog writes its error in their place.
func (l *jsonLine) float(key string, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		l.str(key, "!ERROR:json: unsupported value: "+strconv.FormatFloat(v, 'g', -1, 64))
		return
	}
	l.key(key)
	format := byte('f')
	if abs := math.Abs(v); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	l.b = strconv.AppendFloat(l.b, v, format, -1, 64)
	if n := len(l.b); format == 'e' && n >= 4 && l.b[n-4] == 'e' && l.b[n-3] == '-' && l.b[n-2] == '0' {
		l.b[n-2] = l.b[n-1]
		l.b = l.b[:n-1]
	}
}

// appendJSONString appends s quoted as slog's JSON handler writes it:
// quote and backslash escaped, \n \r \t, other control bytes as \u00XX,
// each invalid UTF-8 byte as \ufffd, U+2028 and U+2029 escaped; HTML
// characters as they are.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// tcpAddrPort is a's address as netip, when it prints the same as
// a.String() (a TCP address with an IPv4 or IPv6 address and no zone).
func tcpAddrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok || ta.Zone != "" {
		return netip.AddrPort{}, false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	if !ok || ta.Port < 0 || ta.Port > 65535 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(ta.Port)), true
}
