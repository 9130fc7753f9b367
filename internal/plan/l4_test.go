package plan

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/portlist"
	"github.com/edgeproxy/edgeproxy/l4"
)

const fastYAML = `
network:
  external: {interface: ext0, addresses: [203.0.113.10/24], gateway: 203.0.113.1}
  internal:
    interface: int0
    addresses: [10.20.0.10/24]
    routes: [{to: 10.10.0.0/16, via: 10.20.0.1}]
    xdp_mode: generic
  hosts: {fe01.corp.example.com: 10.10.0.11}
fastpath: {max_flows: 1000, snat_ports: 41000-41999}
log: {fastl4: {rate: 50}}
pools:
  fe: {members: [fe01.corp.example.com]}
virtuals:
  - {name: web, mode: fastl4, listen: 203.0.113.20:443, pool: fe, port: 4443, log: true}
  - {name: dns, mode: fastl4, listen: 203.0.113.20:53, pool: fe, port: 5353, protocol: udp,
     snat: [10.20.0.50], idle_timeout: 60s, reset_on_timeout: false}
`

func parse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	c, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The fast path's spec carries the file's NICs, modes, knobs and SNAT,
// with F5's defaults where the file says nothing; netcfg's spec carries
// the sysctls the fast path declares.
func TestCompileFastPath(t *testing.T) {
	p, err := Compile(context.Background(), parse(t, fastYAML), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := p.L4
	if s == nil {
		t.Fatal("no fast path spec for a file with fastl4 virtuals")
	}
	if s.ExtIf != "ext0" || s.XDPMode != l4.XDPNative || s.IntIf != "int0" || s.IntXDPMode != l4.XDPGeneric ||
		s.MaxFlows != 1000 || s.SNATPorts != (portlist.Range{First: 41000, Last: 41999}) || s.PinPath != config.DefaultPinPath {
		t.Errorf("options: %+v", s.Options)
	}
	web, dns := s.Virtuals[0], s.Virtuals[1]
	if web.Proto != l4.TCP || !web.Automap || !slices.Equal(web.SNAT, []netip.Addr{netip.MustParseAddr("10.20.0.10")}) ||
		!web.ResetOnTimeout || web.IdleTimeout != 300*time.Second || web.HandshakeTimeout != 5*time.Second || !web.Log {
		t.Errorf("web: %+v", web)
	}
	if dns.Proto != l4.UDP || dns.Automap || !slices.Equal(dns.SNAT, []netip.Addr{netip.MustParseAddr("10.20.0.50")}) ||
		dns.ResetOnTimeout || dns.IdleTimeout != time.Minute || dns.Port != 5353 || dns.Log {
		t.Errorf("dns: %+v", dns)
	}
	if s.LogRate != 50 {
		t.Errorf("connection log rate %d, want the file's 50", s.LogRate)
	}
	if m := s.Pools["fe"]; len(m) != 1 || m[0].Addr != netip.MustParseAddr("10.10.0.11") || !m[0].Up {
		t.Errorf("pool fe: %+v", m)
	}
	if !slices.Contains(s.Host.Internal, netip.MustParsePrefix("10.10.0.0/16")) || !slices.Contains(s.Host.VIPs, netip.MustParseAddr("203.0.113.20")) {
		t.Errorf("host: %+v", s.Host)
	}
	sysctls := map[string]string{}
	for _, sc := range p.Network.Sysctls {
		sysctls[sc.Key] = sc.Value
	}
	if sysctls["net/ipv4/ip_local_reserved_ports"] != "41000-41999" || sysctls["net/ipv4/conf/lo/forwarding"] != "1" {
		t.Errorf("netcfg sysctls %v: want the fast path's reserved ports and loopback forwarding", sysctls)
	}
	if !slices.Contains(p.Network.SNAT, netip.MustParseAddr("10.20.0.50")) {
		t.Errorf("netcfg SNAT addresses %v", p.Network.SNAT)
	}
}

// xdp_mode: off on the external NIC runs no fast path, in every place
// that asks: no spec, no fast path sysctls.
func TestCompileXDPOff(t *testing.T) {
	c := parse(t, fastYAML)
	c.Network.External.XDPMode = config.XDPOff
	if c.NeedsXDP() {
		t.Error("NeedsXDP with xdp_mode: off on the external NIC")
	}
	p, err := Compile(context.Background(), c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.L4 != nil {
		t.Errorf("fast path spec with xdp_mode: off: %+v", p.L4)
	}
	for _, sc := range p.Network.Sysctls {
		if sc.Key == "net/ipv4/ip_local_reserved_ports" {
			t.Errorf("reserved SNAT ports without a fast path")
		}
	}
}

// The planes' own defaults are the file's.
func TestDefaultsAgree(t *testing.T) {
	if l4.DefaultMaxFlows != config.DefaultMaxFlows || l4.DefaultPinPath != config.DefaultPinPath ||
		l4.DefaultGCInterval != config.DefaultGCInterval.D() ||
		l4.DefaultSNATPorts != (portlist.Range{First: config.DefaultSNATPorts.First, Last: config.DefaultSNATPorts.Last}) ||
		l4.DefaultIdleTimeout != config.DefaultIdleTimeout.D() || l4.DefaultHandshakeTimeout != config.DefaultHandshakeTimeout.D() ||
		l4.DefaultCloseTimeout != config.DefaultCloseTimeout.D() {
		t.Error("the fast path's defaults differ from config's")
	}
}
