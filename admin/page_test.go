package admin

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// pageStatus is a daemon's status with two members of a pool whose name
// carries markup; down takes the second member down;
// served counts the pages built.
func pageStatus(down *atomic.Bool, served *atomic.Int64) func(context.Context) (*Status, error) {
	started := time.Now().Add(-time.Hour)
	return func(context.Context) (*Status, error) {
		served.Add(1)
		now := time.Now()
		const pool = `sfb-fe<script>alert("x")</script>`
		st := &Status{
			Version: "1.2.3", Started: started, Time: now, Ready: true,
			Config: "/etc/edgeproxy/edgeproxy.yaml", Loaded: started,
			Virtuals: []Virtual{
				{Name: "sfb-web", Mode: "https", Listen: "198.18.0.10:443", Pools: []string{pool}, MembersUp: 2, Members: 2, Connections: 4, Requests: 1200, Errors: 3},
				{Name: "sfb-web-l4", Mode: "fastl4", Listen: "198.18.0.20:443", Pools: []string{pool}, Port: 4443, MembersUp: 2, Members: 2, Flows: 17},
			},
			Members: []Member{
				{Pool: pool, Member: "fe01.corp.example.com", Address: "198.19.1.11", State: "up", Monitor: "tls:4443", LastChange: started, Checks: 7200, Flows: 9, Requests: 600},
				{Pool: pool, Member: "fe02.corp.example.com", Address: "198.19.1.12", State: "up", Monitor: "tls:4443", LastChange: started, Checks: 7200, Flows: 8, Requests: 600, Errors: 3},
			},
			FastPath:     &FastPath{Interfaces: []string{"ext0 (native)", "int0 (native)"}, Flows: 17, MaxFlows: 100000},
			Reloads:      []Reload{{Time: now.Add(-10 * time.Minute), Hash: "5c1e0d2a9b7f3e41", Error: `reload rejected: edgeproxy.yaml:59:1: unknown key "bogus_key"`}, {Time: started, Hash: "9f2b64c01d7a3e55"}},
			Certificates: []Certificate{{File: "/etc/edgeproxy/public.pem", NotAfter: now.Add(10 * 24 * time.Hour)}, {File: "/etc/edgeproxy/default.pem", NotAfter: now.Add(300 * 24 * time.Hour)}},
		}
		if down.Load() {
			m := &st.Members[1]
			m.State, m.LastChange = "down", now
			m.LastError, m.LastErrorTime = "connect to 198.19.1.12:4443: connection refused", now
			st.Virtuals[0].MembersUp, st.Virtuals[1].MembersUp = 1, 1
		}
		return st, nil
	}
}

// browser starts headless Chromium and collects what its console and
// log report, and any dialog a script opens.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium missing: make deps installs it")
		}
		t.Skip("chromium missing: make deps installs it")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1400, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	ctx, cancel = context.WithTimeout(ctx, 180*time.Second)
	t.Cleanup(cancel)
	var mu sync.Mutex
	var problems []string
	err = chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			problems = append(problems, "console."+string(ev.Type))
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+ev.ExceptionDetails.Text)
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError || ev.Entry.Level == log.EntryLevelWarning {
				problems = append(problems, "log: "+ev.Entry.Text)
			}
		case *page.EventJavascriptDialogOpening:
			problems = append(problems, "dialog: "+ev.Message)
			go chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), problems...)
	}
}

// TestStatusPage loads the status page in headless Chromium: no console
// error, a member going down shown at the next refresh, a pool name with
// markup shown as text and never run; the screenshot is kept as an
// artifact.
func TestStatusPage(t *testing.T) {
	ctx, problems := browser(t)
	var down atomic.Bool
	var served atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(Options{Listener: ln, Status: pageStatus(&down, &served)})
	go s.Serve(context.Background())
	t.Cleanup(func() { s.Close() })
	url := "http://" + ln.Addr().String() + "/?refresh=1"

	state := chromedp.CSS(`tr[data-member="fe02.corp.example.com"] td.state`)
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("load the status page: %v", err)
	}
	before, err := chromedp.Run(ctx, chromedp.Text(state))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#members tr[data-member] td`)))
	if err != nil {
		t.Fatal(err)
	}
	if before != "up" {
		t.Fatalf("fe02 shown %q before it went down", before)
	}
	if !strings.Contains(pool, "<script>") {
		t.Errorf("pool name shown as %q: its markup must appear as text", pool)
	}
	down.Store(true)
	// The page the browser asks for at its next refresh shows the change:
	// by the time it asks for the one after, it must have shown it.
	next := served.Load() + 1
	deadline := time.Now().Add(20 * time.Second)
	var after string
	for after != "down" && served.Load() <= next && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		// A read racing the refresh fails; the next one reads the new page.
		if v, err := chromedp.Run(ctx, chromedp.Text(state)); err == nil {
			after = v
		}
	}
	if after != "down" {
		t.Fatalf("fe02 still shown %q one refresh after it went down (%d pages served)", after, served.Load())
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.ArtifactDir(), "status-page.png")
	if err := os.WriteFile(file, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", file)
	if p := problems(); len(p) > 0 {
		t.Fatalf("the page reported problems: %v", p)
	}
}
