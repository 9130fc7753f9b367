// Package examples holds the files operators copy: the configuration,
// the systemd unit, the Prometheus alerts and the Grafana dashboard. Its
// tests check them with the tools that read them.
package examples

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// promtool runs promtool in dir and fails the test with its output.
func promtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("promtool"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool missing: make deps installs the prometheus package")
		}
		t.Skip("promtool missing: make deps installs the prometheus package")
	}
	cmd := exec.Command("promtool", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestAlertRules: the rules load, and each alert fires on the recorded
// series it is written for and stays silent before.
func TestAlertRules(t *testing.T) {
	promtool(t, "prometheus", "check", "rules", "alerts.yml")
	promtool(t, "prometheus", "test", "rules", "alerts_test.yml")
}

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	Panels []struct {
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// DashboardQueries returns the PromQL of every panel of the dashboard
// at path, and its row titles.
func DashboardQueries(path string) (exprs, rows []string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read dashboard: %w", err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, nil, fmt.Errorf("decode dashboard %s: %w", path, err)
	}
	for _, p := range d.Panels {
		if p.Type == "row" {
			rows = append(rows, p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	return exprs, rows, nil
}

// TestDashboard: the dashboard is valid JSON with the sections an
// operator looks for, and every query parses (checked by promtool as a
// recording rule, with the dashboard's variables filled in).
func TestDashboard(t *testing.T) {
	exprs, rows, err := DashboardQueries(filepath.Join("grafana", "edgeproxy.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Virtuals", "Members", "Flows", "Errors", "Latency", "Certificates"} {
		if !strings.Contains(strings.Join(rows, "|"), want) {
			t.Errorf("dashboard has no %q row (rows: %v)", want, rows)
		}
	}
	fill := strings.NewReplacer("$instance", ".*", "$__rate_interval", "5m")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(fill.Replace(e))
		fmt.Fprintf(&rules, "      - record: dashboard:query%d\n        expr: %s\n", i, q)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.yml"), []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, dir, "check", "rules", "dashboard.yml")
}
