// Package control is the daemon's control socket: a Unix stream socket
// that root (and, when configured, one group) uses to ask the running
// daemon to reload, change a member's state or list and kill flows. The
// protocol is one JSON object per line each way, versioned: a Request
// names a command and its arguments, the Response says whether it
// succeeded and carries its result or the daemon's error.
package control

import (
	"context"
	"encoding/json"
	"errors"
)

// Version is the protocol version this package speaks.
const Version = 1

// Request is one command to the daemon.
type Request struct {
	Version int             `json:"version"`
	Command string          `json:"command"`
	Args    json.RawMessage `json:"args,omitempty"`
}

// Response is the daemon's answer to one Request.
type Response struct {
	Version int             `json:"version"`
	OK      bool            `json:"ok"`
	Error   string          `json:"error,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	// PID is the daemon's process id.
	PID int `json:"pid"`
}

// Spec says where the socket lives and who may use it.
type Spec struct {
	// Path is the socket; its directory is created mode 0750.
	Path string
	// Group, when set, may use the socket besides root.
	Group string
}

// Sentinel errors.
var (
	// ErrInUse: a live daemon already serves the socket.
	ErrInUse = errors.New("another daemon serves the control socket")
	// ErrRefused: the peer is neither root nor in the socket's group.
	ErrRefused = errors.New("control socket refused the peer")
	// ErrNoDaemon: nothing listens on the socket.
	ErrNoDaemon = errors.New("no daemon on the control socket")
	// ErrCommand: the daemon ran the command and it failed.
	ErrCommand = errors.New("daemon refused the command")
)

// Handler runs one command and returns its result (any value JSON can
// encode) or an error the client shows as is.
type Handler func(ctx context.Context, command string, args json.RawMessage) (any, error)
