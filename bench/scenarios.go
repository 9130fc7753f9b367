package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Phases: each has its backend, its candidates and its scenarios.
const (
	phaseTCP  = "tcp"  // iperf3 TCP through L4 candidates
	phaseUDP  = "udp"  // iperf3 UDP small packets through L4 candidates
	phaseConn = "conn" // short TCP connections through L4 candidates
	phaseWeb  = "web"  // HTTPS through L7 candidates, no TLS resumption
	// phaseResume is HTTPS through L7 candidates that resume TLS sessions.
	phaseResume = "resume"
	phaseXDP    = "xdp" // the XDP program alone, BPF_PROG_TEST_RUN
)

var allPhases = []string{phaseTCP, phaseUDP, phaseConn, phaseWeb, phaseResume, phaseIdle, phaseXDP}

// isL7 says whether a phase measures the L7 candidates.
func isL7(phase string) bool { return phase == phaseWeb || phase == phaseResume || phase == phaseIdle }

// phase is a set of scenarios that share a backend.
type phase struct {
	name      string
	layer     string
	backend   func(t *trial) error
	probe     func(ctx context.Context, t *trial) error
	scenarios []*scenario
}

// scenario is one measurement of one candidate.
type scenario struct {
	id    string
	title string
	// cmd is the load command as printed in the report.
	cmd func(e *env) string
	// run drives the load and returns the scenario's own metrics, the
	// amount of work done (for CPU per unit) and the load generator's CPU.
	run func(ctx context.Context, t *trial) (outcome, error)
	// perUnit names the unit of work CPU is divided by ("GB", "1k connections").
	perUnit string
	// idle marks a scenario that holds connections instead of driving
	// load: no saturation check.
	idle bool
	// timeout bounds the scenario; 0: its duration plus 30 s.
	timeout time.Duration
}

// outcome is what one run of a scenario produced.
type outcome struct {
	metrics map[string]float64
	work    float64 // in perUnit
	loadCPU float64 // seconds
	note    string
}

// metricDef describes one reported number.
type metricDef struct {
	id           string
	scenario     string
	title        string
	unit         string
	higherBetter bool
	chart        string // label in the chart; "" to leave it out
	cunit        string // unit in the chart label
	prec         int
}

// benchVIP is the address the client measures through.
const benchVIP = "198.18.0.10"

// connPath is the conn phase's backend answer: one byte.
const connPath = "/c"

func (e *env) phases() []*phase {
	iperfBackend := func(t *trial) error {
		return t.startBackend(nil, []uint16{4443}, "iperf3", "-s", "-p", "4443")
	}
	return []*phase{
		{name: phaseTCP, layer: layerL4, backend: iperfBackend, probe: probeIperf, scenarios: []*scenario{e.bulk(1), e.bulk(4)}},
		{name: phaseUDP, layer: layerL4, backend: func(t *trial) error {
			return t.startBackend(nil, []uint16{4443}, "iperf3", "-s", "-p", "4443", "-B", t.lab.Members4[0].String())
		}, probe: probeIperf, scenarios: []*scenario{e.udp()}},
		{name: phaseConn, layer: layerL4, backend: func(t *trial) error { return t.startNginxBackend(phaseConn) }, probe: probeHTTP, scenarios: []*scenario{e.conn()}},
		{name: phaseWeb, layer: layerL7, backend: func(t *trial) error { return t.startNginxBackend(phaseWeb) }, probe: probeHTTPS, scenarios: []*scenario{e.keepAlive(), e.handshakes(false)}},
		{name: phaseResume, layer: layerL7, backend: func(t *trial) error { return t.startNginxBackend(phaseWeb) }, probe: probeHTTPS, scenarios: []*scenario{e.handshakes(true)}},
		{name: phaseIdle, layer: layerL7, backend: func(t *trial) error { return t.startHoldBackend() }, probe: probeHold, scenarios: []*scenario{e.idle()}},
	}
}

