// Package checkcmd implements `edgeproxy check`: it validates a
// configuration file and the host it is meant to run on, and prints the
// plan of what run would set up, then every error and warning.
package checkcmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/edgeproxy/edgeproxy/config"
)

// Sentinel errors.
var (
	// ErrFailed is returned by Run when the check found errors.
	ErrFailed = errors.New("check failed")
)

// Options of a check.
type Options struct {
	Config string // path of the configuration file
	Host   bool   // also check the host: kernel, BTF, bpffs, privileges, interfaces
	JSON   bool   // print the report as JSON
}

// Finding is one error or warning, from the file or the host.
type Finding struct {
	Severity string `json:"severity"`        // error | warning
	Source   string `json:"source"`          // config | host
	Where    string `json:"where,omitempty"` // file:line:column
	Path     string `json:"path,omitempty"`  // key path in the file
	Msg      string `json:"message"`
}

// String formats the finding like a compiler message.
func (f Finding) String() string {
	var b strings.Builder
	if f.Where != "" {
		b.WriteString(f.Where + ": ")
	}
	if f.Path != "" && f.Source == "config" {
		b.WriteString(f.Path + ": ")
	}
	b.WriteString(f.Msg)
	return b.String()
}

// Report is the outcome of a check.
type Report struct {
	File     string      `json:"file"`
	OK       bool        `json:"ok"`
	Plan     *Plan       `json:"plan,omitempty"`
	Host     []HostCheck `json:"host,omitempty"`
	Errors   []Finding   `json:"errors"`
	Warnings []Finding   `json:"warnings"`
}

func fromConfig(sev string, list []*config.Error) []Finding {
	out := make([]Finding, 0, len(list))
	for _, e := range list {
		where := (&config.Error{File: e.File, Line: e.Line, Column: e.Column}).Error()
		where = strings.TrimSuffix(where, ": ")
		out = append(out, Finding{Severity: sev, Source: "config", Where: where, Path: e.Path, Msg: e.Msg})
	}
	return out
}

// Check validates the file and, with opts.Host, the host (in the calling
// thread's network namespace). It returns an error only when the file
// cannot be read.
func Check(ctx context.Context, opts Options) (*Report, error) {
	data, err := os.ReadFile(opts.Config)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	r := config.Analyze(opts.Config, data)
	rep := &Report{
		File:     opts.Config,
		Errors:   fromConfig(StatusError, r.Errors),
		Warnings: fromConfig(StatusWarning, r.Warnings),
	}
	if r.Config != nil {
		rep.Plan = NewPlan(r.Config)
		if opts.Host {
			checks, found := hostChecks(r.Config)
			rep.Host = checks
			for _, f := range found {
				if f.Severity == StatusError {
					rep.Errors = append(rep.Errors, f)
				} else {
					rep.Warnings = append(rep.Warnings, f)
				}
			}
		}
	}
	rep.OK = len(rep.Errors) == 0
	return rep, ctx.Err()
}

// Run checks, prints the report to w and returns an error wrapping
// ErrFailed when there were errors.
func Run(ctx context.Context, opts Options, w io.Writer) error {
	rep, err := Check(ctx, opts)
	if err != nil {
		return err
	}
	if opts.JSON {
		if err := RenderJSON(w, rep); err != nil {
			return err
		}
	} else if err := Render(w, rep); err != nil {
		return err
	}
	if !rep.OK {
		return fmt.Errorf("check %s: %d error(s): %w", opts.Config, len(rep.Errors), ErrFailed)
	}
	return nil
}

