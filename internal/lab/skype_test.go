package lab

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/certgen"
)

// The configurations SkypeYAML writes are accepted by edgeproxy's own
// parser and publish exactly the virtuals asked for, on the lab's
// addresses, with the pool, members and monitor given.
func TestSkypeYAML(t *testing.T) {
	dir := t.TempDir()
	if _, err := certgen.Write(dir, certgen.Options{}); err != nil {
		t.Fatal(err)
	}
	l := Plan(Options{Members: 2})
	names := []string{"fe01.corp.example.com", "fe02.corp.example.com"}
	ca := filepath.Join(dir, certgen.InternalCAFile)
	l7 := &SkypeL7{VIP: l.VIP4, Hosts: certgen.SkypeNames, Cert: filepath.Join(dir, certgen.PublicCertFile),
		Key: filepath.Join(dir, certgen.PublicKeyFile), InternalCA: ca, Skype: true, Drain: time.Second, NoSessionTickets: true}
	for _, tc := range []struct {
		name string
		sk   Skype
		want []string // mode/protocol listen
	}{
		{"fastl4", Skype{FastL4: &SkypeFastL4{VIP: l.VIP6, HTTP: true, UDP: true}},
			[]string{"fastl4/tcp [2001:db8:1::10]:443", "fastl4/tcp [2001:db8:1::10]:80", "fastl4/udp [2001:db8:1::10]:443"}},
		{"https", Skype{L7: l7}, []string{"https/tcp 198.18.0.10:443"}},
		{"both", Skype{FastL4: &SkypeFastL4{VIP: netip.MustParseAddr("198.18.0.20")}, L7: &SkypeL7{VIP: l.VIP4, Hosts: l7.Hosts, Cert: l7.Cert, Key: l7.Key,
			InternalCA: ca, HTTP: true}},
			[]string{"fastl4/tcp 198.18.0.20:443", "https/tcp 198.18.0.10:443", "http/tcp 198.18.0.10:80"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sk := tc.sk
			sk.Network = NetworkOptions{Hosts: l.MemberHosts(names...)}
			sk.PinPath, sk.Members = "/sys/fs/bpf/edgeproxy-lab-test", names
			if sk.FastL4 != nil && sk.FastL4.VIP.Is6() {
				sk.Members = []string{l.Members6[0].String(), l.Members6[1].String()}
			}
			sk.Monitor = SkypeMonitor{TLS: true, CA: ca, Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 1, Fall: 2}
			text := l.SkypeYAML(sk)
			c, err := config.Parse(filepath.Join(dir, "edgeproxy.yaml"), []byte(text))
			if err != nil {
				t.Fatalf("edgeproxy rejects the configuration: %v\n%s", err, text)
			}
			var got []string
			for _, v := range c.Virtuals {
				if v.Pool != "" && v.Pool != "sfb-fe" {
					t.Errorf("virtual %s publishes pool %s, want sfb-fe", v.Name, v.Pool)
				}
				got = append(got, string(v.Mode)+"/"+string(v.Proto)+" "+v.Listen.String())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("virtuals %q, want %q\n%s", got, tc.want, text)
			}
			p := c.Pools["sfb-fe"]
			if p == nil || len(p.Members) != 2 || p.Monitor.Type != config.MonitorTLS || p.Monitor.Fall != 2 {
				t.Errorf("pool sfb-fe: %+v\n%s", p, text)
			}
		})
	}
}

// The pool's kind, an https monitor, other member ports and an http
// virtual without the profile come out as asked.
func TestSkypeYAMLKnobs(t *testing.T) {
	dir := t.TempDir()
	if _, err := certgen.Write(dir, certgen.Options{}); err != nil {
		t.Fatal(err)
	}
	l := Plan(Options{Members: 2})
	ca := filepath.Join(dir, certgen.InternalCAFile)
	sk := Skype{Network: NetworkOptions{Unmanaged: true}, PinPath: "/sys/fs/bpf/edgeproxy-lab-test", Kind: config.PoolKindSkypeFE,
		Members: []string{l.Members4[0].String(), l.Members4[1].String()},
		Monitor: SkypeMonitor{HTTPS: true, Path: "/", Host: "webext.example.com", CA: ca, Interval: time.Second, Timeout: time.Second / 2},
		FastL4:  &SkypeFastL4{VIP: netip.MustParseAddr("198.18.0.20"), Port: 8443},
		L7: &SkypeL7{VIP: l.VIP4, Hosts: certgen.SkypeNames, Cert: filepath.Join(dir, certgen.PublicCertFile), Key: filepath.Join(dir, certgen.PublicKeyFile),
			InternalCA: ca, Skype: true, HTTP: true, HTTPNoProfile: true, Port: 443}}
	text := l.SkypeYAML(sk)
	c, err := config.Parse(filepath.Join(dir, "edgeproxy.yaml"), []byte(text))
	if err != nil {
		t.Fatalf("edgeproxy rejects the configuration: %v\n%s", err, text)
	}
	p := c.Pools["sfb-fe"]
	if p.Kind != config.PoolKindSkypeFE || p.Monitor.Type != config.MonitorHTTPS || p.Monitor.Path != "/" || p.Monitor.Host != "webext.example.com" {
		t.Errorf("pool sfb-fe: %+v\n%s", p, text)
	}
	var got []string
	for _, v := range c.Virtuals {
		port, profile := v.Port, ""
		if len(v.Sites) > 0 {
			port, profile = v.Sites[0].Port, string(v.Sites[0].Profile)
		}
		got = append(got, fmt.Sprintf("%s:%d/%s", v.Name, port, profile))
	}
	want := []string{"sfb-web-l4:8443/", "sfb-web:443/skype", "sfb-web-http:8080/"}
	if !slices.Equal(got, want) {
		t.Errorf("virtuals %q, want %q\n%s", got, want, text)
	}
}

