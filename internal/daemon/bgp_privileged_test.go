package daemon_test

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bgp"
	"github.com/edgeproxy/edgeproxy/internal/lab"
)

// The daemon announces its VIPs to a BIRD 2 router on the client side
// while it can serve them: a VIP whose virtuals lose every member is
// withdrawn, and `edgeproxy drain` (as SIGTERM) withdraws before the
// connections drain.
func TestPrivilegedDaemonBGP(t *testing.T) {
	t.Parallel()
	d := newDeployment(t)
	bird, err := lab.StartBird(d.lab.Client, t.TempDir(), fmt.Sprintf(`router id %s;
protocol device { scan time 1; }
protocol kernel { ipv4 { export all; import none; }; merge paths on; }
protocol bgp edge { local as 65000; neighbor %s as 65100; ipv4 { import all; export none; }; hold time 3; connect retry time 1; }
`, d.lab.ClientAddr4, d.lab.ExtAddr4))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bird.Close)
	d.params.BGP = &lab.SkypeBGP{LocalAS: 65100, PeerAS: 65000, RouterID: d.lab.ExtAddr4, Neighbor: d.lab.ClientAddr4}
	d.writeConfig(t, d.params)
	d.start(t)

	web, bulk := d.lab.VIP4.String()+"/32", d.vip.String()+"/32"
	d.waitRoute(t, web, true)
	st := d.bgpStatus(t)
	if len(st.Sessions) != 1 || !st.Sessions[0].Established() {
		t.Errorf("status: bgp sessions %+v, want one established", st.Sessions)
	}
	// The bulk pool's member listens on nothing: once its monitor says
	// so, its VIP is withdrawn and status says which virtual keeps it so.
	d.waitRoute(t, bulk, false)
	if r := routeOf(d.bgpStatus(t), bulk); r.Announced || !strings.Contains(r.Why, "virtual bulk") {
		t.Errorf("status: route %s = %+v, want withdrawn naming virtual bulk", bulk, r)
	}
	if m := d.metrics(t); !strings.Contains(m, `edgeproxy_bgp_route_announced{prefix="`+web+`"} 1`) || !strings.Contains(m, "edgeproxy_bgp_session_established") {
		t.Errorf("/metrics lacks the announced route and the session:\n%s", m)
	}

	for _, m := range d.members {
		m.stop()
	}
	d.waitRoute(t, web, false)
	if r := routeOf(d.bgpStatus(t), web); !strings.Contains(r.Why, "no member up for virtual sfb-web") {
		t.Errorf("status: route %s = %+v, want the virtuals without members named", web, r)
	}
	for _, m := range d.members {
		m.start(t, d.lab)
	}
	d.waitRoute(t, web, true)

	c := d.client(netip.AddrPortFrom(d.lab.VIP4, 443), false)
	done := make(chan error, 1)
	go func() {
		resp, err := c.Get("https://webext.example.com/longpoll?wait=3s")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	out, err := d.cli(t, "drain", "-socket", filepath.Join(d.dir, "run", "control.sock"))
	if err != nil || !strings.Contains(out, "routes withdrawn: "+web) {
		t.Fatalf("edgeproxy drain: %v\n%s", err, out)
	}
	if hops := lab.NextHops(d.lab.Client, web); len(hops) > 0 {
		t.Fatalf("edgeproxy drain answered with the route still on the router via %v", hops)
	}
	select {
	case err := <-done:
		t.Fatalf("the in-flight request ended (%v) before the route was withdrawn", err)
	default:
	}
	if err := <-done; err != nil {
		t.Fatalf("in-flight request cut after the withdrawal: %v", err)
	}
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon exit after edgeproxy drain: %v\n%s", err, d.Log.String())
	}
}

// waitRoute waits (at most 20 s) until the router's kernel has a route
// to prefix, or has none.
func (d *deployment) waitRoute(t *testing.T, prefix string, present bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if (len(lab.NextHops(d.lab.Client, prefix)) > 0) == present {
			return
		}
	}
	t.Fatalf("route %s on the router: want present=%v after 20s; status %+v", prefix, present, d.bgpStatus(t))
}

func (d *deployment) bgpStatus(t *testing.T) *bgp.Status {
	t.Helper()
	st, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.BGP == nil {
		t.Fatal("/status has no bgp section")
	}
	return st.BGP
}

func routeOf(st *bgp.Status, prefix string) bgp.RouteStatus {
	for _, r := range st.Routes {
		if r.Prefix == prefix {
			return r
		}
	}
	return bgp.RouteStatus{Prefix: prefix, Why: "not listed"}
}
