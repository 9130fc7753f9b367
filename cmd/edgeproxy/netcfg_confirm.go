package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	netplan "github.com/edgeproxy/edgeproxy/internal/plan"
	"github.com/edgeproxy/edgeproxy/netcfg"
)

// waitConfirmAction is the detached process 'netcfg apply -confirm'
// leaves behind: it reverts at the deadline unless confirmed. It is its
// own session (setsid), so the shell or SSH connection that ran apply
// can die without taking it along; systemd-run is not needed, and not
// there in containers or on hosts without systemd.
const waitConfirmAction = "wait-confirm"

// pendingConfirm is what the confirmation file next to the journal
// holds while an apply waits for 'netcfg confirm'.
type pendingConfirm struct {
	Deadline time.Time `json:"deadline"`
	PID      int       `json:"pid"` // of the waiting process
}

func confirmPath(state string) string { return state + ".confirm" }

// applyConfirmed applies cfg, then leaves a detached process that
// reverts everything the journal records at the deadline unless
// 'netcfg confirm' removes the confirmation file first.
func applyConfirmed(ctx context.Context, w io.Writer, h *netcfg.Host, cfg *config.Config, wait time.Duration, nsName string) error {
	state := h.StatePath()
	if state == "" {
		return errors.New("netcfg apply -confirm: needs a journal to revert: give -state a path")
	}
	if _, err := os.Stat(confirmPath(state)); err == nil {
		return fmt.Errorf("netcfg apply -confirm: %s: an earlier apply waits for its confirmation: run 'edgeproxy netcfg confirm' or wait for its revert", confirmPath(state))
	}
	if err := netcfgAction(ctx, w, h, "apply", cfg); err != nil {
		return err
	}
	if plan, err := h.Plan(netplan.Network(cfg)); err == nil && len(netcfg.Changes(plan)) > 0 {
		return errors.New("netcfg apply -confirm: the host still differs from the file after apply")
	}
	deadline := time.Now().Add(wait)
	pid, err := startWaiter(state, nsName, deadline)
	if err == nil {
		err = writeConfirm(state, pendingConfirm{Deadline: deadline, PID: pid})
	}
	if err != nil {
		_, rerr := h.Revert()
		return errors.Join(err, rerr, errors.New("netcfg apply -confirm: reverted, as the revert could not be scheduled"))
	}
	fmt.Fprintf(w, "run 'edgeproxy netcfg confirm' before %s (in %s) to keep these changes; they are reverted otherwise (logged in %s.confirm.log)\n",
		deadline.Format(time.TimeOnly), wait, state)
	return nil
}

// startWaiter starts the detached reverting process.
func startWaiter(state, nsName string, deadline time.Time) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("find the edgeproxy binary: %w", err)
	}
	args := []string{"netcfg", waitConfirmAction, "-state", state, "-deadline", strconv.FormatInt(deadline.Unix(), 10)}
	if nsName != "" {
		args = append(args, "-netns", nsName)
	}
	log, err := os.OpenFile(state+".confirm.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("open the log of the reverting process: %w", err)
	}
	defer log.Close()
	cmd := exec.Command(exe, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = log, log // stdin: /dev/null
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start the reverting process: %w", err)
	}
	pid := cmd.Process.Pid
	_ = cmd.Process.Release()
	return pid, nil
}

// waitConfirm reverts at the deadline, or at SIGTERM or SIGHUP, unless
// the confirmation file is gone by then; what it reverts goes to
// <state>.confirm.log.
func waitConfirm(ctx context.Context, h *netcfg.Host, deadline time.Time) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGHUP, os.Interrupt)
	defer stop()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	p, err := readConfirm(h.StatePath())
	if errors.Is(err, fs.ErrNotExist) || (err == nil && p.PID != os.Getpid()) {
		return nil // confirmed
	}
	fmt.Printf("%s: not confirmed by %s: reverting\n", time.Now().Format(time.RFC3339), deadline.Format(time.TimeOnly))
	done, rerr := h.Revert()
	printChanges(os.Stdout, done)
	return errors.Join(rerr, removeConfirm(h.StatePath()))
}

// confirmApply keeps what 'apply -confirm' made: it removes the
// confirmation file and ends the waiting process.
func confirmApply(w io.Writer, state string) error {
	p, err := readConfirm(state)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("netcfg confirm: nothing waits for a confirmation (%s does not exist): too late, or no 'apply -confirm'", confirmPath(state))
	}
	if err != nil {
		return err
	}
	if time.Now().After(p.Deadline) {
		return fmt.Errorf("netcfg confirm: too late: the deadline was %s and the changes are being reverted", p.Deadline.Format(time.TimeOnly))
	}
	if err := removeConfirm(state); err != nil {
		return err
	}
	if proc, err := os.FindProcess(p.PID); err == nil && proc.Signal(syscall.SIGTERM) == nil {
		for i := 0; i < 100 && proc.Signal(syscall.Signal(0)) == nil; i++ {
			time.Sleep(50 * time.Millisecond) // it exits at once
		}
	}
	fmt.Fprintln(w, "confirmed: the changes stay")
	return nil
}

func readConfirm(state string) (pendingConfirm, error) {
	var p pendingConfirm
	b, err := os.ReadFile(confirmPath(state))
	if err != nil {
		return p, err
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("read %s: %w: remove it", confirmPath(state), err)
	}
	return p, nil
}

func writeConfirm(state string, p pendingConfirm) error {
	b, _ := json.Marshal(p)
	if err := os.WriteFile(confirmPath(state), b, 0o600); err != nil {
		return fmt.Errorf("write the confirmation file: %w", err)
	}
	return syncDir(filepath.Dir(state))
}

func removeConfirm(state string) error {
	if err := os.Remove(confirmPath(state)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove the confirmation file: %w", err)
	}
	return syncDir(filepath.Dir(state))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