// An extra internal address, the control socket, the flow table's size, the bulk pool with its
// fastl4 virtual, per-virtual drain timeouts and names served by the
// https virtual alone come out as asked; without FastL4 the bulk pool
// stays, unpublished, as it does with NoVirtual; the access log goes
// where asked.
func TestSkypeYAMLBulkAndDrain(t *testing.T) {
	dir := t.TempDir()
	if _, err := certgen.Write(dir, certgen.Options{}); err != nil {
		t.Fatal(err)
	}
	l := Plan(Options{Members: 2})
	ca := filepath.Join(dir, certgen.InternalCAFile)
	members := []string{l.Members4[0].String(), l.Members4[1].String()}
	extra := netip.MustParsePrefix("198.19.0.5/24")
	sk := Skype{Network: NetworkOptions{IntExtra: []netip.Prefix{extra}}, ControlSocket: filepath.Join(dir, "control.sock"), PinPath: "/sys/fs/bpf/edgeproxy-lab-test", MaxFlows: 4096,
		Members: members, Monitor: SkypeMonitor{Interval: time.Second, Timeout: time.Second / 2},
		Bulk:   &SkypeBulk{Members: members[:1], Interval: time.Second, Timeout: time.Second / 2},
		FastL4: &SkypeFastL4{VIP: netip.MustParseAddr("198.18.0.20"), Drain: 5 * time.Second},
		L7: &SkypeL7{VIP: l.VIP4, Hosts: certgen.SkypeNames, ExtraHosts: []string{"new.example.com"}, Cert: filepath.Join(dir, certgen.PublicCertFile),
			Key: filepath.Join(dir, certgen.PublicKeyFile), InternalCA: ca, HTTP: true, HTTPSDrain: 10 * time.Second}}
	text := l.SkypeYAML(sk)
	c, err := config.Parse(filepath.Join(dir, "edgeproxy.yaml"), []byte(text))
	if err != nil {
		t.Fatalf("edgeproxy rejects the configuration: %v\n%s", err, text)
	}
	if c.Control.Socket != sk.ControlSocket || c.FastPath.MaxFlows != 4096 {
		t.Errorf("control socket %q, max_flows %d\n%s", c.Control.Socket, c.FastPath.MaxFlows, text)
	}
	if a := c.Network.Internal.Addresses; len(a) != 3 || a[2] != extra {
		t.Errorf("internal addresses %v, want the lab's and %s\n%s", a, extra, text)
	}
	if b := c.Pools["bulk"]; b == nil || len(b.Members) != 1 || b.Monitor.Type != config.MonitorTCP || b.Monitor.Port != 5201 {
		t.Errorf("pool bulk: %+v\n%s", b, text)
	}
	var got []string
	for _, v := range c.Virtuals {
		s := fmt.Sprintf("%s %s %s/%d %s", v.Name, v.Listen, v.Pool, v.Port, time.Duration(v.DrainTimeout))
		if len(v.Sites) > 0 {
			s += fmt.Sprintf(" %d hosts", len(v.Sites[0].Hosts))
		}
		got = append(got, s)
	}
	want := []string{"sfb-web-l4 198.18.0.20:443 sfb-fe/4443 5s", "bulk 198.18.0.20:5201 bulk/5201 30s",
		"sfb-web 198.18.0.10:443 /0 10s 5 hosts", "sfb-web-http 198.18.0.10:80 /0 30s 4 hosts"}
	if !slices.Equal(got, want) {
		t.Errorf("virtuals %q, want %q\n%s", got, want, text)
	}

	bulk := *sk.Bulk
	bulk.NoVirtual = true
	sk.Bulk = &bulk
	c, err = config.Parse(filepath.Join(dir, "edgeproxy.yaml"), []byte(l.SkypeYAML(sk)))
	if err != nil || c.Pools["bulk"] == nil || len(c.Virtuals) != 3 {
		t.Fatalf("bulk unpublished: %v, pools %v, %d virtuals", err, c.Pools, len(c.Virtuals))
	}
	sk.FastL4 = nil
	sk.AccessLog = filepath.Join(dir, "access.log")
	c, err = config.Parse(filepath.Join(dir, "edgeproxy.yaml"), []byte(l.SkypeYAML(sk)))
	if err != nil || c.Pools["bulk"] == nil || len(c.Virtuals) != 2 || c.Log.Access != sk.AccessLog {
		t.Fatalf("without FastL4: %v, pools %v, %d virtuals, access log %q", err, c.Pools, len(c.Virtuals), c.Log.Access)
	}
}