// secs is the measuring time in whole seconds, at least one.
func (e *env) secs() string {
	return strconv.Itoa(int(max(e.dur.Round(time.Second), time.Second) / time.Second))
}

// iperfArgs are the client's iperf3 arguments against the VIP.
func (e *env) iperfArgs(extra ...string) []string {
	return append([]string{"-c", benchVIP, "-p", "443", "-t", e.secs(), "-J"}, extra...)
}

// tasksetPrefix is the shown command's CPU pinning, "" for none.
func tasksetPrefix(cpus string) string {
	if cpus == "" {
		return ""
	}
	return "taskset -c " + cpus + " "
}

// bulk is iperf3 TCP throughput over streams streams.
func (e *env) bulk(streams int) *scenario {
	args := e.iperfArgs("-P", strconv.Itoa(streams))
	id := fmt.Sprintf("bulk%d", streams)
	return &scenario{
		id: id, perUnit: "GB",
		title: fmt.Sprintf("L4 bulk throughput, %d TCP stream%s", streams, plural(streams)),
		cmd: func(e *env) string {
			return "ip netns exec $CLIENT_NS " + tasksetPrefix(e.cpus.client) + "iperf3 " + joinArgs(args)
		},
		run: func(ctx context.Context, t *trial) (outcome, error) {
			r, err := runIn(ctx, t.lab.Client, e.cpus.client, nil, "iperf3", args...)
			if err != nil {
				return outcome{}, err
			}
			ip, err := parseIperf(r.stdout)
			if err != nil {
				return outcome{}, err
			}
			return outcome{
				metrics: map[string]float64{id + ".gbps": ip.bitsPerSecond / 1e9, id + ".retr": ip.retransmits},
				work:    ip.bytes / 1e9, loadCPU: r.cpu,
			}, nil
		},
	}
}

// udp is iperf3 UDP with 64-byte payloads: packets per second.
func (e *env) udp() *scenario {
	udpArgs := e.iperfArgs("-u", "-l", "64", "-b", "1G")
	return &scenario{
		id: "udp", perUnit: "1M packets",
		title: "L4 small packets, UDP 64-byte payload",
		cmd: func(e *env) string {
			return "ip netns exec $CLIENT_NS " + tasksetPrefix(e.cpus.client) + "iperf3 " + joinArgs(udpArgs)
		},
		run: func(ctx context.Context, t *trial) (outcome, error) {
			r, err := runIn(ctx, t.lab.Client, e.cpus.client, nil, "iperf3", udpArgs...)
			if err != nil {
				return outcome{}, err
			}
			ip, err := parseIperf(r.stdout)
			if err != nil {
				return outcome{}, err
			}
			recv := ip.packets - ip.lost
			return outcome{
				metrics: map[string]float64{"udp.kpps": recv / ip.seconds / 1e3, "udp.loss": ip.lostPercent},
				work:    recv / 1e6, loadCPU: r.cpu,
			}, nil
		},
	}
}

// conn is new TCP connections per second: wrk with `Connection: close`,
// so that every request is a new connection to a plain HTTP backend (a C
// generator: the Go one saturated its CPU before any proxy did).
func (e *env) conn() *scenario {
	url := "http://" + benchVIP + ":443" + connPath
	wrkArgs := []string{"-t1", "-c" + strconv.Itoa(e.connConc), "-d" + e.secs() + "s", "--timeout", "3s", "--latency",
		"-H", "Connection: close", url}
	return &scenario{
		id: "conn", perUnit: "1k connections",
		title: "L4 new connections per second",
		cmd: func(e *env) string {
			return "ip netns exec $CLIENT_NS " + tasksetPrefix(e.cpus.client) + "wrk " + joinArgs(wrkArgs) +
				"   # per connection: connect, one HTTP request and its 1-byte answer, close"
		},
		run: func(ctx context.Context, t *trial) (outcome, error) {
			r, err := runIn(ctx, t.lab.Client, e.cpus.client, nil, "wrk", wrkArgs...)
			if err != nil {
				return outcome{}, err
			}
			w, err := parseWrk(r.stdout)
			if err != nil {
				return outcome{}, err
			}
			note := ""
			if w.errors > 0 {
				note = fmt.Sprintf("%d socket errors or non-2xx answers", int64(w.errors))
			}
			ok := w.requests - w.errors
			return outcome{
				metrics: map[string]float64{"conn.rate": w.rps * ok / w.requests, "conn.errors": w.errors, "conn.p99": w.p99ms},
				work:    ok / 1e3, loadCPU: r.cpu, note: note,
			}, nil
		},
	}
}

