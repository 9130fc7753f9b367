package logs

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
)

// TestAccessLogRotatedUnderLoad: writers log while the file is renamed
// and reopened again and again, as logrotate and SIGUSR1 do; every line
// is in one of the files, whole, and the last file is the new one.
func TestAccessLogRotatedUnderLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l, err := New(&bytes.Buffer{}, "", "", config.Log{Access: path})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const writers, lines, rotations = 4, 2000, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range lines {
				l.Access.Info("request", "writer", w, "n", i, "path", "/ucwa/oauth/v1/applications")
			}
		})
	}
	for r := range rotations {
		if err := os.Rename(path, fmt.Sprintf("%s.%d", path, r)); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if err := l.Reopen(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	l.Access.Info("after rotation")
	seen := map[string]bool{}
	files, _ := filepath.Glob(path + "*")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var rec struct {
				Msg    string
				Writer int
				N      int
			}
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				t.Fatalf("%s: a line split or mixed by the rotation: %q", f, sc.Text())
			}
			seen[fmt.Sprintf("%s %d %d", rec.Msg, rec.Writer, rec.N)] = true
		}
	}
	if len(seen) != writers*lines+1 {
		t.Fatalf("%d distinct lines in %d files, want %d: lines lost in rotation", len(seen), len(files), writers*lines+1)
	}
	cur, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(cur), "after rotation") {
		t.Fatalf("the line after the last rotation is not in the new %s (%v)", path, err)
	}
}

// TestApplyOnReload: a reload changes the level and points the access log
// at a new file; the command line's level stays.
func TestApplyOnReload(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	l, err := New(&stderr, "", "", config.Log{Level: "info"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Logger.Debug("hidden")
	l.Access.Info("to stderr")
	path := filepath.Join(dir, "access.log")
	if err := l.Apply(config.Log{Level: "debug", Access: path}); err != nil {
		t.Fatal(err)
	}
	l.Logger.Debug("shown")
	l.Access.With("virtual", "sfb-web").Info("to file")
	b, _ := os.ReadFile(path)
	if strings.Contains(stderr.String(), "hidden") || !strings.Contains(stderr.String(), "shown") ||
		!strings.Contains(stderr.String(), "to stderr") || !strings.Contains(string(b), `"virtual":"sfb-web"`) {
		t.Fatalf("stderr:\n%s\naccess file:\n%s", stderr.String(), b)
	}
	if err := l.Apply(config.Log{Access: "off"}); err != nil {
		t.Fatal(err)
	}
	l.Access.Info("dropped")
	if strings.Contains(stderr.String(), "dropped") {
		t.Fatal("access log \"off\" still written")
	}

	pinned, err := New(&stderr, "", "warn", config.Log{Level: "info"})
	if err != nil {
		t.Fatal(err)
	}
	if err := pinned.Apply(config.Log{Level: "debug"}); err != nil {
		t.Fatal(err)
	}
	pinned.Logger.Info("below the command line's level")
	if strings.Contains(stderr.String(), "below the command line") {
		t.Fatal("a reload overrode -log-level")
	}
}

// TestJournalSeverity: under systemd every line carries its syslog
// severity for journald.
func TestJournalSeverity(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "8:12345")
	var stderr bytes.Buffer
	l, err := New(&stderr, "json", "debug", config.Log{})
	if err != nil {
		t.Fatal(err)
	}
	l.Logger.Error("e")
	l.Logger.With("pool", "sfb-fe").Warn("w")
	l.Logger.Info("i")
	l.Access.Info("request")
	l.Logger.Debug("d")
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		got = append(got, line[:3])
	}
	if strings.Join(got, "") != "<3><4><6><6><7>" {
		t.Fatalf("prefixes %v, want <3><4><6><6><7>:\n%s", got, stderr.String())
	}
}

// TestFastL4LogFileReopened: the connection log goes to its own file,
// apart from the access log, follows a reload to a new file and is
// reopened with the access log after rotation.
func TestFastL4LogFileReopened(t *testing.T) {
	dir := t.TempDir()
	access, conns := filepath.Join(dir, "access.log"), filepath.Join(dir, "fastl4.log")
	var stderr bytes.Buffer
	l, err := New(&stderr, "", "", config.Log{Access: access})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.FastL4.Info("open", "virtual", "before")
	if err := l.Apply(config.Log{Access: access, FastL4: config.FastL4Log{Path: conns}}); err != nil {
		t.Fatal(err)
	}
	l.FastL4.Info("open", "virtual", "sfb-web-l4")
	if err := os.Rename(conns, conns+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.FastL4.Info("close", "virtual", "sfb-web-l4")
	old, _ := os.ReadFile(conns + ".1")
	cur, _ := os.ReadFile(conns)
	acc, _ := os.ReadFile(access)
	if !strings.Contains(stderr.String(), `virtual=before`) || !strings.Contains(string(old), `"msg":"open","virtual":"sfb-web-l4"`) ||
		!strings.Contains(string(cur), `"msg":"close"`) || strings.Contains(string(cur), `"open"`) || len(acc) != 0 {
		t.Fatalf("stderr:\n%s\nrotated:\n%s\ncurrent:\n%s\naccess:\n%s", stderr.String(), old, cur, acc)
	}
}

// TestAccessJSONLineWriter: only an access log going to a file takes
// lines its caller encoded (as JSON, which the file's handler writes);
// stderr (text), off, and a logger with attributes added do not, and a
// reload that moves the log changes the answer.
func TestAccessJSONLineWriter(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l, err := New(&bytes.Buffer{}, "", "", config.Log{Access: path})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	lw := func(h slog.Handler) io.Writer {
		x, ok := h.(interface{ JSONLineWriter() io.Writer })
		if !ok {
			t.Fatalf("%T does not tell its line writer", h)
		}
		return x.JSONLineWriter()
	}
	w := lw(l.Access.Handler())
	if w == nil {
		t.Fatal("an access log file takes no encoded lines")
	}
	w.Write([]byte("{\"msg\":\"direct\"}\n"))
	if b, _ := os.ReadFile(path); string(b) != "{\"msg\":\"direct\"}\n" {
		t.Fatalf("file holds %q", b)
	}
	if lw(l.Access.With("a", 1).Handler()) != nil {
		t.Error("a logger with added attributes takes encoded lines (they would lose the attributes)")
	}
	for _, dest := range []string{"stderr", "off", ""} {
		if err := l.Apply(config.Log{Access: dest}); err != nil {
			t.Fatal(err)
		}
		if lw(l.Access.Handler()) != nil {
			t.Errorf("access log %q takes encoded JSON lines", dest)
		}
	}
}
