package diagnose

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// MsDiagnostic is a decoded X-Ms-diagnostics header of a Lync / Skype
// server: `28032;source="host";reason="The web ticket is invalid.";...`.
type MsDiagnostic struct {
	Code   int
	Fields map[string]string // source, reason, faultcode, ...
	Raw    string
}

// ParseMsDiagnostics decodes one X-Ms-diagnostics value. Quoted values may
// hold ';'. Typographic quotes (from copied logs) are accepted.
func ParseMsDiagnostics(v string) (MsDiagnostic, error) {
	d := MsDiagnostic{Raw: v, Fields: map[string]string{}}
	v = strings.NewReplacer("\u201c", `"`, "\u201d", `"`).Replace(strings.TrimSpace(v))
	codeStr, rest, _ := strings.Cut(v, ";")
	code, err := strconv.Atoi(strings.TrimSpace(codeStr))
	if err != nil {
		return d, fmt.Errorf("parse X-Ms-diagnostics %q: code %q is not a number", d.Raw, codeStr)
	}
	d.Code = code
	for rest != "" {
		rest = strings.TrimLeft(rest, "; ")
		if rest == "" {
			break
		}
		k, after, ok := strings.Cut(rest, "=")
		if !ok {
			return d, fmt.Errorf("parse X-Ms-diagnostics %q: %q has no value", d.Raw, rest)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		var val string
		if strings.HasPrefix(after, `"`) {
			end := strings.IndexByte(after[1:], '"')
			if end < 0 {
				return d, fmt.Errorf("parse X-Ms-diagnostics %q: unterminated quote after %s=", d.Raw, k)
			}
			val, rest = after[1:1+end], after[2+end:]
		} else {
			val, rest, _ = strings.Cut(after, ";")
			val = strings.TrimSpace(val)
		}
		d.Fields[k] = val
	}
	return d, nil
}

// String shows the decoded header.
func (d MsDiagnostic) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "code %d", d.Code)
	for _, k := range []string{"reason", "source", "faultcode"} {
		if v, ok := d.Fields[k]; ok {
			fmt.Fprintf(&b, ", %s %q", k, v)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(d.Fields)) {
		if k != "reason" && k != "source" && k != "faultcode" {
			fmt.Fprintf(&b, ", %s %q", k, d.Fields[k])
		}
	}
	return b.String()
}

// msDiagHints explains codes met in the field.
var msDiagHints = map[int]string{
	28032: "the web ticket is invalid: the certificate on the External Web Site (port 4443) of the front ends is wrong, " +
		"e.g. the Edge's public certificate instead of one with the pool's FQDN as subject; clients without a stored " +
		"user certificate (TLS-DSK) cannot sign in from outside",
}
