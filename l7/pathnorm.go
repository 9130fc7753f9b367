package l7

import (
	"net/http"
	"path"
	"strings"
	"unicode/utf8"
)

// maxDecodeRounds bounds repeated percent-decoding (%252f -> %2f -> /).
const maxDecodeRounds = 4

// normalizeDenyPrefix turns a configured denied prefix into the form
// normalizePath produces: lower case, one leading slash, no trailing one.
func normalizeDenyPrefix(p string) string {
	n := normalizePath(p)
	if n != "/" {
		n = strings.TrimSuffix(n, "/")
	}
	return n
}

// normalizePath maps every spelling IIS and other Windows servers treat as
// the same path onto one form, for comparison with denied prefixes only
// (the request is forwarded as the client sent it):
//   - percent-decoding repeated (%2f, %252f), %uXXXX, overlong UTF-8 for
//     '/', '\' and '.';
//   - backslashes as slashes, runs of slashes as one;
//   - ";params" cut from every segment, trailing dots and spaces and
//     NTFS stream suffixes (":$DATA") cut from names;
//   - "." and ".." resolved;
//   - lower case.
func normalizePath(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	for range maxDecodeRounds {
		d := decodePercent(p)
		if d == p {
			break
		}
		p = d
	}
	// A query separator that only appears after decoding is part of the
	// name for IIS too ("/cscp%3f" is the path "/cscp?"); cut it so the
	// prefix still matches.
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	p = strings.ReplaceAll(p, "\\", "/")
	segs := strings.Split(p, "/")
	out := segs[:0]
	for _, s := range segs {
		if i := strings.IndexByte(s, ';'); i >= 0 {
			s = s[:i]
		}
		if s != "." && s != ".." {
			if i := strings.IndexByte(s, ':'); i >= 0 {
				s = s[:i]
			}
			s = strings.TrimRight(s, ". ")
		}
		if s == "" {
			continue
		}
		out = append(out, s)
	}
	return strings.ToLower(path.Clean("/" + strings.Join(out, "/")))
}

// decodePercent decodes %XX, %uXXXX and overlong two-byte UTF-8 forms of
// '/', '\' and '.'. Malformed escapes are kept as they are.
func decodePercent(s string) string {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, 0xc0) < 0 &&
		strings.IndexByte(s, 0xc1) < 0 && strings.IndexByte(s, 0xe0) < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+5 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U') {
				if r, ok := hex4(s[i+2 : i+6]); ok {
					b.WriteRune(r)
					i += 5
					continue
				}
			}
			if i+2 < len(s) {
				if h, ok := hexVal(s[i+1]); ok {
					if l, ok := hexVal(s[i+2]); ok {
						b.WriteByte(h<<4 | l)
						i += 2
						continue
					}
				}
			}
		}
		b.WriteByte(c)
	}
	d := b.String()
	for _, o := range [...]struct{ from, to string }{
		{"\xc0\xaf", "/"}, {"\xc1\x9c", "\\"}, {"\xc0\xae", "."},
		{"\xe0\x80\xaf", "/"},
	} {
		d = strings.ReplaceAll(d, o.from, o.to)
	}
	return d
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func hex4(s string) (rune, bool) {
	var r rune
	for i := range 4 {
		v, ok := hexVal(s[i])
		if !ok {
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	if !utf8.ValidRune(r) {
		return 0, false
	}
	return r, true
}

// requestPaths returns the spellings of the request's path to check: the
// decoded URL path, its escaped form, and the raw request target (minus
// scheme and authority when the client sent an absolute URI).
func requestPaths(r *http.Request) []string {
	out := []string{r.URL.Path, r.URL.EscapedPath()}
	raw := r.RequestURI
	if i := strings.Index(raw, "://"); i >= 0 && !strings.HasPrefix(raw, "/") {
		rest := raw[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			raw = rest[j:]
		} else {
			raw = "/"
		}
	}
	if raw != "" && raw != out[1] {
		out = append(out, raw)
	}
	return out
}

// deniedPrefix returns the denied prefix the request's path falls under,
// whichever way it is spelled.
func deniedPrefix(r *http.Request, deny []string) (string, bool) {
	if len(deny) == 0 {
		return "", false
	}
	for _, p := range requestPaths(r) {
		n := normalizePath(p)
		for _, d := range deny {
			if n == d || strings.HasPrefix(n, d+"/") || d == "/" {
				return d, true
			}
		}
	}
	return "", false
}
