package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"syscall"
	"time"
)

// Call sends one command with args to the daemon at path, waits for its
// answer and decodes the result into result (when not nil). It returns
// the daemon's pid, as the kernel reports the socket's owner (not as the
// daemon says). A command the daemon refused is ErrCommand with its
// message.
func Call(ctx context.Context, path, command string, args, result any) (int, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return 0, dialError(path, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	pid := 0
	if cred, err := peerCred(c.(*net.UnixConn)); err == nil {
		pid = int(cred.Pid)
	}
	req := Request{Version: Version, Command: command}
	if args != nil {
		if req.Args, err = json.Marshal(args); err != nil {
			return pid, fmt.Errorf("encode %s arguments: %w", command, err)
		}
	}
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return pid, fmt.Errorf("send %s to the daemon on %s: %w", command, path, err)
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 4096), 64<<20)
	if !sc.Scan() {
		err := sc.Err()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		if err == nil {
			err = errors.New("connection closed")
		}
		return pid, fmt.Errorf("read the daemon's answer to %s on %s: %w", command, path, err)
	}
	var resp Response
	if err := json.Unmarshal(sc.Bytes(), &resp); err != nil {
		return pid, fmt.Errorf("decode the daemon's answer to %s: %w", command, err)
	}
	if !resp.OK {
		return pid, fmt.Errorf("%w: %s", ErrCommand, resp.Error)
	}
	if result != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, result); err != nil {
			return pid, fmt.Errorf("decode the result of %s: %w", command, err)
		}
	}
	return pid, nil
}

func dialError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w %s: is 'edgeproxy run' running with this file's control.socket?", ErrNoDaemon, path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("open control socket %s: permission denied: run as root or as a member of control.group", path)
	}
	return fmt.Errorf("open control socket %s: %w", path, err)
}
