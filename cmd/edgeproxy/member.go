package main

import (
	"context"
	"fmt"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/control"
	"github.com/edgeproxy/edgeproxy/internal/daemon"
)

func init() {
	register(command{name: "member", summary: "enable, disable or drain a pool member in the running daemon (kept until enabled)", run: runMember})
}

func runMember(ctx context.Context, args []string) error {
	fs := newFlagSet("member", "[-config FILE | -socket PATH] POOL MEMBER enable|disable|drain")
	cfgPath := fs.String("config", "/etc/edgeproxy/edgeproxy.yaml", "configuration `file`: its control.socket locates the daemon")
	socket := fs.String("socket", "", "the daemon's control socket (default: the file's control.socket)")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 3 {
		fs.Usage()
		return errUsage
	}
	path, err := controlSocket(*socket, *cfgPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	a := daemon.MemberArgs{Pool: fs.Arg(0), Member: fs.Arg(1), State: fs.Arg(2)}
	var res daemon.MemberResult
	if _, err := control.Call(ctx, path, daemon.CmdMember, a, &res); err != nil {
		return err
	}
	switch res.State {
	case daemon.MemberEnabled:
		fmt.Printf("pool %s member %s: enabled, takes traffic as its health allows\n", res.Pool, res.Member)
	case daemon.MemberDisabled:
		fmt.Printf("pool %s member %s: disabled since %s: no new connections or requests, open ones continue\n",
			res.Pool, res.Member, res.Since.Format(time.TimeOnly))
	case daemon.MemberDrain:
		fmt.Printf("pool %s member %s: draining since %s: no new connections or requests, open ones cut at %s\n",
			res.Pool, res.Member, res.Since.Format(time.TimeOnly), res.DrainBy.Format(time.TimeOnly))
	}
	return nil
}

// controlSocket is the socket named by -socket, else by the file.
func controlSocket(socket, cfgPath string) (string, error) {
	if socket != "" {
		return socket, nil
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return "", fmt.Errorf("%w\n(-socket PATH finds the daemon without the file)", err)
	}
	return cfg.Control.Socket, nil
}
