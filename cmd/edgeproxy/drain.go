package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/control"
	"github.com/edgeproxy/edgeproxy/internal/daemon"
)

func init() {
	register(command{name: "drain", summary: "stop the running daemon gracefully: withdraw its BGP routes, wait for new flows to stop, finish open connections", run: runDrain})
}

func runDrain(ctx context.Context, args []string) error {
	fs := newFlagSet("drain", "[-config FILE | -socket PATH]")
	cfgPath := fs.String("config", "/etc/edgeproxy/edgeproxy.yaml", "configuration `file`: its control.socket locates the daemon")
	socket := fs.String("socket", "", "the daemon's control socket (default: the file's control.socket)")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	path, err := controlSocket(*socket, *cfgPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var res daemon.DrainResult
	if _, err := control.Call(ctx, path, daemon.CmdDrain, struct{}{}, &res); err != nil {
		return err
	}
	if len(res.Withdrawn) > 0 {
		fmt.Printf("routes withdrawn: %s; new requests stopped after %s\n", strings.Join(res.Withdrawn, ", "), res.Settled.Round(time.Millisecond))
	}
	fmt.Printf("draining: open connections finish within %s, then the daemon exits\n", res.DrainTimeout)
	return nil
}
