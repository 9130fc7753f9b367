// Command edgeproxy is a Linux edge proxy whose L4 fast path runs in XDP.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand of the binary.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands = map[string]command{}

func register(c command) {
	if _, dup := commands[c.name]; dup {
		panic("edgeproxy: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// errUsage asks main to print the usage and exit 2.
var errUsage = errors.New("usage")

// exitError carries an exit status without printing anything more.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	err := run(os.Args[1:], os.Stderr)
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		os.Exit(ee.code)
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "edgeproxy:", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	if args[0] == "-v" || args[0] == "--version" || args[0] == "-version" {
		writeVersion(os.Stdout)
		return nil
	}
	c, ok := commands[args[0]]
	if !ok {
		usage(stderr)
		return fmt.Errorf("run command: unknown command %q", args[0])
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return c.run(ctx, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: edgeproxy <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'edgeproxy <command> -h' for the flags of a command.")
}

// newFlagSet returns a FlagSet that reports errors instead of exiting.
func newFlagSet(name, usageLine string) *flag.FlagSet {
	fs := flag.NewFlagSet("edgeproxy "+name, flag.ContinueOnError)
	if helpOutput != nil {
		fs.SetOutput(helpOutput)
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: edgeproxy %s %s\n\nflags:\n", name, usageLine)
		fs.PrintDefaults()
	}
	return fs
}

func init() {
	register(command{name: "version", summary: "print the version, commit and Go toolchain (also -v, --version)", run: func(context.Context, []string) error {
		writeVersion(os.Stdout)
		return nil
	}})
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"
