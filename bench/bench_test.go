package main

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
	"golang.org/x/sys/unix"
)

// TestMain lets the test binary stand in for the harness's own binary
// when the harness re-executes it as a load generator or backend.
func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func TestParseWrk(t *testing.T) {
	out := `Running 5s test @ https://webext.example.com/small.txt
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  10.00ms   89.00%
    Req/Sec    25.00k     1.00k   27.00k    80.00%
  Latency Distribution
     50%  850.00us
     75%    1.30ms
     90%    1.60ms
     99%    1.20s
  125000 requests in 5.00s, 50.00MB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 10
Requests/sec:  25000.50
Transfer/sec:     10.00MB
`
	w, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if w.rps != 25000.5 || w.requests != 125000 || w.p50ms != 0.85 || w.p99ms != 1200 || w.errors != 20 {
		t.Errorf("parseWrk = %+v", w)
	}
	if _, err := parseWrk("unable to connect to webext.example.com:https Connection refused\n"); err == nil {
		t.Error("parseWrk accepted a failed run")
	}
}

func TestParseIperf(t *testing.T) {
	tcp := `{"start":{},"end":{"sum_sent":{"bytes":2000000000,"bits_per_second":3.2e9,"retransmits":7},
		"sum_received":{"seconds":5.0,"bytes":1990000000,"bits_per_second":3.184e9}}}`
	r, err := parseIperf(tcp)
	if err != nil {
		t.Fatal(err)
	}
	if r.bitsPerSecond != 3.184e9 || r.bytes != 1990000000 || r.retransmits != 7 {
		t.Errorf("TCP: %+v", r)
	}
	udp := `{"end":{"sum":{"seconds":1.0,"packets":462560,"lost_packets":71565,"lost_percent":15.47}}}`
	if r, err = parseIperf(udp); err != nil || r.packets-r.lost != 390995 || r.lostPercent != 15.47 {
		t.Errorf("UDP: %+v, %v", r, err)
	}
	if _, err := parseIperf(`{"error":"unable to connect to server: Connection refused"}`); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("iperf3 error not reported: %v", err)
	}
}

func TestParseGoBench(t *testing.T) {
	out := "goos: linux\npkg: github.com/edgeproxy/edgeproxy/l4\n" +
		"BenchmarkXDPEstablished-2   	 1000000	        85.3 ns/op	        84.9 ns/packet\n" +
		"BenchmarkXDPPass   	 5000000	        20.1 ns/op\n" +
		"BenchmarkProgramNewFlow-2                  	2026/11/22 19:42:09 INFO pool members taking new flows\n" +
		"2026/11/22 19:42:09 INFO pool members taking new flows pool=fe6\n" +
		"   20000	      1007 ns/packet\nPASS\n"
	b := parseGoBench(out)
	if len(b) != 3 || b[0].name != "XDPEstablished" || b[0].metrics["ns/packet"] != 84.9 || b[1].metrics["ns/op"] != 20.1 ||
		b[2].name != "ProgramNewFlow" || b[2].metrics["ns/packet"] != 1007 || b[2].pkg != "github.com/edgeproxy/edgeproxy/l4" {
		t.Errorf("parseGoBench = %+v", b)
	}
	if xdpPath(b[0].name) != "established flow" || xdpPath(b[1].name) != "pass" || xdpPath("NewFlowSYN") != "new flow" {
		t.Error("xdpPath misclassifies")
	}
}

func TestParseProcStat(t *testing.T) {
	in := []byte("cpu  100 5 50 1000 20 3 40 7 0 0\ncpu0 50 2 25 500 10 1 20 3 0 0\nintr 1\n")
	soft, busy, err := parseProcStat(in)
	if err != nil || soft != 0.40 || busy != 1.98 {
		t.Errorf("parseProcStat = %v %v %v", soft, busy, err)
	}
	if _, _, err := parseProcStat([]byte("intr 1\n")); err == nil {
		t.Error("parseProcStat accepted a file without the cpu line")
	}
}

// The CPU table splits the proxy's time into user and system time; a
// command name with spaces and parentheses must not shift the fields.
func TestParseProcTimes(t *testing.T) {
	in := []byte("4242 (nginx: worker (x) 1) S 4241 4241 4241 0 -1 4194368 100 0 0 0 250 75 3 4 20 0 1 0 1000 1000 100\n")
	user, sys, ok := parseProcTimes(in)
	if !ok || user != 2.50 || sys != 0.75 {
		t.Errorf("parseProcTimes = %v %v %v, want 2.5 0.75 true", user, sys, ok)
	}
	if _, _, ok := parseProcTimes([]byte("4242 (x) S 1 2\n")); ok {
		t.Error("parseProcTimes accepted a short line")
	}
}

