package main

// The README's performance table is generated from the committed report
// (bench/results/latest.md), so that the two cannot disagree:
// `go run ./bench -readme` rewrites it, TestReadmeTable compares them.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// Markers around the generated part of README.md.
const (
	readmeBegin = "<!-- generated from bench/results/latest.md by `go run ./bench -readme`: edit the report's harness, not this table -->"
	readmeEnd   = "<!-- end of the generated table -->"
)

// reportRow is one candidate's row in one metric table of the report.
type reportRow struct{ cand, median, ratio string }

// reportMetric is one metric table of the report.
type reportMetric struct {
	layer, title, unit, better string
	rows                       []reportRow
}

// parsedReport is what the README takes from the report.
type parsedReport struct {
	run, edgeproxy, activity string
	noisy, quick             bool
	metrics                  []reportMetric
	xdp                      [][]string // path, benchmark, median, unit, ÷ budget
}

var (
	reportHeading = regexp.MustCompile(`^### (.+) — (.+), (higher|lower) is better$`)
	reportInvalid = regexp.MustCompile(`\(\*\*invalid\*\* in ([0-9]+) of ([0-9]+) repetitions[^)]*\)`)
	reportRun     = regexp.MustCompile(`^- Run: (\S+), took [^.]+\. Mode: (\w+) — (.+?) \(`)
	reportOther   = regexp.MustCompile(`median ([0-9.]+) cores, at most ([0-9.]+), out of ([0-9]+)`)
)

// parseReport reads the parts of latest.md the README shows.
func parseReport(md string) (parsedReport, error) {
	var p parsedReport
	layer, section := "", ""
	var cur *reportMetric
	for line := range strings.SplitSeq(md, "\n") {
		switch {
		case strings.HasPrefix(line, "- Run: "):
			m := reportRun.FindStringSubmatch(line)
			if m == nil {
				return p, fmt.Errorf("parse report: run line %q: want \"- Run: TIME, took D. Mode: MODE — … (\"", line)
			}
			p.run = fmt.Sprintf("run of %s, %s mode (%s)", m[1], m[2], m[3])
			p.quick = m[2] == "quick"
		case strings.HasPrefix(line, "- edgeproxy: "):
			p.edgeproxy = strings.TrimSuffix(strings.TrimPrefix(line, "- edgeproxy: "), ".")
		case strings.HasPrefix(line, "- Other activity"):
			if m := reportOther.FindStringSubmatch(line); m != nil {
				p.activity = fmt.Sprintf("other activity on the machine median %s cores, at most %s, of %s", m[1], m[2], m[3])
			}
			p.noisy = strings.Contains(line, "expect noise")
		case strings.HasPrefix(line, "## "):
			section, cur = line, nil
			if strings.HasPrefix(line, "## L4") || strings.HasPrefix(line, "## L7") {
				layer = line[3:5]
			} else {
				layer = ""
			}
		case strings.HasPrefix(line, "### ") && layer != "":
			m := reportHeading.FindStringSubmatch(line)
			if m == nil {
				return p, fmt.Errorf("parse report: heading %q: want \"### title — unit, higher|lower is better\"", line)
			}
			p.metrics = append(p.metrics, reportMetric{layer: layer, title: m[1], unit: m[2], better: m[3]})
			cur = &p.metrics[len(p.metrics)-1]
		case strings.HasPrefix(line, "| ") && !strings.HasPrefix(line, "|---"):
			cells := tableCells(line)
			switch {
			case cur != nil && len(cells) == 5 && cells[0] != "candidate":
				cur.rows = append(cur.rows, reportRow{cand: cells[0], median: cells[1], ratio: cells[4]})
			case strings.HasPrefix(section, "## The XDP") && len(cells) == 7 && cells[0] != "path":
				p.xdp = append(p.xdp, []string{cells[0], cells[1], cells[2], cells[5], cells[6]})
			}
		}
	}
	if p.run == "" || len(p.metrics) == 0 {
		return p, fmt.Errorf("parse report: no run line or no metric table: is it a report of this harness?")
	}
	return p, nil
}

func tableCells(line string) []string {
	cells := strings.Split(strings.Trim(line, "|"), "|")
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	return cells
}

// readmeTable renders the README's generated part from a report.
func readmeTable(md string) (string, error) {
	p, err := parseReport(md)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("From [`bench/results/latest.md`](bench/results/latest.md), %s; edgeproxy measured: %s", p.run, p.edgeproxy)
	if strings.Contains(p.edgeproxy, "-dirty") {
		w(" (**built from a modified tree**: the commit does not name exactly what was measured)")
	}
	w(".")
	switch {
	case p.quick:
		w(" **Quick run**: its numbers only show that the harness works.")
	case p.noisy:
		w(" **Noisy run**: %s; ratios may move by more than the noise between repetitions.", p.activity)
	case p.activity != "":
		w(" Quiet run: %s.", p.activity)
	}
	w("\n\n")
	if missing := missingScenarios(p); len(missing) > 0 {
		w("This report predates the harness's current scenarios. Without figures until the next full run: %s. Rows marked † were measured by a definition the harness no longer uses (see the report).\n\n", strings.Join(missing, "; "))
	}
	w("Each ratio is edgeproxy's median ÷ the peer's, to be read with the row's direction; every scenario is listed, the ones edgeproxy loses included. A ratio marked invalid comes from repetitions where the load generator or the machine, not the proxy, set the pace.\n\n")
	for _, layer := range []string{layerL4, layerL7} {
		writeLayerTable(w, p, layer)
	}
	if len(p.xdp) > 0 {
		w("The XDP program alone (`BPF_PROG_TEST_RUN`, one CPU; the established path over working sets of flows, one packet per flow in turn), against the 67 ns per packet of 10 GbE at 64-byte frames:\n\n")
		w("| path | benchmark | median | unit | ÷ budget |\n|---|---|---:|---|---:|\n")
		for _, r := range p.xdp {
			if !xdpCurrentPath(r[0]) {
				r = slices.Concat([]string{r[0] + " †"}, r[1:])
			}
			w("| %s |\n", strings.Join(r, " | "))
		}
		w("\n")
	}
	return b.String(), nil
}