// RenderJSON writes the report as one JSON document.
func RenderJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rep); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// table writes aligned columns.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cols ...string) {
	for i, c := range cols {
		if c == "" {
			cols[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cols, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

func port(p uint16) string {
	if p == 0 {
		return ""
	}
	return fmt.Sprint(p)
}

// Render writes the report as readable tables.
func Render(w io.Writer, rep *Report) error {
	ew := &errWriter{w: w}
	fmt.Fprintf(ew, "configuration %s\n", rep.File)
	if p := rep.Plan; p != nil {
		renderVirtuals(ew, p)
		renderPools(ew, p)

		fmt.Fprintln(ew, "\naddresses")
		t := newTable(ew, "  INTERFACE", "ROLE", "ADDRESS", "FOR")
		for _, a := range p.Addresses {
			t.row("  "+a.Interface, a.Role, a.Address, a.For)
		}
		t.flush()

		fmt.Fprintln(ew, "\nroutes")
		t = newTable(ew, "  INTERFACE", "TO", "VIA")
		for _, r := range p.Routes {
			t.row("  "+r.Interface, r.To, r.Via)
		}
		t.flush()

		if len(p.Hosts) > 0 {
			fmt.Fprintln(ew, "\nhosts")
			t = newTable(ew, "  NAME", "ADDRESS")
			for _, h := range p.Hosts {
				t.row("  "+h.Name, h.Address)
			}
			t.flush()
		}

		fp := p.FastPath
		fmt.Fprintf(ew, "\nfast path: pinned at %s, %d flows (flow tables pin %.0f MiB), SNAT ports %s (%d connections per SNAT address and member), reaped every %s; admin endpoint: %s\n",
			fp.PinPath, fp.MaxFlows, float64(fp.FlowBytes)/(1<<20), fp.SNATPorts, fp.SNATCapacity, fp.GCInterval, p.Admin)
		renderBGP(ew, p.BGP)
		renderCluster(ew, p.Cluster)
	}

	if len(rep.Host) > 0 {
		fmt.Fprintln(ew, "\nhost")
		t := newTable(ew, "  CHECK", "STATUS", "DETAIL")
		for _, h := range rep.Host {
			t.row("  "+h.Check, h.Status, h.Detail)
		}
		t.flush()
	}

	if len(rep.Errors) > 0 {
		fmt.Fprintf(ew, "\n%d error(s):\n", len(rep.Errors))
		for _, f := range rep.Errors {
			fmt.Fprintf(ew, "  error: %s\n", f)
		}
	}
	if len(rep.Warnings) > 0 {
		fmt.Fprintf(ew, "\n%d warning(s):\n", len(rep.Warnings))
		for _, f := range rep.Warnings {
			fmt.Fprintf(ew, "  warning: %s\n", f)
		}
	}
	if rep.OK {
		fmt.Fprintf(ew, "\n%s: OK, %d warning(s)\n", rep.File, len(rep.Warnings))
	} else {
		fmt.Fprintf(ew, "\n%s: %d error(s), %d warning(s): run would not start\n", rep.File, len(rep.Errors), len(rep.Warnings))
	}
	if ew.err != nil {
		return fmt.Errorf("write report: %w", ew.err)
	}
	return nil
}

// renderVirtuals writes the virtuals table, a row per site of an L7
// virtual.
func renderVirtuals(ew *errWriter, p *Plan) {
	fmt.Fprintln(ew, "\nvirtuals")
	t := newTable(ew, "  NAME", "MODE", "LISTEN", "POOL", "PORT", "SNAT", "OPTIONS", "HOSTS")
	prev := ""
	for _, v := range p.Virtuals {
		name, mode, listen := v.Name, v.Mode, v.Listen
		if v.Name == prev && v.Mode != string(config.ModeFastL4) {
			name, mode, listen = "...", " ", " " // another site of the same virtual
		}
		prev = v.Name
		name = "  " + name
		hosts := strings.Join(v.Hosts, ", ")
		if v.Mode == string(config.ModeFastL4) {
			hosts = "*"
		}
		t.row(name, mode, listen, v.Pool, port(v.Port), v.SNAT, strings.Join(v.Options, ", "), hosts)
	}
	t.flush()
}

// renderPools writes the pools table, a row per member.
func renderPools(ew *errWriter, p *Plan) {
	fmt.Fprintln(ew, "\npools")
	t := newTable(ew, "  POOL", "MEMBER", "ADDRESS", "WEIGHT", "MONITOR")
	for _, pl := range p.Pools {
		for i, m := range pl.Members {
			name, mon := "  "+pl.Name, pl.Monitor
			if i > 0 {
				name, mon = "  ...", " "
			}
			addr := m.Address
			if addr == "" {
				addr = "(resolver)"
			}
			if m.Disabled {
				addr += " disabled"
			}
			t.row(name, m.Name, addr, fmt.Sprint(m.Weight), mon)
		}
		if len(pl.Members) == 0 {
			t.row("  "+pl.Name, "", "", "", pl.Monitor)
		}
	}
	t.flush()
}

// errWriter keeps the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}
