package main

// The harness re-executes its own binary, inside a namespace and pinned to
// CPUs, to run the Go load generators and the short-connection backend:
// the environment variable roleEnv names the role and the arguments are
// the role's flags.

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// roleEnv selects a role of the binary instead of the harness.
const roleEnv = "EDGEPROXY_BENCH_ROLE"

// Roles.
const (
	roleTLS = "tls" // TLS handshakes per second, one request each
)

// loadResult is what a load generator prints (JSON) on stdout.
type loadResult struct {
	OK      int64    `json:"ok"`
	Errors  int64    `json:"errors"`
	Seconds float64  `json:"seconds"`
	P50us   float64  `json:"p50_us"`
	P99us   float64  `json:"p99_us"`
	Samples []string `json:"error_samples,omitempty"`
	TLS     string   `json:"tls,omitempty"`
	Resumed int64    `json:"resumed"`
}

func runRole(role string, args []string) int {
	var err error
	switch role {
	case roleTLS:
		err = loadGen(role, args)
	default:
		err = fmt.Errorf("run role: unknown role %q: use %s", role, roleTLS)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench %s: %v\n", role, err)
		return 1
	}
	return 0
}

// loadGen runs workers at a fixed concurrency until the duration or the
// count is reached, whichever first, and prints a loadResult.
func loadGen(role string, args []string) error {
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	addr := fs.String("addr", "", "host:port to connect to")
	conc := fs.Int("c", 16, "concurrent workers")
	dur := fs.Duration("d", 5*time.Second, "duration")
	count := fs.Int64("n", 1_000_000, "at most this many operations")
	timeout := fs.Duration("timeout", 5*time.Second, "per-operation timeout")
	sni := fs.String("sni", "", "TLS server name and Host header ("+roleTLS+")")
	caFile := fs.String("ca", "", "CA bundle to verify the server with ("+roleTLS+")")
	path := fs.String("path", "/", "request path ("+roleTLS+")")
	resume := fs.Bool("resume", false, "keep sessions and resume them ("+roleTLS+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *conc < 1 || *dur <= 0 || *count < 1 {
		return errors.New("parse flags: -addr, -c >= 1, -d > 0 and -n >= 1 are required")
	}
	var op func() error
	var tlsVersion atomic.Value
	var resumed atomic.Int64
	if role == roleTLS {
		var err error
		op, err = tlsOp(*addr, *sni, *caFile, *path, *resume, *conc, *timeout, &tlsVersion, &resumed)
		if err != nil {
			return err
		}
	}

	var (
		claimed, ok, failed atomic.Int64
		mu                  sync.Mutex
		samples             []string
		lats                = make([][]time.Duration, *conc)
		wg                  sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(*dur)
	for w := range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && claimed.Add(1) <= *count {
				t0 := time.Now()
				if err := op(); err != nil {
					failed.Add(1)
					mu.Lock()
					if len(samples) < 5 && !slices.Contains(samples, err.Error()) {
						samples = append(samples, err.Error())
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
				if len(lats[w]) < 200_000 {
					lats[w] = append(lats[w], time.Since(t0))
				}
			}
		}()
	}
	wg.Wait()
	res := loadResult{OK: ok.Load(), Errors: failed.Load(), Seconds: time.Since(start).Seconds(), Samples: samples, Resumed: resumed.Load()}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	res.P50us = percentile(all, 0.50)
	res.P99us = percentile(all, 0.99)
	if v, _ := tlsVersion.Load().(string); v != "" {
		res.TLS = v
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// tlsOp is the TLS handshake role's operation: one connection, a full or
// resumed handshake, one request with Connection: close. It notes the
// resumptions and the first full handshake's version, cipher and curve.
func tlsOp(addr, sni, caFile, path string, resume bool, conc int, timeout time.Duration, tlsVersion *atomic.Value, resumed *atomic.Int64) (func() error, error) {
	if sni == "" || caFile == "" {
		return nil, errors.New("parse flags: -sni and -ca are required for TLS handshakes")
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("read CA %s: no certificate found", caFile)
	}
	// Without -resume, no ClientSessionCache: every connection is a
	// full handshake.
	// X25519 for every candidate: Go's default offers the
	// X25519MLKEM768 hybrid first, which Go servers take and the
	// peers' OpenSSL 3.0 does not have, so a default client would
	// measure a costlier key exchange on edgeproxy only.
	cfg := &tls.Config{ServerName: sni, RootCAs: pool, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"},
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}
	if resume {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(conc)
	}
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + sni + "\r\nConnection: close\r\n\r\n")
	return func() error {
		st, err := tlsRequest(addr, cfg, req, timeout)
		if err != nil {
			return err
		}
		if st.DidResume {
			resumed.Add(1)
		} else if tlsVersion.Load() == nil {
			tlsVersion.Store(tls.VersionName(st.Version) + " " + tls.CipherSuiteName(st.CipherSuite) + " " + st.CurveID.String())
		}
		return nil
	}, nil
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return float64(sorted[i]) / float64(time.Microsecond)
}

// tlsRequest does a TLS handshake, one HTTP/1.1 request with
// Connection: close, reads the whole answer and closes.
func tlsRequest(addr string, cfg *tls.Config, req []byte, timeout time.Duration) (tls.ConnectionState, error) {
	var none tls.ConnectionState
	raw, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return none, err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(timeout))
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		return none, fmt.Errorf("tls handshake: %w", err)
	}
	if _, err := c.Write(req); err != nil {
		return none, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return none, fmt.Errorf("read response: %w", err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return none, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return none, fmt.Errorf("status %s", resp.Status)
	}
	return c.ConnectionState(), nil
}
