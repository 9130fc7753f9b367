package l7

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	e := newEnv(t, envOptions{users: testUsers})
	c := e.dialTLS("webext.example.com")
	c.do(get("webext.example.com", "/whoami"))
	c.do(get("webext.example.com", "/cscp"))
	e.dialTLS("").do(get("webext.example.com", "/whoami"))

	for _, col := range e.proxy.metrics.collectors() {
		problems, err := testutil.CollectAndLint(col)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("lint %s: %s", p.Metric, p.Text)
		}
	}
	if n, err := testutil.GatherAndCount(e.reg, "edgeproxy_certificate_expiry_seconds"); err != nil || n != 3 {
		t.Fatalf("certificate expiry series: %d %v, want 3", n, err)
	}
	if v := testutil.ToFloat64(e.proxy.metrics.requests.WithLabelValues("sfb-web", "webext.example.com", "403")); v != 1 {
		t.Fatalf("403 count %v", v)
	}
	if v := testutil.ToFloat64(e.proxy.metrics.active.WithLabelValues("sfb-web")); v != 2 {
		t.Fatalf("active connections %v, want 2", v)
	}
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "edgeproxy_http_request_duration_seconds" {
			continue
		}
		b := mf.GetMetric()[0].GetHistogram().GetBucket()
		if last := b[len(b)-1].GetUpperBound(); last <= 1800 {
			t.Fatalf("largest duration bucket %v, want past 1800 s", last)
		}
		return
	}
	t.Fatalf("no duration histogram among %d families", len(mfs))
}

// Stats counts each virtual's requests, its 5xx answers and its open
// client connections.
func TestStats(t *testing.T) {
	e := newEnv(t, envOptions{members: 1, cfg: func(c *testConfig) {
		c.Pools["owas"] = []Member{{Name: deadAddr.String(), Addr: deadAddr}}
	}})
	if got := e.proxy.Stats()["sfb-web"]; got != (VirtualStats{}) {
		t.Fatalf("before any request: %+v", got)
	}
	c := e.dialTLS("webext.example.com")
	c.do(get("webext.example.com", "/whoami"))
	c.do(get("webext.example.com", "/cscp"))
	if res, _ := e.dialTLS(owasHost).do(get(owasHost, "/hosting/discovery")); res.StatusCode < 500 {
		t.Fatalf("dead member answered %d, want a 5xx", res.StatusCode)
	}
	got := e.proxy.Stats()["sfb-web"]
	if got.Requests != 3 || got.Errors != 1 || got.Connections != 2 {
		t.Fatalf("stats %+v, want 3 requests, 1 error, 2 connections", got)
	}
	if _, ok := e.proxy.Stats()["sfb-web-http"]; ok {
		t.Fatal("a virtual without traffic has counters")
	}
}
