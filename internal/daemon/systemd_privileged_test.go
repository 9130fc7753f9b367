package daemon_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
	"github.com/vishvananda/netlink"
)

// systemdHost is systemd booted as PID 1 by systemd-nspawn in the lab's
// proxy namespace: the host's /usr read-only, /etc the host's with the
// files of etc laid over it, everything else empty, the BPF file system
// bpffs on /sys/fs/bpf and the binary under test as
// /usr/local/bin/edgeproxy.
type systemdHost struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  lab.Log
	pid1 int
}

// bootSystemd boots the container and waits, for at most 40 s, until its
// boot is over. At cleanup the container powers off.
func bootSystemd(t *testing.T, netnsName, etc, bpffs, bin string) *systemdHost {
	t.Helper()
	binDir := t.TempDir()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(binDir, "edgeproxy"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &systemdHost{done: make(chan struct{})}
	// systemd-nspawn's own system call filter refuses bpf(2) to the
	// container, which a host's systemd does not: it is allowed back.
	h.cmd = exec.Command("systemd-nspawn", "--directory=/", "--volatile=yes", "--machine="+filepath.Base(netnsName),
		"--register=no", "--keep-unit", "--boot", "--network-namespace-path=/run/netns/"+netnsName,
		"--capability=all", "--system-call-filter=bpf", "--bind="+bpffs+":/sys/fs/bpf", "--bind-ro="+binDir+":/usr/local/bin",
		"--overlay=/etc:"+etc+":/etc", "--", "--unit=basic.target")
	h.cmd.Stdout, h.cmd.Stderr = &h.log, &h.log
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start systemd-nspawn: %v", err)
	}
	go func() { _ = h.cmd.Wait(); close(h.done) }()
	t.Cleanup(func() { h.powerOff(t) })
	deadline := time.Now().Add(40 * time.Second)
	for h.pid1 = h.init(); h.pid1 == 0; h.pid1 = h.init() {
		h.mustRun(t, deadline, "systemd as the container's PID 1")
	}
	for {
		out, _ := h.systemctl("is-system-running")
		if s := strings.TrimSpace(out); s == "running" || s == "degraded" {
			return h
		}
		h.mustRun(t, deadline, "the container's boot")
	}
}

// mustRun fails the test when the container has exited or deadline has
// passed, else waits a little.
func (h *systemdHost) mustRun(t *testing.T, deadline time.Time, what string) {
	t.Helper()
	select {
	case <-h.done:
		t.Fatalf("systemd-nspawn exited before %s:\n%s", what, h.log.String())
	default:
	}
	if time.Now().After(deadline) {
		t.Fatalf("no %s within 40s:\n%s", what, h.log.String())
	}
	time.Sleep(200 * time.Millisecond)
}

// init returns the pid of the container's systemd, a child of
// systemd-nspawn, or 0 while there is none.
func (h *systemdHost) init() int {
	pid := h.cmd.Process.Pid
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(b)) {
		comm, _ := os.ReadFile("/proc/" + f + "/comm")
		if strings.TrimSpace(string(comm)) == "systemd" {
			n, _ := strconv.Atoi(f)
			return n
		}
	}
	return 0
}

// command returns a command run inside the container, in every namespace
// of its PID 1.
func (h *systemdHost) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(h.pid1), "-a", name}, args...)...)
}

// systemctl runs systemctl in the container, for at most 60 s, and
// returns its combined output.
func (h *systemdHost) systemctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := h.command(ctx, "systemctl", append([]string{"--no-pager"}, args...)...).CombinedOutput()
	return string(out), err
}

// journal returns the unit's journal.
func (h *systemdHost) journal(unit string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _ := h.command(ctx, "journalctl", "--no-pager", "-o", "cat", "-u", unit).CombinedOutput()
	return string(out)
}

// file reads a file of the container.
func (h *systemdHost) file(path string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", h.pid1, path))
	return string(b)
}

// powerOff shuts the container down, for at most 30 s, and then kills
// it.
func (h *systemdHost) powerOff(t *testing.T) {
	if h.pid1 != 0 {
		_, _ = h.systemctl("poweroff", "--no-block")
	}
	select {
	case <-h.done:
		return
	case <-time.After(30 * time.Second):
	}
	t.Errorf("the container did not power off within 30s: killed")
	if h.pid1 != 0 {
		_ = exec.Command("kill", "-KILL", strconv.Itoa(h.pid1)).Run()
	}
	_ = h.cmd.Process.Kill()
	<-h.done
}

