package daemon_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
)

// reload writes s (and extra), signals the daemon and waits, for at most 20 s, until
// it applied the file (true) or logged that it rejected it (false).
func (d *deployment) reload(t *testing.T, s lab.Skype, extra ...string) bool {
	t.Helper()
	before, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	rejected := strings.Count(d.Log.String(), "reload rejected")
	d.writeConfig(t, s, extra...)
	d.signal(t, syscall.SIGHUP)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Count(d.Log.String(), "reload rejected") > rejected {
			return false
		}
		if st, err := d.Status(); err == nil && st.Loaded.After(before.Loaded) {
			return true
		}
	}
	t.Fatal("the daemon neither applied nor rejected the reload within 20s")
	return false
}

// reloadCLI writes s and runs `edgeproxy reload` on the proxy host, which
// signals the daemon and reports whether it applied the file.
func (d *deployment) reloadCLI(t *testing.T, s lab.Skype) (string, error) {
	t.Helper()
	d.writeConfig(t, s)
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	out, err := d.lab.Proxy.Command(ctx, labtest.Binary(t), "reload", "-config", d.cfgPath,
		"-pid-file", filepath.Join(d.dir, "edgeproxy.pid")).CombinedOutput()
	return string(out), err
}

// mustServe fails the test unless a request through addr reaches a
// member.
func (d *deployment) mustServe(t *testing.T, what string, addr netip.AddrPort) {
	t.Helper()
	if _, err := echo(d.client(addr, false), "https://webext.example.com/echo"); err != nil {
		t.Fatalf("%s: %s: %v", what, addr, err)
	}
}

// TestPrivilegedDaemonReloadOpensFastPath: a daemon started without any
// fastl4 virtual attaches XDP when `edgeproxy reload` adds the first one,
// and connections go through it to the members, from the SNAT address.
func TestPrivilegedDaemonReloadOpensFastPath(t *testing.T) {
	t.Parallel()
	testReloadOpensFastPath(t, func(d *deployment, p lab.Skype) {
		if out, err := d.reloadCLI(t, p); err != nil || !strings.Contains(out, "reloaded: pid") {
			t.Fatalf("edgeproxy reload adding the first fastl4 virtual: %v\n%s", err, out)
		}
	})
}

// TestPrivilegedDaemonSIGHUPOpensFastPath: the same with a bare SIGHUP,
// as an init system or an operator's kill -HUP sends it: once /status
// shows the file loaded, the fastl4 virtual serves.
func TestPrivilegedDaemonSIGHUPOpensFastPath(t *testing.T) {
	t.Parallel()
	testReloadOpensFastPath(t, func(d *deployment, p lab.Skype) {
		if !d.reload(t, p) {
			t.Fatalf("SIGHUP adding the first fastl4 virtual rejected:\n%s", d.Log.String())
		}
	})
}

// testReloadOpensFastPath starts a daemon without fastl4 virtuals, has
// reload apply the file that adds them and checks that connections
// through the fastl4 VIP reach the members from the SNAT address.
func testReloadOpensFastPath(t *testing.T, reload func(*deployment, lab.Skype)) {
	t.Helper()
	d := newDeployment(t)
	p := d.params
	p.FastL4 = nil
	d.writeConfig(t, p)
	d.start(t)
	d.mustServe(t, "L7 before the reload", netip.AddrPortFrom(d.lab.VIP4, 443))

	reload(d, d.params)
	l4 := d.client(netip.AddrPortFrom(d.vip, 443), false)
	if seen := spread(t, l4, "https://webext.example.com/echo", 8, d.lab.IntAddr4); len(seen) == 0 {
		t.Fatal("no connection through the fastl4 virtual added by reload")
	}
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.FastPath == nil || len(st.FastPath.Interfaces) == 0 {
		t.Fatalf("status shows no attached fast path after the reload: %+v", st.FastPath)
	}
}

// TestPrivilegedDaemonReloadNeedsRestart: a reload that changes
// fastpath.max_flows is refused with "needs restart: fastpath.max_flows",
// which `edgeproxy reload` reports, as a whole (a site added in the same file is not served), and the
// daemon keeps serving the old configuration through both planes.
func TestPrivilegedDaemonReloadNeedsRestart(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	p := withExtra(d.params, []string{"new.example.com"}, 500*time.Millisecond)
	p.MaxFlows = 4096
	out, err := d.reloadCLI(t, p)
	if err == nil || !strings.Contains(out, "reload rejected by pid") || !strings.Contains(out, "needs restart: fastpath.max_flows") {
		t.Fatalf("edgeproxy reload changing fastpath.max_flows did not report the key needing a restart: %v\n%s", err, out)
	}
	// The CLI has its answer; the daemon's log line reaches the test
	// through its stderr pipe, a moment later.
	logged := func() bool { return strings.Contains(d.Log.String(), "needs restart: fastpath.max_flows") }
	for deadline := time.Now().Add(5 * time.Second); !logged() && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if !logged() {
		t.Fatalf("the daemon's log does not name the key:\n%s", d.Log.String())
	}
	d.mustServe(t, "L7 after the refused reload", netip.AddrPortFrom(d.lab.VIP4, 443))
	d.mustServe(t, "fastl4 after the refused reload", netip.AddrPortFrom(d.vip, 443))
	if e, err := echo(d.client(netip.AddrPortFrom(d.lab.VIP4, 443), false), "https://new.example.com/echo"); err == nil {
		t.Fatalf("site of the refused file served: %+v", e)
	}
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.FastPath == nil || st.FastPath.MaxFlows == 4096 {
		t.Fatalf("flow table resized by a refused reload: %+v", st.FastPath)
	}
}

