package bgp

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// nodeEnv carries a node's spec (JSON) to the test binary started as a
// proxy node in its own namespace.
const nodeEnv = "EDGEPROXY_BGP_NODE"

type nodeSpec struct {
	Name   string
	Listen string
	Spec   Spec
}

func TestMain(m *testing.M) {
	if js := os.Getenv(nodeEnv); js != "" {
		os.Exit(runNode(js))
	}
	os.Exit(m.Run())
}

// runNode is one scale-out node: it announces the VIP with the speaker,
// answers every connection with its name and echoes what it reads.
// Commands on stdin change its state: "members N", "drain". SIGTERM
// withdraws the routes, stops accepting once the router has moved new
// flows away and lets the open connections finish.
func runNode(js string) int {
	var ns nodeSpec
	if err := json.Unmarshal([]byte(js), &ns); err != nil {
		fmt.Fprintln(os.Stderr, "decode node spec:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ln, err := net.Listen("tcp", ns.Listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 2
	}
	var conns sync.WaitGroup
	var lastAccept atomic.Int64 // unix nanoseconds of the newest connection
	go serveNode(ln, ns.Name, &conns, &lastAccept)
	sp := New(log)
	st := State{Ready: true, Up: map[string]int{"web": 1}}
	if err := sp.Update(st); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	if err := sp.Apply(context.Background(), ns.Spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	cmds := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmds <- sc.Text()
		}
	}()
	for {
		select {
		case c := <-cmds:
			var n int
			if _, err := fmt.Sscanf(c, "members %d", &n); err == nil {
				st.Up["web"] = n
			} else if c == "drain" {
				st.Draining = true
			}
			_ = sp.Update(st)
		case <-term:
			st.Draining = true
			_ = sp.Update(st)
			// As the daemon does: the router has converged once no new
			// connection has arrived for 0.5 s (10 s at most).
			for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
				if time.Since(time.Unix(0, lastAccept.Load())) >= 500*time.Millisecond {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			_ = ln.Close()
			waitTimeout(&conns, 5*time.Second)
			_ = sp.Stop(context.Background())
			return 0
		}
	}
}

func serveNode(ln net.Listener, name string, conns *sync.WaitGroup, lastAccept *atomic.Int64) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		lastAccept.Store(time.Now().UnixNano())
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			if _, err := fmt.Fprintln(c, name); err != nil {
				return
			}
			sc := bufio.NewScanner(c)
			for sc.Scan() {
				if _, err := fmt.Fprintln(c, sc.Text()); err != nil {
					return
				}
			}
		}()
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}
