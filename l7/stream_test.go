package l7

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/fakefe"
)

const bigBody = 200 << 20

// heapWatch samples the heap while a transfer runs and reports the peak
// growth over the baseline.
type heapWatch struct {
	base uint64
	peak atomic.Uint64
	stop chan struct{}
	wg   sync.WaitGroup
}

func watchHeap() *heapWatch {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h := &heapWatch{base: ms.HeapInuse, stop: make(chan struct{})}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tk.C:
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > h.peak.Load() {
				h.peak.Store(ms.HeapInuse)
			}
		}
	}()
	return h
}

func (h *heapWatch) growth() int64 {
	close(h.stop)
	h.wg.Wait()
	return int64(h.peak.Load()) - int64(h.base)
}

func patternSHA(n int64) string {
	s := sha256.New()
	io.CopyBuffer(s, fakefe.NewPatternReader(n), make([]byte, 1<<20))
	return hex.EncodeToString(s.Sum(nil))
}

// A 200 MB upload and download pass through streamed: the proxy's heap
// grows by a small fraction of the body.
func TestStream200MB(t *testing.T) {
	t.Parallel()
	needTool(t, "curl")
	e := newEnv(t, envOptions{members: 1})
	port := portOf(e.httpsAddr)
	base := append(e.resolveArgs(port, "webext.example.com"), "--cacert", e.public.rootPath, "-sS", "--max-time", "120")
	want := patternSHA(bigBody)

	// Upload with a Content-Length (from a file) and chunked (from a
	// pipe). curl given both a pipe and a Content-Length sends both
	// headers, which the proxy refuses.
	file := filepath.Join(t.TempDir(), "upload.bin")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyBuffer(f, fakefe.NewPatternReader(bigBody), make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	for _, src := range []string{file, "-"} {
		hw := watchHeap()
		cmd := exec.CommandContext(ctx, "curl", append(base, "-T", src, "https://webext.example.com:"+port+"/upload")...)
		cmd.Stdin = fakefe.NewPatternReader(bigBody)
		out, err := cmd.Output()
		growth := hw.growth()
		if err != nil {
			t.Fatalf("upload: %v %s", err, out)
		}
		var up struct {
			Bytes  int64
			SHA256 string
		}
		if err := json.Unmarshal(out, &up); err != nil || up.Bytes != bigBody || up.SHA256 != want {
			t.Fatalf("upload from %s arrived as %+v (%v: %q), want %d bytes %s", src, up, err, out, bigBody, want)
		}
		t.Logf("upload from %s: heap growth %d KiB", src, growth>>10)
		if growth > 48<<20 {
			t.Fatalf("heap grew by %d MiB during a %d MiB upload: the body is buffered", growth>>20, bigBody>>20)
		}
	}

	// Download.
	hw := watchHeap()
	cmd := exec.CommandContext(ctx, "curl", append(base, "https://webext.example.com:"+port+"/download?size="+strconv.Itoa(bigBody))...)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := sha256.New()
	n, _ := io.CopyBuffer(s, stdout, make([]byte, 1<<20))
	err = cmd.Wait()
	growth := hw.growth()
	if err != nil || n != bigBody || hex.EncodeToString(s.Sum(nil)) != want {
		t.Fatalf("download: %v, %d bytes", err, n)
	}
	t.Logf("download: heap growth %d KiB", growth>>10)
	if growth > 48<<20 {
		t.Fatalf("heap grew by %d MiB during a %d MiB download: the body is buffered", growth>>20, bigBody>>20)
	}
}

// A long poll answered after 65 s, longer than the 60 s other proxies
// cut at, passes with the skype profile's response timeout (960 s).
func TestLongPollOutlivesSixtySeconds(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 65 s")
	}
	t.Parallel()
	e := newEnv(t, envOptions{members: 1})
	port := portOf(e.httpsAddr)
	out, err := curl(t, append(e.resolveArgs(port, "webext.example.com"), "--cacert", e.public.rootPath,
		"-w", " %{http_code}", "https://webext.example.com:"+port+"/longpoll?wait=65s")...)
	if err != nil || !strings.HasSuffix(out, " 200") || !strings.Contains(out, `"waited":"1m5s"`) {
		t.Fatalf("long poll: %v %q", err, out)
	}
}

// With a short response timeout the same wait ends in a 504 that names
// the member, rather than a hang.
func TestResponseTimeout504(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{members: 1, virtual: trustLoopback(nil),
		site: func(s *config.Site) { s.ResponseTimeout = config.Duration(time.Second) }})
	res, _ := e.dialTLS("webext.example.com").do(get("webext.example.com", "/longpoll?wait=4s"))
	want := "response " + e.members[0].addr.String() + ":" + strconv.Itoa(int(e.tlsPort)) + ": timeout"
	if res.StatusCode != 504 || res.Header.Get("Edgeproxy-Error") != want {
		t.Fatalf("%d %q, want 504 %q", res.StatusCode, res.Header.Get("Edgeproxy-Error"), want)
	}
}
