package daemon_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// TestPrivilegedHANode: a pair node listens on the VIPs before it holds
// them (netcfg leaves them to keepalived), knows its role from the
// addresses it holds and from keepalived's notify_fifo, shows it in
// status and the edgeproxy_ha_role metric, and serves on a VIP as soon
// as the address arrives, without rebinding.
func TestPrivilegedHANode(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	fifo := filepath.Join(d.dir, "run", "keepalived.fifo")
	d.params.HA = &lab.SkypeHA{Priority: 150, FIFO: fifo,
		External: lab.SkypeHASide{VRID: 51, Peer: netip.MustParseAddr("198.18.0.3")},
		Internal: lab.SkypeHASide{VRID: 52, Peer: netip.MustParseAddr("198.19.0.3"), Floating: []netip.Prefix{netip.MustParsePrefix("198.19.0.5/24")}}}
	d.writeConfig(t, d.params)
	// The lab puts the VIP on the proxy; a standby does not hold it.
	d.lab.Proxy.Run(t, "ip", "addr", "del", d.lab.VIP4.String()+"/32", "dev", testnet.ExtIf)
	d.start(t)

	role := func(want string, held int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := d.Status()
			if err == nil && st.HA != nil && st.HA.Role == want && len(st.HA.Held) == held && st.HA.Shared == 3 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("status ha %+v (err %v), want role %s holding %d of 3", st.HA, err, want, held)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// netcfg left the VIPs and the floating address out: a standby.
	role("standby", 0)

	// keepalived makes the node active: the addresses arrive.
	for _, a := range []struct{ prefix, dev string }{
		{d.lab.VIP4.String() + "/32", testnet.ExtIf}, {d.vip.String() + "/32", testnet.ExtIf}, {"198.19.0.5/24", testnet.IntIf},
	} {
		d.lab.Proxy.Run(t, "ip", "addr", "add", a.prefix, "dev", a.dev)
	}
	role("active", 3)
	if e, err := echo(d.client(netip.AddrPortFrom(d.lab.VIP4, 443), false), "https://webext.example.com/echo"); err != nil {
		t.Fatalf("the L7 VIP does not serve once held: %v", err)
	} else if e.Host != "webext.example.com" {
		t.Fatalf("member saw host %q", e.Host)
	}

	// keepalived's word wins over the addresses.
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open the daemon's keepalived fifo: %v", err)
	}
	defer f.Close()
	if _, err := f.WriteString("INSTANCE \"edgeproxy_int\" FAULT 150\nGROUP \"edgeproxy\" FAULT\n"); err != nil {
		t.Fatal(err)
	}
	role("fault", 3)
	if m := d.metrics(t); !strings.Contains(m, `edgeproxy_ha_role{role="fault"} 1`) || !strings.Contains(m, `edgeproxy_ha_role{role="active"} 0`) {
		t.Errorf("metrics lack the fault role:\n%s", grepLines(m, "edgeproxy_ha_role"))
	}
	out := d.lab.Proxy.Run(t, labtest.Binary(t), "status")
	if !strings.Contains(out, "ha fault since") || !strings.Contains(out, "holds 3 of 3 shared addresses") {
		t.Errorf("edgeproxy status lacks the role:\n%s", out)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
