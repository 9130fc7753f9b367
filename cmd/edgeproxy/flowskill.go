package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"text/tabwriter"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/daemon"
)

// flowSelection is the flows' filter flags shared by list and kill.
type flowSelection struct {
	virtual, member, client string
}

func (s *flowSelection) flags(fs *flag.FlagSet) {
	fs.StringVar(&s.virtual, "virtual", "", "only the flows of this fastl4 virtual")
	fs.StringVar(&s.member, "member", "", "only the flows to this member `address`")
	fs.StringVar(&s.client, "client", "", "only the flows of this client `ADDR[:PORT]` ([v6]:port with a port)")
}

func (s *flowSelection) empty() bool { return s.virtual == "" && s.member == "" && s.client == "" }

// args turns the flags into the daemon's filter.
func (s *flowSelection) args() (daemon.FlowArgs, error) {
	a := daemon.FlowArgs{Virtual: s.virtual, Member: s.member}
	if s.client == "" {
		return a, nil
	}
	if ap, err := netip.ParseAddrPort(s.client); err == nil {
		a.Client, a.ClientPort = ap.Addr().String(), ap.Port()
		return a, nil
	}
	if ip, err := netip.ParseAddr(s.client); err == nil {
		a.Client = ip.String()
		return a, nil
	}
	return a, fmt.Errorf("parse -client %q: write an address or address:port ([2001:db8::1]:443 for IPv6)", s.client)
}

func runFlowsKill(ctx context.Context, args []string) error {
	fs := newFlagSet("flows kill", "[-config FILE | -socket PATH] [-virtual NAME] [-member ADDR] [-client ADDR[:PORT]] [-all]")
	cc := controlFlags(fs, 30*time.Second)
	all := fs.Bool("all", false, "kill every flow (without it, at least one filter is needed)")
	var sel flowSelection
	sel.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 || sel.empty() == !*all {
		fmt.Fprintln(fs.Output(), "name the flows with -virtual, -member or -client, or pass -all alone")
		fs.Usage()
		return errUsage
	}
	a, err := sel.args()
	if err != nil {
		return err
	}
	var killed []daemon.KilledFlow
	if err := cc.call(ctx, daemon.CmdKillFlows, a, &killed); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VIRTUAL\tPROTO\tCLIENT\tMEMBER\tSTATE")
	for _, f := range killed {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", f.Virtual, f.Proto, f.Client, f.Member, f.State)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Printf("%d flows killed (TCP reset both ways)\n", len(killed))
	return nil
}
