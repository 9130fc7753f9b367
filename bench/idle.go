package main

// The idle phase: memory per idle HTTPS long-poll client. The harness
// itself holds both ends (the clients in the client namespace, a backend
// that never answers in the backend namespace), so that neither a load
// generator's nor a backend's memory is in the way, and measures the
// candidate's resident memory before and while they are held.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// phaseIdle holds idle HTTPS long polls through the L7 candidates.
const phaseIdle = "idle"

// pollPath is a Skype UCWA event long poll: the front end answers when an
// event arrives or after the timeout the client asks for.
const pollPath = "/ucwa/v1/applications/101/events?ack=1&timeout=900"

// fileLimit is the descriptor limit the harness raises itself (and so
// every process it starts) to: the proxy needs two sockets per held long
// poll, the harness two (client and backend side).
const fileLimit = 200_000

// raiseFileLimit lifts RLIMIT_NOFILE towards fileLimit and, when the hard
// limit cannot be raised (no CAP_SYS_RESOURCE), lowers the number of long
// polls to what fits, saying so in e.idleNote.
func (e *env) raiseFileLimit() error {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return fmt.Errorf("read file limit: %w", err)
	}
	want := unix.Rlimit{Cur: max(r.Cur, fileLimit), Max: max(r.Max, fileLimit)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
		want = unix.Rlimit{Cur: r.Max, Max: r.Max}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
			return fmt.Errorf("raise file limit to %d: %w", r.Max, err)
		}
	}
	e.files = int(min(want.Cur, 1<<30))
	if fit := (e.files - 1000) / 2; e.idleConns > fit {
		e.idleNote = fmt.Sprintf("%d long polls instead of %d: the descriptor limit is %d and could not be raised (ulimit -Hn, or run with CAP_SYS_RESOURCE)",
			fit, e.idleConns, want.Cur)
		e.idleConns = fit
	}
	return nil
}

// holdBackend is the idle phase's backend: TLS on every member's 4443,
// it reads each request and never answers, as a front end holding a long
// poll does.
type holdBackend struct {
	ln   net.Listener
	held atomic.Int64
	mu   sync.Mutex
	conn []net.Conn
}

// startHoldBackend starts the long-poll backend inside the backend
// namespace; trial.close stops it.
func (t *trial) startHoldBackend() error {
	cert, err := tls.LoadX509KeyPair(t.env.certs.BackendCert, t.env.certs.BackendKey)
	if err != nil {
		return fmt.Errorf("load backend certificate: %w", err)
	}
	ln, err := t.lab.Backend.Listen("tcp", ":4443")
	if err != nil {
		return fmt.Errorf("start long-poll backend: %w", err)
	}
	b := &holdBackend{ln: tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})}
	t.hold = b
	go b.serve()
	return nil
}

func (b *holdBackend) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		b.mu.Lock()
		b.conn = append(b.conn, c)
		b.mu.Unlock()
		go b.hold(c)
	}
}

// hold reads one request head and then waits for the peer to close.
func (b *holdBackend) hold(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 1024)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		if len(bytes.TrimSpace(line)) == 0 {
			break
		}
	}
	b.held.Add(1)
	defer b.held.Add(-1)
	_, _ = io.Copy(io.Discard, r)
}

func (b *holdBackend) close() {
	b.ln.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conn {
		c.Close()
	}
}