// keepAlive is wrk's HTTPS requests over kept-alive connections.
func (e *env) keepAlive() *scenario {
	url := "https://" + benchHost + "/small.txt"
	wrkArgs := []string{"-t1", "-c" + strconv.Itoa(e.webConc), "-d" + e.secs() + "s", "--timeout", "3s", "--latency", url}
	return &scenario{
		id: "ka", perUnit: "1k requests",
		title: "L7 keep-alive HTTPS requests",
		cmd: func(e *env) string {
			return "ip netns exec $CLIENT_NS " + tasksetPrefix(e.cpus.client) + "wrk " + joinArgs(wrkArgs)
		},
		run: func(ctx context.Context, t *trial) (outcome, error) {
			r, err := runIn(ctx, t.lab.Client, e.cpus.client, nil, "wrk", wrkArgs...)
			if err != nil {
				return outcome{}, err
			}
			w, err := parseWrk(r.stdout)
			if err != nil {
				return outcome{}, err
			}
			note := ""
			if w.errors > 0 {
				note = fmt.Sprintf("%d errors or non-2xx answers", int64(w.errors))
			}
			return outcome{
				metrics: map[string]float64{"ka.rps": w.rps, "ka.p50": w.p50ms, "ka.p99": w.p99ms, "ka.errors": w.errors},
				work:    w.requests / 1e3, loadCPU: r.cpu, note: note,
			}, nil
		},
	}
}

// handshakes is new TLS connections per second, one request each, with
// the benchmark's own client: full handshakes, or (resume) handshakes
// resuming the session of an earlier connection.
func (e *env) handshakes(resume bool) *scenario {
	hsArgs := []string{"-addr", benchVIP + ":443", "-sni", benchHost, "-ca", e.certs.PublicCA, "-path", "/small.txt",
		"-c", strconv.Itoa(e.hsConc), "-d", e.dur.String(), "-n", "5000000", "-timeout", "3s"}
	id, title := "hs", "L7 full TLS handshakes (one request each, no resumption)"
	if resume {
		hsArgs = append(hsArgs, "-resume")
		id, title = "hsr", "L7 resumed TLS handshakes (one request each, session resumed)"
	}
	return &scenario{
		id: id, perUnit: "1k handshakes", title: title,
		cmd: func(e *env) string {
			return "ip netns exec $CLIENT_NS env " + roleEnv + "=" + roleTLS + " " + tasksetPrefix(e.cpus.client) + "BENCH " + joinArgs(hsArgs)
		},
		run: func(ctx context.Context, t *trial) (outcome, error) {
			r, err := runIn(ctx, t.lab.Client, e.cpus.client, []string{roleEnv + "=" + roleTLS}, e.self, hsArgs...)
			if err != nil {
				return outcome{}, err
			}
			lr, err := parseLoad(r.stdout)
			if err != nil {
				return outcome{}, err
			}
			if lr.TLS != "" {
				e.tlsSeen.Store(lr.TLS)
			}
			oc := outcome{
				metrics: map[string]float64{id + ".rate": float64(lr.OK) / lr.Seconds, id + ".errors": float64(lr.Errors),
					id + ".resumed": 100 * float64(lr.Resumed) / float64(lr.OK)},
				work: float64(lr.OK) / 1e3, loadCPU: r.cpu, note: loadNote(lr),
			}
			if why := resumeMismatch(resume, lr); why != "" {
				oc.note = strings.TrimPrefix(oc.note+"; "+why, "; ")
			}
			return oc, nil
		},
	}
}

