// Package diagnose automates the troubleshooting of a published Skype for
// Business / Lync web services deployment from the proxy host: listeners,
// port redirection, routes, names, certificates and the application's own
// answers. Each check is a function over an Env (the configuration, a way
// to dial from the proxy host, a netlink view of it, a resolver) that
// returns Findings with a verdict, the evidence and the fix.
package diagnose

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Verdict grades a finding.
type Verdict int

// Verdicts, from good to bad.
const (
	Pass Verdict = iota
	Warn
	Fail
)

var verdictNames = [...]string{Pass: "PASS", Warn: "WARN", Fail: "FAIL"}

func (v Verdict) String() string {
	if v < 0 || int(v) >= len(verdictNames) {
		return fmt.Sprintf("Verdict(%d)", int(v))
	}
	return verdictNames[v]
}

// MarshalText writes PASS, WARN or FAIL.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText reads PASS, WARN or FAIL.
func (v *Verdict) UnmarshalText(b []byte) error {
	i := slices.Index(verdictNames[:], strings.ToUpper(string(b)))
	if i < 0 {
		return fmt.Errorf("parse verdict %q: %w", b, ErrUnknownVerdict)
	}
	*v = Verdict(i)
	return nil
}

// Finding is one verdict of one check about one subject.
type Finding struct {
	Check    string  `json:"check"`
	Subject  string  `json:"subject"`
	Verdict  Verdict `json:"verdict"`
	Evidence string  `json:"evidence"`
	Fix      string  `json:"fix,omitempty"`
	// Effects are the findings this one's failure explains (what a
	// missing route or an unreachable member breaks): fix this one first.
	Effects []Finding `json:"effects,omitempty"`

	// explains names what a failure of this finding is the cause of
	// ("member 198.19.1.11"); needs names what this finding depends on.
	explains, needs []string
}

// Check is one independent group of tests.
type Check struct {
	Name string
	// Doc says in one line what the check looks at.
	Doc string
	Run func(ctx context.Context, env *Env) []Finding
}

// Errors.
var (
	ErrUnknownVerdict = errors.New("unknown verdict (want PASS, WARN or FAIL)")
	ErrUnknownCheck   = errors.New("unknown check")
	ErrNoConfig       = errors.New("no configuration")
)

// All returns every check in the order the seeds troubleshoot: the
// network path first, then certificates, then the application.
func All() []Check {
	return []Check{Listeners, PortRedirection, Routes, Names, ACME, Certificates, Application}
}

// Select returns the named checks ("" or "all": every check).
func Select(names string) ([]Check, error) {
	if names == "" || names == "all" {
		return All(), nil
	}
	var out []Check
	for _, n := range strings.Split(names, ",") {
		n = strings.TrimSpace(n)
		i := slices.IndexFunc(All(), func(c Check) bool { return c.Name == n })
		if i < 0 {
			return nil, fmt.Errorf("select check %q: %w (known: %s)", n, ErrUnknownCheck, knownChecks())
		}
		out = append(out, All()[i])
	}
	return out, nil
}

func knownChecks() string {
	var names []string
	for _, c := range All() {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}

// Run runs the checks one after the other and returns their findings in
// order. It closes what the Env opened for the run (a netlink handle).
func Run(ctx context.Context, env *Env, checks ...Check) ([]Finding, error) {
	if env == nil || env.Config == nil {
		return nil, fmt.Errorf("run diagnose: %w", ErrNoConfig)
	}
	if len(checks) == 0 {
		checks = All()
	}
	defer env.close()
	var out []Finding
	for _, c := range checks {
		if ctx.Err() != nil {
			return out, fmt.Errorf("run diagnose: %w", ctx.Err())
		}
		fs := c.Run(ctx, env)
		for i := range fs {
			fs[i].Check = c.Name
		}
		out = append(out, fs...)
	}
	return nest(out), nil
}

// nest puts each failing or warning finding under the failure that
// explains it (one that fails and explains something it needs), so that
// a cause is one finding with its effects listed under it.
func nest(fs []Finding) []Finding {
	owner := map[string]int{}
	for i, f := range fs {
		if f.Verdict != Fail {
			continue
		}
		for _, k := range f.explains {
			if _, ok := owner[k]; !ok {
				owner[k] = i
			}
		}
	}
	parent := make([]int, len(fs))
	root := func(i int) int {
		for n := 0; parent[i] >= 0 && n <= len(fs); n++ {
			i = parent[i]
		}
		return i
	}
	for i := range parent {
		parent[i] = -1
	}
	for i, f := range fs {
		if f.Verdict == Pass {
			continue
		}
		for _, k := range f.needs {
			if j, ok := owner[k]; ok && j != i && root(j) != i {
				parent[i] = j
				break
			}
		}
	}
	var out []Finding
	top := map[int]int{} // index in fs -> index in out
	for i, f := range fs {
		if parent[i] < 0 {
			top[i] = len(out)
			out = append(out, f)
		}
	}
	for i, f := range fs {
		if parent[i] >= 0 {
			r := &out[top[root(i)]]
			r.Effects = append(r.Effects, f)
		}
	}
	return out
}

// Causes lists the subjects of the failing findings, each with the
// number of findings it explains.
func Causes(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		if f.Verdict != Fail {
			continue
		}
		s := f.Subject
		if n := len(f.Effects); n > 0 {
			s += fmt.Sprintf(" (%d finding(s) follow from it)", n)
		}
		out = append(out, s)
	}
	return out
}