// The ha and bgp sections come out as asked.
func TestSkypeYAMLHABGP(t *testing.T) {
	l := Plan(Options{Members: 2})
	floating := netip.MustParsePrefix("198.19.0.5/24")
	sk := Skype{PinPath: "/sys/fs/bpf/edgeproxy-lab-test", Members: []string{l.Members4[0].String()},
		Monitor: SkypeMonitor{Interval: time.Second, Timeout: time.Second / 2},
		FastL4:  &SkypeFastL4{VIP: netip.MustParseAddr("198.18.0.20")},
		HA: &SkypeHA{Priority: 150, FIFO: "/run/keepalived.fifo",
			External: SkypeHASide{VRID: 51, Peer: netip.MustParseAddr("198.18.0.3")},
			Internal: SkypeHASide{VRID: 52, Peer: netip.MustParseAddr("198.19.0.3"), Floating: []netip.Prefix{floating}}},
		BGP: &SkypeBGP{LocalAS: 65100, PeerAS: 65000, RouterID: l.ExtAddr4, Neighbor: l.ClientAddr4}}
	text := l.SkypeYAML(sk)
	c, err := config.Parse("edgeproxy.yaml", []byte(text))
	if err != nil {
		t.Fatalf("edgeproxy rejects the configuration: %v\n%s", err, text)
	}
	if h := c.HA; h == nil || h.Priority != 150 || h.Fifo != sk.HA.FIFO || h.External.VRID != 51 || h.Internal.Peer != sk.HA.Internal.Peer ||
		!slices.Equal(h.Internal.Floating, []netip.Prefix{floating}) {
		t.Errorf("ha: %+v\n%s", c.HA, text)
	}
	if b := c.BGP; b == nil || b.LocalAS != 65100 || b.RouterID != l.ExtAddr4 || len(b.Neighbors) != 1 ||
		b.Neighbors[0].Address != l.ClientAddr4 || b.Neighbors[0].AS != 65000 {
		t.Errorf("bgp: %+v\n%s", c.BGP, text)
	}
}

// An ACME certificate comes out alone or after the file certificate, for
// the https virtual's names, with the acme section.
func TestSkypeYAMLACME(t *testing.T) {
	dir := t.TempDir()
	if _, err := certgen.Write(dir, certgen.Options{}); err != nil {
		t.Fatal(err)
	}
	l := Plan(Options{Members: 2})
	ca := filepath.Join(dir, certgen.InternalCAFile)
	for _, afterFile := range []bool{false, true} {
		acme := &SkypeACME{CA: "https://198.18.0.1:14000/dir", CARoot: ca, Challenge: "tls-alpn-01",
			StateDir: filepath.Join(dir, "acme"), CheckInterval: time.Second, AfterFile: afterFile}
		sk := Skype{PinPath: "/sys/fs/bpf/edgeproxy-lab-test", Members: []string{l.Members4[0].String()},
			Monitor: SkypeMonitor{Interval: time.Second, Timeout: time.Second / 2},
			L7: &SkypeL7{VIP: l.VIP4, Hosts: certgen.SkypeNames, Cert: filepath.Join(dir, certgen.PublicCertFile),
				Key: filepath.Join(dir, certgen.PublicKeyFile), InternalCA: ca, HTTP: true, ACME: acme}}
		text := l.SkypeYAML(sk)
		c, err := config.Parse(filepath.Join(dir, "edgeproxy.yaml"), []byte(text))
		if err != nil {
			t.Fatalf("edgeproxy rejects the configuration: %v\n%s", err, text)
		}
		if c.ACME.StateDir != acme.StateDir || c.ACME.CheckInterval.D() != time.Second {
			t.Errorf("acme section %+v\n%s", c.ACME, text)
		}
		certs := c.Virtuals[0].Certificates
		last := certs[len(certs)-1].ACME
		if len(certs) != map[bool]int{false: 1, true: 2}[afterFile] || (afterFile && certs[0].Cert == "") || last == nil ||
			!slices.Equal(last.Names, certgen.SkypeNames) || last.CA != acme.CA || last.CARoot != ca || last.Challenge != "tls-alpn-01" {
			t.Errorf("after file %v: certificates %+v\n%s", afterFile, certs, text)
		}
	}
}
