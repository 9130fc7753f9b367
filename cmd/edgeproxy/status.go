package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
)

func init() {
	register(command{name: "status", summary: "show virtuals, members and health of the running daemon", run: runStatus})
}

func runStatus(ctx context.Context, args []string) error {
	fs := newFlagSet("status", "[-admin ADDRESS] [-json]")
	addr := fs.String("admin", admin.DefaultListen, "the daemon's admin endpoint (admin.listen): host:port or http:// URL")
	asJSON := fs.Bool("json", false, "print the status as JSON, as the endpoint serves it")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	st, raw, err := admin.FetchStatus(ctx, *addr)
	if err != nil {
		return err
	}
	if *asJSON {
		_, err = os.Stdout.Write(raw)
		return err
	}
	return st.WriteText(os.Stdout)
}
