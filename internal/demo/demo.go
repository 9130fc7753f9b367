// Package demo is `edgeproxy demo`: it builds a lab of network
// namespaces (an Internet client, the proxy host with its external and
// internal NICs, and a front-end pool of two members), issues the
// certificates, starts the members as Skype-like front ends, runs the
// edgeproxy daemon on an embedded configuration, drives real traffic
// through the XDP fast path and the L7 proxy, and prints what happened.
package demo

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/certgen"
	"github.com/edgeproxy/edgeproxy/internal/lab"
)

// Sentinel errors.
var (
	// ErrNotRoot: the demo creates namespaces and loads XDP programs.
	ErrNotRoot = errors.New("the demo needs root: it creates network namespaces and loads XDP programs; run it with sudo")
	// ErrDaemon: the edgeproxy daemon did not start or died.
	ErrDaemon = errors.New("edgeproxy daemon failed")
	// ErrLabID: a teardown id that is not a demo lab's.
	ErrLabID = errors.New("not a demo lab id")
	// ErrInterrupted: the demo was stopped (Ctrl-C) before it finished.
	ErrInterrupted = errors.New("demo interrupted")
)

// The lab's published addresses and the demo's fixed names.
var (
	// FastVIP is the fastl4 virtual's address, added to ext0 by the
	// daemon's network configuration.
	FastVIP = netip.MustParseAddr("198.18.0.20")
)

const (
	labPrefix = "epd"
	adminAddr = "127.0.0.1:9469"
	// StateBase holds one directory per lab: configuration, certificates,
	// the daemon's log and what -teardown needs.
	StateBase = "/run/edgeproxy-demo"
	// pinBase prefixes the per-lab fast path pin directory.
	pinBase  = "/sys/fs/bpf/edgeproxy-demo-"
	poolName = "sfb-fe"
)

// Options shape a demo run.
type Options struct {
	// Executable is the edgeproxy binary run as the daemon (default: this
	// process's executable).
	Executable string
	// Keep leaves the lab, the daemon and the members running.
	Keep bool
	// Out receives the report (default os.Stdout).
	Out io.Writer
	// StartTimeout bounds the daemon's start (default 30s).
	StartTimeout time.Duration
}

// Report is what a run found.
type Report struct {
	ID      string
	Dir     string
	Results []Result
	Elapsed time.Duration
}

// Passed is the number of steps that passed.
func (r *Report) Passed() int {
	n := 0
	for _, s := range r.Results {
		if s.Pass {
			n++
		}
	}
	return n
}

// Failed is the number of steps that failed.
func (r *Report) Failed() int { return len(r.Results) - r.Passed() }

// session is one run: the lab, its files, the members and the daemon.
type session struct {
	opts  Options
	out   io.Writer
	start time.Time
	log   *slog.Logger

	lab     *lab.Lab
	id      string
	dir     string
	pinPath string
	cfgPath string
	logPath string

	certs         *certgen.Set
	publicRoots   *x509.CertPool
	internalRoots *x509.CertPool
	members       []*member

	daemon     *exec.Cmd
	daemonDone chan struct{}
	daemonErr  error

	admin *http.Client
	// ntlmConn is the first user's authenticated connection, kept open
	// from the NTLM step to the next.
	ntlmConn *rawConn
	// interrupted is set when ctx ended the run early.
	interrupted bool
}