// unitPaths are the paths the configuration uses inside the container:
// those the unit grants.
var unitPaths = struct{ etc, pin, accessLog, connLog string }{
	"/etc/edgeproxy", "/sys/fs/bpf/edgeproxy", "/var/log/edgeproxy/access.log", "/var/log/edgeproxy/fastl4.log",
}

// TestPrivilegedSystemdUnit: the hardened units of examples/, under
// systemd as PID 1, run the daemon with everything working: systemctl
// start brings the unit to active with XDP attached to both NICs through
// pins on the BPF file system and the network section applied; a request
// goes through fastl4 and one through L7 from the client; the access log
// and the connection log are written under /var/log/edgeproxy; systemctl
// reload applies a file through the control socket and fails with the
// daemon's reason for a file it refuses; systemctl stop leaves the fast
// path pinned, so a fastl4 connection keeps working.
func TestPrivilegedSystemdUnit(t *testing.T) {
	t.Parallel()
	testnet.RequireRoot(t, "systemd-nspawn", "nsenter", "curl", "iperf3")
	etc := filepath.Join(t.TempDir(), "etc")
	d := newDeploymentIn(t, testnet.Options{Members: 2, NoAddresses: true}, filepath.Join(etc, "edgeproxy"))
	s := d.params
	s.ControlSocket, s.PinPath = "", unitPaths.pin
	s.AccessLog, s.FastL4Log = unitPaths.accessLog, unitPaths.connLog
	fl4 := *s.FastL4
	fl4.LogBulk = true
	s.FastL4 = &fl4
	d.params = s
	writeUnitConfig(t, d, s)
	installUnits(t, etc)
	accepted := listenBulk(t, d)
	h := bootSystemd(t, d.lab.Proxy.Name, etc, d.pin, labtest.Binary(t))

	if out, err := h.systemctl("start", "edgeproxy.service"); err != nil {
		t.Fatalf("systemctl start edgeproxy: %v\n%s\n%s", err, out, h.journal("edgeproxy.service"))
	}
	for _, u := range []string{"edgeproxy-netcfg.service", "edgeproxy.service"} {
		if out, _ := h.systemctl("is-active", u); strings.TrimSpace(out) != "active" {
			t.Fatalf("%s is %q after systemctl start:\n%s", u, strings.TrimSpace(out), h.journal(u))
		}
	}
	d.waitMember(t, "sfb-fe", d.members[0].name, "up")
	d.waitMember(t, "bulk", d.members[0].name, "up")
	checkUnitNetwork(t, d)
	checkUnitPins(t, d, "after systemctl start")
	d.mustServe(t, "fastl4 under systemd", netip.AddrPortFrom(d.vip, 443))
	d.mustServe(t, "L7 under systemd", netip.AddrPortFrom(d.lab.VIP4, 443))
	kept, keptAtMember := d.bulkConn(t, netip.AddrPortFrom(d.vip, 5201), accepted, "keep\n")
	defer kept.Close()
	checkUnitLogs(t, h, kept.LocalAddr().String())

	checkUnitReload(t, d, h)

	if out, err := h.systemctl("stop", "edgeproxy.service"); err != nil {
		t.Fatalf("systemctl stop edgeproxy: %v\n%s", err, out)
	}
	if out, _ := h.systemctl("is-active", "edgeproxy.service"); strings.TrimSpace(out) != "inactive" {
		t.Fatalf("edgeproxy.service is %q after systemctl stop:\n%s", strings.TrimSpace(out), h.journal("edgeproxy.service"))
	}
	checkUnitPins(t, d, "after systemctl stop")
	exchange(t, kept, keptAtMember)
}

// writeUnitConfig writes s as the configuration file with the paths of
// the files beside it as the container sees them.
func writeUnitConfig(t *testing.T, d *deployment, s lab.Skype, extra ...string) {
	t.Helper()
	d.writeConfig(t, s, extra...)
	b, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), d.dir, unitPaths.etc)
	if err := os.WriteFile(d.cfgPath, []byte(text), 0o640); err != nil {
		t.Fatal(err)
	}
}

// installUnits copies the example units into etc/systemd/system.
func installUnits(t *testing.T, etc string) {
	t.Helper()
	dir := filepath.Join(etc, "systemd", "system")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, u := range exampleUnits {
		b, err := os.ReadFile(filepath.Join("..", "..", "examples", u))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, u), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// exampleUnits are the units of examples/.
var exampleUnits = []string{"edgeproxy.service", "edgeproxy-netcfg.service"}

// listenBulk listens on the first member's bulk port (5201) and returns
// the connections it accepts.
func listenBulk(t *testing.T, d *deployment) <-chan net.Conn {
	t.Helper()
	ln, err := d.lab.Backend.Listen("tcp", netip.AddrPortFrom(d.members[0].addr, 5201).String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 64)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- c:
			default:
				c.Close()
			}
		}
	}()
	return accepted
}