// writeLayerTable writes one layer's rows: edgeproxy's median and its
// ratio to each peer.
func writeLayerTable(w func(string, ...any), p parsedReport, layer string) {
	var cands []string
	for _, m := range p.metrics {
		for _, r := range m.rows {
			if m.layer == layer && !slices.Contains(cands, r.cand) {
				cands = append(cands, r.cand)
			}
		}
	}
	if len(cands) == 0 {
		return
	}
	w("| %s scenario | unit | better | %s |", layer, cands[0])
	for _, c := range cands[1:] {
		w(" ÷ %s |", c)
	}
	w("\n|---|---|---|---:|%s\n", strings.Repeat("---:|", len(cands)-1))
	for _, m := range p.metrics {
		if m.layer != layer {
			continue
		}
		byCand := map[string]reportRow{}
		for _, r := range m.rows {
			byCand[r.cand] = r
		}
		title := m.title
		if !slices.ContainsFunc(metricDefs, func(d metricDef) bool { return d.title == m.title }) {
			title += " †"
		}
		w("| %s | %s | %s | %s |", title, m.unit, m.better, readmeCell(byCand[cands[0]]))
		for _, c := range cands[1:] {
			w(" %s |", readmeRatio(byCand[c].ratio))
		}
		w("\n")
	}
	w("\n")
}

// readmeCell is a median with its invalid flag, or "not measured".
func readmeCell(r reportRow) string {
	if r.median == "" || !strings.ContainsAny(r.median[:1], "0123456789") {
		return "not measured"
	}
	if m := reportInvalid.FindStringSubmatch(r.ratio); m != nil {
		return r.median + fmt.Sprintf(" (invalid in %s of %s)", m[1], m[2])
	}
	return r.median
}

// readmeRatio shortens the report's ratio cell, keeping an invalid flag.
func readmeRatio(s string) string {
	r, _, _ := strings.Cut(s, " ")
	if r == "" || r == "—" {
		return "—"
	}
	if m := reportInvalid.FindStringSubmatch(s); m != nil {
		r += fmt.Sprintf(" (invalid in %s of %s)", m[1], m[2])
	}
	return r
}

// missingScenarios lists the harness's metric titles the report lacks.
func missingScenarios(p parsedReport) []string {
	var out []string
	for _, d := range metricDefs {
		if !slices.ContainsFunc(p.metrics, func(m reportMetric) bool { return m.title == d.title }) {
			out = append(out, d.title)
		}
	}
	return append(out, missingXDP(p)...)
}

// missingXDP names the XDP figures the report lacks, the working sets of
// each family in one item.
func missingXDP(p parsedReport) []string {
	if len(p.xdp) == 0 {
		return nil // the report has no XDP section: not run
	}
	has := func(path string) bool {
		return slices.ContainsFunc(p.xdp, func(r []string) bool { return r[0] == path })
	}
	var out []string
	for _, fam := range xdpFamilies {
		var sets []string
		for _, n := range xdpWorkingSets {
			path := xdpPath(fmt.Sprintf("ProgramEstablished/%s/%d", fam, n))
			if !has(path) {
				sets = append(sets, strings.TrimSuffix(strings.TrimSuffix(flowsLabel(n), " flows"), " flow"))
			}
		}
		if len(sets) > 0 {
			out = append(out, fmt.Sprintf("XDP established flow, IPv%s, over working sets of %s flows", fam[3:], strings.Join(sets, ", ")))
		}
	}
	if !has(xdpNewFlowNet) {
		out = append(out, "XDP "+xdpNewFlowNet)
	}
	return out
}

// readmeWithTable returns readme with its generated part replaced.
func readmeWithTable(readme, table string) (string, error) {
	i := strings.Index(readme, readmeBegin)
	j := strings.Index(readme, readmeEnd)
	if i < 0 || j < i {
		return "", fmt.Errorf("update README: no generated part: put the lines %q and %q where the table goes", readmeBegin, readmeEnd)
	}
	return readme[:i+len(readmeBegin)] + "\n\n" + table + readme[j:], nil
}

// writeReadme regenerates README.md's table from the report in dir.
func writeReadme(root, dir string) error {
	md, err := os.ReadFile(filepath.Join(dir, "latest.md"))
	if err != nil {
		return fmt.Errorf("read report: %w", err)
	}
	table, err := readmeTable(string(md))
	if err != nil {
		return err
	}
	path := filepath.Join(root, "README.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read README: %w", err)
	}
	out, err := readmeWithTable(string(readme), table)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		return fmt.Errorf("write README: %w", err)
	}
	return nil
}
