package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/ha"
	"github.com/edgeproxy/edgeproxy/internal/daemon"
	"github.com/edgeproxy/edgeproxy/internal/plan"
)

func init() {
	register(command{name: "ha", summary: "an active/standby pair: keepalived-conf prints keepalived's configuration, check tells keepalived whether this node can serve, standby hands the active role over to the peer", run: runHA})
}

func runHA(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "keepalived-conf":
			return runKeepalivedConf(args[1:])
		case "check":
			return runHACheck(ctx, args[1:])
		case "standby":
			return runHAStandby(ctx, args[1:])
		}
	}
	fmt.Fprintln(os.Stderr, "usage: edgeproxy ha keepalived-conf -config FILE\n       edgeproxy ha check [-admin ADDRESS]\n       edgeproxy ha standby [-config FILE | -socket PATH]")
	return errUsage
}

func runKeepalivedConf(args []string) error {
	fs := newFlagSet("ha keepalived-conf", "-config FILE [-edgeproxy PATH]")
	cfgPath := fs.String("config", "/etc/edgeproxy/edgeproxy.yaml", "the edgeproxy configuration `file` with the ha section")
	self, _ := os.Executable()
	bin := fs.String("edgeproxy", self, "the edgeproxy binary keepalived runs to check this node (an absolute `path` only root can write)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 || !filepath.IsAbs(*bin) {
		fs.Usage()
		return errUsage
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if cfg.HA == nil {
		return fmt.Errorf("print keepalived configuration: %s has no ha section: add one (config/README.md, examples/ha)", *cfgPath)
	}
	spec, err := plan.HA(cfg, []string{*bin, "ha", "check", "-admin", cfg.Admin.Listen})
	if err != nil {
		return err
	}
	out, err := ha.Keepalived(*spec)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}

// runHACheck exits 0 when the daemon says this node can serve, 1 (with
// the reason on stderr) when not: keepalived's vrrp_script.
func runHACheck(ctx context.Context, args []string) error {
	fs := newFlagSet("ha check", "[-admin ADDRESS]")
	addr := fs.String("admin", admin.DefaultListen, "the daemon's admin endpoint (admin.listen)")
	timeout := fs.Duration("timeout", 900*time.Millisecond, "give up after this long (keepalived allows the script 1s)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	st, _, err := admin.FetchStatus(ctx, *addr)
	if err == nil {
		err = ha.Serves(st)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "edgeproxy ha check: this node cannot serve:", err)
		return exitError{1}
	}
	return nil
}

// runHAStandby is a planned switchover: the running daemon makes
// keepalived hand the active role to the peer, and answers once the peer
// holds it; this node stays a ready standby.
func runHAStandby(ctx context.Context, args []string) error {
	fs := newFlagSet("ha standby", "[-config FILE | -socket PATH]")
	cc := controlFlags(fs, 15*time.Second)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return errUsage
	}
	var res daemon.HAStandbyResult
	if err := cc.call(ctx, daemon.CmdHAStandby, struct{}{}, &res); err != nil {
		return err
	}
	fmt.Printf("standby: the shared addresses left this node %s after the request and the peer holds the active role\n", res.Released.Round(time.Millisecond))
	return nil
}