// Worst returns the worst verdict of the findings (Pass when empty).
func Worst(fs []Finding) Verdict {
	w := Pass
	for _, f := range fs {
		w = max(w, f.Verdict)
	}
	return w
}

// Count returns how many findings have each verdict.
func Count(fs []Finding) (pass, warn, fail int) {
	for _, f := range fs {
		switch f.Verdict {
		case Pass:
			pass++
		case Warn:
			warn++
		default:
			fail++
		}
	}
	return pass, warn, fail
}

// WriteJSON writes the findings as one JSON document.
func WriteJSON(w io.Writer, fs []Finding) error {
	pass, warn, fail := Count(fs)
	doc := struct {
		Verdict  Verdict   `json:"verdict"`
		Pass     int       `json:"pass"`
		Warn     int       `json:"warn"`
		Fail     int       `json:"fail"`
		Findings []Finding `json:"findings"`
	}{Worst(fs), pass, warn, fail, fs}
	if doc.Findings == nil {
		doc.Findings = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return fmt.Errorf("write findings: %w", err)
	}
	return nil
}

// WriteText writes the findings for people: one line per finding with
// its verdict, check and subject, then the evidence and the fix indented.
// Passing findings show their evidence only when verbose is set.
func WriteText(w io.Writer, fs []Finding, verbose bool) error {
	var b strings.Builder
	subjW := 0
	for _, f := range fs {
		subjW = max(subjW, len(f.Subject))
	}
	subjW = min(subjW, 48)
	for _, f := range fs {
		fmt.Fprintf(&b, "%-4s  %-12s  %-*s", f.Verdict, f.Check, subjW, f.Subject)
		if f.Verdict == Pass && !verbose {
			fmt.Fprintf(&b, "  %s\n", firstLine(f.Evidence))
			continue
		}
		b.WriteString("\n")
		indent(&b, "      ", f.Evidence)
		if f.Fix != "" {
			indent(&b, "      fix: ", f.Fix)
		}
		if len(f.Effects) > 0 {
			b.WriteString("      which explains:\n")
		}
		for _, x := range f.Effects {
			indent(&b, fmt.Sprintf("        %-4s  %s  %s: ", x.Verdict, x.Check, x.Subject), firstLine(x.Evidence))
		}
	}
	pass, warn, fail := Count(fs)
	fmt.Fprintf(&b, "\n%d passed, %d warnings, %d failed: %s\n", pass, warn, fail, Worst(fs))
	if causes := Causes(fs); len(causes) > 0 {
		fmt.Fprintf(&b, "causes, to fix first: %s\n", strings.Join(causes, "; "))
	}
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("write findings: %w", err)
	}
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

func indent(b *strings.Builder, first, text string) {
	pad := strings.Repeat(" ", len(first))
	for i, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if i == 0 {
			b.WriteString(first)
		} else {
			b.WriteString(pad)
		}
		b.WriteString(line)
		b.WriteString("\n")
	}
}

// findings collects the findings of one check.
type findings []Finding

func (f *findings) add(v Verdict, subject, evidence, fix string) {
	*f = append(*f, Finding{Subject: subject, Verdict: v, Evidence: evidence, Fix: fix})
}

// about sets what the last finding explains when it fails and what it
// needs.
func (f *findings) about(explains, needs []string) {
	if n := len(*f); n > 0 {
		(*f)[n-1].explains, (*f)[n-1].needs = explains, needs
	}
}

func (f *findings) pass(subject, format string, args ...any) {
	f.add(Pass, subject, fmt.Sprintf(format, args...), "")
}
