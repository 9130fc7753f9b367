package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/daemon"
)

func init() {
	register(command{name: "drain", summary: "stop the running daemon gracefully: withdraw its BGP routes, wait for new flows to stop, finish open connections", run: runDrain})
}

func runDrain(ctx context.Context, args []string) error {
	fs := newFlagSet("drain", "[-config FILE | -socket PATH]")
	cc := controlFlags(fs, 60*time.Second)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	var res daemon.DrainResult
	if err := cc.call(ctx, daemon.CmdDrain, struct{}{}, &res); err != nil {
		return err
	}
	if len(res.Withdrawn) > 0 {
		fmt.Printf("routes withdrawn: %s; new requests stopped after %s\n", strings.Join(res.Withdrawn, ", "), res.Settled.Round(time.Millisecond))
	}
	fmt.Printf("draining: open connections finish within %s, then the daemon exits\n", res.DrainTimeout)
	return nil
}
