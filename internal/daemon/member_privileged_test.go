package daemon_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/labtest"
)

// cli runs an edgeproxy command against the daemon's control socket.
func (d *deployment) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, labtest.Binary(t), args...).CombinedOutput()
	return string(out), err
}

// connTo returns a keep-alive client whose one connection through addr
// reached the member named fe, and that connection's id at the member.
func (d *deployment) connTo(t *testing.T, addr netip.AddrPort, fe string) (*http.Client, uint64) {
	t.Helper()
	for range 40 {
		c := d.client(addr, true)
		c.Transport.(*http.Transport).MaxConnsPerHost = 1
		e, err := echo(c, "https://webext.example.com/echo")
		if err != nil {
			t.Fatal(err)
		}
		if e.FE == fe {
			return c, e.Conn
		}
		c.CloseIdleConnections()
	}
	t.Fatalf("no connection through %s reached %s in 40 tries", addr, fe)
	return nil, 0
}

// mustAvoid fails unless n new connections through addr all reach
// members other than fe.
func (d *deployment) mustAvoid(t *testing.T, what string, addr netip.AddrPort, fe string, n int) {
	t.Helper()
	if seen := spread(t, d.client(addr, false), "https://webext.example.com/echo", n, netip.Addr{}); seen[fe] > 0 {
		t.Fatalf("%s: %d of %d new connections through %s reached %s: %v", what, seen[fe], n, addr, fe, seen)
	}
}

// TestPrivilegedMemberDisable: `edgeproxy member POOL MEMBER disable`
// takes the member out of both planes for new connections and requests
// while a connection already on it continues; the state shows in
// status, survives a reload and a restart, and `enable` brings the
// member back.
func TestPrivilegedMemberDisable(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	fe1 := d.members[0].name
	l4 := netip.AddrPortFrom(d.vip, 443)
	l7 := netip.AddrPortFrom(d.lab.VIP4, 443)
	long, conn := d.connTo(t, l4, fe1)

	out, err := d.cli(t, "member", "-config", d.cfgPath, "sfb-fe", fe1, "disable")
	if err != nil || !strings.Contains(out, "disabled since") {
		t.Fatalf("edgeproxy member disable: %v\n%s", err, out)
	}
	d.mustAvoid(t, "fastl4 after disable", l4, fe1, 12)
	d.mustAvoid(t, "L7 after disable", l7, fe1, 12)
	e, err := echo(long, "https://webext.example.com/echo")
	if err != nil || e.FE != fe1 || e.Conn != conn {
		t.Fatalf("the open fastl4 connection to the disabled member did not continue: %+v %v", e, err)
	}
	d.waitRuntime(t, "sfb-fe", fe1, "disable")
	if m := d.metrics(t); !strings.Contains(m, `edgeproxy_member_runtime_state{member="`+fe1+`",pool="sfb-fe",state="disable"} 1`) {
		t.Fatalf("no runtime state metric for the disabled member:\n%s", m)
	}

	if out, err := d.reloadCLI(t, d.params); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	d.mustAvoid(t, "fastl4 after a reload", l4, fe1, 12)
	d.mustAvoid(t, "L7 after a reload", l7, fe1, 12)

	d.Stop()
	d.startWhen(t, labtest.PoolUp("sfb-fe", 1))
	d.waitRuntime(t, "sfb-fe", fe1, "disable")
	d.mustAvoid(t, "L7 after a restart", l7, fe1, 12)

	if out, err := d.cli(t, "member", "-config", d.cfgPath, "sfb-fe", fe1, "enable"); err != nil {
		t.Fatalf("edgeproxy member enable: %v\n%s", err, out)
	}
	d.waitMember(t, "sfb-fe", fe1, "up")
	if seen := spread(t, d.client(l7, false), "https://webext.example.com/echo", 12, netip.Addr{}); seen[fe1] == 0 {
		t.Fatalf("enabled member got no L7 request: %v", seen)
	}
}

// TestPrivilegedMemberRefused: a member the running configuration does
// not have is refused with the names it has, and a user that is not
// root gets nothing from the control socket even when the file modes
// let it connect.
func TestPrivilegedMemberRefused(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	out, err := d.cli(t, "member", "-config", d.cfgPath, "sfb-fe", "fe09.corp.example.com", "disable")
	if err == nil || !strings.Contains(out, `no member "fe09.corp.example.com" in pool "sfb-fe": its members are fe01.corp.example.com, fe02.corp.example.com`) {
		t.Fatalf("unknown member: %v\n%s", err, out)
	}

	// uid 65534 with gid 0 passes the socket's mode (root's group); the
	// daemon refuses it by its credentials.
	for _, dir := range []string{filepath.Dir(d.dir), d.dir} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(d.dir, "edgeproxy")
	b, err := os.ReadFile(labtest.Binary(t))
	if err == nil {
		err = os.WriteFile(bin, b, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "member", "-socket", filepath.Join(d.dir, "run", "control.sock"), "sfb-fe", d.members[0].name, "disable")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 0, Groups: []uint32{}}}
	b, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "control socket refused the peer: uid 65534") {
		t.Fatalf("edgeproxy member as uid 65534: %v\n%s", err, b)
	}
	if st, err := d.Status(); err == nil {
		for _, m := range st.Members {
			if m.Runtime != "" {
				t.Fatalf("a refused peer changed member %s: %s", m.Member, m.Runtime)
			}
		}
	}
}

// waitRuntime waits until status shows the member's runtime state.
func (d *deployment) waitRuntime(t *testing.T, pool, name, state string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if st, err := d.Status(); err == nil {
			for _, m := range st.Members {
				if m.Pool == pool && m.Member == name && m.Runtime == state && m.State == "disabled" {
					return
				}
			}
		}
	}
	t.Fatalf("status does not show member %s of %s %s within 20s", name, pool, state)
}

