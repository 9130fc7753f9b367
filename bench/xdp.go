package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// lineRateBudget is the time per packet at 10 GbE line rate with 64-byte
// frames (14.88 Mpps on one core).
const lineRateBudget = 67.0 // ns

// xdpDirs are where the XDP program and its Go loader live.
var xdpDirs = []string{"l4", "bpf"}

// xdpResult is the XDP program alone, from BPF_PROG_TEST_RUN benchmarks.
type xdpResult struct {
	unavailable string
	failed      string // go test failed after some benchmarks ran
	cmd         string
	benches     []xdpBench
	output      string
}

type xdpBench struct {
	pkg, name, path, unit string
	values                []float64
	notRun                string // why a figure the report lists was not measured
}

// xdpWorkingSets are the working sets of flows BenchmarkProgramEstablished
// measures for each family: a flow that stays in the CPU's caches and
// tables that do not.
var (
	xdpFamilies    = []string{"ipv4", "ipv6"}
	xdpWorkingSets = []int{1, 1 << 10, 1 << 16, 1 << 20}
)

// xdpQuickSkip is what -quick leaves out: filling the table with 1 M
// flows (and emptying it) takes about 30 s on a 2-CPU VM, against 2 s for
// the other working sets.
const (
	xdpQuickSkip   = "^BenchmarkProgramEstablished$/^ipv[46]$/^1048576$"
	xdpQuickNotRun = "not run (-quick)"
)

// The new-flow benchmark makes one BPF_PROG_TEST_RUN call per packet; the
// pass path measured one call per packet and in one call for many
// packets gives the call's overhead, which the derived row subtracts.
const (
	xdpNewFlow    = "ProgramNewFlow"
	xdpPassSingle = "ProgramPassSingle"
	xdpPass       = "ProgramPass"
	xdpNewFlowNet = "new flow, call overhead subtracted"
)

var benchFunc = regexp.MustCompile(`(?m)^func (BenchmarkProgram\w*)\(`)

// runXDP runs the Go benchmarks of the XDP program, if there are any.
func (e *env) runXDP(ctx context.Context) *xdpResult {
	r := &xdpResult{}
	pkgs := map[string]bool{}
	for _, d := range xdpDirs {
		_ = filepath.WalkDir(filepath.Join(e.root, d), func(p string, de fs.DirEntry, err error) error {
			if err != nil || de.IsDir() || !strings.HasSuffix(p, "_test.go") {
				return nil
			}
			b, err := os.ReadFile(p)
			if err == nil && benchFunc.Match(b) {
				rel, _ := filepath.Rel(e.root, filepath.Dir(p))
				pkgs["./"+filepath.ToSlash(rel)] = true
			}
			return nil
		})
	}
	if len(pkgs) == 0 {
		r.unavailable = "not available: no BenchmarkProgram functions in " + strings.Join(xdpDirs, "/ or ") + "/ yet"
		return r
	}
	var list []string
	for p := range pkgs {
		list = append(list, p)
	}
	slices.Sort(list)
	goBin, err := exec.LookPath("go")
	if err != nil {
		r.unavailable = "not available: the go command is not in PATH"
		return r
	}
	// A full run fills and empties the 1 M-flow table several times per
	// repetition: about 7 minutes on a loaded 2-CPU VM.
	args := []string{"test", "-run", "^$", "-bench", "^BenchmarkProgram", "-benchtime", "1s", "-count", strconv.Itoa(e.reps), "-timeout", "20m"}
	if e.o.Quick {
		args = []string{"test", "-run", "^$", "-bench", "^BenchmarkProgram", "-skip", xdpQuickSkip, "-benchtime", "20000x", "-count", strconv.Itoa(e.reps)}
	}
	args = append(args, list...)
	r.cmd = "go " + joinArgs(args)
	e.log.Info("XDP program benchmarks", "cmd", r.cmd)
	cctx, cancel := context.WithTimeout(ctx, 21*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, goBin, args...)
	cmd.Dir = e.root
	out, err := cmd.CombinedOutput()
	r.output = string(out)
	r.benches = xdpBenches(r.output, e.o.Quick)
	if err != nil {
		if len(r.benches) == 0 {
			r.unavailable = fmt.Sprintf("failed: %v: %s", err, lastLines(r.output, 5))
		} else {
			r.failed = fmt.Sprintf("%v: %s", err, lastLines(r.output, 5))
		}
	}
	return r
}

// xdpBenches reads go test's output: one entry per benchmark with its
// values, the rows -quick leaves out, and the derived new-flow row.
func xdpBenches(out string, quick bool) []xdpBench {
	var bs []xdpBench
	for _, b := range parseGoBench(out) {
		unit := "ns/op"
		for u := range b.metrics {
			if strings.HasPrefix(u, "ns/") && u != "ns/op" {
				unit = u // the benchmark reports time per packet itself
			}
		}
		i := slices.IndexFunc(bs, func(x xdpBench) bool { return x.pkg == b.pkg && x.name == b.name })
		if i < 0 {
			bs = append(bs, xdpBench{pkg: b.pkg, name: b.name, path: xdpPath(b.name), unit: unit})
			i = len(bs) - 1
		}
		bs[i].values = append(bs[i].values, b.metrics[unit])
	}
	if quick {
		bs = withQuickSkipped(bs)
	}
	return withNewFlowNet(bs)
}

