package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// iperfResult is the part of `iperf3 -J` the harness reads.
type iperfResult struct {
	bitsPerSecond, bytes, retransmits float64
	packets, lost, lostPercent        float64
	seconds                           float64
}

func parseIperf(out string) (iperfResult, error) {
	var j struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
				Retransmits   float64 `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				Seconds       float64 `json:"seconds"`
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			// UDP tests: the sender's packet count with the receiver's
			// loss figures.
			Sum *struct {
				Seconds     float64 `json:"seconds"`
				Packets     float64 `json:"packets"`
				LostPackets float64 `json:"lost_packets"`
				LostPercent float64 `json:"lost_percent"`
			} `json:"sum"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		return iperfResult{}, fmt.Errorf("parse iperf3 output: %w", err)
	}
	if j.Error != "" {
		return iperfResult{}, fmt.Errorf("iperf3: %s", j.Error)
	}
	r := iperfResult{
		bitsPerSecond: j.End.SumReceived.BitsPerSecond,
		bytes:         j.End.SumReceived.Bytes,
		retransmits:   j.End.SumSent.Retransmits,
		seconds:       j.End.SumReceived.Seconds,
	}
	if s := j.End.Sum; s != nil && s.Packets > 0 {
		r.packets, r.lost, r.lostPercent, r.seconds = s.Packets, s.LostPackets, s.LostPercent, s.Seconds
		if r.seconds <= 0 {
			return r, fmt.Errorf("parse iperf3 output: no UDP duration")
		}
		return r, nil
	}
	if r.bytes <= 0 || r.bitsPerSecond <= 0 {
		return r, fmt.Errorf("parse iperf3 output: nothing received")
	}
	return r, nil
}

// wrkResult is what the harness reads from `wrk --latency`.
type wrkResult struct {
	rps, requests, p50ms, p99ms, errors float64
}

var (
	wrkRPS      = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkRequests = regexp.MustCompile(`(?m)^\s*([0-9]+) requests in`)
	wrkPct      = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.0+)?%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	wrkSock     = regexp.MustCompile(`Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: ([0-9]+)`)
)

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRPS.FindStringSubmatch(out)
	n := wrkRequests.FindStringSubmatch(out)
	if m == nil || n == nil {
		return r, fmt.Errorf("parse wrk output: no Requests/sec line: %q", lastLines(out, 4))
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	r.requests, _ = strconv.ParseFloat(n[1], 64)
	for _, p := range wrkPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		switch p[3] {
		case "us":
			v /= 1e3
		case "s":
			v *= 1e3
		case "m":
			v *= 60e3
		}
		if p[1] == "50" {
			r.p50ms = v
		} else {
			r.p99ms = v
		}
	}
	if s := wrkSock.FindStringSubmatch(out); s != nil {
		for _, x := range s[1:] {
			v, _ := strconv.ParseFloat(x, 64)
			r.errors += v
		}
	}
	if s := wrkNon2xx.FindStringSubmatch(out); s != nil {
		v, _ := strconv.ParseFloat(s[1], 64)
		r.errors += v
	}
	if r.requests == 0 || r.requests <= r.errors {
		return r, fmt.Errorf("wrk: no successful request (%d errors)", int64(r.errors))
	}
	return r, nil
}

// goBench is one line of `go test -bench` output.
type goBench struct {
	pkg     string             // from the preceding "pkg:" line
	name    string             // without the Benchmark prefix and -N suffix
	metrics map[string]float64 // unit → value ("ns/op", "ns/packet", ...)
}

var (
	goBenchLine = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?\s+(\d+)\s+([0-9.]+ \S+.*)$`)
	goBenchName = regexp.MustCompile(`^Benchmark(\S+?)(?:-\d+)?(?:\s|$)`)
	goBenchTail = regexp.MustCompile(`^\s*(\d+)\s+([0-9.]+ \S+.*)$`)
)

// parseGoBench reads `go test -bench` output. A benchmark's name and its
// numbers can be split by log lines the benchmark printed in between.
func parseGoBench(out string) []goBench {
	var res []goBench
	pending, pkg := "", ""
	for line := range strings.SplitSeq(out, "\n") {
		line = strings.TrimRight(line, " \t\r")
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		name, rest := "", ""
		if m := goBenchLine.FindStringSubmatch(line); m != nil {
			name, rest = m[1], m[3]
		} else if m := goBenchName.FindStringSubmatch(line); m != nil {
			pending = m[1]
			continue
		} else if m := goBenchTail.FindStringSubmatch(line); m != nil && pending != "" {
			name, rest = pending, m[2]
		} else {
			continue
		}
		pending = ""
		f := strings.Fields(rest)
		b := goBench{pkg: pkg, name: name, metrics: map[string]float64{}}
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			b.metrics[f[i+1]] = v
		}
		res = append(res, b)
	}
	return res
}

// joinArgs quotes arguments for display in a shell.
func joinArgs(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$;&|<>()*?[]{}\\") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}
