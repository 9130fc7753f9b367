// Command bench measures edgeproxy against the proxies users would deploy
// instead (nftables DNAT+SNAT, HAProxy, nginx) in one run, on the same
// machine, through the same namespace topology as the tests, and writes a
// Markdown table and a PNG chart:
//
//	go run ./bench -out bench/results          # full run (root)
//	go run ./bench -out /tmp/b -quick          # checks the harness works
//
// See bench/README.md for what each number means.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role, os.Args[1:]))
	}
	if err := mainErr(); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.Out, "out", "bench/results", "directory for latest.md and latest.png")
	fs.BoolVar(&o.Quick, "quick", false, "1 s per measurement, 1 repetition: checks that the harness works, numbers mean little")
	fs.DurationVar(&o.Duration, "d", 0, "duration of each measurement (default 5s, 1s with -quick)")
	fs.IntVar(&o.Reps, "reps", 0, "interleaved repetitions per candidate (default 3, 1 with -quick)")
	fs.StringVar(&o.Edgeproxy, "edgeproxy", "", "edgeproxy binary (default bin/edgeproxy at the module root)")
	fs.StringVar(&o.Only, "only", "", "comma-separated phases to run: "+strings.Join(allPhases, ",")+" (default all)")
	fs.IntVar(&o.IdleConns, "idle-conns", 0, "idle HTTPS long polls held in the idle phase (default 10000, 200 with -quick)")
	fs.StringVar(&o.Candidates, "candidates", "", "comma-separated candidate products: edgeproxy,nftables,haproxy,nginx (default all)")
	fs.StringVar(&o.ProxyCPUs, "proxy-cpus", "", "CPU list for the proxy under test (default: the first CPU)")
	fs.StringVar(&o.ClientCPUs, "client-cpus", "", "CPU list for the load generators (default: the last CPU)")
	fs.StringVar(&o.BackendCPUs, "backend-cpus", "", "CPU list for the backend servers (default: the last CPU)")
	fs.BoolVar(&o.NoThreadedNAPI, "no-threaded-napi", false, "leave GRO and NAPI of the veth ends as the lab sets them (receive work then runs in softirq on the sender's CPU and the proxy's share cannot be told apart)")
	fs.StringVar(&o.NAPIPrio, "napi-prio", "50", "scheduling of the proxy namespace's NAPI threads (ext0, int0; those of the load generators and backend stay at SCHED_FIFO 50): a SCHED_FIFO priority 1-99, or \"other\" for SCHED_OTHER (receive work then waits its turn instead of preempting the proxy)")
	fs.BoolVar(&o.Verbose, "v", false, "log every step")
	readme := fs.Bool("readme", false, "measure nothing: regenerate README.md's performance table from -out's latest.md")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("parse arguments: unexpected %q: bench takes flags only", fs.Arg(0))
	}
	if *readme {
		return writeReadme(moduleRoot(), o.Out)
	}
	level := slog.LevelInfo
	if o.Verbose {
		level = slog.LevelDebug
	}
	o.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	res, err := run(ctx, o)
	if err != nil {
		return err
	}
	o.Log.Info("benchmark done", "took", time.Since(start).Round(time.Second), "table", res.MarkdownPath, "chart", res.ChartPath)
	return nil
}
