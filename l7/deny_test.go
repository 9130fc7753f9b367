package l7

import (
	"net/http"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
)

var deniedSpellings = []string{
	"/cscp", "/CSCP", "/CsCp/", "/cscp/Default.aspx", "//cscp", "///cscp/x", "/./cscp", "/foo/../cscp",
	"/foo/../../cscp", "/%63scp", "/%43SCP", "/%2fcscp", "/%2Fcscp", "/x/..%2fcscp", "/x/%2e%2e/cscp",
	"/x/.%2e/cscp", "/%2e/cscp", "/x%5c..%5ccscp", "/%5ccscp", "/cscp;jsessionid=1", "/cscp%3bx",
	"/cscp.", "/cscp%20", "/cscp%2e", "/cscp::$DATA", "/%252fcscp", "/%25252fcscp", "/%25u0063scp", "/%c0%afcscp",
	"/cscp?x=1", "/cscp%3fx", "https://webext.example.com/cscp", "/OcsPowerShell", "/ocspowershell/x",
	"/RGSCONFIG", "/rgsconfig%2f", "/RgsConfig/../RgsConfig/", "/Autodiscover/..%5c..%5cOcsPowerShell",
	"/CSCP%252F", "/%2F%2Fcscp",
}

// deniedCanonical are the spellings of deniedSpellings already in
// canonical form: denied (403); every other spelling is refused (400).
var deniedCanonical = map[string]bool{
	"/cscp": true, "/CSCP": true, "/CsCp/": true, "/cscp/Default.aspx": true, "/%63scp": true, "/%43SCP": true,
	"/cscp?x=1": true, "https://webext.example.com/cscp": true, "/OcsPowerShell": true, "/ocspowershell/x": true,
	"/RGSCONFIG": true, "/internal/admin": true,
}

func TestDeniedPathsInAllSpellings(t *testing.T) {
	e := newEnv(t, envOptions{site: func(s *config.Site) { s.Deny = []string{"/Internal/Admin"} }})
	spellings := append(deniedSpellings, "/internal/admin", "/INTERNAL//admin/x", "/internal%2fadmin")
	for _, p := range spellings {
		c := e.dialTLS("webext.example.com")
		res, _, err := c.raw("GET " + p + " HTTP/1.1\r\nHost: webext.example.com\r\n\r\n")
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		want := http.StatusBadRequest
		if deniedCanonical[p] {
			want = http.StatusForbidden
		}
		if res.StatusCode != want {
			t.Errorf("%s: %d, want %d", p, res.StatusCode, want)
		}
	}
	// net/http itself refuses malformed escapes.
	if res, _, err := e.dialTLS("webext.example.com").raw("GET /%u0063scp HTTP/1.1\r\nHost: webext.example.com\r\n\r\n"); err != nil || res.StatusCode != 400 {
		t.Errorf("/%%u0063scp: %v %v, want 400", res, err)
	}
	// The same through curl, which keeps the path as given.
	port := portOf(e.httpsAddr)
	for p, want := range map[string]string{"/cscp": "403", "/%2fCSCP/": "400", "/a/..%2fOcsPowerShell": "400"} {
		out, err := curl(t, append(e.resolveArgs(port, "meet.example.com"), "--cacert", e.public.rootPath,
			"--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", "https://meet.example.com:"+port+p)...)
		if err != nil || out != want {
			t.Errorf("curl %s: %q %v, want %s", p, out, err, want)
		}
	}
	for _, m := range e.members {
		if n := m.fe.ManagementHits(); n != 0 {
			t.Fatalf("%s: %d requests reached a management path", m.addr, n)
		}
	}
	for _, msg := range []string{`"msg":"request denied"`, `"msg":"request refused: target not in canonical form"`} {
		if !strings.Contains(e.log.String(), msg) {
			t.Errorf("no log line %s", msg)
		}
	}

	// Neighbouring paths stay published.
	for p, want := range map[string]int{
		"/Autodiscover/AutodiscoverService.svc/root": 200,
		"/abc/cscp":        404,
		"/WebTicket/x":     401,
		"/internal/admin2": 404,
	} {
		c := e.dialTLS("webext.example.com")
		res, _, err := c.raw("GET " + p + " HTTP/1.1\r\nHost: webext.example.com\r\n\r\n")
		if err != nil || res.StatusCode != want {
			t.Errorf("%s: %v %v, want %d", p, res.StatusCode, err, want)
		}
	}
}