func TestParseCPUSet(t *testing.T) {
	s, err := parseCPUSet("0,2-3")
	if err != nil || s.Count() != 3 || !s.IsSet(0) || s.IsSet(1) || !s.IsSet(3) {
		t.Errorf("parseCPUSet = %v, %v", s, err)
	}
	for _, bad := range []string{"", "x", "3-1"} {
		if _, err := parseCPUSet(bad); err == nil {
			t.Errorf("parseCPUSet(%q) accepted", bad)
		}
	}
}

// TestSaturation: a measurement where the load generator and backend used
// up their CPU while the proxy had room is flagged invalid, and one where
// the proxy side saturated is not.
func TestSaturation(t *testing.T) {
	for _, c := range []struct {
		name                         string
		proxy, proxyCap, peers, pcap float64
		invalid                      bool
	}{
		{"client side saturated, proxy idle", 0.3, 1, 0.97, 1, true},
		{"both saturated: the proxy is measured", 0.95, 1, 0.99, 1, false},
		{"proxy saturated", 0.98, 1, 0.6, 1, false},
		{"nothing saturated", 0.4, 1, 0.5, 1, false},
		{"shared CPUs, client side over 90%", 0.5, 2, 1.85, 2, true},
	} {
		got := saturation(c.proxy, c.proxyCap, c.peers, c.pcap)
		if (got != "") != c.invalid || (got != "" && !strings.HasPrefix(got, "invalid: ")) {
			t.Errorf("%s: saturation = %q, want invalid=%v", c.name, got, c.invalid)
		}
	}
	if got := crowded(2.0, 0.6, 0.5, 1, 2); !strings.HasPrefix(got, "invalid: ") {
		t.Errorf("machine saturated by other activity, proxy at half: %q, want invalid", got)
	}
	if got := crowded(2.0, 0.6, 0.97, 1, 2); got != "" {
		t.Errorf("machine saturated, proxy saturated too: %q, want valid", got)
	}
	if got := crowded(2.0, 0.02, 0.5, 1, 2); got != "" {
		t.Errorf("machine saturated by the workload itself: %q, want valid", got)
	}
	if n := cpuCount(2, "1", "1"); n != 1 {
		t.Errorf("load generator and backend sharing CPU 1: %v CPUs, want 1", n)
	}
	if n := cpuCount(4, "2", "3"); n != 2 {
		t.Errorf("CPUs 2 and 3: %v, want 2", n)
	}
	if n := cpuCount(2, ""); n != 2 {
		t.Errorf("unpinned on 2 CPUs: %v, want 2", n)
	}
	r := &results{notes: map[string]map[string][]string{"l4-conn": {"x": {"invalid: a", "ok", "y; invalid: b"}}}}
	if k := r.invalid("l4-conn", "x"); k != 2 {
		t.Errorf("invalid repetitions = %d, want 2", k)
	}
}

func TestStats(t *testing.T) {
	s, ok := stats([]float64{5, 1, 3})
	if !ok || s.median != 3 || s.min != 1 || s.max != 5 {
		t.Errorf("stats = %+v", s)
	}
	if s, _ := stats([]float64{4, 1, 3, 2}); s.median != 2.5 {
		t.Errorf("even median = %v", s.median)
	}
	if _, ok := stats(nil); ok {
		t.Error("stats of nothing")
	}
}