// resumeMismatch says when a handshake scenario did not measure what it
// names: resumptions in the full scenario, or fewer than 90% resumed.
func resumeMismatch(resume bool, lr loadResult) string {
	share := float64(lr.Resumed) / float64(max(lr.OK, 1))
	switch {
	case !resume && lr.Resumed > 0:
		return fmt.Sprintf("invalid: %d of %d handshakes resumed a session", lr.Resumed, lr.OK)
	case resume && share < 0.9:
		return fmt.Sprintf("invalid: only %.0f%% of the handshakes resumed a session", 100*share)
	}
	return ""
}

// metricDefs lists the reported numbers in report order.
var metricDefs = []metricDef{
	{id: "bulk1.gbps", scenario: "bulk1", title: "L4 bulk throughput, 1 TCP stream", unit: "Gbit/s", higherBetter: true, chart: "bulk, 1 stream", cunit: "Gbit/s", prec: 2},
	{id: "bulk4.gbps", scenario: "bulk4", title: "L4 bulk throughput, 4 TCP streams", unit: "Gbit/s", higherBetter: true, chart: "bulk, 4 streams", cunit: "Gbit/s", prec: 2},
	{id: "bulk1.cpu", scenario: "bulk1", title: "Proxy CPU per GB, 1 TCP stream", unit: "CPU-s/GB", chart: "CPU per GB", cunit: "CPU-s/GB", prec: 3},
	{id: "bulk4.cpu", scenario: "bulk4", title: "Proxy CPU per GB, 4 TCP streams", unit: "CPU-s/GB", prec: 3},
	{id: "bulk1.retr", scenario: "bulk1", title: "TCP retransmissions, 1 stream", unit: "segments", prec: 0},
	{id: "udp.kpps", scenario: "udp", title: "L4 small packets: UDP 64-byte payload received", unit: "kpps", higherBetter: true, chart: "UDP 64 B pps", cunit: "kpps", prec: 1},
	{id: "udp.loss", scenario: "udp", title: "L4 small packets: UDP loss", unit: "%", prec: 1},
	{id: "udp.cpu", scenario: "udp", title: "Proxy CPU per million UDP packets", unit: "CPU-s/Mpkt", prec: 3},
	{id: "conn.rate", scenario: "conn", title: "L4 new connections per second (wrk, Connection: close)", unit: "conn/s", higherBetter: true, chart: "new conn/s", cunit: "conn/s", prec: 0},
	{id: "conn.cpu", scenario: "conn", title: "Proxy CPU per 1k new connections (wrk, Connection: close)", unit: "CPU-s/1k conn", chart: "CPU per 1k conn", cunit: "CPU-s", prec: 4},
	{id: "conn.p99", scenario: "conn", title: "L4 short connection p99 request time (wrk: from the request's first byte, connect not included)", unit: "ms", prec: 2},
	{id: "ka.rps", scenario: "ka", title: "L7 keep-alive HTTPS requests per second", unit: "req/s", higherBetter: true, chart: "HTTPS req/s", cunit: "req/s", prec: 0},
	{id: "ka.p50", scenario: "ka", title: "L7 keep-alive latency p50", unit: "ms", chart: "HTTPS p50", cunit: "ms", prec: 3},
	{id: "ka.p99", scenario: "ka", title: "L7 keep-alive latency p99", unit: "ms", chart: "HTTPS p99", cunit: "ms", prec: 3},
	{id: "ka.cpu", scenario: "ka", title: "Proxy CPU per 1k keep-alive requests", unit: "CPU-s/1k req", prec: 4},
	{id: "hs.rate", scenario: "hs", title: "L7 full TLS handshakes per second", unit: "handshakes/s", higherBetter: true, chart: "TLS full hs/s", cunit: "hs/s", prec: 0},
	{id: "hs.cpu", scenario: "hs", title: "Proxy CPU per 1k full TLS handshakes", unit: "CPU-s/1k hs", chart: "CPU per 1k full hs", cunit: "CPU-s", prec: 3},
	{id: "hsr.rate", scenario: "hsr", title: "L7 resumed TLS handshakes per second", unit: "handshakes/s", higherBetter: true, chart: "TLS resumed hs/s", cunit: "hs/s", prec: 0},
	{id: "hsr.cpu", scenario: "hsr", title: "Proxy CPU per 1k resumed TLS handshakes", unit: "CPU-s/1k hs", chart: "CPU per 1k resumed hs", cunit: "CPU-s", prec: 3},
	{id: "hsr.resumed", scenario: "hsr", title: "Share of handshakes that resumed a session", unit: "%", higherBetter: true, prec: 1},
	{id: "idle.kib", scenario: "idle", title: "Proxy memory per idle HTTPS long-poll client (its client and upstream connections)", unit: "KiB RSS", chart: "KiB per idle client", cunit: "KiB", prec: 1},
	{id: "idle.rss", scenario: "idle", title: "Proxy memory with the long polls held", unit: "MiB RSS", prec: 0},
	{id: "idle.held", scenario: "idle", title: "Long polls held (reached the backend)", unit: "connections", higherBetter: true, prec: 0},
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func loadNote(lr loadResult) string {
	if lr.Errors == 0 {
		return ""
	}
	s := fmt.Sprintf("%d errors", lr.Errors)
	if len(lr.Samples) > 0 {
		s += " (" + lr.Samples[0] + ")"
	}
	return s
}

func parseLoad(out string) (loadResult, error) {
	var lr loadResult
	if err := json.Unmarshal([]byte(out), &lr); err != nil {
		return lr, fmt.Errorf("parse load generator output: %w: %q", err, lastLines(out, 3))
	}
	if lr.Seconds <= 0 {
		return lr, fmt.Errorf("parse load generator output: no duration")
	}
	if lr.OK == 0 {
		return lr, fmt.Errorf("no successful operation: %s", loadNote(lr))
	}
	return lr, nil
}

// --- readiness probes: the path through the candidate works end to end ---

// probeIperf runs a minimal iperf3 test: a bare connection would leave
// the one-test-at-a-time server busy or erroring when the real test starts.
func probeIperf(ctx context.Context, t *trial) error {
	c, err := t.lab.Client.DialContext(ctx, "tcp", t.vip().String())
	if err != nil {
		return err
	}
	c.Close()
	// Let the server finish with the bare connection before a real test.
	time.Sleep(300 * time.Millisecond)
	_, err = runIn(ctx, t.lab.Client, "", nil, "iperf3", "-c", t.lab.VIP4.String(), "-p", "443", "-n", "64K", "-J")
	return err
}

// probeHTTP asks the plain HTTP backend of the conn phase through the VIP.
func probeHTTP(ctx context.Context, t *trial) error {
	c, err := t.lab.Client.DialContext(ctx, "tcp", t.vip().String())
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	req, _ := http.NewRequest(http.MethodGet, "http://"+benchVIP+connPath, nil)
	req.Close = true
	if err := req.Write(c); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s through the VIP: %s", connPath, resp.Status)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

func probeHTTPS(ctx context.Context, t *trial) error {
	pem, err := os.ReadFile(t.env.certs.PublicCA)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	raw, err := t.lab.Client.DialContext(ctx, "tcp", t.vip().String())
	if err != nil {
		return err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(2 * time.Second))
	c := tls.Client(raw, &tls.Config{ServerName: benchHost, RootCAs: pool, MinVersion: tls.VersionTLS12})
	req, _ := http.NewRequest(http.MethodGet, "https://"+benchHost+"/small.txt", nil)
	req.Close = true
	if err := req.Write(c); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /small.txt through the VIP: %s", resp.Status)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}
