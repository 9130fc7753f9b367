package metric

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestScrapeErrorsCountedAndLoggedOnce: every failed read counts; the log
// says it once while the read keeps failing, and again after a success.
func TestScrapeErrorsCountedAndLoggedOnce(t *testing.T) {
	var log bytes.Buffer
	e := NewScrapeErrors("fastpath", slog.New(slog.NewTextHandler(&log, nil)))
	boom := errors.New("map gone")
	e.Report("read the flow table", boom)
	e.Report("read the flow table", boom)
	e.Report("read the packet counters", nil)
	e.Report("read the flow table", boom)
	if got := strings.Count(log.String(), "read the flow table failed"); got != 1 {
		t.Fatalf("logged %d times for one failing source, want once:\n%s", got, log.String())
	}
	e.Report("read the flow table", nil)
	e.Report("read the flow table", boom)
	if got := strings.Count(log.String(), "map gone"); got != 2 {
		t.Fatalf("a failure after a success logged %d times in all, want 2:\n%s", got, log.String())
	}
	want := "# HELP edgeproxy_scrape_errors_total Errors met reading a collector's source at scrape time; the metrics of that source are missing from the scrape.\n# TYPE edgeproxy_scrape_errors_total counter\nedgeproxy_scrape_errors_total{collector=\"fastpath\"} 4\n"
	if err := testutil.CollectAndCompare(e, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}
