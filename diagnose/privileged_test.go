package diagnose

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// labConfig publishes the lab: an https virtual on VIP4:443 and a fastl4
// virtual on VIP6:443, both to the pool of the lab's members.
func labConfig(lab *testnet.Lab, pinPath string) *config.Config {
	hosts := lab.MemberHosts("fe01.corp.example.com", "fe02.corp.example.com")
	hosts["fe01v6.corp.example.com"] = lab.Members6[0]
	return &config.Config{
		Network:  lab.Network(testnet.NetworkOptions{Hosts: hosts}),
		FastPath: config.FastPath{PinPath: pinPath, SNATPorts: config.DefaultSNATPorts},
		Pools: map[string]*config.Pool{
			"sfb-fe":  {Members: []config.Member{{Address: "fe01.corp.example.com"}, {Address: "fe02.corp.example.com"}}, Monitor: config.Monitor{Port: 4443}},
			"sfb-fe6": {Members: []config.Member{{Address: "fe01v6.corp.example.com"}}, Monitor: config.Monitor{Port: 4443}},
		},
		Virtuals: []*config.Virtual{
			{Name: "sfb-web", Mode: config.ModeHTTPS, Listen: netip.AddrPortFrom(lab.VIP4, 443),
				Sites: []*config.Site{{Hosts: skypeNames, Pool: "sfb-fe", Port: 4443, Profile: config.ProfileSkype, BackendTLS: &config.BackendTLS{}}}},
			{Name: "sfb-web-l4", Mode: config.ModeFastL4, Listen: netip.AddrPortFrom(lab.VIP6, 443), Pool: "sfb-fe6", Port: 4443,
				SNAT: config.SNAT{Automap: true}},
		},
	}
}

// pinnedMap pins a map the way the fast path does, in a pin directory
// of the lab's own.
func pinnedMap(t *testing.T, lab *testnet.Lab) string {
	t.Helper()
	pin := testnet.TestPinDir(t, lab.Proxy.Name)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "flows", Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatalf("create map: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := m.Pin(filepath.Join(pin, "flows")); err != nil {
		t.Fatalf("pin map: %v", err)
	}
	return pin
}

