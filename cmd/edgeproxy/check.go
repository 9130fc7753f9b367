package main

import (
	"context"
	"fmt"
	"os"

	"github.com/edgeproxy/edgeproxy/internal/checkcmd"
)

func init() {
	register(command{name: "check", summary: "validate a configuration and this host, and print what run would do", run: runCheck})
}

func runCheck(ctx context.Context, args []string) error {
	fs := newFlagSet("check", "-config FILE [-json] [-host=false]")
	cfgPath := fs.String("config", "/etc/edgeproxy/edgeproxy.yaml", "the configuration `file` to check")
	asJSON := fs.Bool("json", false, "print the plan, host checks, errors and warnings as JSON")
	host := fs.Bool("host", true, "also check this host: kernel, BTF, bpffs, privileges, interfaces and their XDP support")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	return checkcmd.Run(ctx, checkcmd.Options{Config: *cfgPath, Host: *host, JSON: *asJSON}, os.Stdout)
}