// TestEdgeproxyConfigs checks that the configurations the harness gives
// edgeproxy are accepted by edgeproxy's own configuration parser.
func TestEdgeproxyConfigs(t *testing.T) {
	dir := t.TempDir()
	certs, err := writeCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{certs: certs, cpus: cpuPlan{proxyN: 1}, idleConns: 10_000, files: 20_000}
	lab := &testnet.Lab{
		ClientAddr4: netip.MustParseAddr("198.18.0.1"), ClientAddr6: netip.MustParseAddr("2001:db8:1::1"),
		ExtAddr4: netip.MustParseAddr("198.18.0.2"), ExtAddr6: netip.MustParseAddr("2001:db8:1::2"),
		VIP4: netip.MustParseAddr("198.18.0.10"), IntAddr4: netip.MustParseAddr("198.19.0.2"), IntAddr6: netip.MustParseAddr("2001:db8:2::2"),
		RouterAddr4: netip.MustParseAddr("198.19.0.1"), RouterAddr6: netip.MustParseAddr("2001:db8:2::1"),
		MemberNet4: netip.MustParsePrefix("198.19.1.0/24"), MemberNet6: netip.MustParsePrefix("2001:db8:3::/64"),
		Members4: []netip.Addr{netip.MustParseAddr("198.19.1.11"), netip.MustParseAddr("198.19.1.12")},
	}
	tr := &trial{env: e, lab: lab, dir: dir}
	for _, phase := range []string{phaseTCP, phaseUDP, phaseConn, phaseWeb, phaseResume, phaseIdle} {
		path, text, err := edgeproxyConfig(tr, phase, "/sys/fs/bpf/edgeproxy-bench-test")
		if err != nil {
			t.Fatal(err)
		}
		c, err := config.Load(path)
		if err != nil {
			t.Fatalf("%s: edgeproxy rejects the configuration: %v\n%s", phase, err, text)
		}
		want := map[string]int{phaseTCP: 1, phaseUDP: 2, phaseConn: 1, phaseWeb: 1, phaseResume: 1, phaseIdle: 1}[phase]
		if len(c.Virtuals) != want {
			t.Errorf("%s: %d virtuals, want %d", phase, len(c.Virtuals), want)
		}
		if noTickets := strings.Contains(text, "session_tickets: false"); isL7(phase) && noTickets != (phase != phaseResume) {
			t.Errorf("%s: session tickets off = %v, want on only for resumed handshakes:\n%s", phase, noTickets, text)
		}
		if phase == phaseIdle && (c.Virtuals[0].ConnLimits.MaxConnsPerSource < 2*e.idleConns || !strings.Contains(text, "profile: skype")) {
			t.Errorf("idle: want a skype site and room for %d long polls from one source:\n%s", e.idleConns, text)
		}
	}
}

// TestPrivilegedBenchQuick runs the whole harness in -quick mode and checks
// that the report has a row with numbers for every peer installed on the
// machine, a row for edgeproxy (numbers or the reason it is missing), and
// a readable chart.
func TestPrivilegedBenchQuick(t *testing.T) {
	testnet.RequireRoot(t, "iperf3", "wrk", "nft", "taskset", haproxyBin, nginxBin)
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	res, err := run(ctx, options{Out: out, Quick: true, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(res.MarkdownPath)
	if err != nil {
		t.Fatal(err)
	}
	report := string(md)
	streamModule := true
	if _, err := os.Stat(filepath.Join(nginxMods, "ngx_stream_module.so")); err != nil {
		streamModule = false
	}
	number := regexp.MustCompile(`^[0-9][0-9,]*(\.[0-9]+)?$`)
	check := func(title string, rows map[string]bool) {
		t.Helper()
		table := tableAfter(report, "### "+title+" —")
		if table == nil {
			t.Errorf("no table %q in the report:\n%s", title, report)
			return
		}
		for cand, wantNumber := range rows {
			cells, ok := table[cand]
			if !ok {
				t.Errorf("table %q has no row for %s", title, cand)
				continue
			}
			switch {
			case wantNumber && !number.MatchString(cells[0]):
				t.Errorf("table %q: %s has no number: %q", title, cand, strings.Join(cells, " | "))
			case cand == "edgeproxy fastl4" || cand == "edgeproxy https":
				if !number.MatchString(cells[0]) && !strings.Contains(cells[0], "not available") {
					t.Errorf("table %q: edgeproxy row neither measured nor explained: %q", title, cells[0])
				}
			}
		}
	}
	l4 := map[string]bool{"edgeproxy fastl4": false, "nftables DNAT+SNAT": true, nftTSOName: true, "haproxy tcp": true, "nginx stream": streamModule}
	for _, title := range []string{"L4 bulk throughput, 1 TCP stream", "L4 bulk throughput, 4 TCP streams", "L4 new connections per second (wrk, Connection: close)"} {
		check(title, l4)
	}
	// With TSO on, veth skips NAPI and the proxy's CPU cannot be told apart.
	l4[nftTSOName] = false
	for _, title := range []string{"Proxy CPU per GB, 1 TCP stream", "Proxy CPU per 1k new connections (wrk, Connection: close)"} {
		check(title, l4)
	}
	check("L4 small packets: UDP 64-byte payload received", map[string]bool{"edgeproxy fastl4": false, "nftables DNAT+SNAT": true, "nginx stream": streamModule})
	if tb := tableAfter(report, "### L4 small packets: UDP 64-byte payload received —"); tb != nil && !strings.Contains(tb["haproxy tcp"][0], "not supported") {
		t.Errorf("UDP table: haproxy row should say it does not proxy UDP: %q", tb["haproxy tcp"])
	}
	l7 := map[string]bool{"edgeproxy https": false, "haproxy tls": true, "nginx tls": true}
	for _, title := range []string{"L7 keep-alive HTTPS requests per second", "L7 keep-alive latency p99", "L7 full TLS handshakes per second",
		"Proxy CPU per 1k full TLS handshakes", "L7 resumed TLS handshakes per second", "Share of handshakes that resumed a session",
		"Proxy memory per idle HTTPS long-poll client (its client and upstream connections)"} {
		check(title, l7)
	}
	// Resumption is configured alike for every candidate: without it the
	// share is 0. Below 90 % the harness marks the repetition invalid, as
	// a loaded machine may cause (handshakes timing out and starting
	// over), so the test asks only that most resumed.
	if tb := tableAfter(report, "### Share of handshakes that resumed a session —"); tb != nil {
		for cand, cells := range tb {
			if v, err := strconv.ParseFloat(cells[0], 64); err == nil && v < 50 {
				t.Errorf("%s resumed %v%% of its handshakes in the resumed scenario", cand, v)
			}
		}
	}
	if !strings.Contains(report, "## The XDP program alone") || !strings.Contains(report, "Load: `ip netns exec $CLIENT_NS") {
		t.Error("report lacks the XDP section or the load commands")
	}
	img, err := os.ReadFile(res.ChartPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	if err != nil || cfg.Width < 400 || cfg.Height < 200 {
		t.Errorf("chart: %dx%d, %v", cfg.Width, cfg.Height, err)
	}
	// No namespace of the harness is left behind.
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, nsPrefix()+"-") {
				t.Errorf("namespace left behind: %s", l)
			}
		}
	}
}

