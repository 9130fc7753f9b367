package l7

import (
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

func TestDeniedPathsInAllSpellings(t *testing.T) {
	e := newEnv(t, envOptions{site: func(s *config.Site) { s.Deny = []string{"/Internal/Admin"} }})
	spellings := append(deniedSpellings, "/internal/admin", "/INTERNAL//admin/x", "/internal%2fadmin")
	for _, p := range spellings {
		c := e.dialTLS("webext.example.com")
		res, _, err := c.raw("GET " + p + " HTTP/1.1\r\nHost: webext.example.com\r\n\r\n")
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if res.StatusCode != 403 {
			t.Errorf("%s: %d, want 403", p, res.StatusCode)
		}
	}
	// net/http itself refuses malformed escapes.
	if res, _, err := e.dialTLS("webext.example.com").raw("GET /%u0063scp HTTP/1.1\r\nHost: webext.example.com\r\n\r\n"); err != nil || res.StatusCode != 400 {
		t.Errorf("/%%u0063scp: %v %v, want 400", res, err)
	}
	// The same through curl, which keeps the path as given.
	port := portOf(e.httpsAddr)
	for _, p := range []string{"/cscp", "/%2fCSCP/", "/a/..%2fOcsPowerShell"} {
		out, err := curl(t, append(e.resolveArgs(port, "meet.example.com"), "--cacert", e.public.rootPath,
			"--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", "https://meet.example.com:"+port+p)...)
		if err != nil || out != "403" {
			t.Errorf("curl %s: %q %v, want 403", p, out, err)
		}
	}
	for _, m := range e.members {
		if n := m.fe.ManagementHits(); n != 0 {
			t.Fatalf("%s: %d requests reached a management path", m.addr, n)
		}
	}
	if !strings.Contains(e.log.String(), `"msg":"request denied"`) {
		t.Error("no log line for denied requests")
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

func TestNormalizePath(t *testing.T) {
	for in, want := range map[string]string{
		"/":                  "/",
		"":                   "/",
		"/A/B/":              "/a/b",
		"/a/./b/../c":        "/a/c",
		"/%2e%2e/%2E%2e/x":   "/x",
		"/a%5cb":             "/a/b",
		"/a;p=1/b;q":         "/a/b",
		"/a.. /b":            "/a/b",
		"/%u002Fa":           "/a",
		"/%zz":               "/%zz",
		"/a%":                "/a%",
		"/x/%252e%252e/cscp": "/cscp",
	} {
		if got := normalizePath(in); got != want {
			t.Errorf("normalizePath(%q) = %q, want %q", in, got, want)
		}
	}
}
