package l7

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// deadAddr is a loopback address nothing listens on.
var deadAddr = netip.MustParseAddr("127.0.0.9")

// A site without Windows auth on the two-member pool.
func sharedSite(s func(*config.Site)) func(*config.Virtual) {
	return func(v *config.Virtual) {
		v.Sites[1].Pool = "sfb-fe"
		if s != nil {
			s(v.Sites[1])
		}
	}
}

func fe(res *http.Response) string { return res.Header.Get("X-Fake-FE") }

func TestRoundRobinAndHealth(t *testing.T) {
	e := newEnv(t, envOptions{virtual: trustLoopback(sharedSite(nil))})
	c := e.dialTLS(owasHost)
	var got []string
	for range 4 {
		res, _ := c.do(get(owasHost, "/whoami"))
		got = append(got, fe(res))
	}
	if got[0] == got[1] || got[0] != got[2] || got[1] != got[3] {
		t.Fatalf("round robin over two members: %v", got)
	}

	// The monitor takes fe01 down: everything goes to fe02.
	e.proxy.SetMemberUp("sfb-fe", e.members[0].addr, false)
	for range 4 {
		if res, _ := c.do(get(owasHost, "/whoami")); fe(res) != "fe02" {
			t.Fatalf("request went to %s, a member marked down", fe(res))
		}
	}
	// Both down: 503 naming the pool, at once.
	e.proxy.SetMemberUp("sfb-fe", e.members[1].addr, false)
	res, _ := c.do(get(owasHost, "/whoami"))
	if res.StatusCode != 503 || res.Header.Get("Edgeproxy-Error") != "pool sfb-fe: no healthy member" {
		t.Fatalf("no healthy member: %d %q", res.StatusCode, res.Header.Get("Edgeproxy-Error"))
	}
	e.proxy.SetMemberUp("sfb-fe", e.members[0].addr, true)
	if res, _ := c.do(get(owasHost, "/whoami")); res.StatusCode != 200 || fe(res) != "fe01" {
		t.Fatalf("after fe01 came back: %d from %s", res.StatusCode, fe(res))
	}
}

func TestDeadMemberRetriedAndReported(t *testing.T) {
	for _, pinned := range []bool{true, false} {
		t.Run("pinned="+strconv.FormatBool(pinned), func(t *testing.T) {
			e := newEnv(t, envOptions{
				site:    func(s *config.Site) { s.WindowsAuth = &pinned },
				virtual: trustLoopback(nil),
				cfg: func(c *config.Config) {
					c.Pools["sfb-fe"].Members = append(c.Pools["sfb-fe"].Members, config.Member{Address: deadAddr.String()})
					c.Pools["owas"].Members = []config.Member{{Address: deadAddr.String()}}
				}})
			// Requests that meet the dead member move to a live one.
			for range 4 {
				c := e.dialTLS("webext.example.com")
				for range 3 {
					if res, body := c.do(get("webext.example.com", "/whoami")); res.StatusCode != 200 {
						t.Fatalf("%d %q with one dead member of three", res.StatusCode, body)
					}
				}
			}
			// A pool with only the dead member: 502 naming it, nothing more.
			res, _ := e.dialTLS(owasHost).do(get(owasHost, "/whoami"))
			want := "dial " + deadAddr.String() + ":" + strconv.Itoa(int(e.tlsPort)) + ": connection refused"
			if res.StatusCode != 502 || res.Header.Get("Edgeproxy-Error") != want {
				t.Fatalf("dead pool: %d %q, want 502 %q", res.StatusCode, res.Header.Get("Edgeproxy-Error"), want)
			}
			if !strings.Contains(e.access.String(), `"termination":"upstream_error"`) {
				t.Fatal("access log does not record the upstream failure")
			}
		})
	}
}