// tableAfter parses the first Markdown table after the heading that starts
// with prefix: first cell → the other cells.
func tableAfter(md, prefix string) map[string][]string {
	i := strings.Index(md, "\n"+prefix)
	if i < 0 {
		return nil
	}
	rows := map[string][]string{}
	inTable := false
	for _, line := range strings.Split(md[i+1:], "\n")[1:] {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break
			}
			continue
		}
		inTable = true
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for j := range cells {
			cells[j] = strings.TrimSpace(cells[j])
		}
		if len(cells) < 2 || strings.HasPrefix(cells[0], "---") || cells[0] == "candidate" {
			continue
		}
		rows[cells[0]] = cells[1:]
	}
	return rows
}

// TestReadmeTable: README.md's performance table is the one generated from
// the committed report.
func TestReadmeTable(t *testing.T) {
	md, err := os.ReadFile("results/latest.md")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	table, err := readmeTable(string(md))
	if err != nil {
		t.Fatal(err)
	}
	want, err := readmeWithTable(string(readme), table)
	if err != nil {
		t.Fatal(err)
	}
	if want != string(readme) {
		t.Errorf("README.md's performance table differs from bench/results/latest.md: run `go run ./bench -readme`")
	}
}

// TestReadmeTableFlags: the generated table names the run's noise, a
// build from a modified tree and invalid repetitions.
func TestReadmeTableFlags(t *testing.T) {
	md := `# edgeproxy benchmark

- Run: 2026-12-03T12:00:00Z, took 7m1s. Mode: full — 5s per measurement, 3 interleaved repetitions (candidates A B C A B C …, each trial in a fresh lab); medians with min and max.
- edgeproxy: bin/edgeproxy built 2026-12-03T11:59:00Z, ` + "`edgeproxy abc1234-dirty`" + `, source tree abc1234-dirty.
- Other activity on the machine during the measurements (all CPU time minus this workload's): median 0.52 cores, at most 0.90, out of 2. **The machine was shared: expect noise**, and more.

## L4: pass-through

### L4 new connections per second (wrk, Connection: close) — conn/s, higher is better

| candidate | median | min | max | edgeproxy ÷ this |
|---|---:|---:|---:|---:|
| edgeproxy fastl4 | 7287 | 7000 | 7400 | — (**invalid** in 2 of 3 repetitions: the client side or the machine saturated first, see below) |
| nftables DNAT+SNAT | 6091 | 6000 | 6100 | 1.20× |
| haproxy tcp | 3353 | 3300 | 3400 | 2.17× (**invalid** in 1 of 3 repetitions: the client side or the machine saturated first, see below) |
`
	got, err := readmeTable(md)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"**Noisy run**: other activity on the machine median 0.52 cores", "**built from a modified tree**",
		"| L4 new connections per second (wrk, Connection: close) | conn/s | higher | 7287 (invalid in 2 of 3) | 1.20× | 2.17× (invalid in 1 of 3) |",
		"Without figures until the next full run: "} {
		if !strings.Contains(got, want) {
			t.Errorf("generated table lacks %q:\n%s", want, got)
		}
	}
	if _, err := readmeTable("# not a report\n"); err == nil {
		t.Error("a file that is not a report gave a table")
	}
}

