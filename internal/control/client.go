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

// Client is a connection to the daemon's control socket.
type Client struct {
	path string
	c    *net.UnixConn
	sc   *bufio.Scanner
	pid  int
}

// Dial connects to the daemon at path.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, dialError(path, err)
	}
	uc := c.(*net.UnixConn)
	cred, err := peerCred(uc)
	if err != nil {
		c.Close()
		return nil, err
	}
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 4096), 64<<20)
	return &Client{path: path, c: uc, sc: sc, pid: int(cred.Pid)}, nil
}

// PID is the daemon's process id, as the kernel reports the socket's
// owner (not as the daemon says).
func (cl *Client) PID() int { return cl.pid }

// Close ends the connection.
func (cl *Client) Close() error { return cl.c.Close() }

// CommandError is the daemon's refusal of a command; it is ErrCommand.
type CommandError struct{ Msg string }

func (e *CommandError) Error() string        { return ErrCommand.Error() + ": " + e.Msg }
func (e *CommandError) Is(target error) bool { return target == ErrCommand }

// Call sends one command with args, waits for the daemon's answer and
// decodes the result into result (when not nil). A command the daemon
// refused is a *CommandError with its message.
func (cl *Client) Call(ctx context.Context, command string, args, result any) error {
	stop := context.AfterFunc(ctx, func() { _ = cl.c.SetDeadline(time.Now()) })
	defer stop()
	req := Request{Version: Version, Command: command}
	if args != nil {
		var err error
		if req.Args, err = json.Marshal(args); err != nil {
			return fmt.Errorf("encode %s arguments: %w", command, err)
		}
	}
	if err := json.NewEncoder(cl.c).Encode(req); err != nil {
		return fmt.Errorf("send %s to the daemon on %s: %w", command, cl.path, err)
	}
	if !cl.sc.Scan() {
		err := cl.sc.Err()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		if err == nil {
			err = errors.New("connection closed")
		}
		return fmt.Errorf("read the daemon's answer to %s on %s: %w", command, cl.path, err)
	}
	var resp Response
	if err := json.Unmarshal(cl.sc.Bytes(), &resp); err != nil {
		return fmt.Errorf("decode the daemon's answer to %s: %w", command, err)
	}
	if !resp.OK {
		return &CommandError{Msg: resp.Error}
	}
	if result != nil && len(resp.Result) > 0 {
		if err := json.Unmarshal(resp.Result, result); err != nil {
			return fmt.Errorf("decode the result of %s: %w", command, err)
		}
	}
	return nil
}

// Call dials path, sends one command and returns the daemon's pid with
// its answer (see Client.Call).
func Call(ctx context.Context, path, command string, args, result any) (int, error) {
	cl, err := Dial(ctx, path)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	return cl.PID(), cl.Call(ctx, command, args, result)
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