// attachXDP attaches a pass program to the proxy's NICs; the returned
// function detaches them.
func attachXDP(t *testing.T, lab *testnet.Lab) func() {
	t.Helper()
	var links []link.Link
	for _, ifc := range []string{testnet.ExtIf, testnet.IntIf} {
		if err := lab.Proxy.Do(func() error {
			l, err := testnet.AttachPass(ifc)
			links = append(links, l)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	detach := func() {
		for _, l := range links {
			if l != nil {
				l.Close()
			}
		}
		links = nil
	}
	t.Cleanup(detach)
	return detach
}

func labEnv(lab *testnet.Lab, cfg *config.Config) *Env {
	return &Env{Config: cfg, NS: lab.Proxy.Do, IsProxy: selfPID, Timeout: time.Second}
}

func TestPrivilegedListeners(t *testing.T) {
	testnet.RequireRoot(t, "python3")
	lab := testnet.New(t, testnet.Options{})
	cfg := labConfig(lab, pinnedMap(t, lab))
	detach := attachXDP(t, lab)
	ln, err := lab.Proxy.Listen("tcp", netip.AddrPortFrom(lab.VIP4, 443).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	fs := runCheck(t, labEnv(lab, cfg), Listeners)
	expectAtMost(t, fs, Pass)
	expect(t, fs, "VIP 198.18.0.10", Pass, "on ext0")
	expect(t, fs, "VIP 2001:db8:1::10", Pass, "on ext0")
	expect(t, fs, "XDP ext0", Pass, `"xdp_pass"`, "native")
	expect(t, fs, "XDP int0", Pass)
	expect(t, fs, "pinned maps", Pass, "flows")
	expect(t, fs, "sfb-web 198.18.0.10:443", Pass, fmt.Sprintf("pid %d", os.Getpid()))
	expect(t, fs, "sfb-web-l4 [2001:db8:1::10]:443", Pass, "handled by XDP program")

	t.Run("another process on the port", func(t *testing.T) {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := lab.Proxy.Command(ctx, "python3", "-c",
			"import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',443))\ns.listen()\nprint('ok',flush=True)\ntime.sleep(60)\n")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
			t.Fatalf("python3 did not listen: %v", err)
		}
		fs := runCheck(t, labEnv(lab, cfg), Listeners)
		expect(t, fs, "sfb-web 198.18.0.10:443", Fail, "owned by another process", "python3 (pid "+strconv.Itoa(cmd.Process.Pid)+") on 0.0.0.0:443")
	})

	t.Run("VIP missing", func(t *testing.T) {
		lab.Proxy.Run(t, "ip", "addr", "del", "198.18.0.10/32", "dev", testnet.ExtIf)
		defer lab.Proxy.Run(t, "ip", "addr", "add", "198.18.0.10/32", "dev", testnet.ExtIf)
		fs := runCheck(t, labEnv(lab, cfg), Listeners)
		expect(t, fs, "VIP 198.18.0.10", Fail, "not an address of this host", "ip addr add 198.18.0.10/32 dev ext0")
	})

	t.Run("VIP on the internal NIC", func(t *testing.T) {
		lab.Proxy.Run(t, "ip", "-6", "addr", "del", "2001:db8:1::10/128", "dev", testnet.ExtIf)
		lab.Proxy.Run(t, "ip", "-6", "addr", "add", "2001:db8:1::10/128", "dev", testnet.IntIf, "nodad")
		defer func() {
			lab.Proxy.Run(t, "ip", "-6", "addr", "del", "2001:db8:1::10/128", "dev", testnet.IntIf)
			lab.Proxy.Run(t, "ip", "-6", "addr", "add", "2001:db8:1::10/128", "dev", testnet.ExtIf, "nodad")
		}()
		fs := runCheck(t, labEnv(lab, cfg), Listeners)
		expect(t, fs, "VIP 2001:db8:1::10", Fail, "is on int0, not on the external NIC ext0", "ip addr del 2001:db8:1::10/128 dev int0")
	})

	t.Run("no XDP program", func(t *testing.T) {
		detach()
		fs := runCheck(t, labEnv(lab, cfg), Listeners)
		expect(t, fs, "XDP ext0", Fail, "no XDP program attached to ext0", "sfb-web-l4")
		expect(t, fs, "XDP int0", Fail, "members' replies")
		expect(t, fs, "sfb-web-l4", Fail, "nothing translates")
	})
}

func TestPrivilegedRoutes(t *testing.T) {
	testnet.RequireRoot(t, "sysctl")
	lab := testnet.New(t, testnet.Options{})
	cfg := labConfig(lab, "")
	lab.Proxy.Run(t, "sysctl", "-qw", "net.ipv4.ip_local_reserved_ports=40000-59999")

	fs := runCheck(t, labEnv(lab, cfg), Routes)
	expectAtMost(t, fs, Pass)
	expect(t, fs, "default route IPv4", Pass, "via 198.18.0.1 dev ext0")
	expect(t, fs, "default route IPv6", Pass, "via 2001:db8:1::1 dev ext0")
	expect(t, fs, "member fe01.corp.example.com", Pass, "198.19.1.11 via 198.19.0.1 dev int0 src 198.19.0.2")
	expect(t, fs, "member fe01v6.corp.example.com", Pass, "dev int0")
	expect(t, fs, "SNAT sfb-web-l4", Pass, "2001:db8:2::2 on int0", "not checkable from here")
	expect(t, fs, "SNAT ports", Pass)

	t.Run("default route on the internal NIC", func(t *testing.T) {
		lab.Proxy.Run(t, "ip", "route", "add", "default", "via", "198.19.0.1", "dev", testnet.IntIf, "metric", "50")
		defer lab.Proxy.Run(t, "ip", "route", "del", "default", "via", "198.19.0.1", "dev", testnet.IntIf, "metric", "50")
		fs := runCheck(t, labEnv(lab, cfg), Routes)
		expect(t, fs, "default route IPv4", Fail, "default route via 198.19.0.1 dev int0 on the internal NIC", "ip route del default via 198.19.0.1 dev int0")
	})

	t.Run("member route missing", func(t *testing.T) {
		lab.Proxy.Run(t, "ip", "route", "del", "198.19.1.0/24")
		defer lab.Proxy.Run(t, "ip", "route", "add", "198.19.1.0/24", "via", "198.19.0.1", "dev", testnet.IntIf)
		fs := runCheck(t, labEnv(lab, cfg), Routes)
		// One route is missing: one finding for the members behind it,
		// with the route the file lists.
		expect(t, fs, "member fe01.corp.example.com, fe02.corp.example.com", Fail, "198.19.1.11, 198.19.1.12 via 198.18.0.1 dev ext0", "not the internal NIC int0",
			"the file lists {to: 198.19.1.0/24, via: 198.19.0.1}", "ip route add 198.19.1.0/24 via 198.19.0.1 dev int0")
		if n := len(fails(fs)); n != 1 {
			t.Errorf("%d failures, want one", n)
		}
	})

	t.Run("a more specific route wins over the internal one", func(t *testing.T) {
		lab.Proxy.Run(t, "ip", "route", "add", "198.19.1.0/25", "via", "198.18.0.1", "dev", testnet.ExtIf)
		defer lab.Proxy.Run(t, "ip", "route", "del", "198.19.1.0/25")
		fs := runCheck(t, labEnv(lab, cfg), Routes)
		f := expect(t, fs, "member fe01.corp.example.com, fe02.corp.example.com", Fail,
			"the internal route 198.19.1.0/24 exists, but the more specific 198.19.1.0/25 wins", "ip route del 198.19.1.0/25")
		if strings.Contains(f.Fix, "add") {
			t.Errorf("fix %q speaks of adding the route that exists", f.Fix)
		}
	})

	t.Run("a wrong address in network.hosts", func(t *testing.T) {
		wrong := labConfig(lab, cfg.FastPath.PinPath)
		wrong.Network.Hosts["fe02.corp.example.com"] = netip.MustParseAddr("198.18.7.12")
		fs := runCheck(t, labEnv(lab, wrong), Routes)
		expect(t, fs, "member fe02.corp.example.com", Fail, "fe02.corp.example.com is 198.18.7.12 by network.hosts",
			"if 198.18.7.12 is not fe02.corp.example.com's address, correct network.hosts")
	})

	t.Run("no default route", func(t *testing.T) {
		lab.Proxy.Run(t, "ip", "route", "del", "default", "via", "198.18.0.1")
		defer lab.Proxy.Run(t, "ip", "route", "add", "default", "via", "198.18.0.1", "dev", testnet.ExtIf)
		fs := runCheck(t, labEnv(lab, cfg), Routes)
		expect(t, fs, "default route IPv4", Fail, "no IPv4 default route on ext0", "network.external.gateway")
	})

	t.Run("forwarding on", func(t *testing.T) {
		lab.Proxy.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		defer lab.Proxy.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=0")
		fs := runCheck(t, labEnv(lab, cfg), Routes)
		expect(t, fs, "net.ipv4.ip_forward", Warn, "= 1", "sysctl -w net.ipv4.ip_forward=0")
	})

	t.Run("SNAT address not on the internal NIC", func(t *testing.T) {
		bad := labConfig(lab, "")
		bad.Virtuals[1].SNAT = config.SNAT{Addresses: []netip.Addr{netip.MustParseAddr("2001:db8:2::99")}}
		fs := runCheck(t, labEnv(lab, bad), Routes)
		expect(t, fs, "SNAT sfb-web-l4", Fail, "2001:db8:2::99 is not on the internal NIC int0", "ip addr add 2001:db8:2::99/128 dev int0")
	})

	t.Run("no SNAT", func(t *testing.T) {
		bad := labConfig(lab, "")
		bad.Virtuals[1].SNAT = config.SNAT{}
		fs := runCheck(t, labEnv(lab, bad), Routes)
		expect(t, fs, "SNAT sfb-web-l4", Fail, "bypassing the proxy", "snat: automap")
	})

	t.Run("SNAT ports not reserved", func(t *testing.T) {
		lab.Proxy.Run(t, "sysctl", "-qw", "net.ipv4.ip_local_reserved_ports=")
		defer lab.Proxy.Run(t, "sysctl", "-qw", "net.ipv4.ip_local_reserved_ports=40000-59999")
		fs := runCheck(t, labEnv(lab, cfg), Routes)
		expect(t, fs, "SNAT ports 40000-59999", Warn, "not reserved", "ip_local_reserved_ports=40000-59999")
	})
}

func TestPrivilegedPortsFromTheInternalAddress(t *testing.T) {
	testnet.RequireRoot(t)
	lab := testnet.New(t, testnet.Options{})
	cfg := labConfig(lab, "")
	cfg.Network.Hosts["fe02.corp.example.com"] = netip.MustParseAddr("198.19.1.99") // nothing there: dropped
	// fe01 answers on 4443; fe01v6 only on its Internal Web Site (443).
	for _, a := range []netip.AddrPort{netip.AddrPortFrom(lab.Members4[0], 4443), netip.AddrPortFrom(lab.Members6[0], 443)} {
		ln, err := lab.Backend.Listen("tcp", a.String())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
	}
	fs := runCheck(t, labEnv(lab, cfg), PortRedirection)
	expect(t, fs, "member fe01.corp.example.com:4443", Pass, "198.19.1.11:4443 answers from 198.19.0.2")
	expect(t, fs, "member fe01v6.corp.example.com:4443", Fail, "refuses connections from 2001:db8:2::2", "port 443 answers (the Internal Web Site)")
	expect(t, fs, "member fe02.corp.example.com:4443", Fail, "no answer from 198.19.1.99:4443 within 1s", "fe02.corp.example.com is 198.19.1.99 by network.hosts",
		"if 198.19.1.99 is not fe02.corp.example.com's address, correct network.hosts; otherwise", "firewall")
}
