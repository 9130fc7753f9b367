package demo

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// sample is one line of the Prometheus text format.
type sample struct {
	name   string
	labels string // as written, without braces
	value  float64
}

func (s sample) String() string {
	if s.labels == "" {
		return fmt.Sprintf("%s %g", s.name, s.value)
	}
	return fmt.Sprintf("%s{%s} %g", s.name, s.labels, s.value)
}

// parseMetrics reads the samples of a /metrics page.
func parseMetrics(text []byte) []sample {
	var out []sample
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		var s sample
		rest := line
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			s.name, s.labels, rest = line[:i], line[i+1:j], strings.TrimSpace(line[j+1:])
		} else {
			var ok bool
			s.name, rest, ok = strings.Cut(line, " ")
			if !ok {
				continue
			}
		}
		v, _, _ := strings.Cut(strings.TrimSpace(rest), " ") // drop a timestamp
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			continue
		}
		s.value = f
		out = append(out, s)
	}
	return out
}

// isXDPPackets says whether a sample counts packets of the XDP program.
func isXDPPackets(s sample) bool {
	return strings.HasPrefix(s.name, "edgeproxy_xdp_") && !strings.Contains(s.name, "bytes")
}

// isForward says whether an XDP packet counter counts forwarded packets.
func isForward(s sample) bool {
	t := strings.ToLower(s.name + " " + s.labels)
	return strings.Contains(t, "fwd") || strings.Contains(t, "forward") || strings.Contains(t, "redirect")
}

// forwarded sums the XDP program's forwarded packets and returns the
// non-zero XDP packet counters for the report, forwarding first.
func forwarded(samples []sample) (float64, []string) {
	var total float64
	var fwd, other []string
	for _, s := range samples {
		if !isXDPPackets(s) || s.value == 0 {
			continue
		}
		if isForward(s) {
			total += s.value
			fwd = append(fwd, s.String())
		} else {
			other = append(other, s.String())
		}
	}
	lines := append(fwd, other...)
	if len(lines) > 8 {
		lines = append(lines[:8], fmt.Sprintf("... and %d more", len(lines)-8))
	}
	return total, lines
}
