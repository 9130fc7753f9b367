package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/lab"
)

// process is a long-running program started by the harness inside a
// namespace (a backend server or a candidate proxy), in its own process
// group so that it and its children can be stopped together.
type process struct {
	name string
	cmd  *exec.Cmd
	out  *lab.Log
	done chan struct{}
	err  error
}

// nsCommand builds `ip netns exec NS [taskset -c CPUS] name args...`.
func nsCommand(ns *lab.NS, cpus string, name string, args ...string) *exec.Cmd {
	argv := []string{"netns", "exec", ns.Name}
	if cpus != "" {
		argv = append(argv, "taskset", "-c", cpus)
	}
	argv = append(argv, name)
	argv = append(argv, args...)
	return exec.Command("ip", argv...)
}

// startProcess starts name in ns, pinned to cpus ("" for no pinning), with
// extra environment variables env.
func startProcess(ns *lab.NS, cpus string, env []string, name string, args ...string) (*process, error) {
	cmd := nsCommand(ns, cpus, name, args...)
	cmd.Env = append(os.Environ(), env...)
	p := &process{name: name, cmd: cmd, out: &lab.Log{}, done: make(chan struct{})}
	cmd.Stdout = p.out
	cmd.Stderr = p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended, with its error.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		if p.err == nil {
			return true, errors.New("exited")
		}
		return true, p.err
	default:
		return false, nil
	}
}

// stop sends sig to the process group, waits up to grace, then kills the
// group.
func (p *process) stop(sig syscall.Signal, grace time.Duration) {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
		// The leader is gone; children left in its group still go.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		return
	default:
	}
	_ = syscall.Kill(-pgid, sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// tail returns the last lines of the process's output.
func (p *process) tail(n int) string {
	return lastLines(p.out.String(), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// cmdResult is what runIn reports of a command.
type cmdResult struct {
	stdout, stderr string
	cpu            float64 // user+system seconds of the command and its children
	wall           time.Duration
}

// runIn runs a short command in ns, pinned to cpus, bounded by ctx, and
// returns its stdout, stderr and resource usage.
func runIn(ctx context.Context, ns *lab.NS, cpus string, env []string, name string, args ...string) (cmdResult, error) {
	cmd := nsCommand(ns, cpus, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return cmdResult{}, fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		err = fmt.Errorf("%s: %w", name, ctx.Err())
	}
	r := cmdResult{stdout: stdout.String(), stderr: stderr.String(), wall: time.Since(start)}
	if ps := cmd.ProcessState; ps != nil {
		r.cpu = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	if err != nil {
		return r, fmt.Errorf("run %s: %w: %s", name, err, lastLines(stderr.String()+stdout.String(), 3))
	}
	return r, nil
}
