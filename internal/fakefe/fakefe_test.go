package fakefe

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// start runs a front end on a loopback port and returns its address.
func start(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(opts)
	hs := s.HTTPServer(nil)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return s, ln.Addr().String()
}

// rawConn is one client TCP connection speaking HTTP/1.1 by hand, so the
// test controls which connection each request uses.
type rawConn struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) do(path, auth string) *http.Response {
	rc.t.Helper()
	req, _ := http.NewRequest("GET", "http://webext.example.com"+path, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rc.c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := req.Write(rc.c); err != nil {
		rc.t.Fatal(err)
	}
	res, err := http.ReadResponse(rc.r, req)
	if err != nil {
		rc.t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res
}

func TestNTLMBoundToConnection(t *testing.T) {
	s, addr := start(t, Options{Users: map[string]string{"alice": "Secret1!"}})
	cl := &NTLMClient{User: "alice", Password: "Secret1!", Domain: "CONTOSO"}

	a := dialRaw(t, addr)
	if res := a.do("/CertProv/CertProvisioningService.svc", ""); res.StatusCode != 401 ||
		len(res.Header.Values("WWW-Authenticate")) != 2 {
		t.Fatalf("anonymous: %d %q, want 401 with NTLM and Negotiate", res.StatusCode, res.Header.Values("WWW-Authenticate"))
	}
	res := a.do("/CertProv/CertProvisioningService.svc", cl.NegotiateHeader())
	if res.StatusCode != 401 {
		t.Fatalf("negotiate: %d, want 401 with a challenge", res.StatusCode)
	}
	auth, err := cl.AuthenticateHeader(res.Header.Values("WWW-Authenticate"))
	if err != nil {
		t.Fatal(err)
	}
	// The authenticate message on another connection is refused.
	b := dialRaw(t, addr)
	if res := b.do("/CertProv/CertProvisioningService.svc", auth); res.StatusCode != 401 {
		t.Fatalf("authenticate on another connection: %d, want 401", res.StatusCode)
	}
	if res := a.do("/CertProv/CertProvisioningService.svc", auth); res.StatusCode != 200 {
		t.Fatalf("authenticate: %d, want 200", res.StatusCode)
	}
	// The connection stays authenticated; another one is not.
	if res := a.do("/WebTicket/WebTicketService.svc", ""); res.StatusCode != 200 {
		t.Fatalf("second request on the authenticated connection: %d, want 200", res.StatusCode)
	}
	if res := b.do("/WebTicket/WebTicketService.svc", ""); res.StatusCode != 401 {
		t.Fatalf("other connection: %d, want 401", res.StatusCode)
	}
	if ok, _ := s.Authentications(); ok != 1 {
		t.Fatalf("authentications = %d, want 1", ok)
	}

	// A wrong password does not verify.
	bad := &NTLMClient{User: "alice", Password: "wrong", Domain: "CONTOSO"}
	c := dialRaw(t, addr)
	res = c.do("/protected", bad.NegotiateHeader())
	auth, _ = bad.AuthenticateHeader(res.Header.Values("WWW-Authenticate"))
	if res := c.do("/protected", auth); res.StatusCode != 401 {
		t.Fatalf("wrong password: %d, want 401", res.StatusCode)
	}
}

// TestCurlNTLM checks the NTLM implementation against a real client.
func TestCurlNTLM(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("curl missing")
		}
		t.Skip("curl missing")
	}
	_, addr := start(t, Options{Users: map[string]string{"bob": "Pa55word"}})
	url := "http://" + addr + "/CertProv/CertProvisioningService.svc"
	out, err := exec.Command("curl", "-sS", "--max-time", "10", "--ntlm", "-u", "bob:Pa55word", url).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "hello bob") {
		t.Fatalf("curl --ntlm: %v: %s", err, out)
	}
	out, _ = exec.Command("curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
		"--ntlm", "-u", "bob:nope", url).CombinedOutput()
	if string(out) != "401" {
		t.Fatalf("curl --ntlm with a wrong password: %s, want 401", out)
	}
}

func TestEndpoints(t *testing.T) {
	s, addr := start(t, Options{Name: "fe01", ExternalName: "webext.contoso.com"})
	get := func(path string) (*http.Response, string) {
		res, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		return res, string(b)
	}
	res, body := get("/Autodiscover/AutodiscoverService.svc/root?originalDomain=contoso.com")
	var doc struct {
		Links map[string]struct{ Href string } `json:"_links"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil || res.StatusCode != 200 ||
		!strings.HasPrefix(doc.Links["user"].Href, "https://webext.contoso.com/") {
		t.Fatalf("autodiscover: %d %v %s", res.StatusCode, err, body)
	}
	if res, _ := get("/longpoll?wait=10ms"); res.StatusCode != 200 {
		t.Fatalf("longpoll: %d", res.StatusCode)
	}
	res, body = get("/download?size=1000")
	want, _ := io.ReadAll(NewPatternReader(1000))
	if res.StatusCode != 200 || body != string(want) {
		t.Fatalf("download: %d, %d bytes", res.StatusCode, len(body))
	}
	if res.Header.Get("X-Fake-FE") != "fe01" {
		t.Fatalf("X-Fake-FE = %q", res.Header.Get("X-Fake-FE"))
	}
	if s.ManagementHits() != 0 {
		t.Fatal("management hit before any request to it")
	}
	get("/CSCP/Default.aspx")
	if s.ManagementHits() != 1 {
		t.Fatalf("management hits = %d, want 1", s.ManagementHits())
	}
}