// idle holds e.idleConns long polls and reports the proxy's resident
// memory per client connection, its upstream side included.
func (e *env) idle() *scenario {
	return &scenario{
		id: "idle", title: "L7 memory per idle HTTPS long-poll client", idle: true,
		timeout: 4 * time.Minute,
		cmd: func(e *env) string {
			return fmt.Sprintf("%d TLS connections from the client namespace, each GET %s held unanswered by the backend; proxy RSS (VmRSS of its processes) before and while held",
				e.idleConns, pollPath)
		},
		run: func(ctx context.Context, t *trial) (outcome, error) {
			base, err := rssKiB(t.proxy.pids())
			if err != nil {
				return outcome{}, err
			}
			conns, opened, err := openPolls(ctx, t, e.idleConns)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			if err != nil {
				return outcome{}, err
			}
			held, err := waitHeld(ctx, t.hold, opened)
			if err != nil {
				return outcome{}, err
			}
			settle := 2 * time.Second // let lazily freed memory settle
			if e.o.Quick {
				settle = 200 * time.Millisecond
			}
			time.Sleep(settle)
			rss, err := rssKiB(t.proxy.pids())
			if err != nil {
				return outcome{}, err
			}
			oc := outcome{metrics: map[string]float64{
				"idle.kib": (rss - base) / float64(min(held, opened)), "idle.held": float64(min(held, opened)), "idle.rss": rss / 1024,
			}}
			if held < int64(e.idleConns) {
				oc.note = fmt.Sprintf("%d of %d long polls reached the backend", held, e.idleConns)
			}
			if e.idleNote != "" {
				oc.note = strings.TrimPrefix(oc.note+"; "+e.idleNote, "; ")
			}
			return oc, nil
		},
	}
}

// openPolls opens n TLS connections to the VIP, 32 at a time, and sends a
// long poll on each; it returns the connections and how many got there.
func openPolls(ctx context.Context, t *trial, n int) ([]net.Conn, int64, error) {
	pem, err := os.ReadFile(t.env.certs.PublicCA)
	if err != nil {
		return nil, 0, fmt.Errorf("read public CA: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{ServerName: benchHost, RootCAs: pool, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"},
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}
	req := []byte("GET " + pollPath + " HTTP/1.1\r\nHost: " + benchHost + "\r\n\r\n")
	conns := make([]net.Conn, n)
	var next, ok atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n) && ctx.Err() == nil; i = next.Add(1) - 1 {
				c, err := openPoll(ctx, t, cfg, req)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				conns[i] = c
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	var out []net.Conn
	for _, c := range conns {
		if c != nil {
			out = append(out, c)
		}
	}
	if err, _ := firstErr.Load().(error); err != nil && ok.Load() < int64(n)*99/100 {
		return out, ok.Load(), fmt.Errorf("open long polls: %d of %d: %w", ok.Load(), n, err)
	}
	return out, ok.Load(), ctx.Err()
}

func openPoll(ctx context.Context, t *trial, cfg *tls.Config, req []byte) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	raw, err := t.lab.Client.DialContext(dctx, "tcp", t.vip().String())
	if err != nil {
		return nil, err
	}
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(dctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// waitHeld waits until the backend holds want long polls, or until they
// stop coming (no progress for 10 s).
func waitHeld(ctx context.Context, b *holdBackend, want int64) (int64, error) {
	last, since := int64(-1), time.Now()
	for {
		n := b.held.Load()
		switch {
		case n >= want:
			return n, nil
		case n != last:
			last, since = n, time.Now()
		case time.Since(since) > 10*time.Second:
			if n == 0 {
				return 0, errors.New("no long poll reached the backend")
			}
			return n, nil
		}
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// rssKiB sums the resident memory (VmRSS) of the process trees rooted at
// pids, in KiB.
func rssKiB(roots []int) (float64, error) {
	var sum float64
	for _, p := range descendants(listProcs(), roots...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue // gone
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				if err != nil {
					return 0, fmt.Errorf("parse VmRSS of %d: %w", p, err)
				}
				sum += kb
			}
		}
	}
	if sum == 0 {
		return 0, errors.New("read proxy memory: no process of the candidate found")
	}
	return sum, nil
}

// probeHold opens one long poll through the VIP and waits until the
// backend holds it.
func probeHold(ctx context.Context, t *trial) error {
	before := t.hold.held.Load()
	conns, _, err := openPolls(ctx, t, 1)
	for _, c := range conns {
		defer c.Close()
	}
	if err != nil {
		return err
	}
	for t.hold.held.Load() <= before {
		select {
		case <-ctx.Done():
			return fmt.Errorf("long poll through the VIP: the backend did not get it: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