func TestCanonicalTarget(t *testing.T) {
	for raw, want := range map[string]string{
		"/":                              "/",
		"/cscp/":                         "/cscp/",
		"/a/b?x=/../y":                   "/a/b",
		"/%63s%43p":                      "/csCp",
		"/c%C5%BFcp":                     "/cſcp",
		"/caf%C3%A9/x":                   "/café/x",
		"/a+b/~c":                        "/a+b/~c",
		"http://webext.example.com/cscp": "/cscp",
		"HTTPS://h:443":                  "/",
		"https://h?q":                    "/",
	} {
		if got, err := canonicalTarget(raw); err != nil || got != want {
			t.Errorf("canonicalTarget(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
	for raw, reason := range map[string]string{
		"/a//b":            "empty segment",
		"//cscp":           "empty segment",
		"/cscp/./x":        "dot segment",
		"/x/../cscp":       "dot segment",
		"/x/%2e%2E/cscp":   "dot segment",
		"/x/.%2e/cscp":     "dot segment",
		"/x/%c0%ae%c0%ae/": "invalid or overlong UTF-8",
		"/%c0%afcscp":      "invalid or overlong UTF-8",
		"/x/%u002e%u002e/": "%u escape",
		"/cscp;x":          "';' or ':' in a segment",
		"/cscp%3bx":        "';' or ':' in a segment",
		"/cscp::$DATA":     "';' or ':' in a segment",
		"/x\\..\\cscp":     "backslash",
		"/x%5c..%5ccscp":   "escaped / ? # % or \\",
		"/x%2f..%2fcscp":   "escaped / ? # % or \\",
		"/x%3f/../cscp/":   "escaped / ? # % or \\",
		"/%252fcscp":       "escaped / ? # % or \\",
		"/x%23/../cscp":    "escaped / ? # % or \\",
		"/x#/../cscp/":     "raw '#'",
		"/cscp.":           "segment ending in a dot or space",
		"/cscp%20":         "segment ending in a dot or space",
		"/cscp%2e/":        "segment ending in a dot or space",
		"/cscp%00":         "escaped control character",
		"/cscp%C2%85":      "control character",
		"/a b":             "raw control, space or non-ASCII byte",
		"/caf\xc3\xa9":     "raw control, space or non-ASCII byte",
		"/cscp%":           "malformed percent-escape",
		"/cscp%zz":         "malformed percent-escape",
		"*":                "neither a path nor an http(s) URL",
		"ftp://h/cscp":     "neither a path nor an http(s) URL",
		"cscp":             "neither a path nor an http(s) URL",
		"http://h//cscp":   "empty segment",
	} {
		if got, err := canonicalTarget(raw); err == nil || !strings.Contains(err.Error(), reason) {
			t.Errorf("canonicalTarget(%q) = %q, %v; want an error with %q", raw, got, err, reason)
		}
	}
}

func TestDenyRuleFoldsCase(t *testing.T) {
	d := newDenyRule("/Internal/Kiosk/")
	for p, want := range map[string]bool{
		"/internal/kiosk": true, "/INTERNAL/KIOSK/x": true, "/internal/\u212aiosk": true, "/ınternal/kiosk": false,
		"/internal": false, "/internal/kiosks": false, "/x/internal/kiosk": false,
	} {
		if d.matches(p) != want {
			t.Errorf("%s under %s: %v, want %v", p, d.prefix, !want, want)
		}
	}
	if !newDenyRule("/cscp").matches("/c\u017fcp/x") || !newDenyRule("/").matches("/anything") {
		t.Error("long s or the root prefix not matched")
	}
}
