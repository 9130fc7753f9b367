package l7

import (
	"bufio"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/labtest"
	"github.com/edgeproxy/edgeproxy/internal/logs"
)

// processCPU is the CPU time the test process has used (user and
// system), client, proxy and member together.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchRequests(b *testing.B, host string) {
	e := newEnv(b, envOptions{members: 2})
	// The access log is encoded as a file would get it, not kept: the
	// test's in-memory log would grow by a line per request and weigh in
	// the profile.
	e.proxy.access = slog.New(logs.NewJSONLines(io.Discard))
	b.ResetTimer()
	cpu0 := processCPU(b)
	defer func() {
		// CPU time, unlike ns/op, is little changed by other work on a
		// shared machine.
		b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
	}()
	b.RunParallel(func(pb *testing.PB) {
		c := e.tlsClient(false)
		for pb.Next() {
			res, err := c.Get("https://" + host + "/healthz")
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
	})
}

// BenchmarkKeepAlivePooled: requests over kept-alive client connections
// to a site with pooled upstream connections (TLS on both legs).
func BenchmarkKeepAlivePooled(b *testing.B) { benchRequests(b, owasHost) }

// BenchmarkKeepAlivePinned: the same on a Windows-auth site, where each
// client connection has its own upstream connection.
func BenchmarkKeepAlivePinned(b *testing.B) { benchRequests(b, "webext.example.com") }

// BenchmarkNewTLSConnections: a full TLS handshake and one request (a
// 1 KiB answer) per operation.
func BenchmarkNewTLSConnections(b *testing.B) { benchHandshakes(b, false) }

// BenchmarkResumedTLSConnections: a TLS handshake resuming the session of
// an earlier connection (a session ticket) and one request (a 1 KiB
// answer) per operation.
func BenchmarkResumedTLSConnections(b *testing.B) { benchHandshakes(b, true) }

func benchHandshakes(b *testing.B, resume bool) {
	e := newEnv(b, envOptions{members: 2})
	e.proxy.access = slog.New(logs.NewJSONLines(io.Discard))
	// A 1 KiB answer, as the harness's handshake scenarios fetch.
	req, _ := http.NewRequest("GET", "https://"+owasHost+"/download?size=1024", nil)
	var resumed atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// X25519 as the benchmark harness offers it (Go would otherwise
		// take the costlier X25519MLKEM768 hybrid).
		cfg := &tls.Config{ServerName: owasHost, RootCAs: e.public.pool(), NextProtos: []string{"http/1.1"},
			CurvePreferences: []tls.CurveID{tls.X25519}}
		if resume {
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
		}
		for pb.Next() {
			c, err := tls.Dial("tcp", e.httpsAddr, cfg)
			if err != nil {
				b.Error(err)
				return
			}
			req.Write(c)
			res, err := http.ReadResponse(bufio.NewReader(c), req)
			if err != nil {
				b.Error(err)
				c.Close()
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if c.ConnectionState().DidResume {
				resumed.Add(1)
			}
			c.Close()
		}
	})
	b.ReportMetric(100*float64(resumed.Load())/float64(b.N), "%resumed")
}

// maxAllocsPerRequest bounds the heap allocations of one keep-alive
// HTTPS request through a pooled site, counted in the whole test process:
// the client's, the proxy's and the member's together (191 when the
// proxy cloned each request through httputil.ReverseProxy, 153 when it
// wrote the member's request with Request.Write and the access log
// through slog's JSON handler).
const maxAllocsPerRequest = 146

// TestKeepAliveAllocations: the proxy's CPU per request follows its
// allocations, which, unlike time, a shared machine does not blur.
func TestKeepAliveAllocations(t *testing.T) {
	if labtest.RaceDetector {
		t.Skip("the race detector allocates on its own")
	}
	e := newEnv(t, envOptions{members: 2})
	e.proxy.access = slog.New(logs.NewJSONLines(io.Discard))
	c := e.tlsClient(false)
	get := func() {
		res, err := c.Get("https://" + owasHost + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status %d", res.StatusCode)
		}
	}
	for range 200 { // warm: connections, pools, metric series
		get()
	}
	allocs := testing.AllocsPerRun(2000, get)
	t.Logf("%.1f allocations per request (client, proxy and member)", allocs)
	if allocs > maxAllocsPerRequest {
		t.Errorf("%.1f allocations per keep-alive request, want at most %d", allocs, maxAllocsPerRequest)
	}
}
