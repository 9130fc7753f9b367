package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/control"
	"github.com/edgeproxy/edgeproxy/internal/sdnotify"
	"github.com/edgeproxy/edgeproxy/l4"
)

// Commands of the control socket.
const (
	CmdReload = "reload" // ReloadResult, or why the file was refused
	CmdMember = "member" // MemberArgs → MemberResult
	// CmdKillFlows: FlowArgs → []KilledFlow
	CmdKillFlows = "flows-kill"
)

// ReloadResult answers CmdReload when the daemon applied the file.
type ReloadResult struct {
	Config string    `json:"config"`
	Loaded time.Time `json:"loaded"`
}

// request is a control command run by the serve loop, in turn with
// SIGHUP reloads.
type request struct {
	run  func(context.Context) (any, error)
	done chan reply
}

type reply struct {
	res any
	err error
}

// openControl opens the control socket before anything else changes the
// host, so a second daemon stops at "another daemon serves SOCKET".
func (d *Daemon) openControl(cfg *config.Config) error {
	d.requests = make(chan request)
	path := cfg.Control.Socket
	switch d.opts.ControlSocket {
	case "":
	case "-":
		return nil
	default:
		path = d.opts.ControlSocket
	}
	s, err := control.Listen(control.Spec{Path: path, Group: cfg.Control.Group}, d.handle, d.log)
	if err != nil {
		return fmt.Errorf("open control socket: %w", err)
	}
	d.ctl = s
	return nil
}

// handle answers one control command.
func (d *Daemon) handle(ctx context.Context, cmd string, args json.RawMessage) (any, error) {
	switch cmd {
	case CmdReload:
		return d.inTurn(ctx, func(ctx context.Context) (any, error) {
			if err := d.reloadRecorded(ctx); err != nil {
				return nil, err
			}
			d.mu.Lock()
			defer d.mu.Unlock()
			return ReloadResult{Config: d.opts.ConfigPath, Loaded: d.loaded}, nil
		})
	case CmdMember:
		var a MemberArgs
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, fmt.Errorf("decode member arguments: %w", err)
		}
		return d.inTurn(ctx, func(ctx context.Context) (any, error) { return d.setMemberState(ctx, a) })
	case CmdKillFlows:
		var a FlowArgs
		if err := json.Unmarshal(args, &a); err != nil {
			return nil, fmt.Errorf("decode flows arguments: %w", err)
		}
		q, err := a.Filter()
		if err != nil {
			return nil, err
		}
		return d.inTurn(ctx, func(context.Context) (any, error) { return d.killFlows(q, l4.EndKilled) })
	case CmdDrain:
		return d.inTurn(ctx, func(context.Context) (any, error) { return d.drainNow() })
	case CmdHAStandby:
		if d.pair == nil {
			return nil, errors.New("hand over the active role: this host is no pair node: its file has no ha section")
		}
		return d.pair.handOver(ctx, d.flushMirror)
	}
	return nil, fmt.Errorf("unknown command %q: this daemon knows %s, %s, %s, %s and %s", cmd, CmdReload, CmdMember, CmdKillFlows, CmdDrain, CmdHAStandby)
}

// inTurn runs f in the serve loop and returns its answer.
func (d *Daemon) inTurn(ctx context.Context, f func(context.Context) (any, error)) (any, error) {
	r := request{run: f, done: make(chan reply, 1)}
	select {
	case d.requests <- r:
	case <-ctx.Done():
		return nil, fmt.Errorf("daemon stopping: %w", ctx.Err())
	}
	select {
	case rep := <-r.done:
		return rep.res, rep.err
	case <-ctx.Done():
		return nil, fmt.Errorf("daemon stopping: %w", ctx.Err())
	}
}

// reloadRecorded reloads and records a refusal for /status.
func (d *Daemon) reloadRecorded(ctx context.Context) error {
	d.notify(sdnotify.Reloading())
	hash := admin.ConfigHash(d.opts.ConfigPath)
	err := d.Reload(ctx)
	d.reloads.Record(hash, err)
	status := "serving " + d.opts.ConfigPath
	if err != nil {
		status += "; last reload rejected"
	}
	d.notify(sdnotify.Ready, sdnotify.Status(status))
	if err != nil {
		d.log.Error("reload rejected; the running configuration keeps serving", "err", err)
		d.mu.Lock()
		d.rejected, d.rejectedAt = err.Error(), time.Now()
		d.mu.Unlock()
	}
	return err
}
