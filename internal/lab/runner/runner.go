// Package runner runs the edgeproxy binary in a lab namespace (package
// lab) for end-to-end checks: started, waited for until its admin endpoint
// reports it ready, signalled and stopped. It never imports testing;
// internal/labtest ties it to a test.
package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/internal/lab"
)

// DefaultAdmin is the admin listener the lab configurations use.
const DefaultAdmin = "127.0.0.1:9469"

// Daemon is edgeproxy running in a namespace for the lab's end-to-end
// checks, one process at a time; Log keeps the output of every run.
type Daemon struct {
	NS *lab.NS
	// Admin is the admin listener of its configuration (DefaultAdmin
	// when empty).
	Admin string
	Log   lab.Log
	// Env is added to the daemon's environment.
	Env []string

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

// ErrDaemonExited is returned by Start when the daemon exits before it
// is ready.
var ErrDaemonExited = errors.New("daemon exited before it was ready")

// Start runs the binary with args in the namespace and waits until the
// admin endpoint's status satisfies ready, for at most timeout. On error
// the process is stopped; the error carries the daemon's log. The caller
// stops a started daemon with Stop.
func (d *Daemon) Start(ready Ready, timeout time.Duration, bin string, args ...string) error {
	cmd := d.NS.Command(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = &d.Log, &d.Log
	if len(d.Env) > 0 {
		cmd.Env = append(os.Environ(), d.Env...)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start edgeproxy: %w", err)
	}
	r := &run{cmd: cmd, done: make(chan struct{})}
	d.run = r
	go func() { r.err = cmd.Wait(); close(r.done) }()
	deadline := time.Now().Add(timeout)
	for {
		st, err := d.Status()
		if err == nil && ready(st) {
			return nil
		}
		select {
		case <-r.done:
			return fmt.Errorf("%w: %v\n%s", ErrDaemonExited, r.err, d.Log.String())
		default:
		}
		if time.Now().After(deadline) {
			r.stop()
			return fmt.Errorf("daemon not ready in %s (last status: %+v, %v)\n%s", timeout, st, err, d.Log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the running daemon (SIGTERM, then SIGKILL after 20 s); it
// does nothing when none was started or it has exited.
func (d *Daemon) Stop() {
	if d.run != nil {
		d.run.stop()
	}
}

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
