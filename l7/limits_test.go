package l7

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// needFiles makes sure the test process may open n descriptors, raising
// the limit when it can.
func needFiles(t *testing.T, n uint64) {
	t.Helper()
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if rl.Cur >= n {
		return
	}
	want := rl
	want.Cur = n
	want.Max = max(rl.Max, n)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		t.Skipf("need %d open files, have %d: %v", n, rl.Cur, err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl) })
}

// dialFrom opens n TCP connections to addr from the loopback address src
// (several at once), and returns those that connected.
func dialFrom(t *testing.T, src, addr string, n int, then func(net.Conn) error) []net.Conn {
	t.Helper()
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
		next  = make(chan int)
	)
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 2 * time.Second}
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				c, err := d.Dial("tcp", addr)
				if err != nil {
					continue
				}
				if then != nil {
					if err := then(c); err != nil {
						c.Close()
						continue
					}
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

// logCounts counts the proxy's log records at info and above by message
// and limit.
func logCounts(t *testing.T, log string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for line := range strings.SplitSeq(strings.TrimSpace(log), "\n") {
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Limit string `json:"limit"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec.Level != "DEBUG" {
			counts[strings.TrimSuffix(rec.Msg+" "+rec.Limit, " ")]++
		}
	}
	return counts
}

// One source opening thousands of connections that never send a
// ClientHello, and another holding hundreds of idle keep-alive
// connections, take nothing from a third client: its request completes
// within a second. The refusals are logged once per interval, and the
// flooding source is served again once it lets go.
func TestNoStarvation(t *testing.T) {
	needFiles(t, 16384)
	e := newEnv(t, envOptions{})
	start := time.Now()

	// 500 idle keep-alive connections from 127.0.0.51, each after one
	// request.
	idle := dialFrom(t, "127.0.0.51", e.httpsAddr, 500, func(c net.Conn) error {
		tc := tls.Client(c, &tls.Config{ServerName: owasHost, RootCAs: e.public.pool(), NextProtos: []string{"http/1.1"}})
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(tc, "GET /whoami HTTP/1.1\r\nHost: "+owasHost+"\r\n\r\n"); err != nil {
			return err
		}
		res, err := http.ReadResponse(bufio.NewReader(tc), nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		tc.SetDeadline(time.Time{})
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	})
	if len(idle) < 500 {
		t.Fatalf("%d of 500 keep-alive connections served", len(idle))
	}

	// 5000 connections from 127.0.0.50 that send nothing.
	flood := dialFrom(t, "127.0.0.50", e.httpsAddr, 5000, nil)
	t.Logf("flood: %d connections opened by the kernel", len(flood))

	// A normal client: a new connection and its request in under 1 s.
	client := e.tlsClient(false)
	client.Timeout = time.Second
	t0 := time.Now()
	res, err := client.Get("https://" + owasHost + "/whoami")
	if err != nil {
		t.Fatalf("a normal client's request during the flood: %v", err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("a normal client's request during the flood: status %d", res.StatusCode)
	}
	t.Logf("normal request during the flood: %v", time.Since(t0))

	refused := testutil.ToFloat64(e.proxy.metrics.refused.WithLabelValues("sfb-web", refuseHandshakes))
	if refused < 4000 {
		t.Errorf("%v connections refused past max_handshakes_per_source, want most of the 5000", refused)
	}

	// The idle connections are all still open.
	if n := e.admissionOf(e.httpsAddr).connsOf("127.0.0.51"); n != len(idle) {
		t.Errorf("%d of the %d idle keep-alive connections still open", n, len(idle))
	}

	// The flood ends; its source is served again.
	for _, c := range flood {
		c.Close()
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.50")}, Timeout: 2 * time.Second}
	waitFor(t, func() bool {
		c, err := tls.DialWithDialer(d, "tcp", e.httpsAddr, &tls.Config{ServerName: owasHost, RootCAs: e.public.pool()})
		if err != nil {
			return false
		}
		c.Close()
		return true
	})

	// Nothing at info or above is logged more than once per interval.
	elapsed := time.Since(start)
	allowed := 1 + int(elapsed/refuseLogInterval)
	counts := logCounts(t, e.log.String())
	if counts["connections refused: limit reached "+refuseHandshakes] == 0 {
		t.Errorf("the refusals were not logged: %v", counts)
	}
	for msg, n := range counts {
		if n > allowed {
			t.Errorf("%q logged %d times in %v (at most %d)", msg, n, elapsed.Round(time.Millisecond), allowed)
		}
	}
}

// A connection past a cap is closed at once, the newest one: the
// connections a source already has keep working.
func TestConnLimitsPerSource(t *testing.T) {
	e := newEnv(t, envOptions{virtual: func(v *config.Virtual) {
		v.ConnLimits = config.ConnLimits{MaxConnsPerSource: 4, MaxHandshakesPerSource: 2}
	}})
	// Two connections in their handshake: the third is closed.
	hs := dialFrom(t, "127.0.0.60", e.httpsAddr, 2, nil)
	waitFor(t, func() bool { return e.admissionOf(e.httpsAddr).handshakes("127.0.0.60") == 2 })
	third := dialFrom(t, "127.0.0.60", e.httpsAddr, 1, nil)
	if len(hs) != 2 || len(third) != 1 || !closedAfter(third[0], third[0]) {
		t.Fatal("a third connection in its handshake from one source was not closed")
	}
	for _, c := range hs {
		c.Close()
	}

	// Four established connections; the fifth is refused, the four
	// still answer.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.61")}, Timeout: 2 * time.Second}
	var conns []*rawTLS
	for range 4 {
		c, err := tls.DialWithDialer(d, "tcp", e.httpsAddr, &tls.Config{ServerName: owasHost, RootCAs: e.public.pool(), NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		conns = append(conns, &rawTLS{t: t, c: c, r: bufio.NewReader(c)})
	}
	if _, err := tls.DialWithDialer(d, "tcp", e.httpsAddr, &tls.Config{ServerName: owasHost, RootCAs: e.public.pool()}); err == nil {
		t.Fatal("a fifth connection from one source was served with max_conns_per_source 4")
	}
	for _, c := range conns {
		if res, _ := c.do(get(owasHost, "/whoami")); res.StatusCode != http.StatusOK {
			t.Fatalf("an established connection: status %d", res.StatusCode)
		}
	}
	// Another source is not affected.
	if res, err := e.tlsClient(false).Get("https://" + owasHost + "/whoami"); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("another source: %v", err)
	}
}

// Each TLS handshake has its own deadline, shorter than the header
// timeout: a client that sends no ClientHello is closed after it.
func TestHandshakeTimeout(t *testing.T) {
	e := newEnv(t, envOptions{virtual: func(v *config.Virtual) {
		v.TLS.HandshakeTimeout = config.Duration(time.Second)
	}})
	c, err := net.Dial("tcp", e.httpsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The sites' header timeout is 20s: the connection must be gone well
	// before.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, c)
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("a connection without a ClientHello outlived a 1s handshake timeout by 4s")
	}
}

// admissionOf returns the admission counts of the listener on addr.
func (e *env) admissionOf(addr string) *admission {
	e.proxy.mu.Lock()
	defer e.proxy.mu.Unlock()
	for _, l := range e.proxy.listeners {
		if l.ln.Addr().String() == addr {
			return &l.adm
		}
	}
	e.t.Fatalf("no listener on %s", addr)
	return nil
}

// connsOf returns how many connections from src are open.
func (a *admission) connsOf(src string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if sc := a.sources[sourceKey(netip.MustParseAddr(src))]; sc != nil {
		return sc.conns
	}
	return 0
}

// handshakes returns how many connections from src are in their
// handshake.
func (a *admission) handshakes(src string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if sc := a.sources[sourceKey(netip.MustParseAddr(src))]; sc != nil {
		return sc.handshakes
	}
	return 0
}

// An idle client connection after a response is closed at the site's
// idle timeout (the skype profile's 1800s otherwise keeps it).
func TestIdleClientClosedAtIdleTimeout(t *testing.T) {
	e := newEnv(t, envOptions{virtual: func(v *config.Virtual) {
		for _, s := range v.Sites {
			s.IdleTimeout = config.Duration(time.Second)
		}
	}})
	c := e.dialTLS("webext.example.com")
	if res, _ := c.do(get("webext.example.com", "/whoami")); res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c.r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("an idle connection outlived a 1s idle timeout by 4s")
	}
}

// The proxy's client connections leave a reserve of descriptors for
// health checks, the admin endpoint and upstream connections: with the
// descriptor limit lowered, connections past the budget are closed on
// accept, the ones within it are served, and the process can still open
// connections of its own.
func TestDescriptorReserve(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	const budget = 80
	low := rl
	low.Cur = fdReserve + fdPerClientConn*budget
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skipf("lower the descriptor limit: %v", err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl) })
	e := newEnv(t, envOptions{})
	if e.proxy.maxOpen != budget {
		t.Fatalf("connection budget %d with %d descriptors, want %d", e.proxy.maxOpen, low.Cur, budget)
	}
	// Connections that send nothing, from many sources (no per-source cap
	// is reached): the first are held, the rest closed at once.
	var held []net.Conn
	for i := range budget + 20 {
		held = append(held, dialFrom(t, fmt.Sprintf("127.0.1.%d", 1+i), e.httpsAddr, 1, nil)...)
	}
	waitFor(t, func() bool {
		return testutil.ToFloat64(e.proxy.metrics.refused.WithLabelValues("sfb-web", refuseFDLimit)) == 20
	})
	// The process still opens connections of its own (what a health
	// check or an upstream request needs).
	m, err := net.Dial("tcp", e.members[0].tlsLn.Addr().String())
	if err != nil {
		t.Fatalf("a connection of the proxy's own with the client budget used: %v", err)
	}
	m.Close()
	// Once clients leave, new ones are served.
	for _, c := range held {
		c.Close()
	}
	waitFor(t, func() bool { return e.proxy.open.Load() == 0 })
	if res, err := e.tlsClient(false).Get("https://" + owasHost + "/whoami"); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("after the flood: %v", err)
	}
}

// Per-source caps count an IPv4 address, or an IPv6 client's /64.
func TestSourceKey(t *testing.T) {
	for _, tc := range []struct{ a, want string }{
		{"198.18.0.7", "198.18.0.7"},
		{"::ffff:198.18.0.7", "198.18.0.7"},
		{"2001:db8:1:2:aaaa::1", "2001:db8:1:2::"},
		{"2001:db8:1:2:bbbb::9", "2001:db8:1:2::"},
		{"2001:db8:1:3::1", "2001:db8:1:3::"},
	} {
		if got := sourceKey(netip.MustParseAddr(tc.a)); got != netip.MustParseAddr(tc.want) {
			t.Errorf("sourceKey(%s) = %s, want %s", tc.a, got, tc.want)
		}
	}
}
