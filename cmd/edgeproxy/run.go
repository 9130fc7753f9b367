package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/daemon"
	"github.com/edgeproxy/edgeproxy/internal/logs"
)

const defaultPIDFile = "/run/edgeproxy.pid"

func init() {
	register(command{name: "run", summary: "run the proxy daemon (SIGHUP reloads, SIGTERM drains)", run: runDaemon})
	register(command{name: "reload", summary: "validate the file and make the running daemon reload it", run: runReload})
}

func runDaemon(ctx context.Context, args []string) error {
	fs := newFlagSet("run", "-config FILE [flags]")
	cfgPath := fs.String("config", "/etc/edgeproxy/edgeproxy.yaml", "configuration `file`")
	logFormat := fs.String("log-format", "", "log format: text or json (default: the file's log.format)")
	logLevel := fs.String("log-level", "", "log level: debug, info, warn, error (default: the file's log.level)")
	cleanup := fs.Bool("cleanup", false, "remove the pinned XDP programs and flow tables on exit (default: keep them so a restart drops no flow)")
	pidFile := fs.String("pid-file", defaultPIDFile, "write the daemon's pid here for 'edgeproxy reload' (\"\" for none)")
	state := fs.String("netcfg-state", "", "journal of the network changes made (default /var/lib/edgeproxy/netcfg.json; - for none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	lg, err := logs.New(os.Stderr, *logFormat, *logLevel, cfg.Log)
	if err != nil {
		return err
	}
	defer lg.Close()
	logger := lg.Logger
	slog.SetDefault(logger)
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	go func() {
		for range usr1 {
			if err := lg.Reopen(); err != nil {
				logger.Error("reopen the access log", "err", err)
			}
		}
	}()
	removePID, err := daemon.WritePIDFile(*pidFile)
	if err != nil {
		return err
	}
	defer removePID()

	// SIGTERM and SIGINT arrive through ctx; SIGHUP reloads.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	return daemon.Run(ctx, daemon.Options{
		ConfigPath:  *cfgPath,
		Version:     version,
		Logger:      logger,
		AccessLog:   lg.Access,
		ApplyLog:    lg.Apply,
		Cleanup:     *cleanup,
		NetcfgState: *state,
		Reload:      reload,
	})
}

func runReload(ctx context.Context, args []string) error {
	fs := newFlagSet("reload", "[-config FILE] [-pid-file FILE] [-wait DURATION]")
	cfgPath := fs.String("config", "/etc/edgeproxy/edgeproxy.yaml", "the configuration `file` the daemon runs; validated before the daemon is signalled")
	pidFile := fs.String("pid-file", defaultPIDFile, "the daemon's pid file")
	wait := fs.Duration("wait", 30*time.Second, "how long to wait for the daemon's admin endpoint to say whether it applied the file (0: only signal)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return fmt.Errorf("%w\nreload not sent: the daemon keeps its running configuration", err)
	}
	pid, err := readPID(*pidFile)
	if err != nil {
		return err
	}
	addr := cfg.Admin.Listen
	var before *admin.Status
	if addr != "" && *wait > 0 {
		before, _, _ = admin.FetchStatus(ctx, addr) // nil: the answer cannot be read
	}
	sent := time.Now()
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal daemon: no process %d (stale pid file %s)", pid, *pidFile)
		}
		return fmt.Errorf("signal daemon %d: %w", pid, err)
	}
	if before == nil {
		fmt.Printf("reload sent to pid %d at %s; its log says whether it applied\n", pid, sent.Format(time.TimeOnly))
		return nil
	}
	return awaitReload(ctx, addr, pid, before.Loaded, sent, *wait)
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read pid file: %w (is 'edgeproxy run' running with -pid-file %s?)", err, path)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("read pid file %s: %q is not a pid", path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}

// awaitReload reads the daemon's status until it applied the file (its
// load time moves past loaded) or refused it (a rejection after sent).
func awaitReload(ctx context.Context, addr string, pid int, loaded, sent time.Time, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		st, _, err := admin.FetchStatus(ctx, addr)
		switch {
		case err == nil && st.Loaded.After(loaded):
			fmt.Printf("reloaded: pid %d serves %s since %s\n", pid, st.Config, st.Loaded.Format(time.TimeOnly))
			return nil
		case err == nil && st.RejectedAt.After(sent):
			return fmt.Errorf("reload rejected by pid %d, the running configuration keeps serving: %s", pid, st.Rejected)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("reload sent to pid %d, no answer from %s within %s: its log says whether it applied", pid, addr, wait)
		case <-tick.C:
		}
	}
}