// checkUnitNetwork fails the test unless the network section is applied
// on the proxy host: the NICs' addresses, the VIPs, the default route and
// the members' route.
func checkUnitNetwork(t *testing.T, d *deployment) {
	t.Helper()
	addrs := d.lab.Proxy.Run(t, "ip", "-o", "addr", "show")
	for _, want := range []string{d.lab.ExtAddr4.String() + "/24", d.lab.IntAddr4.String() + "/24", d.lab.VIP4.String() + "/32"} {
		if !strings.Contains(addrs, want) {
			t.Errorf("address %s not on the proxy host:\n%s", want, addrs)
		}
	}
	routes := d.lab.Proxy.Run(t, "ip", "route", "show")
	for _, want := range []string{"default via " + d.lab.ClientAddr4.String(), d.lab.MemberNet4.String() + " via " + d.lab.RouterAddr4.String()} {
		if !strings.Contains(routes, want) {
			t.Errorf("route %q not on the proxy host:\n%s", want, routes)
		}
	}
}

// checkUnitPins fails the test unless both NICs run an XDP program
// through the links pinned in the unit's pin path.
func checkUnitPins(t *testing.T, d *deployment, when string) {
	t.Helper()
	for _, ifc := range []string{lab.ExtIf, lab.IntIf} {
		if _, err := os.Stat(filepath.Join(d.pin, "edgeproxy", "link_"+ifc)); err != nil {
			t.Errorf("%s: the XDP link of %s is not pinned: %v", when, ifc, err)
		}
		var attached bool
		if err := d.lab.Proxy.Do(func() error {
			l, err := netlink.LinkByName(ifc)
			if err == nil {
				attached = l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached
			}
			return err
		}); err != nil || !attached {
			t.Errorf("%s: no XDP program on %s (%v)", when, ifc, err)
		}
	}
}

// checkUnitLogs fails the test unless the access log has an L7 request
// and the connection log the opening of the flow from client.
func checkUnitLogs(t *testing.T, h *systemdHost, client string) {
	t.Helper()
	want := map[string]string{
		unitPaths.accessLog: `"host":"webext.example.com"`,
		unitPaths.connLog:   `"msg":"open","virtual":"bulk","proto":"tcp","client":"` + client + `"`,
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		missing := ""
		for path, line := range want {
			if !strings.Contains(h.file(path), line) {
				missing = path
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s lacks %s:\n%s\njournal:\n%s", missing, want[missing], h.file(missing), h.journal("edgeproxy.service"))
		}
	}
}

// checkUnitReload: systemctl reload applies a file adding a site, and
// fails with the daemon's reason for one changing fastpath.max_flows,
// which leaves the unit active and serving.
func checkUnitReload(t *testing.T, d *deployment, h *systemdHost) {
	t.Helper()
	p := withExtra(d.params, []string{"new.example.com"}, 500*time.Millisecond)
	writeUnitConfig(t, d, p)
	if out, err := h.systemctl("reload", "edgeproxy.service"); err != nil {
		t.Fatalf("systemctl reload adding a site: %v\n%s\n%s", err, out, h.journal("edgeproxy.service"))
	}
	if _, err := echo(d.client(netip.AddrPortFrom(d.lab.VIP4, 443), false), "https://new.example.com/echo"); err != nil {
		t.Fatalf("the site added by systemctl reload: %v", err)
	}
	p.MaxFlows = 4096
	writeUnitConfig(t, d, p)
	if out, err := h.systemctl("reload", "edgeproxy.service"); err == nil {
		t.Fatalf("systemctl reload changing fastpath.max_flows succeeded:\n%s", out)
	}
	if j := h.journal("edgeproxy.service"); !strings.Contains(j, "needs restart: fastpath.max_flows") {
		t.Fatalf("the journal does not give the daemon's reason for the refused reload:\n%s", j)
	}
	if out, _ := h.systemctl("is-active", "edgeproxy.service"); strings.TrimSpace(out) != "active" {
		t.Fatalf("edgeproxy.service is %q after a refused reload", strings.TrimSpace(out))
	}
	d.mustServe(t, "L7 after the refused reload", netip.AddrPortFrom(d.lab.VIP4, 443))
}
