package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/edgeproxy/edgeproxy/internal/demo"
)

func init() {
	register(command{name: "demo", summary: "build a namespace lab, publish it through edgeproxy and show what happens (root)", run: runDemo})
}

func runDemo(ctx context.Context, args []string) error {
	fs := newFlagSet("demo", "[-keep] | -teardown ID")
	keep := fs.Bool("keep", false, "leave the lab, the daemon and the members running afterwards (prints how to use and remove them)")
	teardown := fs.String("teardown", "", "remove the lab `ID` that -keep left running")
	exe := fs.String("edgeproxy", "", "the edgeproxy `binary` to run as the daemon (default: this one)")
	serve := fs.String("serve-members", "", "serve the front ends of a kept lab from `DIR` (started by -keep inside the lab)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	switch {
	case *serve != "":
		return demo.ServeMembers(ctx, *serve)
	case *teardown != "":
		return demo.Teardown(*teardown, os.Stdout)
	}
	rep, err := demo.Run(ctx, demo.Options{Executable: *exe, Keep: *keep, Out: os.Stdout})
	if err != nil {
		if errors.Is(err, demo.ErrInterrupted) {
			return exitError{130}
		}
		return err
	}
	if rep.Failed() > 0 {
		return exitError{1}
	}
	return nil
}
