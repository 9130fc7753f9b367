package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// options are the harness's flags.
type options struct {
	Out                                string
	Quick                              bool
	Duration                           time.Duration
	Reps                               int
	Edgeproxy                          string
	Only                               string
	Candidates                         string
	ProxyCPUs, ClientCPUs, BackendCPUs string
	Verbose                            bool
	IdleConns                          int
	NoThreadedNAPI                     bool
	NAPIPrio                           string // "50" (SCHED_FIFO 50) when empty
	Log                                *slog.Logger
}

// cpuPlan is where each party runs.
type cpuPlan struct {
	proxy, client, backend string
	proxyN                 int // CPUs the proxy may use: its threads/workers
	note                   string
}

// env is the state shared by every trial of a run.
type env struct {
	o         options
	log       *slog.Logger
	dir       string
	self      string
	root      string
	edgeproxy string
	// edgeproxyFlags are added to `edgeproxy run`.
	edgeproxyFlags []string
	certs          *certFiles
	www            string
	cpus           cpuPlan
	dur            time.Duration
	reps           int
	connConc       int
	idleConns      int
	napiSched      unix.SchedAttr // policy and priority of the NAPI threads
	idleNote       string         // why idleConns is lower than asked
	files          int            // the descriptor limit the harness runs with
	webConc        int
	hsConc         int
	tlsSeen        atomic.Value
}

// results is everything a run measured.
type results struct {
	env        *env
	candidates []*candidate
	phases     []*phase
	values     map[string]map[string][]float64 // metric → candidate → one value per repetition
	failures   map[string]map[string][]string  // scenario → candidate → errors
	notes      map[string]map[string][]string  // scenario → candidate → remarks
	skipped    map[string]map[string]string    // phase → candidate → why it did not run
	configs    map[string]string               // candidate name → configuration (last phase)
	cmds       map[string][]string             // candidate name → install commands
	order      []string                        // trials in the order they ran
	xdp        *xdpResult
	machine    machineInfo
	build      string // the measured build, as it was when the run started
	started    time.Time
	finished   time.Time
	interrupt  error

	MarkdownPath, ChartPath string
}

func (r *results) add(m map[string]map[string][]string, key, cand, s string) {
	if m[key] == nil {
		m[key] = map[string][]string{}
	}
	m[key][cand] = append(m[key][cand], s)
}

func (r *results) skip(phase, cand, why string) {
	if r.skipped[phase] == nil {
		r.skipped[phase] = map[string]string{}
	}
	r.skipped[phase][cand] = why
}

// run executes the benchmark and writes the report.
func run(ctx context.Context, o options) (*results, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("run bench: needs root (network namespaces, XDP, nftables): run it with sudo or as root")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	e, err := newEnv(o)
	if err != nil {
		return nil, err
	}
	if err := e.raiseFileLimit(); err != nil {
		return nil, err
	}
	defer os.RemoveAll(e.dir)

	res := &results{
		env: e, values: map[string]map[string][]float64{},
		failures: map[string]map[string][]string{}, notes: map[string]map[string][]string{},
		skipped: map[string]map[string]string{}, configs: map[string]string{}, cmds: map[string][]string{},
		machine: readMachine(), build: e.edgeproxyVersion(), started: time.Now(),
	}
	only, err := parseList(o.Only, allPhases, "phase")
	if err != nil {
		return nil, err
	}
	prods, err := parseList(o.Candidates, products, "candidate")
	if err != nil {
		return nil, err
	}
	for _, c := range allCandidates() {
		if slices.Contains(prods, c.product) {
			res.candidates = append(res.candidates, c)
		}
	}
	avail := map[string]error{}
	for _, c := range res.candidates {
		avail[c.name] = c.available(e)
		if avail[c.name] != nil {
			e.log.Warn("candidate not available", "candidate", c.name, "reason", avail[c.name])
		}
	}
	for _, ph := range e.phases() {
		if !slices.Contains(only, ph.name) {
			continue
		}
		res.phases = append(res.phases, ph)
		if err := e.runPhase(ctx, res, ph, avail); err != nil {
			res.interrupt = err
			break
		}
	}
	if slices.Contains(only, phaseXDP) && res.interrupt == nil {
		res.xdp = e.runXDP(ctx)
		if ctx.Err() != nil {
			res.interrupt = ctx.Err()
		}
	}
	res.finished = time.Now()
	if err := res.write(o.Out); err != nil {
		return res, err
	}
	if res.interrupt != nil {
		return res, fmt.Errorf("run bench: interrupted (partial report written): %w", res.interrupt)
	}
	return res, nil
}

