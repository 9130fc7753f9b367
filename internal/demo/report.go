package demo

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"
)

// Result is one step of the demo.
type Result struct {
	Name     string
	Expected string
	Got      string
	// Try is a command a user can type to see the same thing (with -keep).
	Try  string
	Pass bool
	// Took is how long the step ran.
	Took time.Duration
}

// step is one check of the demo.
type step struct {
	name     string
	expected string
	run      func(ctx context.Context, r *Result) error
}

// runStep runs st with a deadline; an error fails the step and is what
// the report shows as happened.
func (s *session) runStep(ctx context.Context, st step) Result {
	r := Result{Name: st.name, Expected: st.expected}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t0 := time.Now()
	err := st.run(ctx, &r)
	r.Took = time.Since(t0)
	r.Pass = err == nil
	if err != nil {
		if r.Got == "" {
			r.Got = err.Error()
		} else {
			r.Got += "; " + err.Error()
		}
	}
	return r
}

// printResult writes one step of the report.
func printResult(w io.Writer, n int, r Result) {
	verdict := "PASS"
	if !r.Pass {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "%2d. %s  %s  (%s)\n", n, verdict, r.Name, r.Took.Round(10*time.Millisecond))
	fmt.Fprintf(w, "      expected  %s\n", r.Expected)
	fmt.Fprintf(w, "      got       %s\n", indentRest(r.Got))
	if r.Try != "" {
		fmt.Fprintf(w, "      try       %s\n", r.Try)
	}
}

// indentRest aligns continuation lines under the first.
func indentRest(s string) string {
	return strings.ReplaceAll(s, "\n", "\n                ")
}

func (s *session) printHeader() {
	l := s.lab
	fmt.Fprintf(s.out, "edgeproxy demo: lab %s\n", s.id)
	fmt.Fprintf(s.out, "  client  %-22s c0 %s (the Internet)\n", l.Client.Name, l.ClientAddr4)
	fmt.Fprintf(s.out, "  proxy   %-22s ext0 %s, VIPs %s (https/http, L7) and %s (fastl4, XDP); int0 %s\n",
		l.Proxy.Name, l.ExtAddr4, l.VIP4, FastVIP, l.IntAddr4)
	fmt.Fprintf(s.out, "  backend %-22s fe01 %s, fe02 %s: External Web Site on 4443/8080, internal site on 443\n",
		l.Backend.Name, l.Members4[0], l.Members4[1])
	fmt.Fprintf(s.out, "  files   %s\n", s.dir)
}

// printSummary ends the report; its last line is "N passed, M failed".
func (s *session) printSummary(rep *Report, kept bool) {
	fmt.Fprintln(s.out)
	if kept {
		s.printKeep()
	} else if s.lab != nil {
		fmt.Fprintf(s.out, "lab %s torn down (daemon stopped, namespaces and files removed)\n", s.id)
	}
	if s.interrupted {
		fmt.Fprintf(s.out, "interrupted after %d of %d steps\n", len(rep.Results), len(StepNames()))
	}
	fmt.Fprintf(s.out, "ran in %s\n", rep.Elapsed.Round(100*time.Millisecond))
	fmt.Fprintf(s.out, "%d passed, %d failed\n", rep.Passed(), rep.Failed())
}
