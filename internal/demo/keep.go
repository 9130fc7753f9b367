package demo

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/certgen"
)

// state is what a kept lab leaves for -teardown.
type state struct {
	ID         string   `json:"id"`
	Namespaces []string `json:"namespaces"`
	DaemonPID  int      `json:"daemon_pid"`
	MembersPID int      `json:"members_pid"`
	PinPath    string   `json:"pin_path"`
}

// memberFile describes a member for the detached member server.
type memberFile struct {
	Name string     `json:"name"`
	Addr netip.Addr `json:"addr"`
	Cert string     `json:"cert"`
	Key  string     `json:"key"`
}

const (
	stateFile   = "state.json"
	membersFile = "members.json"
)

// keep hands the members over to a detached process, so that they
// outlive the demo with the daemon, and records what -teardown needs.
func (s *session) keep() error {
	for _, m := range s.members {
		m.stop()
	}
	var mf []memberFile
	for _, m := range s.members {
		mf = append(mf, memberFile{
			Name: m.name, Addr: m.addr,
			Cert: filepath.Join(s.dir, "tls", m.name+".pem"),
			Key:  filepath.Join(s.dir, "tls", m.name+".key"),
		})
	}
	if err := writeJSON(filepath.Join(s.dir, membersFile), mf); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(s.dir, "members.log"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("open members log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command("ip", "netns", "exec", s.lab.Backend.Name, s.opts.Executable, "demo", "-serve-members", s.dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the members: %w", err)
	}
	go func() { _ = cmd.Wait() }()
	st := state{
		ID:         s.id,
		Namespaces: []string{s.lab.Client.Name, s.lab.Proxy.Name, s.lab.Backend.Name},
		DaemonPID:  s.daemon.Process.Pid,
		MembersPID: cmd.Process.Pid,
		PinPath:    s.pinPath,
	}
	if err := writeJSON(filepath.Join(s.dir, stateFile), st); err != nil {
		return err
	}
	// Wait until the detached members serve.
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range s.members {
		for {
			c, err := s.lab.Backend.Dial("tcp", ap(m.addr, portExternalTLS).String())
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("start the members: %s does not answer: %w (log %s)", m.short, err, filepath.Join(s.dir, "members.log"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

func (s *session) printKeep() {
	c, p := s.lab.Client.Name, s.lab.Proxy.Name
	exe := s.opts.Executable
	fmt.Fprintf(s.out, "lab %s keeps running. Try:\n", s.id)
	fmt.Fprintf(s.out, "  ip netns exec %s curl -i --resolve webext.example.com:443:%s --cacert %s https://webext.example.com/Autodiscover/AutodiscoverService.svc/root\n",
		c, s.lab.VIP4, s.tlsFile(certgen.PublicRootFile))
	fmt.Fprintf(s.out, "  ip netns exec %s curl -i --resolve webext.example.com:443:%s --cacert %s https://webext.example.com/\n",
		c, FastVIP, s.tlsFile(certgen.InternalCAFile))
	fmt.Fprintf(s.out, "  ip netns exec %s curl -i --ntlm -u '%s:%s' --resolve webext.example.com:443:%s --cacert %s https://webext.example.com%s\n",
		c, demoUser, demoPassword, s.lab.VIP4, s.tlsFile(certgen.PublicRootFile), protectedPath)
	fmt.Fprintf(s.out, "  ip netns exec %s %s status          (admin endpoint http://%s: /status, /metrics, /healthz)\n", p, exe, adminAddr)
	fmt.Fprintf(s.out, "  ip netns exec %s curl -s http://%s/metrics | grep ^edgeproxy_xdp\n", p, adminAddr)
	fmt.Fprintf(s.out, "  ip netns exec %s bash          (a shell on the proxy host)\n", p)
	fmt.Fprintf(s.out, "configuration %s, daemon log %s\n", s.cfgPath, s.logPath)
	fmt.Fprintf(s.out, "Tear it down with:\n  %s demo -teardown %s\n", exe, s.id)
	fmt.Fprintf(s.out, "or by hand: kill %d (daemon) and the members' process; ip netns del %s-client; ip netns del %s-proxy; ip netns del %s-backend; rm -rf %s\n",
		s.daemon.Process.Pid, s.id, s.id, s.id, s.dir)
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

var labID = regexp.MustCompile(`^` + labPrefix + `-[0-9a-f]{6}$`)

// Teardown removes a lab left running by -keep: the daemon and the
// members are stopped, the pinned state, the namespaces and the files
// removed.
func Teardown(id string, out io.Writer) error {
	if !labID.MatchString(id) {
		return fmt.Errorf("tear down %q: %w: ids look like %s-1a2b3c (the demo prints it; ip netns list shows them)", id, ErrLabID, labPrefix)
	}
	dir := filepath.Join(StateBase, id)
	st := state{ID: id, PinPath: pinBase + id,
		Namespaces: []string{id + "-client", id + "-proxy", id + "-backend"}}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("read %s: %w", filepath.Join(dir, stateFile), err)
		}
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(out, "no state in %s: removing the namespaces of %s only\n", dir, id)
	default:
		return fmt.Errorf("read demo state: %w", err)
	}
	var errs []error
	for _, p := range []struct {
		pid  int
		what string
	}{{st.DaemonPID, "daemon"}, {st.MembersPID, "members"}} {
		if p.pid <= 1 || !ownedBy(p.pid, dir) {
			continue
		}
		if err := stopPID(p.pid); err != nil {
			errs = append(errs, fmt.Errorf("stop %s (pid %d): %w", p.what, p.pid, err))
			continue
		}
		fmt.Fprintf(out, "stopped %s (pid %d)\n", p.what, p.pid)
	}
	if !strings.HasPrefix(st.PinPath, pinBase) {
		st.PinPath = pinBase + id
	}
	removePinDir(st.PinPath)
	for _, ns := range st.Namespaces {
		if !strings.HasPrefix(ns, id+"-") {
			continue
		}
		out2, err := exec.Command("ip", "netns", "del", ns).CombinedOutput()
		if err != nil {
			if !strings.Contains(string(out2), "No such file") {
				errs = append(errs, fmt.Errorf("delete namespace %s: %v: %s", ns, err, strings.TrimSpace(string(out2))))
			}
			continue
		}
		fmt.Fprintf(out, "deleted namespace %s\n", ns)
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	fmt.Fprintf(out, "lab %s torn down\n", id)
	return nil
}

// ownedBy says whether pid runs with dir in its command line (a process
// this lab started, not a reused pid).
func ownedBy(pid int, dir string) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	return slices.ContainsFunc(strings.Split(string(b), "\x00"), func(a string) bool {
		return a == dir || strings.HasPrefix(a, dir+"/")
	})
}

// stopPID sends SIGTERM and waits up to 15s before SIGKILL.
func stopPID(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if zombie(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return syscall.Kill(pid, syscall.SIGKILL)
}

// zombie says whether pid has exited and waits for its parent.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// ServeMembers serves the members described in dir until ctx ends; it
// is what a kept lab runs inside its backend namespace.
func ServeMembers(ctx context.Context, dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, membersFile))
	if err != nil {
		return fmt.Errorf("read members: %w", err)
	}
	var mf []memberFile
	if err := json.Unmarshal(b, &mf); err != nil {
		return fmt.Errorf("read members: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var ms []*member
	defer func() {
		for _, m := range ms {
			m.stop()
		}
	}()
	for _, f := range mf {
		c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return fmt.Errorf("load certificate of %s: %w", f.Name, err)
		}
		m := newMember(f.Name, f.Addr, c, net.Listen, log)
		if err := m.start(); err != nil {
			return err
		}
		ms = append(ms, m)
		log.Info("member serving", "member", f.Name, "address", f.Addr)
	}
	<-ctx.Done()
	return nil
}
