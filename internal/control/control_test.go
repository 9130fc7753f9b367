package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/control"
)

// echoHandler answers "echo" with its arguments and refuses the rest.
func echoHandler(_ context.Context, cmd string, args json.RawMessage) (any, error) {
	if cmd != "echo" {
		return nil, fmt.Errorf("unknown command %q", cmd)
	}
	return args, nil
}

func serve(t *testing.T, spec control.Spec) *control.Server {
	t.Helper()
	s, err := control.Listen(spec, echoHandler, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

func call(t *testing.T, path, cmd string, args any) (string, int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var out string
	pid, err := control.Call(ctx, path, cmd, args, &out)
	return out, pid, err
}

// TestControlAnswersAndNamesItsPID: a command gets its answer, the
// daemon's refusal comes back as its message, and the client learns the
// server's pid from the kernel.
func TestControlAnswersAndNamesItsPID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "control.sock")
	serve(t, control.Spec{Path: path})
	out, pid, err := call(t, path, "echo", "hello")
	if err != nil || out != "hello" || pid != os.Getpid() {
		t.Fatalf("echo: %q, pid %d (want %d), %v", out, pid, os.Getpid(), err)
	}
	_, _, err = call(t, path, "reboot", nil)
	if !errors.Is(err, control.ErrCommand) || !strings.Contains(err.Error(), `unknown command "reboot"`) {
		t.Fatalf("refused command: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode: %v %v", fi.Mode(), err)
	}
	if di, err := os.Stat(filepath.Dir(path)); err != nil || di.Mode().Perm() != 0o750 {
		t.Fatalf("socket directory mode: %v %v", di.Mode(), err)
	}
}

// TestControlAnswersAsItCloses: a request being answered when the
// server closes (edgeproxy drain: the daemon stops as it answers) gets
// its answer; an idle connection is ended.
func TestControlAnswersAsItCloses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	asked, release := make(chan struct{}), make(chan struct{})
	s, err := control.Listen(control.Spec{Path: path}, func(context.Context, string, json.RawMessage) (any, error) {
		close(asked)
		<-release
		return "drained", nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background()) }()
	idle, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	answer := make(chan error, 1)
	var out string
	go func() { _, err := control.Call(context.Background(), path, "drain", nil, &out); answer <- err }()
	<-asked
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-answer; err != nil || out != "drained" {
		t.Errorf("the request answered while the server closed: %q, %v; want its answer", out, err)
	}
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); err == nil {
		t.Errorf("the idle connection is still open after Close (read %d bytes)", n)
	}
}

// TestControlStaleAndLiveSocket: a socket left by a dead daemon is
// replaced; one a live daemon answers on is refused, and that daemon
// keeps answering.
func TestControlStaleAndLiveSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close() // the file stays, nothing listens: a dead daemon's socket
	serve(t, control.Spec{Path: path})
	if _, _, err := call(t, path, "echo", "x"); err != nil {
		t.Fatalf("after replacing the stale socket: %v", err)
	}
	_, err = control.Listen(control.Spec{Path: path}, echoHandler, nil)
	if !errors.Is(err, control.ErrInUse) || !strings.Contains(err.Error(), "another daemon serves the control socket "+path) {
		t.Fatalf("second daemon on a live socket: %v", err)
	}
	if _, _, err := call(t, path, "echo", "x"); err != nil {
		t.Fatalf("the live daemon stopped answering: %v", err)
	}
}

// TestControlVersion: a request of another protocol version is refused
// with the version the daemon speaks.
func TestControlVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	serve(t, control.Spec{Path: path})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintln(c, `{"version":2,"command":"echo"}`)
	var resp control.Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		t.Fatal(err)
	}
	if resp.OK || !strings.Contains(resp.Error, "this daemon speaks version 1") {
		t.Fatalf("version 2 request: %+v", resp)
	}
}

// TestControlRefusesNonRootPeer: a process that can open the socket
// (its group owns it) but is neither root nor in control.group is
// refused by its credentials.
func TestControlRefusesNonRootPeer(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the client as another uid")
	}
	dir := openDir(t)
	path := filepath.Join(dir, "run", "control.sock")
	serve(t, control.Spec{Path: path})
	out, err := helper(t, path, 65534, 0)
	if err == nil || !strings.Contains(out, "control socket refused the peer: uid 65534") {
		t.Fatalf("uid 65534 with group root's access: %v\n%s", err, out)
	}
	if out, err := helper(t, path, 0, 0); err != nil {
		t.Fatalf("root refused: %v\n%s", err, out)
	}
}

// TestControlGroupMember: with control.group set, a member of the group
// may use the socket.
func TestControlGroupMember(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the client as another uid")
	}
	dir := openDir(t)
	path := filepath.Join(dir, "run", "control.sock")
	serve(t, control.Spec{Path: path, Group: "nogroup"})
	if out, err := helper(t, path, 65534, 65534); err != nil {
		t.Fatalf("member of nogroup refused: %v\n%s", err, out)
	}
}

// openDir returns a test directory other users may traverse.
func openDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// helper runs this test binary as uid:gid to call "echo" on path.
func helper(t *testing.T, path string, uid, gid uint32) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// The test binary's own directory is private to root: run a copy.
	bin := filepath.Join(filepath.Dir(filepath.Dir(path)), "client")
	if _, err := os.Stat(bin); err != nil {
		b, err := os.ReadFile(os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestHelperClient$")
	cmd.Env = append(os.Environ(), "CONTROL_HELPER_SOCKET="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestHelperClient is the client helper runs as another user.
func TestHelperClient(t *testing.T) {
	path := os.Getenv("CONTROL_HELPER_SOCKET")
	if path == "" {
		t.Skip("run by helper only")
	}
	if out, _, err := call(t, path, "echo", "x"); err != nil || out != "x" {
		t.Fatalf("%q %v", out, err)
	}
}
