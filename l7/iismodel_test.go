package l7

import (
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// A model of how a Skype for Business front end (IIS on http.sys, files
// on NTFS) reads a request target, to decide which targets a proxy must
// never let through. Where the real behaviour depends on settings or is
// not documented, the model takes every reading that could reach a
// management application: a target is "management" when any reading
// routes into one.
//
// Sources of the rules:
//   - [RFC 9112 §3.2.2] a server accepts absolute-form targets; the
//     scheme and authority are not part of the path.
//   - [RFC 3986 §3.4, §3.5] the path ends at the first '?'. A client never
//     sends a fragment; a raw '#' in a target is either cut by some
//     component as a fragment or kept as a character (a proxy that
//     re-encodes forwards it as %23, which IIS decodes into the name):
//     both readings.
//   - [http.sys registry settings, learn.microsoft.com "Http.sys registry
//     settings for Windows"] PercentUAllowed=1 (default): %uXXXX is
//     decoded as a UTF-16 unit. FavorUTF8=1, EnableNonUTF8=1: the decoded
//     bytes are read as UTF-8 when valid, else in the ANSI code page, so
//     an overlong form (%c0%af) is two letters, not '/' (IIS 4/5 decoded
//     them as '/', MS00-078; modern http.sys does not).
//     AllowRestrictedChars=0: an escape decoding to U+0000-U+001F or
//     U+007F-U+009F is refused (400). A malformed escape is refused (400).
//   - [http.sys URL canonicalisation] decoding happens once; %2F decodes to
//     a '/' that separates segments; '\' (raw or %5C) is a separator like
//     '/'; "." and ".." segments of the decoded path are removed as in
//     [RFC 3986 §5.2.4], never above the root.
//   - [Windows path normalisation, learn.microsoft.com "Naming Files,
//     Paths, and Namespaces"] when IIS maps the URL onto the file system:
//     runs of separators are one; trailing dots and spaces of a name are
//     dropped ("cscp." and "cscp " are "cscp"); ':' starts an NTFS stream
//     name ("cscp::$DATA" is "cscp"). The model reads these both after
//     dot-segment removal (http.sys first) and before it (a segment ".. "
//     trimmed to ".." by the file system).
//   - [IIS] URLs and application paths compare case-insensitively; the
//     model folds case the Unicode way (strings.EqualFold), so 'ſ' (U+017F)
//     reads as 's' and the Kelvin sign as 'k'.
//   - ';' has no meaning to IIS: "/cscp;x" is a name of its own, not /cscp.

// iisApps are the front end's management applications.
var iisApps = []string{"cscp", "OcsPowerShell", "RgsConfig"}

// iisVerdict is what the model says of a target: "refused" (http.sys
// answers 400), "management" or "other".
func iisVerdict(target string) string {
	readings, refused := iisReadings(target)
	if refused {
		return "refused"
	}
	for _, p := range readings {
		first, _, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
		for _, app := range iisApps {
			if strings.EqualFold(first, app) {
				return "management"
			}
		}
	}
	return "other"
}

// iisReadings returns the paths IIS may read a raw target as, or refused
// when http.sys refuses it.
func iisReadings(target string) (paths []string, refused bool) {
	if !strings.HasPrefix(target, "/") {
		_, rest, ok := strings.Cut(target, "://")
		if !ok {
			return nil, true
		}
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			target = rest[i:]
		} else {
			target = "/"
		}
	}
	variants := []string{target}
	if i := strings.IndexByte(target, '#'); i >= 0 {
		variants = append(variants, target[:i])
	}
	for _, v := range variants {
		if i := strings.IndexByte(v, '?'); i >= 0 {
			v = v[:i]
		}
		decoded, ok := iisDecode(v)
		if !ok {
			return nil, true
		}
		decoded = strings.ReplaceAll(decoded, "\\", "/")
		paths = append(paths, fileNames(removeDots(decoded)), removeDots(fileNames(decoded)))
	}
	return paths, false
}

// iisDecode decodes %XX and %uXXXX once and reads the bytes as UTF-8 or,
// when they are not valid UTF-8, as single-byte characters (none of which
// is '/', '\' or '.'). ok is false where http.sys refuses the target.
func iisDecode(s string) (string, bool) {
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+5 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U') {
			v, err := strconv.ParseUint(s[i+2:i+6], 16, 16)
			if err != nil || utf16.IsSurrogate(rune(v)) {
				return "", false
			}
			b = utf8.AppendRune(b, rune(v))
			i += 5
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", false
		}
		b = append(b, byte(v))
		i += 2
	}
	var out []rune
	if utf8.Valid(b) {
		out = []rune(string(b))
	} else {
		for _, c := range b {
			r := rune(c)
			if c >= 0x80 {
				r = 0x2500 + rune(c) // a letter of the code page
			}
			out = append(out, r)
		}
	}
	for _, r := range out {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			return "", false
		}
	}
	return string(out), true
}

// removeDots removes "." and ".." segments, never above the root.
func removeDots(p string) string {
	var out []string
	segs := strings.Split(strings.TrimPrefix(p, "/"), "/")
	for i, s := range segs {
		switch s {
		case ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
			continue
		}
		if i == len(segs)-1 {
			out = append(out, "")
		}
	}
	return "/" + strings.Join(out, "/")
}

// fileNames applies the file system's reading of names: empty segments
// dropped, everything from ':' cut, trailing dots and spaces dropped
// (but "." and ".." stay dot segments).
func fileNames(p string) string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		s, _, _ = strings.Cut(s, ":")
		s = strings.TrimRight(s, " ")
		if s != "." && s != ".." {
			s = strings.TrimRight(s, ". ")
		}
		if s != "" {
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}
