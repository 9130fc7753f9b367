package main

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// stat is a median with its range.
type stat struct {
	median, min, max float64
	n                int
}

func stats(v []float64) (stat, bool) {
	if len(v) == 0 {
		return stat{}, false
	}
	s := slices.Clone(v)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stat{median: m, min: s[0], max: s[len(s)-1], n: len(s)}, true
}

func (r *results) stat(metric, cand string) (stat, bool) {
	return stats(r.values[metric][cand])
}

// scenarioOf finds a scenario definition by id.
func (r *results) scenarioOf(id string) (*phase, *scenario) {
	for _, ph := range r.phases {
		for _, sc := range ph.scenarios {
			if sc.id == id {
				return ph, sc
			}
		}
	}
	return nil, nil
}

// layerCands are the candidates of a layer in report order (edgeproxy
// first).
func (r *results) layerCands(layer string) []*candidate {
	var out []*candidate
	for _, c := range r.candidates {
		if c.layer == layer {
			out = append(out, c)
		}
	}
	return out
}

func (r *results) reference(layer string) *candidate {
	for _, c := range r.layerCands(layer) {
		if c.product == prodEdgeproxy {
			return c
		}
	}
	return nil
}

// status of a candidate in a phase: "" when it has numbers or failures.
func (r *results) status(ph *phase, c *candidate) string {
	return r.skipped[ph.name][c.name]
}

func fmtNum(v float64, prec int) string {
	if prec == 0 && v >= 10000 {
		s := strconv.FormatFloat(v, 'f', 0, 64)
		// thousands separators
		var b strings.Builder
		for i, ch := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(ch)
		}
		return b.String()
	}
	return strconv.FormatFloat(v, 'f', prec, 64)
}