// withQuickSkipped adds a row for each working set -quick leaves out,
// after the family's other working sets.
func withQuickSkipped(bs []xdpBench) []xdpBench {
	for _, fam := range xdpFamilies {
		name := fmt.Sprintf("ProgramEstablished/%s/%d", fam, xdpWorkingSets[len(xdpWorkingSets)-1])
		at := -1
		for i, b := range bs {
			if strings.HasPrefix(b.name, "ProgramEstablished/"+fam+"/") {
				at = i
			}
		}
		if at < 0 || slices.ContainsFunc(bs, func(b xdpBench) bool { return b.name == name }) {
			continue
		}
		skipped := xdpBench{pkg: bs[at].pkg, name: name, path: xdpPath(name), unit: bs[at].unit, notRun: xdpQuickNotRun}
		bs = slices.Insert(bs, at+1, skipped)
	}
	return bs
}

// withNewFlowNet adds, after the new-flow benchmark, its time without the
// per-call overhead: NewFlow − (PassSingle − Pass), repetition by
// repetition.
func withNewFlowNet(bs []xdpBench) []xdpBench {
	find := func(name string) *xdpBench {
		if i := slices.IndexFunc(bs, func(b xdpBench) bool { return b.name == name }); i >= 0 {
			return &bs[i]
		}
		return nil
	}
	nf, single, pass := find(xdpNewFlow), find(xdpPassSingle), find(xdpPass)
	if nf == nil || single == nil || pass == nil || nf.unit != single.unit || nf.unit != pass.unit {
		return bs
	}
	net := xdpBench{pkg: nf.pkg, name: fmt.Sprintf("%s − (%s − %s)", xdpNewFlow, xdpPassSingle, xdpPass), path: xdpNewFlowNet, unit: nf.unit}
	for i := range min(len(nf.values), len(single.values), len(pass.values)) {
		net.values = append(net.values, nf.values[i]-(single.values[i]-pass.values[i]))
	}
	if len(net.values) == 0 {
		return bs
	}
	return slices.Insert(bs, slices.IndexFunc(bs, func(b xdpBench) bool { return b.name == xdpNewFlow })+1, net)
}

// xdpPath classifies a benchmark by the program path it exercises.
func xdpPath(name string) string {
	n := strings.ToLower(name)
	switch {
	case strings.Contains(n, "establish"):
		if fam, flows, ok := xdpWorkingSet(name); ok {
			return fmt.Sprintf("established flow, %s, %s", fam, flowsLabel(flows))
		}
		return "established flow"
	case strings.Contains(n, "promote"):
		return "establishing packet"
	case strings.Contains(n, "new") || strings.Contains(n, "syn"):
		return "new flow"
	case strings.Contains(n, "passsingle"):
		return "pass, one call per packet"
	case strings.Contains(n, "pass"):
		return "pass"
	case strings.Contains(n, "reply") || strings.Contains(n, "return"):
		return "reply (established)"
	}
	return "other"
}

// xdpWorkingSet reads the family and working set of an established-path
// benchmark's name (ProgramEstablished/ipv4/1024).
func xdpWorkingSet(name string) (fam string, flows int, ok bool) {
	parts := strings.Split(name, "/")
	if len(parts) != 3 || !slices.Contains(xdpFamilies, parts[1]) {
		return "", 0, false
	}
	n, err := strconv.Atoi(parts[2])
	if err != nil || n < 1 {
		return "", 0, false
	}
	return "IPv" + parts[1][3:], n, true
}

// flowsLabel is a number of flows as the report writes it: 1 flow, 1 k
// flows, 64 k flows, 1 M flows.
func flowsLabel(n int) string {
	switch {
	case n == 1:
		return "1 flow"
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d M flows", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d k flows", n>>10)
	}
	return fmt.Sprintf("%d flows", n)
}

// xdpFigures are the path labels of the figures the report's XDP section
// must have: the established path over every working set, and the new flow
// without the call's overhead.
func xdpFigures() []string {
	var out []string
	for _, fam := range xdpFamilies {
		for _, n := range xdpWorkingSets {
			out = append(out, xdpPath(fmt.Sprintf("ProgramEstablished/%s/%d", fam, n)))
		}
	}
	return append(out, xdpNewFlowNet)
}

// xdpCurrentPath tells whether a report's path label is one the harness
// still writes (an older report's "established flow" was one hot flow).
func xdpCurrentPath(path string) bool {
	return slices.Contains(xdpFigures(), path) ||
		slices.Contains([]string{"new flow", "establishing packet", "pass", "pass, one call per packet"}, path)
}

// commandOutput runs a short command and returns its combined output.
func commandOutput(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
