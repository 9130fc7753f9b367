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

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/control"
	"github.com/edgeproxy/edgeproxy/internal/daemon"
	"github.com/edgeproxy/edgeproxy/internal/logs"
)

func init() {
	register(command{name: "run", summary: "run the proxy daemon (edgeproxy reload or SIGHUP reloads, SIGTERM drains)", run: runDaemon})
	register(command{name: "reload", summary: "validate the file, have the running daemon reload it over the control socket, report its answer", run: runReload})
}

func runDaemon(ctx context.Context, args []string) error {
	fs := newFlagSet("run", "-config FILE [flags]")
	cfgPath := fs.String("config", "/etc/edgeproxy/edgeproxy.yaml", "configuration `file`")
	logFormat := fs.String("log-format", "", "log format: text or json (default: the file's log.format)")
	logLevel := fs.String("log-level", "", "log level: debug, info, warn, error (default: the file's log.level)")
	cleanup := fs.Bool("cleanup", false, "remove the pinned XDP programs and flow tables on exit (default: keep them so a restart drops no flow)")
	pidFile := fs.String("pid-file", "", "write the daemon's pid here (for other tools; 'edgeproxy reload' uses the control socket)")
	state := fs.String("netcfg-state", "", "journal of the network changes made (default /var/lib/edgeproxy/netcfg.json; - for none)")
	ctlSocket := fs.String("control-socket", "", "the control socket (default: the file's control.socket; - for none)")
	members := fs.String("member-state", daemon.DefaultMemberState, "the members' state set with 'edgeproxy member', kept across restarts (- for none)")
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
				logger.Error("reopen the log files", "err", err)
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
		ConfigPath:    *cfgPath,
		Version:       version,
		Logger:        logger,
		AccessLog:     lg.Access,
		FlowLog:       lg.FastL4,
		ApplyLog:      lg.Apply,
		Cleanup:       *cleanup,
		NetcfgState:   *state,
		MemberState:   *members,
		ControlSocket: *ctlSocket,
		Reload:        reload,
	})
}

func runReload(ctx context.Context, args []string) error {
	fs := newFlagSet("reload", "[-config FILE] [-socket PATH] [-pid-file FILE] [-wait DURATION]")
	cfgPath := fs.String("config", "/etc/edgeproxy/edgeproxy.yaml", "the configuration `file` the daemon runs; validated before the daemon is asked")
	socket := fs.String("socket", "", "the daemon's control socket (default: the file's control.socket)")
	pidFile := fs.String("pid-file", "", "when set, the daemon answering on the socket must have the pid this file names (it is never signalled)")
	wait := fs.Duration("wait", 60*time.Second, "how long to wait for the daemon's answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return fmt.Errorf("%w\nreload not sent: the daemon keeps its running configuration", err)
	}
	if *socket == "" {
		*socket = cfg.Control.Socket
	}
	ctx, cancel := context.WithTimeout(ctx, *wait)
	defer cancel()
	cl, err := control.Dial(ctx, *socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	if *pidFile != "" {
		if err := verifyPID(*pidFile, cl.PID(), *socket); err != nil {
			return err
		}
	}
	var res daemon.ReloadResult
	err = cl.Call(ctx, daemon.CmdReload, nil, &res)
	var ce *control.CommandError
	switch {
	case errors.As(err, &ce):
		return fmt.Errorf("reload rejected by pid %d, the running configuration keeps serving: %s", cl.PID(), strings.TrimPrefix(ce.Msg, daemon.ErrReload.Error()+": "))
	case err != nil:
		return fmt.Errorf("reload asked of pid %d, no answer: %w (its log says whether it applied)", cl.PID(), err)
	}
	fmt.Printf("reloaded: pid %d serves %s since %s\n", cl.PID(), res.Config, res.Loaded.Format(time.TimeOnly))
	return nil
}

// verifyPID checks that the pid file names the daemon on the socket.
func verifyPID(path string, pid int, socket string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read pid file: %w (leave -pid-file out to trust the control socket alone)", err)
	}
	want, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || want <= 1 {
		return fmt.Errorf("read pid file %s: %q is not a pid", path, strings.TrimSpace(string(b)))
	}
	if want != pid {
		return fmt.Errorf("verify daemon: pid file %s names pid %d but pid %d serves %s: reload not sent (remove the stale pid file)", path, want, pid, socket)
	}
	return nil
}