// Run runs the demo. The returned report lists every step; the error is
// set when the lab or the daemon could not be brought up (or ctx was
// cancelled), not when a step failed.
func Run(ctx context.Context, opts Options) (rep *Report, err error) {
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 30 * time.Second
	}
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	for _, c := range []string{"ip", "ethtool", "curl", "openssl"} {
		if _, err := exec.LookPath(c); err != nil {
			return nil, fmt.Errorf("find %s: %w (install it: make deps)", c, err)
		}
	}
	if opts.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the edgeproxy executable: %w", err)
		}
		opts.Executable = exe
	}
	s := &session{
		opts: opts, out: opts.Out, start: time.Now(),
		log: slog.New(slog.DiscardHandler),
	}
	rep = &Report{}
	kept := false
	defer func() {
		if !kept {
			s.teardown()
		}
		rep.Elapsed = time.Since(s.start)
		s.printSummary(rep, kept)
	}()

	if err := s.setUp(ctx); err != nil {
		rep.ID, rep.Dir = s.id, s.dir
		return rep, err
	}
	rep.ID, rep.Dir = s.id, s.dir
	for _, st := range s.steps() {
		if ctx.Err() != nil {
			s.interrupted = true
			return rep, ErrInterrupted
		}
		r := s.runStep(ctx, st)
		if ctx.Err() != nil {
			// Stopped by the user, not a failure of the step.
			s.interrupted = true
			return rep, ErrInterrupted
		}
		rep.Results = append(rep.Results, r)
		printResult(s.out, len(rep.Results), r)
	}
	if rep.Failed() > 0 {
		s.printLogTail(20)
	}
	if opts.Keep {
		if err := s.keep(); err != nil {
			return rep, err
		}
		kept = true
	}
	return rep, nil
}

// setUp builds the lab, the certificates, the members and the daemon.
func (s *session) setUp(ctx context.Context) error {
	l, err := lab.Build(lab.Options{Members: 2, Prefix: labPrefix})
	if err != nil {
		return fmt.Errorf("build lab: %w", err)
	}
	s.lab = l
	s.id = strings.TrimSuffix(l.Client.Name, "-client")
	s.pinPath = pinBase + s.id
	if err := os.MkdirAll(StateBase, 0o700); err != nil {
		return fmt.Errorf("create demo state directory: %w", err)
	}
	s.dir = filepath.Join(StateBase, s.id)
	if err := os.Mkdir(s.dir, 0o700); err != nil {
		return fmt.Errorf("create demo directory: %w", err)
	}
	s.cfgPath = filepath.Join(s.dir, "edgeproxy.yaml")
	s.logPath = filepath.Join(s.dir, "edgeproxy.log")
	s.admin = &http.Client{
		Transport: &http.Transport{DialContext: l.Proxy.DialContext, DisableKeepAlives: true},
		Timeout:   5 * time.Second,
	}
	s.printHeader()

	if err := s.issueCertificates(); err != nil {
		return err
	}
	if err := s.startMembers(l.Backend.Listen); err != nil {
		return err
	}
	if err := s.writeConfig(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		s.interrupted = true
		return ErrInterrupted
	}
	return s.startDaemon(ctx)
}

// memberNames are the pool's members, in the order of lab.Members4.
var memberNames = []string{"fe01.corp.example.com", "fe02.corp.example.com"}

func (s *session) issueCertificates() error {
	mem := map[string][]string{}
	for _, n := range memberNames {
		mem[n] = append([]string(nil), certgen.SkypeNames...)
	}
	set, err := certgen.Write(filepath.Join(s.dir, "tls"), certgen.Options{
		PublicNames: certgen.SkypeNames,
		Members:     mem,
	})
	if err != nil {
		return fmt.Errorf("issue certificates: %w", err)
	}
	s.certs = set
	s.publicRoots = set.PublicRoot.Pool()
	s.internalRoots = set.Internal.Pool()
	return nil
}

func (s *session) memberCert(name string) (tls.Certificate, error) {
	leaf := s.certs.Members[name]
	c, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load certificate of %s: %w", name, err)
	}
	return c, nil
}

func (s *session) startMembers(listen listenFunc) error {
	for i, n := range memberNames {
		c, err := s.memberCert(n)
		if err != nil {
			return err
		}
		m := newMember(n, s.lab.Members4[i], c, listen, s.log)
		if err := m.start(); err != nil {
			return err
		}
		s.members = append(s.members, m)
	}
	return nil
}

// writeConfig writes the configuration and checks it the way the daemon
// will read it.
func (s *session) writeConfig() error {
	text := s.configText()
	if _, err := config.Parse(s.cfgPath, text); err != nil {
		return fmt.Errorf("check the demo configuration: %w", err)
	}
	if err := os.WriteFile(s.cfgPath, text, 0o600); err != nil {
		return fmt.Errorf("write configuration: %w", err)
	}
	return nil
}