func parseList(s string, all []string, what string) ([]string, error) {
	if s == "" {
		return all, nil
	}
	var out []string
	for x := range strings.SplitSeq(s, ",") {
		x = strings.TrimSpace(x)
		if !slices.Contains(all, x) {
			return nil, fmt.Errorf("parse %s list: unknown %s %q: choose from %s", what, what, x, strings.Join(all, ","))
		}
		out = append(out, x)
	}
	return out, nil
}

func newEnv(o options) (*env, error) {
	e := &env{o: o, log: o.Log, dur: o.Duration, reps: o.Reps, connConc: 16, webConc: 32, hsConc: 16, idleConns: cmp.Or(o.IdleConns, 10_000)}
	if o.Quick {
		e.connConc, e.webConc, e.hsConc, e.idleConns = 4, 8, 4, cmp.Or(o.IdleConns, 200)
		if e.dur == 0 {
			e.dur = time.Second
		}
		if e.reps == 0 {
			e.reps = 1
		}
	}
	if e.dur == 0 {
		e.dur = 5 * time.Second
	}
	if e.reps == 0 {
		e.reps = 3
	}
	if e.idleConns < 1 || e.idleConns > 50_000 {
		return nil, fmt.Errorf("check flags: -idle-conns %d: use 1 to 50000", e.idleConns)
	}
	if e.dur < time.Second || e.dur > 10*time.Minute || e.reps < 1 || e.reps > 50 {
		return nil, fmt.Errorf("check flags: -d %s and -reps %d: use 1s to 10m and 1 to 50 repetitions", e.dur, e.reps)
	}
	var err error
	if e.napiSched, err = parseNAPIPrio(cmp.Or(o.NAPIPrio, "50")); err != nil {
		return nil, err
	}
	if e.self, err = os.Executable(); err != nil {
		return nil, fmt.Errorf("find own executable: %w", err)
	}
	e.root = moduleRoot()
	e.edgeproxy = o.Edgeproxy
	if e.edgeproxy == "" {
		e.edgeproxy = filepath.Join(e.root, "bin", "edgeproxy")
	}
	if e.edgeproxy, err = filepath.Abs(e.edgeproxy); err != nil {
		return nil, fmt.Errorf("resolve edgeproxy path: %w", err)
	}
	if e.cpus, err = planCPUs(o); err != nil {
		return nil, err
	}
	if e.dir, err = os.MkdirTemp("", "edgeproxy-bench-"); err != nil {
		return nil, fmt.Errorf("create work directory: %w", err)
	}
	// nginx workers (nobody) read the static file below it.
	if err := os.Chmod(e.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create work directory: %w", err)
	}
	if e.certs, err = writeCerts(e.dir); err != nil {
		os.RemoveAll(e.dir)
		return nil, err
	}
	e.www = filepath.Join(e.dir, "www")
	body := strings.Repeat("edgeproxy bench static file, 1 KiB.\n", 1024/36+1)[:1024]
	if err = os.MkdirAll(e.www, 0o755); err == nil {
		err = os.WriteFile(filepath.Join(e.www, "small.txt"), []byte(body), 0o644)
	}
	if err != nil {
		os.RemoveAll(e.dir)
		return nil, fmt.Errorf("write static file: %w", err)
	}
	return e, nil
}

// moduleRoot finds the directory of edgeproxy's go.mod from the working
// directory upwards ("." if not found).
func moduleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/edgeproxy/edgeproxy") {
			return d
		}
		if filepath.Dir(d) == d {
			return dir
		}
	}
}

// planCPUs splits the CPUs the harness may use between proxy, load
// generators and backend servers.
func planCPUs(o options) (cpuPlan, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return cpuPlan{}, fmt.Errorf("read CPU affinity: %w", err)
	}
	var cpus []string
	for c := 0; c < 1024 && len(cpus) < set.Count(); c++ {
		if set.IsSet(c) {
			cpus = append(cpus, strconv.Itoa(c))
		}
	}
	n := len(cpus)
	p := cpuPlan{proxyN: n}
	switch {
	case n == 1:
		p.note = "one CPU: nothing is pinned, load generators, backend and proxy share it"
	case n == 2:
		p.proxy, p.client, p.backend = cpus[0], cpus[1], cpus[1]
		p.note = "two CPUs: the proxy on CPU " + cpus[0] + ", load generators and backend servers share CPU " + cpus[1]
	default:
		h := n / 2
		c := h + (n-h+1)/2
		p.proxy = strings.Join(cpus[:h], ",")
		p.client = strings.Join(cpus[h:c], ",")
		p.backend = strings.Join(cpus[c:], ",")
		if p.backend == "" {
			p.backend = p.client
		}
		p.note = fmt.Sprintf("%d CPUs: proxy on %s, load generators on %s, backend on %s", n, p.proxy, p.client, p.backend)
	}
	for _, f := range []struct {
		flag string
		dst  *string
	}{{o.ProxyCPUs, &p.proxy}, {o.ClientCPUs, &p.client}, {o.BackendCPUs, &p.backend}} {
		if f.flag == "" {
			continue
		}
		if _, err := parseCPUSet(f.flag); err != nil {
			return p, err
		}
		*f.dst = f.flag
		p.note = fmt.Sprintf("as asked: proxy on %s, load generators on %s, backend on %s", p.proxy, p.client, p.backend)
	}
	if p.proxy != "" {
		s, _ := parseCPUSet(p.proxy)
		p.proxyN = s.Count()
	}
	return p, nil
}