// xdpOutput is go test's output for the XDP benchmarks, two repetitions,
// the 1 M working sets left out when quick.
func xdpOutput(quick bool) string {
	var b strings.Builder
	b.WriteString("goos: linux\npkg: github.com/edgeproxy/edgeproxy/l4\n")
	for _, fam := range []string{"ipv4", "ipv6"} {
		for i, n := range []int{1, 1024, 65536, 1048576} {
			if quick && n == 1048576 {
				continue
			}
			for rep := range 2 {
				fmt.Fprintf(&b, "BenchmarkProgramEstablished/%s/%d-2   \t 1000000\t %d.0 ns/packet\n", fam, n, 50+100*i+rep)
			}
		}
	}
	for _, l := range []string{"ProgramNewFlow-2 \t 20000\t 1000 ns/packet", "ProgramNewFlow-2 \t 20000\t 900.0 ns/packet",
		"ProgramPromote/log-off-2 \t 20000\t 1200 ns/packet", "ProgramPass-2 \t 20000\t 60.00 ns/packet", "ProgramPass-2 \t 20000\t 62.00 ns/packet",
		"ProgramPassSingle-2 \t 20000\t 130.0 ns/packet", "ProgramPassSingle-2 \t 20000\t 120.0 ns/packet"} {
		b.WriteString("Benchmark" + l + "\n")
	}
	return b.String() + "PASS\n"
}

// xdpReport is a report with one metric table and the XDP section r
// writes.
func xdpReport(r *results) string {
	var b strings.Builder
	r.writeXDP(func(format string, a ...any) { fmt.Fprintf(&b, format, a...) })
	return "# edgeproxy benchmark\n\n- Run: 2026-12-03T12:00:00Z, took 7m1s. Mode: full — 5s per measurement, 3 interleaved repetitions (…).\n\n" +
		"## L4: pass-through\n\n### L4 bulk throughput — Gbit/s, higher is better\n\n| candidate | median | min | max | edgeproxy ÷ this |\n|---|---:|---:|---:|---:|\n| edgeproxy fastl4 | 9 | 8 | 10 | — |\n\n" +
		b.String()
}

