package l7

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// pathTemplates spell a target around an application name; each is sent
// for the three management applications. The note names the reading of
// the IIS model (iismodel_test.go) the spelling tries.
var pathTemplates = []struct {
	note  string
	spell func(app string) string
}{
	{"plain", func(a string) string { return "/" + a }},
	{"trailing slash", func(a string) string { return "/" + a + "/" }},
	{"query", func(a string) string { return "/" + a + "/Default.aspx?x=/../y" }},
	{"escaped letter", func(a string) string { return fmt.Sprintf("/%%%02X%s", a[0], a[1:]) }},
	{"long s folds to s", func(a string) string { return "/" + strings.Replace(strings.ToLower(a), "s", "%C5%BF", 1) }},
	{"%u escape", func(a string) string { return fmt.Sprintf("/%%u%04x%s", a[0], a[1:]) }},
	{"dot segment", func(a string) string { return "/./" + a }},
	{"dot-dot", func(a string) string { return "/x/../" + a + "/" }},
	{"dot-dot above root", func(a string) string { return "/../" + a }},
	{"dot-dot inside", func(a string) string { return "/" + a + "/x/.." }},
	{"dot-dot after ;x", func(a string) string { return "/" + a + "/;x/../Default.aspx" }},
	{"dot-dot after a space", func(a string) string { return "/" + a + "/%20/.." }},
	{"..; segment", func(a string) string { return "/" + a + "/..;/" }},
	{"dot-dot after :x", func(a string) string { return "/" + a + "/:x/.." }},
	{"escaped ? in a name", func(a string) string { return "/x%3f/../" + a + "/" }},
	{"raw #", func(a string) string { return "/x#/../" + a + "/" }},
	{"escaped dot-dot", func(a string) string { return "/x/%2e%2e/" + a }},
	{"half-escaped dot-dot", func(a string) string { return "/x/.%2E/" + a }},
	{"escaped slash after dot-dot", func(a string) string { return "/x/..%2f" + a }},
	{"escaped leading slash", func(a string) string { return "/%2f" + a }},
	{"empty segment", func(a string) string { return "//" + a }},
	{"empty segment before dot-dot", func(a string) string { return "/x//../" + a }},
	{"backslashes", func(a string) string { return `/x\..\` + a }},
	{"escaped backslashes", func(a string) string { return "/x%5c..%5c" + a }},
	{"escaped leading backslash", func(a string) string { return "/%5C" + a }},
	{"trailing dot", func(a string) string { return "/" + a + "." }},
	{"trailing space", func(a string) string { return "/" + a + "%20" }},
	{"escaped trailing dot", func(a string) string { return "/" + a + "%2e/" }},
	{"NTFS stream", func(a string) string { return "/" + a + "::$DATA" }},
	{"escaped NTFS stream", func(a string) string { return "/" + a + "%3a%3a$DATA" }},
	{"dot-dot and space", func(a string) string { return "/x/..%20/" + a }},
	{"%u dot-dot", func(a string) string { return "/x/%u002e%u002e/" + a }},
	{"fragment", func(a string) string { return "/" + a + "#x" }},
	{"semicolon", func(a string) string { return "/" + a + ";x" }},
	{"double-escaped slash", func(a string) string { return "/%252f" + a }},
	{"overlong slash", func(a string) string { return "/%c0%af" + a }},
	{"overlong dot-dot", func(a string) string { return "/x/%c0%ae%c0%ae/" + a }},
	{"NUL", func(a string) string { return "/" + a + "%00.aspx" }},
}

// publishedTargets are canonical and outside the management
// applications: every proxy must forward them.
var publishedTargets = []string{
	"/", "/abc/cscp", "/Autodiscover/AutodiscoverService.svc/root", "/WebTicket/x",
	"/ucwa/v1/applications", "/meet/alice/ABCD1234?sl=1", "/caf%C3%A9/x",
}

type pathRow struct {
	target, note, model string
	results             map[string]string // transport: status, "*" when a member saw it
}

func pathTable() []*pathRow {
	var rows []*pathRow
	for i, tm := range pathTemplates {
		for j, app := range iisApps {
			switch (i + j) % 3 {
			case 1:
				app = strings.ToUpper(app)
			case 2:
				app = strings.ToLower(app)
			}
			t := tm.spell(app)
			rows = append(rows, &pathRow{target: t, note: tm.note, model: iisVerdict(t), results: map[string]string{}})
		}
	}
	for _, t := range publishedTargets {
		rows = append(rows, &pathRow{target: t, note: "published", model: iisVerdict(t), results: map[string]string{}})
	}
	return rows
}

// pathTransport sends one raw target and returns the status (or how the
// request was refused).
type pathTransport struct {
	name string
	send func(target string) (string, error)
}

// TestPathTableAgainstIISModel sends every spelling of the table over
// HTTP/1.1 on 443 and 80, in absolute form, and over HTTP/2, and checks
// with the members' request counters that none the IIS model routes into
// a management application reaches a member, while the published paths
// do. HAProxy and nginx, configured as such a reverse proxy typically is,
// get the same table for comparison.
func TestPathTableAgainstIISModel(t *testing.T) {
	e := newEnv(t, envOptions{
		// HTTP/2 is offered only to sites without Windows authentication.
		site: func(s *config.Site) { f := false; s.WindowsAuth = &f },
		cfg: func(c *config.Config) {
			// Port 80 forwards to the front ends as the example does.
			c.Virtuals[1].Sites[0].Profile = config.ProfileSkype
		},
	})
	rows := pathTable()
	if len(rows) < 80 {
		t.Fatalf("%d targets, want at least 80", len(rows))
	}
	const host443, host80 = "webext.example.com", "lyncdiscover.example.com"
	transports := []pathTransport{
		{"443", func(p string) (string, error) { return rawStatus(e.dialTLS(host443), p, host443) }},
		{"80", func(p string) (string, error) { return rawStatus(e.dialPlain(), p, host80) }},
		{"h2", func(p string) (string, error) { return e.h2Status(host443, p) }},
		{"abs443", func(p string) (string, error) { return rawStatus(e.dialTLS(host443), "https://"+host443+p, host443) }},
		{"abs80", func(p string) (string, error) { return rawStatus(e.dialPlain(), "http://"+host80+p, host80) }},
	}
	for _, peer := range []string{"haproxy", "nginx"} {
		if addr, h2c := startPeerProxy(t, peer, e.members[0].plainLn.Addr().String()); addr != "" {
			transports = append(transports,
				pathTransport{peer, func(p string) (string, error) { return rawStatus(dialPeer(t, addr), p, host80) }},
				pathTransport{peer + "-abs", func(p string) (string, error) {
					return rawStatus(dialPeer(t, addr), "http://"+host80+p, host80)
				}},
				pathTransport{peer + "-h2", func(p string) (string, error) {
					c := dialPeer(t, h2c).c
					defer c.Close()
					return h2Exchange(c, "http", host80, p)
				}})
		}
	}
	seen := func() (n int64) {
		for _, m := range e.members {
			n += m.fe.Requests()
		}
		return n
	}
	// The proxy's own transports come first: the management hits are
	// counted before the peers run.
	var hits int64
	for i, tr := range transports {
		if i == 5 {
			hits = managementHits(e)
		}
		for _, row := range rows {
			before := seen()
			status, err := tr.send(row.target)
			if err != nil {
				status = "err"
				t.Logf("%s %q: %v", tr.name, row.target, err)
			}
			if seen() > before {
				status += "*"
			}
			row.results[tr.name] = status
		}
	}
	t.Log("\n" + formatPathTable(rows, transports))
	t.Log("\n" + formatPathSummary(rows, transports))

	management := 0
	for _, row := range rows {
		if row.model == "management" {
			management++
		}
		for _, tr := range transports[:5] {
			reached := strings.HasSuffix(row.results[tr.name], "*")
			switch {
			case row.model == "management" && reached:
				t.Errorf("%s %q (%s): reached a member (%s), the IIS model routes it into a management application", tr.name, row.target, row.note, row.results[tr.name])
			case row.note == "published" && !reached:
				t.Errorf("%s %q: not forwarded (%s)", tr.name, row.target, row.results[tr.name])
			}
		}
	}
	if management < 60 {
		t.Errorf("only %d targets route into a management application by the model", management)
	}
	if len(transports) == 5 {
		hits = managementHits(e)
	}
	if hits != 0 {
		t.Errorf("%d requests reached a management application through the proxy", hits)
	}
	if !strings.Contains(e.access.String(), `"termination":"bad_path"`) || !strings.Contains(e.access.String(), `"termination":"denied"`) {
		t.Error("access log lacks bad_path or denied")
	}
}

// TestRedirectNeverEchoesNonCanonicalTarget: the port-80 redirect answers
// a target that is not canonical with 400 instead of echoing it.
func TestRedirectNeverEchoesNonCanonicalTarget(t *testing.T) {
	e := newEnv(t, envOptions{})
	for target, want := range map[string]string{
		"/meet/alice?x=1":                  "301 https://webext.example.com/meet/alice?x=1",
		"/cscp":                            "301 https://webext.example.com/cscp",
		"/x/../cscp":                       "400 ",
		"/%2e%2e/cscp":                     "400 ",
		"//evil.example.net/x":             "400 ",
		"/a%5cb":                           "400 ",
		"/cscp%20":                         "400 ",
		"http://webext.example.com/x/../y": "400 ",
	} {
		res, _, err := e.dialPlain().raw("GET " + target + " HTTP/1.1\r\nHost: webext.example.com\r\n\r\n")
		if err != nil {
			t.Fatalf("%s: %v", target, err)
		}
		if got := strconv.Itoa(res.StatusCode) + " " + res.Header.Get("Location"); got != want {
			t.Errorf("%s: %q, want %q", target, got, want)
		}
	}
}

func managementHits(e *env) (n int64) {
	for _, m := range e.members {
		n += m.fe.ManagementHits()
	}
	return n
}

// rawStatus writes one GET with the target byte for byte and returns the
// status code.
func rawStatus(c *rawTLS, target, host string) (string, error) {
	defer c.c.Close()
	res, _, err := c.raw("GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n")
	if err != nil {
		return "", err
	}
	return strconv.Itoa(res.StatusCode), nil
}

// h2Status sends one GET with the given :path over a new HTTP/2
// connection to the https virtual.
func (e *env) h2Status(host, path string) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.httpsAddr,
		&tls.Config{ServerName: host, RootCAs: e.public.pool(), NextProtos: []string{"h2"}})
	if err != nil {
		return "", err
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		return "", fmt.Errorf("ALPN %q, want h2", p)
	}
	return h2Exchange(c, "https", host, path)
}

// h2Exchange sends one GET as the first stream of a new HTTP/2
// connection (the header block encoded by hand, so the :path goes out as
// it is) and returns the status, or "RST"/"GOAWAY" when the server
// refused the stream or the connection.
func h2Exchange(c net.Conn, scheme, host, path string) (string, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		return "", err
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", scheme}, {":authority", host}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteSettings(); err != nil {
		return "", err
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		return "", err
	}
	for range 50 {
		f, err := fr.ReadFrame()
		if err != nil {
			return "", err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == 1 {
				return f.PseudoValue("status"), nil
			}
		case *http2.RSTStreamFrame:
			return "RST", nil
		case *http2.GoAwayFrame:
			return "GOAWAY", nil
		}
	}
	return "", errors.New("no response in 50 frames")
}

func dialPeer(t testing.TB, addr string) *rawTLS {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	return &rawTLS{t: t, c: c, r: bufio.NewReader(c)}
}

// formatPathTable lays the results out one target a line.
func formatPathTable(rows []*pathRow, transports []pathTransport) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-46s %-10s", "target", "IIS model")
	for _, tr := range transports {
		fmt.Fprintf(&b, " %-11s", tr.name)
	}
	b.WriteString("   (* = reached a member)\n")
	for _, row := range rows {
		fmt.Fprintf(&b, "%-46s %-10s", strconv.QuoteToASCII(row.target), row.model)
		for _, tr := range transports {
			fmt.Fprintf(&b, " %-11s", row.results[tr.name])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestStrictPathsOnGenericSite: a generic site forwards targets that are
// not canonical as they came, unless strict_paths is set.
func TestStrictPathsOnGenericSite(t *testing.T) {
	e := newEnv(t, envOptions{cfg: func(c *config.Config) {
		https := c.Virtuals[0]
		owas := https.Sites[1]
		strict := *owas
		owas.Hosts, strict.Hosts, strict.StrictPaths = []string{owasHost}, []string{"*.apps.example.com"}, true
		https.Sites = append(https.Sites, &strict)
	}})
	for _, target := range []string{"/x/../y", "/a//b", "/x%2fy", "/a;b/c.", "/x/%2e%2e/cscp"} {
		for host, want := range map[string]string{owasHost: "404*", "a.apps.example.com": "400"} {
			before := e.members[0].fe.Requests()
			got, err := rawStatus(e.dialTLS(host), target, host)
			if err != nil {
				t.Fatalf("%s %s: %v", host, target, err)
			}
			if e.members[0].fe.Requests() > before {
				got += "*"
			}
			if got != want {
				t.Errorf("%s %s: %s, want %s (* = forwarded)", host, target, got, want)
			}
		}
	}
}

// TestIISModelReadsTheKnownBypasses: the model routes every spelling
// known to have reached a front end's management applications into them,
// and keeps apart what IIS keeps apart.
func TestIISModelReadsTheKnownBypasses(t *testing.T) {
	for target, want := range map[string]string{
		"/cscp/x/..":               "management",
		"/cscp/;x/../Default.aspx": "management",
		"/cscp/%20/..":             "management",
		"/cscp/..;/":               "management",
		"/OcsPowerShell/;x/..":     "management",
		"/RgsConfig/:x/..":         "management",
		"/x%3f/../cscp/":           "management",
		"/x#/../cscp/":             "management",
		"/x%5c..%5ccscp":           "management",
		"/c%C5%BFcp":               "management",
		"/%u0063scp":               "management",
		"https://h/x/../cscp":      "management",
		"/cscp;x":                  "other",
		"/cscpx":                   "other",
		"/abc/cscp":                "other",
		"/%252fcscp":               "other",
		"/%c0%afcscp":              "other",
		"/cscp/..":                 "other",
		"/cscp%00":                 "refused",
		"/cscp%zz":                 "refused",
	} {
		if got := iisVerdict(target); got != want {
			t.Errorf("%s: %s, want %s", target, got, want)
		}
	}
}

// formatPathSummary lays the results out one spelling a line, as a
// Markdown table: the first target of the spelling, the model's verdict
// and each transport's distinct results over the three applications.
func formatPathSummary(rows []*pathRow, transports []pathTransport) string {
	var b strings.Builder
	b.WriteString("| spelling | e.g. | IIS model |")
	for _, tr := range transports {
		b.WriteString(" " + tr.name + " |")
	}
	b.WriteString("\n|---|---|---|" + strings.Repeat("---|", len(transports)) + "\n")
	for i := 0; i < len(rows); {
		j := i
		for j < len(rows) && rows[j].note == rows[i].note {
			j++
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s |", rows[i].note, strings.ReplaceAll(rows[i].target, "|", "\\|"), rows[i].model)
		for _, tr := range transports {
			var seen []string
			for _, row := range rows[i:j] {
				if r := row.results[tr.name]; !slices.Contains(seen, r) {
					seen = append(seen, r)
				}
			}
			b.WriteString(" " + strings.Join(seen, " ") + " |")
		}
		b.WriteString("\n")
		i = j
	}
	b.WriteString("| **management targets that reached a member** | | |")
	for _, tr := range transports {
		n, of := 0, 0
		for _, row := range rows {
			if row.model == "management" {
				of++
				if strings.HasSuffix(row.results[tr.name], "*") {
					n++
				}
			}
		}
		fmt.Fprintf(&b, " **%d** of %d |", n, of)
	}
	return b.String() + "\n"
}