func ratio(a, b float64) string {
	if b == 0 || a == 0 {
		return "—"
	}
	r := a / b
	if r < 0.1 {
		return strconv.FormatFloat(r, 'g', 2, 64) + "×"
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + "×"
}

func better(d metricDef) string {
	if d.higherBetter {
		return "higher is better"
	}
	return "lower is better"
}

func cell(s string) string {
	s = strings.ReplaceAll(s, "|", "/")
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// write produces latest.md and latest.png in dir.
func (r *results) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	r.ChartPath = filepath.Join(dir, "latest.png")
	chartErr := writeChart(r.ChartPath, r)
	if chartErr != nil {
		r.env.log.Warn("chart not written", "err", chartErr)
	}
	r.MarkdownPath = filepath.Join(dir, "latest.md")
	if err := os.WriteFile(r.MarkdownPath, []byte(r.markdown(chartErr)), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

func (r *results) markdown(chartErr error) string {
	e := r.env
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	mode := "full"
	if e.o.Quick {
		mode = "quick (checks the harness works; the numbers mean little)"
	}
	w("# edgeproxy benchmark\n\n")
	w("- Run: %s, took %s. Mode: %s — %s per measurement, %d interleaved repetition%s (candidates A B C A B C …, each trial in a fresh lab); medians with min and max.\n",
		r.started.Format(time.RFC3339), r.finished.Sub(r.started).Round(time.Second), mode, e.dur, e.reps, plural(e.reps))
	m := r.machine
	w("- Machine: %d × %s, kernel %s, %s, load average at start %s.\n", m.CPUs, m.Model, m.Kernel, m.Go, m.LoadAvg)
	w("- CPUs: %s (`taskset`); the receive work of each namespace runs in threaded NAPI kernel threads pinned the same way, at SCHED_FIFO priority 50%s.\n", e.cpus.note, proxyNAPINote(e.napiSched))
	var vs []string
	for _, k := range []string{"haproxy", "nginx", "nft", "iperf3", "wrk"} {
		if v := m.Versions[k]; v != "" {
			vs = append(vs, v)
		}
	}
	w("- edgeproxy: %s.\n", r.build)
	w("- Peers and tools: %s.\n", strings.Join(vs, "; "))
	if med, hi, ok := r.otherActivity(); ok {
		w("- Other activity on the machine during the measurements (all CPU time minus this workload's): median %.2f cores, at most %.2f, out of %d.", med, hi, m.CPUs)
		if med > 0.25 {
			w(" **The machine was shared: expect noise**, and note that the NAPI threads (where XDP and nftables work) outrank other users' processes while HAProxy, nginx, edgeproxy's L7 proxy and the load generators compete with them. Re-run on a quiet machine before drawing conclusions.")
		}
		w("\n")
	}
	if r.interrupt != nil {
		w("- **Interrupted** (%v): the tables hold what was measured before.\n", r.interrupt)
	}
	w("\n")

	// Availability.
	w("## Candidates\n\n| candidate | layer | status |\n|---|---|---|\n")
	for _, c := range r.candidates {
		var st, reasons []string
		n := 0
		for _, ph := range r.phases {
			if ph.layer != c.layer {
				continue
			}
			n++
			if s := r.status(ph, c); s != "" {
				st = append(st, ph.name+": "+s)
				if !slices.Contains(reasons, s) {
					reasons = append(reasons, s)
				}
			}
		}
		status := "measured"
		switch {
		case len(st) == n && len(reasons) == 1:
			status = reasons[0]
		case len(st) > 0:
			status = strings.Join(st, "; ")
		}
		w("| %s | %s | %s |\n", c.name, c.layer, cell(status))
	}
	w("\n")
	if chartErr == nil {
		w("![Each candidate relative to the best one per scenario](latest.png)\n\n")
	} else {
		w("Chart not written: %v\n\n", chartErr)
	}

	r.writeSummary(w)

	for _, layer := range []string{layerL4, layerL7} {
		first := true
		for _, d := range metricDefs {
			ph, sc := r.scenarioOf(d.scenario)
			if sc == nil || ph.layer != layer {
				continue
			}
			if first {
				w("## %s\n\n", map[string]string{layerL4: "L4: pass-through (VIP:443 → member:4443, SNAT to the internal address)", layerL7: "L7: TLS termination (VIP:443 → member:4443 re-encrypted, verified)"}[layer])
				first = false
			}
			r.writeMetric(w, ph, sc, d)
		}
	}
	r.writeCPU(w)
	r.writeXDP(w)
	r.writeCommands(w)
	r.writeNotes(w)
	return b.String()
}

func (r *results) writeSummary(w func(string, ...any)) {
	w("## edgeproxy against each peer\n\n")
	var rows []string
	for _, d := range metricDefs {
		if d.chart == "" {
			continue
		}
		ph, _ := r.scenarioOf(d.scenario)
		if ph == nil {
			continue
		}
		ref := r.reference(ph.layer)
		if ref == nil {
			continue
		}
		rs, ok := r.stat(d.id, ref.name)
		if !ok {
			continue
		}
		var parts []string
		for _, c := range r.layerCands(ph.layer) {
			if c == ref {
				continue
			}
			if s, ok := r.stat(d.id, c.name); ok {
				parts = append(parts, fmt.Sprintf("%s ÷ %s = %s", ref.product, c.name, ratio(rs.median, s.median)))
			}
		}
		if len(parts) > 0 {
			rows = append(rows, fmt.Sprintf("| %s (%s, %s) | %s |", d.title, d.unit, better(d), strings.Join(parts, "; ")))
		}
	}
	if len(rows) == 0 {
		w("No ratios: edgeproxy has no numbers in this run (see the candidates above).\n\n")
		return
	}
	w("| scenario | ratios of medians |\n|---|---|\n%s\n\n", strings.Join(rows, "\n"))
}

func (r *results) writeMetric(w func(string, ...any), ph *phase, sc *scenario, d metricDef) {
	ref := r.reference(ph.layer)
	w("### %s — %s, %s\n\n", d.title, d.unit, better(d))
	refHead := "edgeproxy ÷ this"
	w("| candidate | median | min | max | %s |\n|---|---:|---:|---:|---:|\n", refHead)
	var refStat stat
	refOK := false
	if ref != nil {
		refStat, refOK = r.stat(d.id, ref.name)
	}
	for _, c := range r.layerCands(ph.layer) {
		if s := r.status(ph, c); s != "" {
			w("| %s | %s | | | |\n", c.name, cell(s))
			continue
		}
		s, ok := r.stat(d.id, c.name)
		if !ok {
			why := "no result"
			if f := r.failures[sc.id][c.name]; len(f) > 0 {
				why = "failed: " + f[0]
			} else if d.id == sc.id+".cpu" && slices.ContainsFunc(r.notes[sc.id][c.name], func(n string) bool { return strings.Contains(n, "CPU not measurable") }) {
				why = "not measurable: the proxy's forwarding ran in the senders' softirq (see below)"
			}
			w("| %s | %s | | | |\n", c.name, cell(why))
			continue
		}
		rt := "—"
		if refOK && c != ref {
			rt = ratio(refStat.median, s.median)
		}
		if k := r.invalid(sc.id, c.name); k > 0 {
			rt += fmt.Sprintf(" (**invalid** in %d of %d repetitions: the client side or the machine saturated first, see below)", k, r.env.reps)
		}
		w("| %s | %s | %s | %s | %s |\n", c.name, fmtNum(s.median, d.prec), fmtNum(s.min, d.prec), fmtNum(s.max, d.prec), rt)
	}
	w("\n")
	if d.id == sc.id+".cpu" {
		w("CPU of the proxy: its processes plus the NAPI threads of ext0/int0 (`/proc/<pid>/stat`), divided by the work done.\n\n")
	}
	// Failures and remarks once per scenario, under its first metric.
	if first := slices.IndexFunc(metricDefs, func(x metricDef) bool { return x.scenario == sc.id }); metricDefs[first].id == d.id {
		for _, c := range r.layerCands(ph.layer) {
			var all []string
			if f := r.failures[sc.id][c.name]; len(f) > 0 {
				all = append(all, fmt.Sprintf("%d of %d repetitions failed: %s", len(f), r.env.reps, f[0]))
			}
			all = append(all, r.notes[sc.id][c.name]...)
			if len(all) > 0 {
				w("- %s: %s\n", c.name, cell(strings.Join(all, "; ")))
			}
		}
		w("\nLoad: `%s`\n\n", sc.cmd(r.env))
	}
}

func (r *results) writeCPU(w func(string, ...any)) {
	w("## CPU use during each scenario (median, in cores)\n\n")
	w("proxy process: the candidate's processes; of it system: their system time (`stime`: system calls and the kernel work they do, the veth transmit path of every write included), the rest is user time; proxy NAPI: receive work in the proxy namespace (threaded NAPI of ext0 and int0, where XDP and nftables run); load generator, backend: their processes and the NAPI threads of c0 and b0 respectively (a measurement where these two used 90%% of their CPUs while the proxy side had room is flagged invalid: it measured the client side; so is one where the machine was 90%% busy, partly with other activity, while the proxy side had room); softirq: `/proc/stat`, all CPUs; workload: every process and kernel thread of the trial (load generator, backend, proxy, all NAPI threads, ksoftirqd); machine: all CPU time on the machine, other users included.\n\n")
	w("| scenario | candidate | proxy process | of it system | proxy NAPI | load generator | backend | softirq | workload | machine | valid |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, ph := range r.phases {
		for _, sc := range ph.scenarios {
			for _, c := range r.layerCands(ph.layer) {
				pre := "cpu." + sc.id + "."
				if _, ok := r.stat(pre+"work", c.name); !ok {
					continue
				}
				var cols []string
				for _, k := range []string{"proc", "procsys", "napi", "client", "backend", "softirq", "work", "busy"} {
					s, _ := r.stat(pre+k, c.name)
					cols = append(cols, fmtNum(s.median, 2))
				}
				valid := "yes"
				if k := r.invalid(sc.id, c.name); k > 0 {
					valid = fmt.Sprintf("**no** in %d of %d", k, r.env.reps)
				}
				cols = append(cols, valid)
				w("| %s | %s | %s |\n", sc.id, c.name, strings.Join(cols, " | "))
			}
		}
	}
	w("\n")
}

func (r *results) writeXDP(w func(string, ...any)) {
	w("## The XDP program alone (BPF_PROG_TEST_RUN)\n\n")
	x := r.xdp
	if x == nil {
		w("Not run (`-only` left it out).\n\n")
		return
	}
	if x.unavailable != "" {
		w("%s\n\n", x.unavailable)
		if x.cmd != "" {
			w("Command: `%s`\n\n", x.cmd)
		}
		return
	}
	w("Time per packet of the program on one CPU, against the %.0f ns budget of 10 GbE line rate at 64-byte frames (14.88 Mpps).\n\n", lineRateBudget)
	w("| path | benchmark | median | min | max | unit | ÷ 67 ns budget |\n|---|---|---:|---:|---:|---|---:|\n")
	for _, bch := range x.benches {
		pkg := strings.TrimPrefix(bch.pkg, "github.com/edgeproxy/edgeproxy/")
		s, ok := stats(bch.values)
		if bch.notRun != "" || !ok {
			w("| %s | %s (%s) | %s | — | — | %s | — |\n", bch.path, bch.name, pkg, cmp.Or(bch.notRun, "not measured"), bch.unit)
			continue
		}
		w("| %s | %s (%s) | %.1f | %.1f | %.1f | %s | %s |\n", bch.path, bch.name, pkg, s.median, s.min, s.max, bch.unit, ratio(s.median, lineRateBudget))
	}
	var missing []string
	for _, p := range append(xdpFigures(), "pass") {
		if !slices.ContainsFunc(x.benches, func(b xdpBench) bool { return b.path == p }) {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		w("\nNo benchmark for: %s.\n", strings.Join(missing, "; "))
	}
	w("\nThe established path runs over working sets of flows, each packet hitting another flow than the one before, so that tables larger than the CPU's caches cost what they cost (1 flow: everything cached).")
	if r.env.o.Quick {
		w(" `-quick` leaves out the largest working set: filling the table with it takes about 30 s.")
	}
	w(" Benchmarks that need a fresh packet per run (a new flow needs a new tuple) make one BPF_PROG_TEST_RUN call per packet, so their time includes the call's own overhead: the pass path measured one call per packet (%s) and many packets per call (%s) shows how much, and the row %q is %s − (%s − %s), repetition by repetition.\n", xdpPassSingle, xdpPass, xdpNewFlowNet, xdpNewFlow, xdpPassSingle, xdpPass)
	if x.failed != "" {
		w("\nThe benchmark run failed after these results: %s\n", cell(x.failed))
	}
	w("\nCommand: `%s`\n\n", x.cmd)
}

func (r *results) writeCommands(w func(string, ...any)) {
	e := r.env
	w("## Commands\n\n")
	w("Every trial builds the namespace lab of `internal/lab` (client `c0` 198.18.0.1 — proxy `ext0` 198.18.0.2, VIP 198.18.0.10; proxy `int0` 198.19.0.2 — backend `b0` 198.19.0.1, members 198.19.1.11 and .12), turns on GRO, threaded NAPI (SCHED_FIFO 50%s, pinned) and a `pfifo_fast` qdisc on the four veth ends, sets `net.ipv4.tcp_tw_reuse=1` in the client and proxy namespaces and `ip_local_port_range=1024 65535` in the client's, starts the backend, installs one candidate, waits until traffic passes, measures, and tears everything down.\n\n", proxyNAPINote(e.napiSched))
	pin := ""
	if e.cpus.backend != "" {
		pin = "taskset -c " + e.cpus.backend + " "
	}
	w("BENCH is the harness's own binary (`go run ./bench` builds it), run in a role chosen by the environment.\n\n")
	w("Backends (in `$BACKEND_NS`):\n\n")
	w("- tcp: `%siperf3 -s -p 4443` (serves both members)\n", pin)
	w("- udp: `%siperf3 -s -p 4443 -B 198.19.1.11` (bound, so that it answers from the member's address; the pool has this one member in the UDP phase)\n", pin)
	w("- conn: `%snginx -p PREFIX -c nginx-backend.conf -g 'daemon off;'` (plain HTTP on 4443, `%s` answers 1 byte)\n", pin, connPath)
	w("- web: `%snginx -p PREFIX -c nginx-backend.conf -g 'daemon off;'` (TLS on 4443 with the internal CA's certificate, a 1 KiB static file `/small.txt`); the resume phase has the same\n", pin)
	w("- idle: the harness itself, in the backend namespace: TLS on 4443 with the internal CA's certificate, reads each request and never answers\n\n")
	w("Candidates (in `$PROXY_NS`):\n\n")
	for _, c := range r.candidates {
		if cmds := r.cmds[c.name]; len(cmds) > 0 {
			w("- %s: `%s`\n", c.name, strings.Join(cmds, "` then `"))
		}
	}
	w("\n")
	var keys []string
	for k := range r.configs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		w("<details><summary>%s configuration</summary>\n\n```\n%s```\n\n</details>\n\n", k, r.configs[k])
	}
	if len(r.order) > 0 {
		w("Trial order: %s.\n\n", strings.Join(r.order, ", "))
	}
}

func (r *results) writeNotes(w func(string, ...any)) {
	e := r.env
	w("## Notes\n\n")
	tlsSeen, _ := e.tlsSeen.Load().(string)
	if tlsSeen == "" {
		tlsSeen = "not observed"
	}
	notes := []string{
		"Same backend and same client load for every candidate; every candidate forwards to member:4443 and SNATs to 198.19.0.2 (nftables `snat`, HAProxy `source`, nginx `proxy_bind`, edgeproxy `snat: automap`).",
		fmt.Sprintf("HAProxy runs `nbthread %d` and nginx `worker_processes %d`: as many as the proxy's CPUs; edgeproxy's Go runtime sees the same CPUs through `taskset`.", e.cpus.proxyN, e.cpus.proxyN),
		"L7: one ECDSA P-256 certificate for webext.example.com (public CA) on every proxy; the backend is nginx with TLS on member:4443, verified against an internal CA, with upstream keep-alive on every proxy; HTTP/1.1 keep-alive from wrk with " + strconv.Itoa(e.webConc) + " connections. The handshake client opens " + strconv.Itoa(e.hsConc) + " connections at a time, one request each; negotiated on a full handshake: " + tlsSeen + ".",
		"Full handshakes (web phase): no candidate issues session tickets or keeps a session cache (edgeproxy `tls.session_tickets: false`, HAProxy `no-tls-tickets` and `tune.ssl.cachesize 0`, nginx `ssl_session_tickets off` and `ssl_session_cache off`) and the client keeps no session; a resumption there makes the run invalid. Resumed handshakes (resume phase): every candidate issues tickets and keeps a cache (edgeproxy's default tickets, HAProxy's defaults, nginx `ssl_session_tickets on` and `ssl_session_cache shared:bench:10m`) and the client resumes the last session it got; a run where fewer than 90% resumed is invalid.",
		"Idle long polls (idle phase): " + strconv.Itoa(e.idleConns) + " TLS connections each send a Skype UCWA event poll that the backend holds unanswered, so every one holds a client and an upstream connection in the proxy; edgeproxy serves them from a site with `profile: skype` (long-poll timeouts) and every proxy may take them all from the one client address. The figure is the growth of the proxy's resident memory (VmRSS) divided by the polls the backend holds; kernel socket buffers are not in it. edgeproxy's goal: 30 KiB per client, so that 100,000 fit in 3 GiB.",
		"nftables appears twice: with the settings XDP needs (TX checksum offload, hence TSO and GSO, off on the veth ends: like for like with edgeproxy fastl4) and with the veth defaults (TSO on: what a user without XDP deploys). With TSO on, a veth hands packets to its peer without NAPI, in the sender's softirq, so that candidate's forwarding is counted in the load generator's and backend's CPU and its CPU per unit is not measurable.",
		"Short connections: wrk with `Connection: close`, " + strconv.Itoa(e.connConc) + " connections at a time, each connect → one HTTP request → 1-byte answer → close (the backend closes first).",
		"UDP: iperf3 sends 64-byte payloads at up to 1 Gbit/s (about 1.9 Mpps, more than the client can send); the figure is what the server received (sent − lost). The single sender on a shared CPU bounds it; loss shows where the proxy drops.",
		"veth is not a NIC: there is no wire, no RSS and no interrupt; XDP on veth runs in the receiving veth's NAPI (here a pinned kernel thread) and XDP_REDIRECT hands frames to the peer veth in memory. Native XDP on a real NIC is faster and the kernel stack slower relative to it; treat ratios as indicative.",
		"The load generators and backend share CPUs with each other (and, on a machine with other users, with them): on a 2-core VM the client side is often the bottleneck, so throughput ratios understate the differences; CPU per unit of work shows them better.",
		"No timing is asserted by the tests: `go test ./bench` only checks that the harness runs and fills its tables.",
	}
	for _, n := range notes {
		w("- %s\n", n)
	}
	w("\n")
}

// otherActivity is the CPU time the machine spent outside the trial's
// workload during the measurements, in cores: median and maximum.
func (r *results) otherActivity() (float64, float64, bool) {
	var others []float64
	for k, byCand := range r.values {
		if !strings.HasPrefix(k, "cpu.") || !strings.HasSuffix(k, ".busy") {
			continue
		}
		work := r.values[strings.TrimSuffix(k, ".busy")+".work"]
		for c, busy := range byCand {
			for i := range min(len(busy), len(work[c])) {
				others = append(others, max(busy[i]-work[c][i], 0))
			}
		}
	}
	s, ok := stats(others)
	return s.median, s.max, ok
}

// invalid counts the repetitions of a scenario in which the client side,
// not the candidate, saturated first.
func (r *results) invalid(scenario, cand string) int {
	k := 0
	for _, n := range r.notes[scenario][cand] {
		if strings.Contains(n, "invalid: ") {
			k++
		}
	}
	return k
}
