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
}

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
	benchtime, count := "1s", e.reps
	if e.o.Quick {
		benchtime = "20000x"
	}
	args := append([]string{"test", "-run", "^$", "-bench", "^BenchmarkProgram", "-benchtime", benchtime, "-count", strconv.Itoa(count)}, list...)
	r.cmd = "go " + joinArgs(args)
	e.log.Info("XDP program benchmarks", "cmd", r.cmd)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cctx, goBin, args...)
	cmd.Dir = e.root
	out, err := cmd.CombinedOutput()
	r.output = string(out)
	for _, b := range parseGoBench(r.output) {
		unit := "ns/op"
		for u := range b.metrics {
			if strings.HasPrefix(u, "ns/") && u != "ns/op" {
				unit = u // the benchmark reports time per packet itself
			}
		}
		i := slices.IndexFunc(r.benches, func(x xdpBench) bool { return x.pkg == b.pkg && x.name == b.name })
		if i < 0 {
			r.benches = append(r.benches, xdpBench{pkg: b.pkg, name: b.name, path: xdpPath(b.name), unit: unit})
			i = len(r.benches) - 1
		}
		r.benches[i].values = append(r.benches[i].values, b.metrics[unit])
	}
	if err != nil {
		if len(r.benches) == 0 {
			r.unavailable = fmt.Sprintf("failed: %v: %s", err, lastLines(r.output, 5))
		} else {
			r.failed = fmt.Sprintf("%v: %s", err, lastLines(r.output, 5))
		}
	}
	return r
}

// xdpPath classifies a benchmark by the program path it exercises.
func xdpPath(name string) string {
	n := strings.ToLower(name)
	switch {
	case strings.Contains(n, "establish"):
		return "established flow"
	case strings.Contains(n, "new") || strings.Contains(n, "syn"):
		return "new flow"
	case strings.Contains(n, "pass"):
		return "pass"
	case strings.Contains(n, "reply") || strings.Contains(n, "return"):
		return "reply (established)"
	}
	return "other"
}

// commandOutput runs a short command and returns its combined output.
func commandOutput(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