// runPhase runs every repetition of a phase, candidates interleaved.
func (e *env) runPhase(ctx context.Context, res *results, ph *phase, avail map[string]error) error {
	var cands []*candidate
	for _, c := range res.candidates {
		if c.layer != ph.layer {
			continue
		}
		if err := avail[c.name]; err != nil {
			res.skip(ph.name, c.name, err.Error())
			continue
		}
		if why := c.unsupported(ph.name); why != "" {
			res.skip(ph.name, c.name, "not supported: "+why)
			continue
		}
		cands = append(cands, c)
	}
	for rep := 1; rep <= e.reps; rep++ {
		for _, c := range cands {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if _, gone := res.skipped[ph.name][c.name]; gone {
				continue
			}
			res.order = append(res.order, fmt.Sprintf("%s/%s#%d", ph.name, c.name, rep))
			e.log.Info("trial", "phase", ph.name, "candidate", c.name, "rep", rep, "of", e.reps)
			if err := e.runTrial(ctx, res, ph, c); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				e.log.Warn("trial failed", "phase", ph.name, "candidate", c.name, "err", err)
				if c.product == prodEdgeproxy {
					// edgeproxy's parts may not be complete yet: report why
					// and go on with the peers.
					res.skip(ph.name, c.name, "not available: "+err.Error())
					continue
				}
				for _, sc := range ph.scenarios {
					res.add(res.failures, sc.id, c.name, err.Error())
				}
			}
		}
	}
	return nil
}

// runTrial installs one candidate in a fresh lab and runs the phase's
// scenarios through it. Errors are about the installation; a failed
// scenario is recorded and the next one runs.
func (e *env) runTrial(ctx context.Context, res *results, ph *phase, c *candidate) error {
	t, err := e.newTrial(ctx, ph.name)
	if err != nil {
		return fmt.Errorf("build lab: %w", err)
	}
	defer t.close()
	if err := ph.backend(t); err != nil {
		return fmt.Errorf("start backend: %w", err)
	}
	in, err := c.install(ctx, t, ph.name)
	if err != nil {
		return fmt.Errorf("install %s: %w", c.name, err)
	}
	defer in.stop()
	t.proxy = in
	res.configs[c.name+"/"+ph.name] = in.config
	res.cmds[c.name] = in.cmds
	if err := e.waitReady(ctx, t, ph, in); err != nil {
		return err
	}
	for _, sc := range ph.scenarios {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		oc, err := e.measure(ctx, t, in, sc)
		if err != nil && ctx.Err() == nil && in.alive() == nil {
			// One retry, in the same installation; the failure stays in
			// the notes.
			e.log.Warn("measurement failed, retrying once", "scenario", sc.id, "candidate", c.name, "err", err)
			var retryErr error
			oc, retryErr = e.measure(ctx, t, in, sc)
			if retryErr == nil {
				oc.note = strings.TrimPrefix(oc.note+"; retried once after: "+err.Error(), "; ")
			}
			err = retryErr
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			e.log.Warn("measurement failed", "scenario", sc.id, "candidate", c.name, "err", err)
			res.add(res.failures, sc.id, c.name, err.Error())
			continue
		}
		for k, v := range oc.metrics {
			if res.values[k] == nil {
				res.values[k] = map[string][]float64{}
			}
			res.values[k][c.name] = append(res.values[k][c.name], v)
		}
		if oc.note != "" {
			res.add(res.notes, sc.id, c.name, oc.note)
		}
		e.log.Info("measured", "scenario", sc.id, "candidate", c.name, "result", summary(sc.id, oc.metrics))
	}
	return nil
}