// TestPrivilegedDaemonReloadRollback: a reload whose L7 listener cannot
// bind (the last step to change anything) undoes the steps before it: the
// fastl4 virtual and the internal address it added are gone, the old
// virtuals serve. Once the port is free, the same file applies.
func TestPrivilegedDaemonReloadRollback(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	d.start(t)
	taken, err := d.lab.Proxy.Listen("tcp", netip.AddrPortFrom(d.lab.VIP4, 8443).String())
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()

	int24 := netip.PrefixFrom(d.lab.IntAddr4, 24).Masked()
	extra := netip.PrefixFrom(int24.Addr().Next().Next().Next().Next().Next(), 24) // .5
	p := d.params
	p.Network.IntExtra = []netip.Prefix{extra}
	// Virtuals on other ports, appended to those of the file.
	virtuals := `  - name: l4-8443
    mode: fastl4
    listen: ` + d.vip.String() + `:8443
    pool: sfb-fe
    port: 4443
    snat: automap
  - name: web-8443
    mode: https
    listen: ` + d.lab.VIP4.String() + `:8443
    certificates:
      - {cert: ` + d.dir + `/public.pem, key: ` + d.dir + `/public.key}
    sites:
      - hosts: [webext.example.com]
        pool: sfb-fe
        port: 4443
        backend_tls: {ca: ` + d.dir + `/internal-ca.pem}
`
	if d.reload(t, p, virtuals) {
		t.Fatal("reload applied with its L7 port taken")
	}
	if log := d.Log.String(); !strings.Contains(log, "address already in use") {
		t.Fatalf("the rejection does not say the port is taken:\n%s", log)
	}
	hasExtra := func() bool {
		return strings.Contains(d.lab.Proxy.Run(t, "ip", "-o", "addr", "show", "dev", "int0"), " "+extra.String()+" ")
	}
	if hasExtra() {
		t.Fatalf("address %s of the rolled-back file left on int0", extra)
	}
	dialer := func(addr netip.AddrPort) error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		c, err := d.lab.Client.DialContext(ctx, "tcp", addr.String())
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dialer(netip.AddrPortFrom(d.vip, 8443)); err == nil {
		t.Fatal("fastl4 virtual of the rolled-back file still accepts connections")
	}
	d.mustServe(t, "fastl4 after the rollback", netip.AddrPortFrom(d.vip, 443))
	d.mustServe(t, "L7 after the rollback", netip.AddrPortFrom(d.lab.VIP4, 443))

	taken.Close()
	if !d.reload(t, p, virtuals) {
		t.Fatalf("reload with the port free rejected:\n%s", d.Log.String())
	}
	if !hasExtra() {
		t.Fatalf("address %s not added once the reload applied", extra)
	}
	d.mustServe(t, "fastl4 virtual added by the reload", netip.AddrPortFrom(d.vip, 8443))
	d.mustServe(t, "L7 virtual added by the reload", netip.AddrPortFrom(d.lab.VIP4, 8443))
}

// TestPrivilegedRunRefusesWhatCheckReports: run and check share one host
// probe: with the pin directory off the BPF file system, `edgeproxy run`
// refuses to start with the very finding `edgeproxy check` prints, before
// it touches the host.
func TestPrivilegedRunRefusesWhatCheckReports(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	p := d.params
	p.PinPath = filepath.Join(t.TempDir(), "pins") // not on bpffs
	d.writeConfig(t, p)
	const finding = "is not on a BPF file system, so pinned flows would not survive a restart: mount -t bpf bpf /sys/fs/bpf"

	check, _ := d.lab.Proxy.Command(t.Context(), labtest.Binary(t), "check", "-config", d.cfgPath).CombinedOutput()
	if !strings.Contains(string(check), p.PinPath+" "+finding) {
		t.Fatalf("check does not report the pin directory:\n%s", check)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, err := d.lab.Proxy.Command(ctx, labtest.Binary(t), "run", "-config", d.cfgPath, "-pid-file", "",
		"-netcfg-state", filepath.Join(d.dir, "netcfg.json")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bpffs: "+p.PinPath+" "+finding) {
		t.Fatalf("run started or failed otherwise (%v):\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(d.dir, "netcfg.json")); err == nil {
		t.Fatal("run changed the network before refusing the host")
	}
}
