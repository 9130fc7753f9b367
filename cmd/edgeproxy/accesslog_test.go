package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// countingFile counts the writes that reach the access log file.
type countingFile struct {
	*os.File
	writes int
}

func (c *countingFile) Write(p []byte) (int, error) {
	c.writes++
	return c.File.Write(p)
}

// TestAccessLogBatchesWrites: a thousand requests' lines reach the access
// log file whole and in order, in a few writes rather than one each, and
// a line logged on a quiet proxy still reaches the file without waiting
// for more traffic or the shutdown.
func TestAccessLogBatchesWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cf := &countingFile{File: f}
	lb := newLineBuffer(cf, accessLogBuffer, time.Hour)
	log := slog.New(slog.NewJSONHandler(lb, nil))
	const n = 1000
	for i := range n {
		log.Info("request", "n", i, "path", "/ucwa/oauth/v1/applications")
	}
	if err := lb.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	if len(lines) != n {
		t.Fatalf("%d lines in the access log, want %d", len(lines), n)
	}
	for i, l := range lines {
		if !bytes.Contains(l, fmt.Appendf(nil, `"n":%d,`, i)) || !bytes.HasSuffix(l, []byte("}")) {
			t.Fatalf("line %d is %q: lines split or out of order", i, l)
		}
	}
	if cf.writes > n/20 {
		t.Errorf("%d writes for %d lines: the access log is not batched", cf.writes, n)
	}

	// A single line on an idle proxy is written by the periodic flush.
	quiet := newLineBuffer(cf, accessLogBuffer, 10*time.Millisecond)
	defer quiet.Close()
	slog.New(slog.NewJSONHandler(quiet, nil)).Info("request", "n", "last")
	for range 500 {
		if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(`"n":"last"`)) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Error("a line logged on an idle proxy never reached the file")
}