func summary(id string, m map[string]float64) string {
	var parts []string
	for _, d := range metricDefs {
		if v, ok := m[d.id]; ok && d.scenario == id {
			parts = append(parts, fmt.Sprintf("%s=%s", d.id, strconv.FormatFloat(v, 'f', d.prec, 64)))
		}
	}
	return strings.Join(parts, " ")
}

// waitReady waits until traffic passes through the candidate.
func (e *env) waitReady(ctx context.Context, t *trial, ph *phase, in *installation) error {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for {
		if err := in.alive(); err != nil {
			return fmt.Errorf("candidate exited: %w", err)
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = ph.probe(pctx, t)
		cancel()
		if last == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			tail := ""
			for _, p := range in.procs {
				tail += " " + p.tail(4)
			}
			return fmt.Errorf("no traffic through the candidate after 30s: %v;%s", last, tail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// measure runs one scenario and adds the CPU figures to its metrics.
func (e *env) measure(ctx context.Context, t *trial, in *installation, sc *scenario) (outcome, error) {
	trees := map[string][]int{grpProxy: in.pids(), grpBackend: t.backendPids()}
	exact := map[string][]int{grpProxyNAPI: t.napiPids(proxyDevs), grpClientNAPI: t.napiPids(clientDevs), grpBackendNAPI: t.napiPids(backendDevs)}
	mctx, cancel := context.WithTimeout(ctx, cmp.Or(sc.timeout, e.dur+30*time.Second))
	defer cancel()
	s0 := sample(trees, exact)
	oc, err := sc.run(mctx, t)
	s1 := sample(trees, exact)
	if err != nil {
		if aerr := in.alive(); aerr != nil {
			err = fmt.Errorf("%w (candidate exited: %v)", err, aerr)
		}
		return oc, err
	}
	if aerr := in.alive(); aerr != nil {
		return oc, fmt.Errorf("candidate exited during the measurement: %w", aerr)
	}
	wall := s1.at.Sub(s0.at).Seconds()
	proc := delta(s0, s1, grpProxy)
	napi := delta(s0, s1, grpProxyNAPI)
	client := delta(s0, s1, grpClientNAPI) + oc.loadCPU
	backend := delta(s0, s1, grpBackendNAPI) + delta(s0, s1, grpBackend)
	peers := client + backend
	work := proc + napi + peers + delta(s0, s1, grpSoftirqd)
	busy := s1.busy - s0.busy
	if !sc.idle {
		if why := e.loadCheck(busy/wall, (busy-work)/wall, (proc+napi)/wall, peers/wall); why != "" {
			oc.note = strings.TrimPrefix(oc.note+"; "+why, "; ")
		}
	}
	switch {
	case sc.idle:
	case proc+napi < 0.01*wall:
		// The proxy's forwarding ran in its senders' softirq (a veth
		// whose sender has TSO on skips NAPI): it is counted with them.
		oc.note = strings.TrimPrefix(oc.note+"; proxy CPU not measurable: the forwarding ran in the senders' softirq (veth with TSO on skips NAPI), so it is counted in the load generator's and backend's CPU", "; ")
	case oc.work > 0:
		oc.metrics[sc.id+".cpu"] = (proc + napi) / oc.work
	}
	pre := "cpu." + sc.id + "."
	oc.metrics[pre+"proc"] = proc / wall
	oc.metrics[pre+"procsys"] = deltaSys(s0, s1, grpProxy) / wall
	oc.metrics[pre+"napi"] = napi / wall
	oc.metrics[pre+"softirq"] = (s1.softirq - s0.softirq) / wall
	oc.metrics[pre+"client"] = client / wall
	oc.metrics[pre+"backend"] = backend / wall
	oc.metrics[pre+"work"] = work / wall
	oc.metrics[pre+"busy"] = busy / wall
	return oc, nil
}

// machineInfo describes where the run happened.
type machineInfo struct {
	CPUs     int
	Model    string
	Kernel   string
	Go       string
	LoadAvg  string
	Versions map[string]string
}

func readMachine() machineInfo {
	m := machineInfo{CPUs: runtime.NumCPU(), Go: runtime.Version(), Versions: map[string]string{}}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	for name, args := range map[string][]string{
		"haproxy": {haproxyBin, "-v"}, "nginx": {nginxBin, "-v"}, "nft": {"nft", "--version"},
		"iperf3": {"iperf3", "--version"}, "wrk": {"wrk", "-v"},
	} {
		out, _ := commandOutput(args[0], args[1:]...)
		if line, _, _ := strings.Cut(strings.TrimSpace(out), "\n"); line != "" {
			m.Versions[name] = strings.TrimSpace(line)
		}
	}
	return m
}
