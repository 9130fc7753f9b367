// Package labtest runs the edgeproxy binary in a lab for end-to-end
// tests: the binary built once per test process, and the daemon
// (runner.Daemon) started for a test and stopped at its end.
package labtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/lab/runner"
)

// Package is the edgeproxy command that Binary builds.
const Package = "github.com/edgeproxy/edgeproxy/cmd/edgeproxy"

// The lab's daemon runner.
type (
	Daemon = runner.Daemon
	Ready  = runner.Ready
)

// PoolUp is runner.PoolUp.
var PoolUp = runner.PoolUp

var (
	binaryOnce sync.Once
	binaryDir  string
	binaryPath string
	binaryErr  error
)

// Binary returns edgeproxy built from this module, once per test
// process; a package's TestMain calls Main to remove it afterwards. The
// test fails (in CI) or is skipped when the go tool is missing.
func Binary(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("needs the go tool to build edgeproxy")
		}
		t.Skip("needs the go tool to build edgeproxy")
	}
	binaryOnce.Do(func() {
		binaryDir, binaryErr = os.MkdirTemp("", "edgeproxy-bin-")
		if binaryErr != nil {
			return
		}
		binaryPath = filepath.Join(binaryDir, "edgeproxy")
		if out, err := exec.Command("go", "build", "-o", binaryPath, Package).CombinedOutput(); err != nil {
			binaryErr = fmt.Errorf("build edgeproxy: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// Main runs the tests and removes what Binary built: call it from
// TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if binaryDir != "" {
		os.RemoveAll(binaryDir)
	}
	os.Exit(code)
}

// Start runs the binary with args as d and waits, for at most 30 s, until
// its status satisfies ready; the test fails when the daemon exits first.
// At the test's cleanup the daemon is stopped, and its log shown when the
// test failed.
func Start(t testing.TB, d *Daemon, ready Ready, bin string, args ...string) {
	t.Helper()
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.Log.String())
		}
	})
	if err := d.Start(ready, 30*time.Second, bin, args...); err != nil {
		t.Fatal(err)
	}
}
