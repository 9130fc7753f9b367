package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	netplan "github.com/edgeproxy/edgeproxy/internal/plan"
	"github.com/edgeproxy/edgeproxy/netcfg"
	"github.com/vishvananda/netns"
)

func init() {
	register(command{
		name:    "netcfg",
		summary: "show (plan), make (apply) or undo (revert) the host network changes of the network: section",
		run:     runNetcfg,
	})
}

const netcfgUsage = `usage: edgeproxy netcfg <action> [flags]

actions:
  plan    -config F   list the differences between the host and the file
  apply   -config F   make them (idempotent; rolled back if one fails) and record them;
                      with -confirm 120s they are reverted unless 'netcfg confirm' follows in time
  confirm             keep what 'apply -confirm' made
  revert              undo what apply recorded

Run 'edgeproxy netcfg <action> -h' for the flags.
`

func runNetcfg(ctx context.Context, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(os.Stderr, netcfgUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			return flag.ErrHelp
		}
		return errUsage
	}
	action := args[0]
	switch action {
	case "plan", "apply", "revert", "confirm", waitConfirmAction:
	default:
		fmt.Fprint(os.Stderr, netcfgUsage)
		return fmt.Errorf("netcfg: unknown action %q: use plan, apply, confirm or revert", action)
	}
	withConfig := action == "plan" || action == "apply"
	line := "[-state PATH] [-netns NAME]"
	if withConfig {
		line = "-config FILE " + line
	}
	if action == "apply" {
		line += " [-confirm DURATION]"
	}
	fs := newFlagSet("netcfg "+action, line)
	cfgPath, confirm := "", time.Duration(0)
	if withConfig {
		fs.StringVar(&cfgPath, "config", "", "the configuration file (required)")
	}
	if action == "apply" {
		fs.DurationVar(&confirm, "confirm", 0, "revert by itself after this long unless 'edgeproxy netcfg confirm' arrives (recommended for the first apply over SSH)")
	}
	state := fs.String("state", netcfg.DefaultStatePath, "the journal of what apply changed, read by revert")
	nsName := fs.String("netns", "", "manage this network namespace (a name from 'ip netns' or a path) instead of the host's")
	deadline := fs.Int64("deadline", 0, "") // waitConfirmAction only
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return fmt.Errorf("netcfg %s: unexpected argument %q", action, fs.Arg(0))
	}
	var cfg *config.Config
	if withConfig {
		if cfgPath == "" {
			fs.Usage()
			return fmt.Errorf("netcfg %s: -config is required: name the configuration file", action)
		}
		var err error
		if cfg, err = loadNetworkConfig(cfgPath); err != nil {
			return err
		}
	}
	if action == "confirm" {
		return confirmApply(os.Stdout, *state)
	}
	h, err := openHost(*state, *nsName)
	if err != nil {
		return err
	}
	defer h.Close()
	switch {
	case action == waitConfirmAction:
		return waitConfirm(ctx, h, time.Unix(*deadline, 0))
	case action == "apply" && confirm > 0:
		return applyConfirmed(ctx, os.Stdout, h, cfg, confirm, *nsName)
	}
	return netcfgAction(ctx, os.Stdout, h, action, cfg)
}

// openHost opens netcfg on the namespace named (the caller's when "").
func openHost(state, nsName string) (*netcfg.Host, error) {
	opts := netcfg.Options{
		StatePath: state,
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if nsName != "" {
		var ns netns.NsHandle
		var err error
		if strings.Contains(nsName, "/") {
			ns, err = netns.GetFromPath(nsName)
		} else {
			ns, err = netns.GetFromName(nsName)
		}
		if err != nil {
			return nil, fmt.Errorf("open netns %s: %w", nsName, err)
		}
		defer ns.Close() // Open keeps its own copy
		opts.NetNS = ns
	}
	return netcfg.Open(opts)
}

func netcfgAction(_ context.Context, w io.Writer, h *netcfg.Host, action string, cfg *config.Config) error {
	switch action {
	case "plan":
		plan, err := h.Plan(netplan.Network(cfg))
		if err != nil {
			return err
		}
		printChanges(w, plan)
		n := len(netcfg.Changes(plan))
		switch {
		case n == 0:
			fmt.Fprintln(w, "no changes"+leftToAdmin(plan))
		default:
			fmt.Fprintf(w, "%d change(s); run 'edgeproxy netcfg apply' to make them\n", n)
		}
		if cfg.Network.Manage != nil && !*cfg.Network.Manage {
			fmt.Fprintln(w, "network.manage is false: edgeproxy will not change the host")
		}
		return nil
	case "apply":
		plan, err := h.Apply(netplan.Network(cfg))
		var ae *netcfg.ApplyError
		if errors.As(err, &ae) {
			for _, c := range ae.RolledBack {
				fmt.Fprintf(w, "%s   [rolled back]\n", c)
			}
			fmt.Fprintf(w, "%s   [FAILED: %v]\n", ae.Change, ae.Err)
			return err
		}
		if err != nil {
			return err
		}
		printChanges(w, plan)
		n := len(netcfg.Changes(plan))
		switch {
		case n == 0:
			fmt.Fprintln(w, "no changes"+leftToAdmin(plan))
		case h.StatePath() != "":
			fmt.Fprintf(w, "applied %d change(s), recorded in %s ('edgeproxy netcfg revert' undoes them)\n", n, h.StatePath())
		default:
			fmt.Fprintf(w, "applied %d change(s)\n", n)
		}
		return nil
	case "revert":
		done, err := h.Revert()
		printChanges(w, done)
		if err != nil {
			return err
		}
		if len(done) == 0 {
			fmt.Fprintln(w, "nothing to revert")
		}
		return nil
	}
	return fmt.Errorf("netcfg: unknown action %q", action)
}

// leftToAdmin ends the summary of a plan without changes: the host
// matches the file only when there is no finding either.
func leftToAdmin(plan []netcfg.Change) string {
	n := len(plan) - len(netcfg.Changes(plan))
	if n == 0 {
		return ": the host matches the file"
	}
	return fmt.Sprintf(" to make; the %d finding(s) marked ! differ from the file and are left to the administrator", n)
}

func printChanges(w io.Writer, cs []netcfg.Change) {
	for _, c := range cs {
		fmt.Fprintln(w, c.String())
	}
}

// loadNetworkConfig reads the configuration for netcfg: the host network
// can be set up before the certificates are in place, so findings about
// TLS files and logging do not stop it (check reports them).
func loadNetworkConfig(path string) (*config.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	r := config.Analyze(path, data)
	var errs, ignored []*config.Error
	for _, e := range r.Errors {
		if unrelatedToNetwork(e.Path) {
			ignored = append(ignored, e)
		} else {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 || r.Config == nil {
		if err := r.Err(); err != nil && len(errs) == 0 {
			return nil, err
		}
		return nil, &config.Errors{List: errs}
	}
	if len(ignored) > 0 {
		fmt.Fprintf(os.Stderr, "edgeproxy netcfg: %d finding(s) about certificates or logging ignored here; 'edgeproxy check -config %s' lists them\n", len(ignored), path)
	}
	return r.Config, nil
}

func unrelatedToNetwork(path string) bool {
	for _, s := range []string{".certificates", ".backend_tls", ".tls.", ".tls", "monitor.ca", "log."} {
		if strings.Contains(path, s) {
			return true
		}
	}
	return false
}