// TestXDPWorkingSets: the report's XDP section, and the README's table
// from it, give the established path for every working set and family
// and the new flow without the call's overhead; -quick says which
// working set it left out.
func TestXDPWorkingSets(t *testing.T) {
	for _, quick := range []bool{false, true} {
		r := &results{env: &env{o: options{Quick: quick}}, xdp: &xdpResult{cmd: "go test …", benches: xdpBenches(xdpOutput(quick), quick)}}
		md := xdpReport(r)
		p, err := parseReport(md)
		if err != nil {
			t.Fatal(err)
		}
		if m := missingXDP(p); len(m) > 0 {
			t.Errorf("quick %v: report lacks %v:\n%s", quick, m, md)
		}
		got, err := readmeTable(md)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{
			"| established flow, IPv4, 1 flow | ProgramEstablished/ipv4/1 (l4) | 50.5 | ns/packet | 0.75× |",
			"| established flow, IPv4, 1 k flows | ProgramEstablished/ipv4/1024 (l4) | 150.5 | ns/packet | 2.25× |",
			"| established flow, IPv6, 64 k flows | ProgramEstablished/ipv6/65536 (l4) | 250.5 | ns/packet | 3.74× |",
			// 1000 − (130 − 60) and 900 − (120 − 62)
			"| new flow, call overhead subtracted | ProgramNewFlow − (ProgramPassSingle − ProgramPass) (l4) | 886.0 | ns/packet | 13.22× |",
			"| establishing packet | ProgramPromote/log-off (l4) | 1200.0 |",
			"| pass, one call per packet | ProgramPassSingle (l4) | 125.0 |",
		}
		if quick {
			want = append(want, "| established flow, IPv6, 1 M flows | ProgramEstablished/ipv6/1048576 (l4) | not run (-quick) | ns/packet | — |")
		} else {
			want = append(want, "| established flow, IPv6, 1 M flows | ProgramEstablished/ipv6/1048576 (l4) | 350.5 | ns/packet | 5.23× |")
		}
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("quick %v: generated table lacks %q:\n%s", quick, w, got)
			}
		}
	}
	// A report from before the working sets: its rows are marked, and
	// the README names the figures it lacks.
	old := xdpReport(&results{env: &env{}, xdp: &xdpResult{cmd: "go test …", benches: xdpBenches(
		"pkg: github.com/edgeproxy/edgeproxy/l4\nBenchmarkProgramEstablished/ipv4-2 \t 1000\t 77.00 ns/packet\nBenchmarkProgramNewFlow-2 \t 1000\t 970.0 ns/packet\n", false)}})
	got, err := readmeTable(old)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"| established flow † | ProgramEstablished/ipv4 (l4) | 77.0 |", "| new flow | ProgramNewFlow (l4) | 970.0 |",
		"XDP established flow, IPv4, over working sets of 1, 1 k, 64 k, 1 M flows; XDP established flow, IPv6, over working sets of 1, 1 k, 64 k, 1 M flows; XDP new flow, call overhead subtracted."} {
		if !strings.Contains(got, w) {
			t.Errorf("old report: generated table lacks %q:\n%s", w, got)
		}
	}
}

// TestXDPQuickSkip: -quick's -skip pattern matches the 1 M working sets
// only (go test matches each level of a benchmark's name separately).
func TestXDPQuickSkip(t *testing.T) {
	pats := strings.Split(xdpQuickSkip, "/")
	for name, skip := range map[string]bool{
		"BenchmarkProgramEstablished/ipv4/1048576": true, "BenchmarkProgramEstablished/ipv6/1048576": true,
		"BenchmarkProgramEstablished/ipv4/65536": false, "BenchmarkProgramEstablished/ipv6/1": false,
		"BenchmarkProgramNewFlow": false, "BenchmarkProgramPromote/log-off": false,
	} {
		elems := strings.Split(name, "/")
		matched := len(elems) == len(pats)
		for i := 0; matched && i < len(pats); i++ {
			matched = regexp.MustCompile(pats[i]).MatchString(elems[i])
		}
		if matched != skip {
			t.Errorf("%s: skipped %v, want %v", name, matched, skip)
		}
	}
}

func TestParseNAPIPrio(t *testing.T) {
	a, err := parseNAPIPrio("50")
	if err != nil || a.Policy != unix.SCHED_FIFO || a.Priority != 50 {
		t.Errorf("parseNAPIPrio(50) = %+v, %v", a, err)
	}
	a, err = parseNAPIPrio("other")
	if err != nil || a.Policy != unix.SCHED_NORMAL || a.Priority != 0 {
		t.Errorf("parseNAPIPrio(other) = %+v, %v", a, err)
	}
	if n := proxyNAPINote(mustNAPIPrio(t, "50")); n != "" {
		t.Errorf("report note for the default = %q, want none", n)
	}
	if n := proxyNAPINote(mustNAPIPrio(t, "other")); !strings.Contains(n, "SCHED_OTHER") {
		t.Errorf("report note for other = %q, want SCHED_OTHER named", n)
	}
	for _, bad := range []string{"", "0", "100", "fifo", "-1"} {
		if _, err := parseNAPIPrio(bad); err == nil || !strings.Contains(err.Error(), "-napi-prio") {
			t.Errorf("parseNAPIPrio(%q) = %v, want an error naming -napi-prio", bad, err)
		}
	}
}

func mustNAPIPrio(t *testing.T, s string) unix.SchedAttr {
	t.Helper()
	a, err := parseNAPIPrio(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