// startDaemon runs `edgeproxy run` inside the proxy namespace and waits
// until it is ready.
func (s *session) startDaemon(ctx context.Context) error {
	logf, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("open daemon log: %w", err)
	}
	defer logf.Close()
	// `ip netns exec` gives the daemon its own mount namespace with a
	// fresh /sys, which has no BPF file system: mount one there for the
	// fast path's pins. It lives as long as the daemon, so its pins go
	// with it.
	cmd := exec.Command("ip", "netns", "exec", s.lab.Proxy.Name, "sh", "-c", mountBPFFS, "sh",
		s.opts.Executable, "run",
		"-config", s.cfgPath,
		"-pid-file", filepath.Join(s.dir, "edgeproxy.pid"),
		"-control-socket", filepath.Join(s.dir, "control.sock"),
		"-member-state", filepath.Join(s.dir, "members.json"),
		"-netcfg-state", filepath.Join(s.dir, "netcfg.json"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: a Ctrl-C on the terminal reaches the demo, which
	// stops the daemon in order. Without -keep the daemon also dies with
	// the demo.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if !s.opts.Keep {
		cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start daemon: %w", err)
	}
	s.daemon = cmd
	s.daemonDone = make(chan struct{})
	go func() {
		s.daemonErr = cmd.Wait()
		close(s.daemonDone)
	}()
	fmt.Fprintf(s.out, "  daemon  ip netns exec %s %s run -config %s (pid %d, log %s)\n\n",
		s.lab.Proxy.Name, s.opts.Executable, s.cfgPath, cmd.Process.Pid, s.logPath)

	deadline := time.Now().Add(s.opts.StartTimeout)
	for {
		err := s.healthz(ctx)
		if err == nil {
			break
		}
		select {
		case <-s.daemonDone:
			status := "exit status 0"
			if s.daemonErr != nil {
				status = s.daemonErr.Error()
			}
			return fmt.Errorf("%w: it exited (%s) before it was ready; %s", ErrDaemon, status, s.printLogTail(30))
		case <-ctx.Done():
			s.interrupted = true
			return ErrInterrupted
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: not ready after %s (last: %v); %s", ErrDaemon, s.opts.StartTimeout, err, s.printLogTail(30))
		}
	}
	return nil
}

// mountBPFFS mounts the BPF file system on /sys/fs/bpf unless there is
// one, then runs its arguments in place of the shell.
const mountBPFFS = `mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || exit 1; exec "$@"`

// healthz asks the admin endpoint whether the daemon serves.
func (s *session) healthz(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+adminAddr+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := s.admin.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// stopDaemon sends SIGTERM and waits for the daemon to drain and exit.
func (s *session) stopDaemon() {
	if s.daemon == nil {
		return
	}
	select {
	case <-s.daemonDone:
		return
	default:
	}
	_ = s.daemon.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.daemonDone:
	case <-time.After(15 * time.Second):
		_ = s.daemon.Process.Kill()
		<-s.daemonDone
	}
}

// teardown stops everything the run started, in order: the daemon, the
// pinned fast path state, the members, the namespaces, the files.
func (s *session) teardown() {
	s.stopDaemon()
	removePinDir(s.pinPath)
	for _, m := range s.members {
		m.stop()
	}
	if s.lab != nil {
		s.lab.Close()
	}
	if s.dir != "" {
		_ = os.RemoveAll(s.dir)
	}
}

// removePinDir removes the lab's pin directory when it is one of the
// demo's.
func removePinDir(p string) {
	if p == "" || !strings.HasPrefix(p, pinBase) || strings.Contains(p, "..") {
		return
	}
	_ = os.RemoveAll(p)
}

// printLogTail shows the end of the daemon's log and says so.
func (s *session) printLogTail(n int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil || len(b) == 0 {
		return "its log is empty"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	fmt.Fprintf(s.out, "\n--- last %d lines of %s ---\n", len(lines), s.logPath)
	for _, l := range lines {
		fmt.Fprintln(s.out, l)
	}
	fmt.Fprintln(s.out, "---")
	return "the end of its log is shown above"
}
