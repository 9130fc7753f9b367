package l7

import (
	"errors"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Request targets on sites with strict paths (Site.StrictPaths)
// are taken as the client sent them and accepted only when they are
// already in canonical form: then there is exactly one way to read them,
// and a member (IIS and http.sys on a Skype front end) cannot read them
// as a path other than the one the denied prefixes were matched against.
// Anything else is refused with 400 before routing, rather than
// normalised: every normaliser that differs from the member's in one
// detail is a way around the denied prefixes.

// canonicalTarget returns the path of a request target (the bytes of the
// request line, or HTTP/2's :path) decoded once, or an error saying why
// the target is not in canonical form. An absolute-form target
// (http://host/path) is read after its scheme and authority. Refused:
//   - raw bytes that are not printable ASCII (control characters, space,
//     NUL, non-ASCII) and a raw '#' anywhere: a client never sends a
//     fragment, and a forwarded '#' would reach the member as %23;
//   - an empty segment ("//"; a trailing slash is allowed);
//   - '\' (raw or %5c), which IIS reads as '/';
//   - ';' or ':' in a segment, raw or encoded (path parameters, NTFS
//     streams as in "cscp::$DATA");
//   - %u escapes (IIS decodes %u002f) and malformed escapes;
//   - an escape that decodes to '/', '?', '#', '%' (double encoding) or a
//     control character;
//   - after decoding: invalid UTF-8, which includes overlong forms such
//     as %c0%af, and Unicode control characters;
//   - a dot segment ("." or ".."), in any encoding;
//   - a segment ending in '.' or ' ' (Windows drops them: "cscp." is
//     "cscp").
//
// The query is not a path and is only checked for the raw bytes above.
func canonicalTarget(raw string) (string, error) {
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c <= ' ' || c >= 0x7f {
			return "", errors.New("raw control, space or non-ASCII byte (percent-encode it)")
		} else if c == '#' {
			return "", errors.New("raw '#' (a fragment is never sent)")
		}
	}
	p := raw
	if !strings.HasPrefix(p, "/") {
		var err error
		if p, err = originForm(p); err != nil {
			return "", err
		}
	}
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	segs := strings.Split(p[1:], "/")
	for i, seg := range segs {
		if seg == "" && i < len(segs)-1 {
			return "", errors.New("empty segment")
		}
		d, err := canonicalSegment(seg)
		if err != nil {
			return "", err
		}
		segs[i] = d
	}
	return "/" + strings.Join(segs, "/"), nil
}

// originForm returns the path and query of an absolute-form target.
func originForm(raw string) (string, error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || !(strings.EqualFold(scheme, "http") || strings.EqualFold(scheme, "https")) {
		return "", errors.New("target is neither a path nor an http(s) URL")
	}
	i := strings.IndexAny(rest, "/?")
	switch {
	case i < 0:
		return "/", nil
	case rest[i] == '?':
		return "/" + rest[i:], nil
	}
	return rest[i:], nil
}

// canonicalSegment decodes one raw path segment, or says why it is not
// canonical.
func canonicalSegment(seg string) (string, error) {
	if strings.IndexByte(seg, '\\') >= 0 {
		return "", errors.New("backslash")
	}
	d, err := decodeSegment(seg)
	if err != nil {
		return "", err
	}
	if !utf8.ValidString(d) {
		return "", errors.New("invalid or overlong UTF-8")
	}
	for _, r := range d {
		if unicode.IsControl(r) {
			return "", errors.New("control character")
		}
	}
	switch {
	case d == "." || d == "..":
		return "", errors.New("dot segment")
	case strings.ContainsAny(d, ";:"):
		return "", errors.New("';' or ':' in a segment")
	case strings.HasSuffix(d, ".") || strings.HasSuffix(d, " "):
		return "", errors.New("segment ending in a dot or space")
	}
	return d, nil
}

// decodeSegment decodes the %XX escapes of a segment once. An escape of
// a character that would change how the path splits or decodes, or of a
// control character, is an error, as are %u and malformed escapes.
func decodeSegment(seg string) (string, error) {
	if strings.IndexByte(seg, '%') < 0 {
		return seg, nil
	}
	b := make([]byte, 0, len(seg))
	for i := 0; i < len(seg); i++ {
		if seg[i] != '%' {
			b = append(b, seg[i])
			continue
		}
		if i+1 < len(seg) && (seg[i+1] == 'u' || seg[i+1] == 'U') {
			return "", errors.New("%u escape")
		}
		if i+2 >= len(seg) {
			return "", errors.New("malformed percent-escape")
		}
		h, ok1 := hexVal(seg[i+1])
		l, ok2 := hexVal(seg[i+2])
		if !ok1 || !ok2 {
			return "", errors.New("malformed percent-escape")
		}
		switch c := h<<4 | l; {
		case c == '/' || c == '?' || c == '#' || c == '%' || c == '\\':
			return "", errors.New("escaped / ? # % or \\")
		case c < ' ' || c == 0x7f:
			return "", errors.New("escaped control character")
		default:
			b = append(b, c)
		}
		i += 2
	}
	return string(b), nil
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

// denyRule is a denied path prefix and its segments.
type denyRule struct {
	prefix string
	segs   []string
}

func newDenyRule(prefix string) denyRule {
	var segs []string
	for _, s := range strings.Split(prefix, "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	return denyRule{prefix: prefix, segs: segs}
}

// matches reports whether a canonical path lies under the prefix: its
// first segments equal the prefix's under Unicode case folding, as IIS
// compares them ("/c%C5%BFcp" is "/cſcp", which folds to "/cscp").
func (d denyRule) matches(path string) bool {
	rest := strings.TrimPrefix(path, "/")
	for _, want := range d.segs {
		seg, tail, _ := strings.Cut(rest, "/")
		if !strings.EqualFold(seg, want) {
			return false
		}
		rest = tail
	}
	return true
}

// checkTarget applies the site's path rules to a request: 0 when it may
// go on, else the status to answer and the access log's cause. Without
// strict paths only control characters in the decoded path are refused.
func (vh *vhost) checkTarget(s *site, r *http.Request) (int, cause) {
	if !s.strictPaths {
		if hasControl(r.URL.Path) {
			return http.StatusBadRequest, causeBadPath
		}
		return 0, causeNone
	}
	if r.RequestURI == "*" && r.Method == http.MethodOptions {
		return 0, causeNone
	}
	path, err := canonicalTarget(r.RequestURI)
	if err != nil {
		vh.p.log.Info("request refused: target not in canonical form", "virtual", vh.name, "site", s.name,
			"client", remoteAddr(r).String(), "target", truncate(r.RequestURI, 256), "reason", err.Error())
		return http.StatusBadRequest, causeBadPath
	}
	for _, d := range s.deny {
		if d.matches(path) {
			vh.p.metrics.denied.WithLabelValues(vh.name, s.name).Inc()
			vh.p.log.Warn("request denied", "virtual", vh.name, "site", s.name,
				"client", remoteAddr(r).String(), "host", r.Host, "path", truncate(r.RequestURI, 256), "rule", d.prefix)
			return http.StatusForbidden, causeDenied
		}
	}
	return 0, causeNone
}
