package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/l4"
)

func init() {
	register(command{name: "flows", summary: "list the L4 flow table (filtered by virtual, member, client); flows kill resets and removes flows", run: runFlows})
}

func runFlows(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "kill" {
		return runFlowsKill(ctx, args[1:])
	}
	fs := newFlagSet("flows", "[-config FILE | -pin-path DIR] [-virtual NAME] [-member ADDR] [-client ADDR[:PORT]] [-json] [-cleanup]\n       edgeproxy flows kill [-config FILE | -socket PATH] [-virtual NAME] [-member ADDR] [-client ADDR[:PORT]] [-all]")
	cfgPath := fs.String("config", "", "configuration file: its fastpath.pin_path locates the pinned state")
	pin := fs.String("pin-path", "", "pinned fast path state (default "+config.DefaultPinPath+")")
	var sel flowSelection
	sel.flags(fs)
	asJSON := fs.Bool("json", false, "print the flows as JSON")
	cleanup := fs.Bool("cleanup", false, "detach the XDP program and remove the pinned state instead (established flows stop)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(fs.Output(), "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	path := *pin
	if path == "" && *cfgPath != "" {
		c, err := config.Load(*cfgPath)
		if err != nil {
			return err
		}
		path = c.FastPath.PinPath
	}
	if path == "" {
		path = config.DefaultPinPath
	}
	if *cleanup {
		if err := l4.Cleanup(path); err != nil {
			return err
		}
		fmt.Printf("removed the fast path pinned under %s\n", path)
		return nil
	}
	// The pinned maps are read directly: this works without the daemon.
	flows, err := l4.ReadFlows(path)
	if err != nil {
		return err
	}
	a, err := sel.args()
	if err != nil {
		return err
	}
	q, err := a.Filter()
	if err != nil {
		return err
	}
	kept := flows[:0]
	for _, f := range flows {
		if q.Match(f) {
			kept = append(kept, f)
		}
	}
	flows = kept
	if *asJSON {
		return writeFlowsJSON(os.Stdout, flows)
	}
	return writeFlowsText(os.Stdout, flows)
}

type flowJSON struct {
	Virtual string  `json:"virtual"`
	Proto   string  `json:"proto"`
	Client  string  `json:"client"`
	VIP     string  `json:"vip"`
	Member  string  `json:"member"`
	SNAT    string  `json:"snat"`
	State   string  `json:"state"`
	Age     float64 `json:"age_seconds"`
	Idle    float64 `json:"idle_seconds"`
	Partial bool    `json:"partial,omitempty"`
}

func writeFlowsJSON(w io.Writer, flows []l4.Flow) error {
	out := make([]flowJSON, 0, len(flows))
	for _, f := range flows {
		out = append(out, flowJSON{
			Virtual: f.Virtual, Proto: f.Proto,
			Client: f.Client.String(), VIP: f.VIP.String(), Member: f.Member.String(), SNAT: f.SNAT.String(),
			State: f.State, Age: f.Age.Seconds(), Idle: f.Idle.Seconds(), Partial: f.Partial,
		})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func writeFlowsText(w io.Writer, flows []l4.Flow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VIRTUAL\tPROTO\tCLIENT\tVIP\tMEMBER\tSNAT\tSTATE\tAGE\tIDLE")
	for _, f := range flows {
		state := f.State
		if f.Partial {
			state += " (repairing)"
		}
		virtual := f.Virtual
		if virtual == "" {
			virtual = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", virtual, f.Proto, f.Client, f.VIP, f.Member, f.SNAT,
			state, f.Age.Truncate(time.Second), f.Idle.Truncate(100*time.Millisecond))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d flows\n", len(flows))
	return err
}