func TestMemberCertificateVerified(t *testing.T) {
	// The members' certificate is not issued for this name, and
	// another CA is not trusted: 502, never a silent fallback.
	other := newTestCA(t, "Other")
	e := newEnv(t, envOptions{virtual: trustLoopback(func(v *config.Virtual) {
		v.Sites[1].BackendTLS.ServerName = "not-on-the-cert.example.com"
		v.Sites[0].BackendTLS.CA = other.rootPath
	})})
	res, _ := e.dialTLS(owasHost).do(get(owasHost, "/whoami"))
	if res.StatusCode != 502 || !strings.HasSuffix(res.Header.Get("Edgeproxy-Error"), ": certificate name mismatch") {
		t.Fatalf("wrong name: %d %q", res.StatusCode, res.Header.Get("Edgeproxy-Error"))
	}
	res, _ = e.dialTLS("webext.example.com").do(get("webext.example.com", "/whoami"))
	if res.StatusCode != 502 || !strings.HasSuffix(res.Header.Get("Edgeproxy-Error"), ": certificate not trusted") {
		t.Fatalf("untrusted CA: %d %q", res.StatusCode, res.Header.Get("Edgeproxy-Error"))
	}
}

func TestLeastConnections(t *testing.T) {
	e := newEnv(t, envOptions{virtual: sharedSite(func(s *config.Site) { s.LB = config.LBLeastConn })})
	// Two long polls hold one member each... then one finishes: hold
	// one request on whichever member the first goes to.
	hold := e.dialTLS(owasHost)
	var wg sync.WaitGroup
	wg.Add(1)
	var held string
	go func() {
		defer wg.Done()
		res, _ := hold.do(get(owasHost, "/longpoll?wait=3s"))
		held = fe(res)
	}()
	waitFor(t, func() bool {
		for _, m := range e.members {
			if m.fe.Requests() == 1 {
				return true
			}
		}
		return false
	})
	busy := "fe01"
	if e.members[1].fe.Requests() == 1 {
		busy = "fe02"
	}
	c := e.dialTLS(owasHost)
	for range 6 {
		if res, _ := c.do(get(owasHost, "/whoami")); fe(res) == busy {
			t.Fatalf("least_conn sent a request to %s, which is busy", busy)
		}
	}
	wg.Wait()
	if held != busy {
		t.Fatalf("long poll answered by %s, want %s", held, busy)
	}
}

func TestMSWSManAffinity(t *testing.T) {
	e := newEnv(t, envOptions{virtual: sharedSite(func(s *config.Site) { s.Affinity = config.AffinityMSWSMan })})
	res, _ := e.dialTLS(owasHost).do(get(owasHost, "/whoami"))
	var ck *http.Cookie
	for _, c := range res.Cookies() {
		if c.Name == "MS-WSMAN" {
			ck = c
		}
	}
	if ck == nil || !ck.HttpOnly || !ck.Secure || strings.Contains(ck.Value, "127.0.0") {
		t.Fatalf("affinity cookie: %v", res.Header.Values("Set-Cookie"))
	}
	first := fe(res)
	for range 6 {
		req := get(owasHost, "/whoami")
		req.AddCookie(ck)
		res, _ := e.dialTLS(owasHost).do(req)
		if fe(res) != first || len(res.Cookies()) != 0 {
			t.Fatalf("with the cookie: %s (cookies %v), want %s", fe(res), res.Cookies(), first)
		}
	}
	// The member goes down: another one, and a new cookie.
	i, _ := strconv.Atoi(strings.TrimPrefix(first, "fe"))
	e.proxy.SetMemberUp("sfb-fe", e.members[i-1].addr, false)
	req := get(owasHost, "/whoami")
	req.AddCookie(ck)
	res, _ = e.dialTLS(owasHost).do(req)
	if fe(res) == first || len(res.Cookies()) != 1 {
		t.Fatalf("member down: answered by %s with cookies %v", fe(res), res.Cookies())
	}
	if v := testutil.ToFloat64(e.proxy.metrics.requests.WithLabelValues("sfb-web", owasHost, "200")); v != 8 {
		t.Fatalf("requests counted: %v, want 8", v)
	}
}
