// Package labtest runs the edgeproxy binary in a testnet lab for
// end-to-end tests: the binary built once per test process, and the
// daemon in a namespace with its output kept, waited for until its admin
// endpoint reports it ready, and stopped at the end of the test.
package labtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// Package is the edgeproxy command that Binary builds.
const Package = "github.com/edgeproxy/edgeproxy/cmd/edgeproxy"

var (
	binaryOnce sync.Once
	binaryDir  string
	binaryPath string
	binaryErr  error
)

// Binary returns edgeproxy built from this module, once per test
// process; a package's TestMain calls Main to remove it afterwards. The
// test fails (in CI) or is skipped when the go tool is missing.
func Binary(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("needs the go tool to build edgeproxy")
		}
		t.Skip("needs the go tool to build edgeproxy")
	}
	binaryOnce.Do(func() {
		binaryDir, binaryErr = os.MkdirTemp("", "edgeproxy-bin-")
		if binaryErr != nil {
			return
		}
		binaryPath = filepath.Join(binaryDir, "edgeproxy")
		if out, err := exec.Command("go", "build", "-o", binaryPath, Package).CombinedOutput(); err != nil {
			binaryErr = fmt.Errorf("build edgeproxy: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// Main runs the tests and removes what Binary built: call it from
// TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if binaryDir != "" {
		os.RemoveAll(binaryDir)
	}
	os.Exit(code)
}

// Log is a process's output, read while it is written.
type Log struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// DefaultAdmin is the admin listener the lab configurations use.
const DefaultAdmin = "127.0.0.1:9469"

// Daemon is edgeproxy running in a namespace, one process at a time;
// Log keeps the output of every run.
type Daemon struct {
	NS *testnet.NS
	// Admin is the admin listener of its configuration (DefaultAdmin
	// when empty).
	Admin string
	Log   Log

	run *run // the latest process
}

// run is one process of the daemon.
type run struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done is closed
}

// stop ends the process with SIGTERM, and SIGKILL when it is still
// running after 20 s.
func (r *run) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// Ready reports whether a status shows the daemon ready for the test.
type Ready func(*admin.Status) bool

// PoolUp is ready when n members of the pool are up.
func PoolUp(pool string, n int) Ready {
	return func(st *admin.Status) bool {
		up := 0
		for _, m := range st.Members {
			if m.Pool == pool && m.State == "up" {
				up++
			}
		}
		return st.Ready && up == n
	}
}

// Start runs the binary with args in the namespace and waits until the
// admin endpoint's status satisfies ready, for at most 30 s; the test
// fails when the daemon exits first. At the test's cleanup the process
// is stopped, and its log shown when the test failed.
func (d *Daemon) Start(t testing.TB, ready Ready, bin string, args ...string) {
	t.Helper()
	cmd := d.NS.Command(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = &d.Log, &d.Log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start edgeproxy: %v", err)
	}
	r := &run{cmd: cmd, done: make(chan struct{})}
	d.run = r
	go func() { r.err = cmd.Wait(); close(r.done) }()
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.Log.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := d.Status()
		if err == nil && ready(st) {
			return
		}
		select {
		case <-r.done:
			t.Fatalf("daemon exited before it was ready: %v\n%s", r.err, d.Log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready in 30s (last status: %+v, %v)\n%s", st, err, d.Log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the running daemon (SIGTERM, then SIGKILL after 20 s).
func (d *Daemon) Stop() { d.run.stop() }

// Kill ends the running daemon with SIGKILL: no cleanup at all.
func (d *Daemon) Kill() {
	_ = d.run.cmd.Process.Kill()
	<-d.run.done
}

// Signal sends sig to the running daemon.
func (d *Daemon) Signal(sig os.Signal) error { return d.run.cmd.Process.Signal(sig) }

// Wait waits for the daemon to exit and returns its exit error.
func (d *Daemon) Wait() error {
	<-d.run.done
	return d.run.err
}

// AdminClient talks to the admin endpoint from inside the namespace.
func (d *Daemon) AdminClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.NS.DialContext}}
}

// AdminURL returns the admin endpoint's URL for path.
func (d *Daemon) AdminURL(path string) string {
	a := d.Admin
	if a == "" {
		a = DefaultAdmin
	}
	return "http://" + a + path
}

// Status reads the admin endpoint's /status.
func (d *Daemon) Status() (*admin.Status, error) {
	resp, err := d.AdminClient().Get(d.AdminURL("/status"))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st admin.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("decode status: %w", err)
	}
	return &st, nil
}