// TestPrivilegedReloadNeverSignalsPIDFile: `edgeproxy reload` asks the
// daemon on the control socket; a pid file naming another process is
// refused, and that process is never signalled.
func TestPrivilegedReloadNeverSignalsPIDFile(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { other.Wait(); close(exited) }()
	t.Cleanup(func() { other.Process.Kill(); <-exited })
	pidFile := filepath.Join(d.dir, "other.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(other.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := d.cli(t, "reload", "-config", d.cfgPath, "-pid-file", pidFile)
	if err == nil || !strings.Contains(out, "pid file "+pidFile+" names pid "+strconv.Itoa(other.Process.Pid)+" but pid") {
		t.Fatalf("reload with a pid file naming another process: %v\n%s", err, out)
	}
	select {
	case <-exited:
		t.Fatal("the process the pid file names was signalled")
	case <-time.After(500 * time.Millisecond):
	}
	if out, err := d.cli(t, "reload", "-config", d.cfgPath); err != nil || !strings.Contains(out, "reloaded: pid") {
		t.Fatalf("reload over the control socket: %v\n%s", err, out)
	}
}

// TestPrivilegedMemberDrain: `edgeproxy member POOL MEMBER drain` takes
// no new connections to the member at once, lets an open fastl4
// connection continue, and cuts it at its virtual's drain_timeout (5 s).
func TestPrivilegedMemberDrain(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	fe1 := d.members[0].name
	l4 := netip.AddrPortFrom(d.vip, 443)
	long, conn := d.connTo(t, l4, fe1)

	out, err := d.cli(t, "member", "-config", d.cfgPath, "sfb-fe", fe1, "drain")
	if err != nil || !strings.Contains(out, "draining since") {
		t.Fatalf("edgeproxy member drain: %v\n%s", err, out)
	}
	started := time.Now()
	d.mustAvoid(t, "fastl4 while draining", l4, fe1, 12)
	if e, err := echo(long, "https://webext.example.com/echo"); err != nil || e.FE != fe1 || e.Conn != conn {
		t.Fatalf("the open connection stopped before the drain timeout: %+v %v", e, err)
	}
	d.waitRuntime(t, "sfb-fe", fe1, "drain")
	for {
		// The client reconnects after a reset: the connection ended when
		// a request is refused or answered on another one.
		e, err := echo(long, "https://webext.example.com/echo")
		if err != nil || e.FE != fe1 || e.Conn != conn {
			if since := time.Since(started); since < 4*time.Second {
				t.Fatalf("the open connection ended after %s, before the 5s drain timeout: %v", since, err)
			}
			break
		}
		if time.Since(started) > 20*time.Second {
			t.Fatal("the open connection to the draining member still works 20s after drain (drain_timeout 5s)")
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// slowDownload is a large download through addr read slowly, to the
// member named in its response; done reports how reading ended.
type slowDownload struct {
	fe   string
	read atomic.Int64
	done chan error
}

// startSlowDownload opens downloads through addr until one reaches fe
// (the pool spreads new requests), and reads it 64 KiB every 100 ms
// until it fails or ctx ends.
func (d *deployment) startSlowDownload(t *testing.T, ctx context.Context, addr netip.AddrPort, fe string) *slowDownload {
	t.Helper()
	c := d.client(addr, false)
	c.Timeout = 0
	for range 20 {
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://webext.example.com/download?size=4000000000", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("X-Fake-FE") != fe {
			resp.Body.Close()
			continue
		}
		s := &slowDownload{fe: fe, done: make(chan error, 1)}
		go func() {
			defer resp.Body.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := io.ReadFull(resp.Body, buf)
				s.read.Add(int64(n))
				if err != nil {
					s.done <- err
					return
				}
				select {
				case <-ctx.Done():
					s.done <- ctx.Err()
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
		return s
	}
	t.Fatalf("no download through %s reached %s in 20 tries", addr, fe)
	return nil
}

// TestPrivilegedMemberDrainL7: a download in flight through the L7
// virtual to a member set draining is cut at the drain_timeout of the
// L7 virtuals on its pool (10 s), long before the client's
// own 60 s bound, while one to the other member continues.
func TestPrivilegedMemberDrainL7(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	fe1, fe2 := d.members[0].name, d.members[1].name
	l7 := netip.AddrPortFrom(d.lab.VIP4, 443)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	drained := d.startSlowDownload(t, ctx, l7, fe1)
	other := d.startSlowDownload(t, ctx, l7, fe2)

	if out, err := d.cli(t, "member", "-config", d.cfgPath, "sfb-fe", fe1, "drain"); err != nil || !strings.Contains(out, "draining since") {
		t.Fatalf("edgeproxy member drain: %v\n%s", err, out)
	}
	var err error
	select {
	case err = <-drained.done:
	case err = <-other.done:
		t.Fatalf("the download from %s ended: %v", fe2, err)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		t.Fatalf("the download from draining %s ran to the client's own 60s bound (%d bytes read)", fe1, drained.read.Load())
	}
	t.Logf("download from %s ended after %d bytes: %v", fe1, drained.read.Load(), err)
	before := other.read.Load()
	select {
	case err := <-other.done:
		t.Fatalf("the download from %s ended with the draining member's: %v", fe2, err)
	case <-time.After(time.Second):
	}
	if other.read.Load() == before {
		t.Fatalf("the download from %s stopped moving when the draining member's was cut", fe2)
	}
}
