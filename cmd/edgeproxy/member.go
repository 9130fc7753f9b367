package main

import (
	"context"
	"fmt"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/daemon"
)

func init() {
	register(command{name: "member", summary: "enable, disable or drain a pool member in the running daemon (kept until enabled)", run: runMember})
}

func runMember(ctx context.Context, args []string) error {
	fs := newFlagSet("member", "[-config FILE | -socket PATH] POOL MEMBER enable|disable|drain")
	cc := controlFlags(fs, 60*time.Second)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 3 {
		fs.Usage()
		return errUsage
	}
	a := daemon.MemberArgs{Pool: fs.Arg(0), Member: fs.Arg(1), State: fs.Arg(2)}
	var res daemon.MemberResult
	if err := cc.call(ctx, daemon.CmdMember, a, &res); err != nil {
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
