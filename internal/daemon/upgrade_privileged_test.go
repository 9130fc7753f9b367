package daemon_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/labtest"
)

// layout1Commit is main's last commit whose fast path pins flows in
// layout 1 (full keys in struct flow_val, LAYOUT_VERSION 1).
const layout1Commit = "8b64bca"

// buildCommit builds edgeproxy as it was at commit, from the history.
func buildCommit(t *testing.T, commit string) string {
	t.Helper()
	for _, tool := range []string{"git", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is absent: this test builds edgeproxy at %s", tool, commit)
		}
	}
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("no git history here: %v", err)
	}
	if err := exec.Command("git", "-C", strings.TrimSpace(string(top)), "cat-file", "-e", commit+"^{commit}").Run(); err != nil {
		t.Skipf("the history has no commit %s (a shallow clone?)", commit)
	}
	src := t.TempDir()
	archive := exec.Command("sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", strings.TrimSpace(string(top)), commit, src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("extract %s: %v\n%s", commit, err, out)
	}
	bin := filepath.Join(t.TempDir(), "edgeproxy-"+commit)
	build := exec.Command("go", "build", "-o", bin, "./cmd/edgeproxy")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build edgeproxy at %s: %v\n%s", commit, err, out)
	}
	return bin
}

// TestPrivilegedDaemonUpgradeFromLayout1: an iperf3 transfer and an idle
// long poll through the fastl4 virtuals of the build of layout 1 go on
// through an upgrade to this build: both complete, the transfer never
// stalls for a second, and the pins are migrated.
func TestPrivilegedDaemonUpgradeFromLayout1(t *testing.T) {
	old := buildCommit(t, layout1Commit)
	d := newDeployment(t)
	srv := d.lab.Backend.Command(context.Background(), "iperf3", "-s", "-B", d.lab.Members4[0].String(), "-p", "5201")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	d.startBinary(t, labtest.PoolUp("sfb-fe", len(d.members)), old)
	d.waitMember(t, "bulk", d.members[0].name, "up")

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		cli := d.lab.Client.Command(ctx, "iperf3", "-c", d.vip.String(), "-p", "5201", "-t", "8", "-i", "0.5", "-J")
		out, err := cli.Output()
		done <- result{out, err}
	}()
	polled := make(chan error, 1)
	go func() {
		resp, err := d.client(netip.AddrPortFrom(d.vip, 443), false).Get("https://webext.example.com/longpoll?wait=6s")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = &statusError{resp.Status}
			}
		}
		polled <- err
	}()
	time.Sleep(2 * time.Second)
	d.Kill()
	d.start(t)
	if !strings.Contains(d.Log.String(), "migrated the pinned maps to this build's layout") {
		t.Errorf("the daemon did not migrate the pins of layout 1:\n%s", d.Log.String())
	}

	if err := <-polled; err != nil {
		t.Errorf("long poll across the upgrade from layout 1: %v", err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("iperf3 through the fastl4 virtual failed across the upgrade from layout 1: %v\n%s", r.err, r.out)
	}
	var rep iperfIntervals
	if err := json.Unmarshal(r.out, &rep); err != nil {
		t.Fatalf("iperf3 output: %v\n%s", err, r.out)
	}
	if len(rep.Intervals) < 15 {
		t.Fatalf("iperf3 reported %d intervals, want 16", len(rep.Intervals))
	}
	for i, iv := range rep.Intervals {
		if iv.Sum.Bytes == 0 {
			t.Errorf("half-second interval %d moved no data: the transfer stalled across the upgrade", i)
		}
	}
	t.Logf("%d intervals, %d retransmissions across the upgrade from layout 1", len(rep.Intervals), rep.End.SumSent.Retransmits)
}
