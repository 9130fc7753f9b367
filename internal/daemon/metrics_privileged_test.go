package daemon_test

import (
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgeproxy/edgeproxy/internal/labtest"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// scrape parses the daemon's /metrics.
func (d *deployment) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	return scrapeDaemon(t, d.Daemon)
}

// scrapeDaemon parses a daemon's /metrics.
func scrapeDaemon(t *testing.T, d *labtest.Daemon) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(metricsText(t, d)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value sums the samples of the family name whose labels include every
// name=value pair of labels (a histogram counts its observations); ok is
// false when no sample matches.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (v float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				found = found || (l.GetName() == labels[i] && l.GetValue() == labels[i+1])
			}
			if !found {
				continue next
			}
		}
		ok = true
		switch {
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Histogram != nil:
			v += float64(m.Histogram.GetSampleCount())
		}
	}
	return v, ok
}

// TestPrivilegedDaemonMetricsMove scrapes the daemon in the lab while a
// fastl4 connection is open, after L7 requests, a member failure and a
// rejected reload, and checks each series an operator alerts on moves.
func TestPrivilegedDaemonMetricsMove(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	testnet.RequireRoot(t, "promtool")
	check := exec.Command("promtool", "check", "metrics")
	check.Stdin = strings.NewReader(d.metrics(t))
	if out, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	fams := d.scrape(t)
	for _, want := range []struct {
		name string
		v    float64
	}{{"edgeproxy_config_last_reload_successful", 1}, {"edgeproxy_config_info", 1}, {"edgeproxy_scrape_errors_total", 0}} {
		if v, ok := value(fams, want.name); !ok || v != want.v {
			t.Errorf("at start %s = %v (present %v), want %v", want.name, v, ok, want.v)
		}
	}

	// A keep-alive client holds one fastl4 connection open while scraped.
	l4 := d.client(netip.AddrPortFrom(d.vip, 443), true)
	defer l4.CloseIdleConnections()
	l7 := d.client(netip.AddrPortFrom(d.lab.VIP4, 443), true)
	defer l7.CloseIdleConnections()
	for range 3 {
		for _, c := range []*http.Client{l4, l7} {
			if _, err := echo(c, "https://webext.example.com/echo"); err != nil {
				t.Fatal(err)
			}
		}
	}
	fams = d.scrape(t)
	for _, want := range []struct {
		name   string
		labels []string
	}{
		{"edgeproxy_virtual_flows", []string{"virtual", "sfb-web-l4"}},
		{"edgeproxy_member_flows", []string{"virtual", "sfb-web-l4"}},
		{"edgeproxy_snat_ports_in_use", nil},
		{"edgeproxy_snat_ports", nil},
		{"edgeproxy_member_http_requests_total", []string{"pool", "sfb-fe", "class", "2xx"}},
		{"edgeproxy_member_response_duration_seconds", []string{"pool", "sfb-fe"}},
		{"edgeproxy_http_bytes_total", []string{"virtual", "sfb-web", "direction", "out"}},
		{"edgeproxy_http_connections_total", []string{"virtual", "sfb-web"}},
	} {
		if v, _ := value(fams, want.name, want.labels...); v < 1 {
			t.Errorf("%s%v = %v after requests through both planes, want ≥ 1", want.name, want.labels, v)
		}
	}

	d.members[1].stop()
	d.waitMember(t, "sfb-fe", memberNames[1], "down")
	if v, _ := value(d.scrape(t), "edgeproxy_member_state_changes_total", "member", memberNames[1], "state", "down"); v != 1 {
		t.Errorf("member_state_changes_total{state=down} = %v after one failure, want 1", v)
	}

	good, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.cfgPath, append(good, "bogus_key: 1\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	d.signal(t, syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams = d.scrape(t)
		if v, _ := value(fams, "edgeproxy_config_reloads_total", "result", "failure"); v == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("config_reloads_total{result=failure} did not count the rejected reload within 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v, _ := value(fams, "edgeproxy_config_last_reload_successful"); v != 0 {
		t.Errorf("config_last_reload_successful = %v after a rejected reload, want 0", v)
	}
	if _, ok := value(fams, "edgeproxy_config_last_reload_success_timestamp_seconds"); !ok {
		t.Error("config_last_reload_success_timestamp_seconds missing after a rejected reload: it keeps the last success")
	}
	checkNamedMetrics(t, fams)
	checkStatusPage(t, d)
}

// checkStatusPage: /status and the page at / carry the reloads (the
// rejected one first), the certificates and the members' L7 requests.
func checkStatusPage(t *testing.T, d *deployment) {
	t.Helper()
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Reloads) < 2 || st.Reloads[0].Error == "" || st.Reloads[1].Error != "" {
		t.Errorf("status reloads %+v, want the rejected reload first, then the start", st.Reloads)
	}
	if len(st.Certificates) == 0 {
		t.Error("status lists no certificate")
	}
	var requests uint64
	for _, m := range st.Members {
		requests += m.Requests
	}
	if requests == 0 {
		t.Errorf("status members show no L7 request: %+v", st.Members)
	}
	resp, err := d.AdminClient().Get(d.AdminURL("/"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"<title>edgeproxy", "sfb-web-l4", "rejected", "bogus_key", "public.pem"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("status page lacks %q", want)
		}
	}
}

// namedMetrics returns the metric families the alert rules and the
// dashboard query (a histogram's _bucket, _sum and _count are its family).
func namedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	re := regexp.MustCompile(`edgeproxy_[a-z0-9_]+`)
	names := map[string]bool{}
	for _, f := range []string{"../../examples/prometheus/alerts.yml", "../../examples/grafana/edgeproxy.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasSuffix(f, ".yml") && !strings.Contains(line, "expr:") {
				continue
			}
			for _, n := range re.FindAllString(line, -1) {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					n = strings.TrimSuffix(n, suffix)
				}
				names[n] = true
			}
		}
	}
	return names
}

// checkNamedMetrics fails for every metric the rules or the dashboard
// name that the daemon's scrape lacks.
func checkNamedMetrics(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	names := namedMetrics(t)
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in the rules and the dashboard", len(names))
	}
	for n := range names {
		if fams[n] == nil {
			t.Errorf("%s is named by the alert rules or the dashboard but missing from the daemon's scrape", n)
		}
	}
}
