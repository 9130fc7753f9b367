package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// maxLine bounds one request line.
const maxLine = 1 << 20

// Server serves the control socket.
type Server struct {
	spec    Spec
	gid     int // the group allowed besides root, -1 for none
	ln      *net.UnixListener
	handler Handler
	log     *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Listen opens the socket at spec.Path (mode 0660, owner root and the
// spec's group) in a directory of mode 0750 it creates if needed. A
// socket left by a dead daemon is replaced; one a live daemon answers on
// is refused.
func Listen(spec Spec, h Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	gid := -1
	if spec.Group != "" {
		g, err := user.LookupGroup(spec.Group)
		if err != nil {
			return nil, fmt.Errorf("look up control group: %w (control.group names a group of this host)", err)
		}
		if gid, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("look up control group %s: gid %q is not a number", spec.Group, g.Gid)
		}
	}
	if err := makeDir(filepath.Dir(spec.Path), gid); err != nil {
		return nil, err
	}
	if err := removeStale(spec.Path); err != nil {
		return nil, err
	}
	ln, err := listenPrivate(spec.Path, gid)
	if err != nil {
		return nil, err
	}
	return &Server{spec: spec, gid: gid, ln: ln, handler: h, log: log, conns: map[net.Conn]struct{}{}}, nil
}

// makeDir creates the socket's directory mode 0750 (group gid); an
// existing directory is left as it is.
func makeDir(dir string, gid int) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("create control socket directory: %w", err)
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		return fmt.Errorf("set mode of control socket directory: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(dir, 0, gid); err != nil {
			return fmt.Errorf("set group of control socket directory: %w", err)
		}
	}
	return nil
}

// removeStale removes a socket no daemon answers on; a live one is
// ErrInUse, and a file that is not a socket is left for the operator.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspect control socket: %w", err)
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("open control socket: %s is not a socket: remove it or set control.socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w %s: stop it first, or give this one its own control.socket", ErrInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe control socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale control socket: %w", err)
	}
	return nil
}

// listenPrivate binds a temporary name, sets its mode and group, then
// renames it into place, so the socket is never reachable with looser
// permissions.
func listenPrivate(path string, gid int) (*net.UnixListener, error) {
	tmp := path + ".new"
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on control socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, 0o660); err != nil {
		return fail(fmt.Errorf("set mode of control socket: %w", err))
	}
	if gid >= 0 {
		if err := os.Chown(tmp, 0, gid); err != nil {
			return fail(fmt.Errorf("set group of control socket: %w", err))
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("place control socket: %w", err))
	}
	return ln, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.spec.Path }

// Serve answers connections until ctx is done or Close.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				s.wg.Wait()
				return nil
			}
			return fmt.Errorf("accept on control socket: %w", err)
		}
		if !s.track(c) {
			c.Close()
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.untrack(c)
			s.serveConn(ctx, c)
		}()
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// Close stops accepting, ends open connections and removes the socket.
// A connection whose request is being answered gets its answer first
// (`edgeproxy drain` is answered as the daemon stops); Serve returns once
// it has.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		_ = c.SetReadDeadline(time.Now())
	}
	if rerr := os.Remove(s.spec.Path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) && err == nil {
		err = fmt.Errorf("remove control socket: %w", rerr)
	}
	return err
}

// serveConn checks the peer, then answers its requests, one per line.
func (s *Server) serveConn(ctx context.Context, c *net.UnixConn) {
	enc := json.NewEncoder(c)
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	refused := s.allowed(c)
	for {
		if !s.awaitNext(c) || !sc.Scan() {
			return
		}
		var resp Response
		if refused != nil {
			// The refusal answers the first request, then the connection ends.
			s.log.Warn("control socket: peer refused", "err", refused)
			resp = Response{Version: Version, Error: refused.Error(), PID: os.Getpid()}
			_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			_ = enc.Encode(resp)
			return
		}
		resp = s.answer(ctx, sc.Bytes())
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := enc.Encode(resp); err != nil {
			return
		}
	}
}

// awaitNext gives the connection's next request 5 minutes, or reports
// false once the server is closed.
func (s *Server) awaitNext(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Minute))
	return true
}

func (s *Server) answer(ctx context.Context, line []byte) Response {
	resp := Response{Version: Version, PID: os.Getpid()}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		resp.Error = fmt.Sprintf("decode request: %v: send one JSON object per line", err)
		return resp
	}
	if req.Version != Version {
		resp.Error = fmt.Sprintf("protocol version %d not served: this daemon speaks version %d (upgrade the client)", req.Version, Version)
		return resp
	}
	res, err := s.handler(ctx, req.Command, req.Args)
	if err != nil {
		resp.Error = err.Error()
		return resp
	}
	resp.OK = true
	if res != nil {
		b, err := json.Marshal(res)
		if err != nil {
			resp.OK, resp.Error = false, fmt.Sprintf("encode result of %s: %v", req.Command, err)
			return resp
		}
		resp.Result = b
	}
	return resp
}

// allowed checks the peer's credentials: root, or a member of the
// socket's group (primary or supplementary).
func (s *Server) allowed(c *net.UnixConn) error {
	cred, err := peerCred(c)
	if err != nil {
		return err
	}
	if cred.Uid == 0 {
		return nil
	}
	if s.gid >= 0 && (int(cred.Gid) == s.gid || slices.Contains(supplementaryGroups(int(cred.Pid)), s.gid)) {
		return nil
	}
	who := "root"
	if s.spec.Group != "" {
		who += " or members of group " + s.spec.Group
	}
	return fmt.Errorf("%w: uid %d (pid %d): only %s may use %s (control.group)", ErrRefused, cred.Uid, cred.Pid, who, s.spec.Path)
}

// peerCred returns the credentials of the process at the other end.
func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("read peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, fmt.Errorf("read peer credentials: %w", err)
	}
	if cerr != nil {
		return nil, fmt.Errorf("read peer credentials: %w", cerr)
	}
	return cred, nil
}

// supplementaryGroups reads a process's groups from /proc (none when it
// has gone).
func supplementaryGroups(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, "Groups:")
		if !ok {
			continue
		}
		var out []int
		for f := range strings.FieldsSeq(rest) {
			if g, err := strconv.Atoi(f); err == nil {
				out = append(out, g)
			}
		}
		return out
	}
	return nil
}
