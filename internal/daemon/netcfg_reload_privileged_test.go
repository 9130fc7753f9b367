package daemon_test

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/lab"
)

var checksTotal = regexp.MustCompile(`(?m)^edgeproxy_netcfg_checks_total ([0-9.e+]+)$`)

// netcfgChecks reads how often the reconciler compared the host.
func (d *deployment) netcfgChecks(t *testing.T) float64 {
	t.Helper()
	m := checksTotal.FindStringSubmatch(d.metrics(t))
	if m == nil {
		t.Fatal("no edgeproxy_netcfg_checks_total in the metrics")
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestPrivilegedDaemonReloadAddingVIPsRemovesNone: a reload that adds a
// virtual's address never has it removed, not even for a moment (ip
// monitor address sees every change).
func TestPrivilegedDaemonReloadAddingVIPsRemovesNone(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	p := d.params
	p.FastL4 = nil
	d.writeConfig(t, p)
	d.start(t)

	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	var mon lab.Log // the monitor's output, read while it runs
	cmd := d.lab.Proxy.Command(ctx, "ip", "monitor", "address")
	cmd.Stdout = &mon
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	for i := 0; !strings.Contains(mon.String(), "198.18.0.250"); i++ { // the monitor listens
		if i == 100 {
			t.Fatal("ip monitor shows no address change after 10s")
		}
		_, _ = d.lab.Proxy.Output("ip", "addr", "del", "198.18.0.250/32", "dev", "ext0")
		_, _ = d.lab.Proxy.Output("ip", "addr", "add", "198.18.0.250/32", "dev", "ext0")
		time.Sleep(100 * time.Millisecond)
	}

	if out, err := d.reloadCLI(t, d.params); err != nil || !strings.Contains(out, "reloaded: pid") {
		t.Fatalf("reload adding a fastl4 virtual: %v\n%s", err, out)
	}
	n := d.netcfgChecks(t)
	for i := 0; d.netcfgChecks(t) < n+2; i++ { // the reconciler saw the reload's changes
		if i == 200 {
			t.Fatal("the reconciler did not check the host within 20s of the reload")
		}
		_, _ = d.lab.Proxy.Output("ip", "addr", "del", "198.18.0.250/32", "dev", "ext0")
		time.Sleep(100 * time.Millisecond)
	}
	vip := " " + d.vip.String() + "/"
	if !strings.Contains(mon.String(), vip) {
		t.Fatalf("ip monitor never saw the reload add %s:\n%s", d.vip, mon.String())
	}
	for _, line := range strings.Split(mon.String(), "\n") {
		if strings.HasPrefix(line, "Deleted") && strings.Contains(line, vip) {
			t.Errorf("the VIP the reload added was removed: %s", line)
		}
	}
}
