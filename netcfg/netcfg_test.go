package netcfg

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// reservedPorts is the sysctl the fast path declares for its SNAT ports.
func reservedPorts(ports string) Sysctl {
	return Sysctl{Key: "net/ipv4/ip_local_reserved_ports", Value: ports, Merge: true,
		Why: "the SNAT ports of the fast path are kept out of the host's ephemeral ports"}
}

// exampleHosts is a network.hosts table.
func exampleHosts() map[string]netip.Addr {
	a := netip.MustParseAddr
	return map[string]netip.Addr{"FE01.corp.example.com": a("198.19.1.11"), "onlink.corp.example.com": a("198.19.0.50")}
}

// exampleSpec has two NICs, a pool member behind a route, two on the
// internal subnet, fastl4 virtuals with a SNAT pool, IPv6 and L7
// virtuals on the host's own and the unspecified address.
func exampleSpec() *Spec {
	p := netip.MustParsePrefix
	a := netip.MustParseAddr
	return &Spec{
		External: NIC{Interface: "ext0", Addresses: []netip.Prefix{p("198.18.0.2/24")}, Gateway: a("198.18.0.1"), Gateway6: a("2001:db8:1::1")},
		Internal: NIC{Interface: "int0", Addresses: []netip.Prefix{p("198.19.0.2/24")},
			Routes: []StaticRoute{{To: p("198.19.1.0/24"), Via: a("198.19.0.1")}}},
		Managed: true,
		VIPs:    []netip.Addr{a("198.18.0.10"), a("2001:db8:1::10"), a("198.18.0.10"), a("198.18.0.2"), a("::")},
		SNAT:    []netip.Addr{a("198.19.0.20"), a("198.19.0.2")},
		Members: []netip.Addr{a("198.19.1.11"), a("198.19.0.50"), a("198.19.0.51")},
		Sysctls: []Sysctl{reservedPorts("40000-59999")},
	}
}

func TestDesired(t *testing.T) {
	st, err := Desired(exampleSpec())
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, a := range st.Addresses {
		addrs = append(addrs, a.String())
	}
	want := []string{
		"address 198.18.0.2/24 dev ext0",
		"address 198.19.0.2/24 dev int0",
		"address 198.18.0.10/32 dev ext0",     // a VIP, once for two virtuals
		"address 2001:db8:1::10/128 dev ext0", // the IPv6 VIP
		"address 198.19.0.20/32 dev int0",     // a SNAT pool address; 198.19.0.2 is already there
	}
	if !slices.Equal(addrs, want) {
		t.Errorf("addresses:\n%s\nwant:\n%s", strings.Join(addrs, "\n"), strings.Join(want, "\n"))
	}
	var routes []string
	for _, r := range st.Routes {
		routes = append(routes, r.String())
	}
	wantRoutes := []string{
		"route default via 198.18.0.1 dev ext0",
		"route default via 2001:db8:1::1 dev ext0",
		"route 198.19.1.0/24 via 198.19.0.1 dev int0",
	}
	if !slices.Equal(routes, wantRoutes) {
		t.Errorf("routes: %q, want %q", routes, wantRoutes)
	}
	var neigh []string
	for _, n := range st.Neighbours {
		neigh = append(neigh, n.String())
	}
	wantNeigh := []string{
		"neighbour 198.18.0.1 dev ext0",
		"neighbour 2001:db8:1::1 dev ext0",
		"neighbour 198.19.0.1 dev int0",
		"neighbour 198.19.0.50 dev int0", // on-link members, by name and by address
		"neighbour 198.19.0.51 dev int0",
	}
	if !slices.Equal(neigh, wantNeigh) {
		t.Errorf("neighbours: %q, want %q", neigh, wantNeigh)
	}
	sysctls := map[string]Sysctl{}
	for _, s := range st.Sysctls {
		sysctls[s.Name()] = s
	}
	for k, v := range map[string]string{
		"net.ipv4.conf.ext0.arp_ignore":    "1",
		"net.ipv4.conf.int0.arp_ignore":    "1",
		"net.ipv4.conf.ext0.arp_announce":  "2",
		"net.ipv4.conf.int0.rp_filter":     "2",
		"net.ipv6.conf.ext0.disable_ipv6":  "0",
		"net.ipv6.conf.int0.accept_ra":     "0",
		"net.ipv4.ip_local_reserved_ports": "40000-59999",
		"net.ipv4.ip_forward":              "0",
	} {
		if sysctls[k].Value != v {
			t.Errorf("sysctl %s = %q, want %q", k, sysctls[k].Value, v)
		}
	}
	if !sysctls["net.ipv4.ip_forward"].Report {
		t.Error("ip_forward is changed, not reported")
	}
	if _, ok := sysctls["net.ipv6.conf.int0.disable_ipv6"]; ok {
		t.Error("IPv6 enabled on int0, which has no IPv6 settings")
	}
}

func TestDesiredErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		mod  func(s *Spec)
		want string
	}{
		"internal gateway": {func(s *Spec) { s.Internal.Gateway = netip.MustParseAddr("198.19.0.1") },
			"network.internal.gateway is set"},
		"internal default route": {func(s *Spec) {
			s.Internal.Routes = append(s.Internal.Routes, StaticRoute{To: netip.MustParsePrefix("0.0.0.0/0"), Via: netip.MustParseAddr("198.19.0.1")})
		}, "network.internal.routes[1] is a default route"},
		"gateway family": {func(s *Spec) { s.External.Gateway6 = netip.MustParseAddr("198.18.0.1") },
			"network.external.gateway6 is 198.18.0.1: it must be an IPv6 address"},
		"same NIC": {func(s *Spec) { s.Internal.Interface = "ext0" }, "name two different NICs"},
		"mixed route": {func(s *Spec) { s.Internal.Routes[0].Via = netip.MustParseAddr("2001:db8:2::1") },
			"mixes IPv4 and IPv6"},
		"bad snat ports": {func(s *Spec) { s.Sysctls[0] = reservedPorts("50000-40000") },
			"sysctl net.ipv4.ip_local_reserved_ports 50000-40000"},
	} {
		t.Run(name, func(t *testing.T) {
			s := exampleSpec()
			tc.mod(s)
			_, err := Desired(s)
			if !errors.Is(err, ErrBadNetwork) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBadNetwork with %q", err, tc.want)
			}
		})
	}
	if _, err := Desired(&Spec{}); !errors.Is(err, ErrNoNetwork) {
		t.Fatalf("empty network: %v", err)
	}
}

func TestJournalRecord(t *testing.T) {
	var j journal
	now := time.Unix(0, 0)
	add := addrAdd{link: "ext0", prefix: netip.MustParsePrefix("198.18.0.10/32")}
	j.record(now, add.entries()...)
	j.record(now, add.entries()...)
	j.record(now, sysctlSet{key: "net/ipv4/conf/ext0/arp_ignore", old: "0", new: "1"}.entries()...)
	j.record(now, sysctlSet{key: "net/ipv4/conf/ext0/arp_ignore", old: "1", new: "2"}.entries()...)
	if len(j.Entries) != 2 || j.Entries[1].Old != "0" || j.Entries[1].New != "2" {
		t.Fatalf("entries %+v", j.Entries)
	}
	// Undoing what was done leaves nothing to revert.
	j.record(now, addrDel(add).entries()...)
	j.record(now, sysctlSet{key: "net/ipv4/conf/ext0/arp_ignore", old: "2", new: "0"}.entries()...)
	if len(j.Entries) != 0 {
		t.Fatalf("entries left %+v", j.Entries)
	}
	// A replaced route: the old one comes back on revert.
	old := RouteSpec{Link: "int0", Dst: "0.0.0.0/0", Via: "198.19.0.1"}
	want := specOf(Route{Link: "ext0", Dst: netip.MustParsePrefix("0.0.0.0/0"), Via: netip.MustParseAddr("198.18.0.1")})
	j.record(now, routeSet{want: want, old: &old}.entries()...)
	if len(j.Entries) != 2 || j.Entries[0].Op != "remove" || j.Entries[1].Op != "add" {
		t.Fatalf("route entries %+v", j.Entries)
	}
}

func TestChangeString(t *testing.T) {
	for _, tc := range []struct {
		c    Change
		want string
	}{
		{Change{Op: OpAdd, Subject: "address 198.19.0.2/24 dev int0"}, "+ address 198.19.0.2/24 dev int0"},
		{Change{Op: OpRemove, Subject: "route default via 10.0.0.1 dev int0", Reason: "default route on the internal NIC"},
			"- route default via 10.0.0.1 dev int0 (default route on the internal NIC)"},
		{Change{Op: OpModify, Subject: "sysctl net.ipv4.conf.int0.rp_filter", From: "1", To: "2"}, "~ sysctl net.ipv4.conf.int0.rp_filter: 1 → 2"},
		{Change{Op: OpReport, Subject: "sysctl net.ipv4.ip_forward", Reason: "is 1"}, "! sysctl net.ipv4.ip_forward: is 1"},
	} {
		if got := tc.c.String(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestResolverHosts(t *testing.T) {
	r, err := NewResolver(exampleHosts(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for in, want := range map[string]string{
		"fe01.corp.example.com":  "198.19.1.11", // names are case-insensitive
		"FE01.Corp.Example.com.": "198.19.1.11",
		"198.19.1.12":            "198.19.1.12", // addresses pass through
		"::ffff:198.19.1.13":     "198.19.1.13",
		"2001:db8:3::11":         "2001:db8:3::11",
	} {
		a, err := r.Resolve(ctx, in)
		if err != nil || a.String() != want {
			t.Errorf("Resolve(%q) = %v, %v; want %s", in, a, err, want)
		}
	}
	// Without a DMZ resolver nothing else is asked, not even for a name
	// every host's own resolver knows.
	for _, name := range []string{"fe09.corp.example.com", "localhost"} {
		_, err := r.Resolve(ctx, name)
		if !errors.Is(err, ErrUnresolved) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "add \""+name+": <address>\" to network.hosts") {
			t.Errorf("Resolve(%q): %v", name, err)
		}
	}
}

func TestResolverDMZ(t *testing.T) {
	srv := testnet.DNSServer(t, testnet.DNSTable{"fe09.corp.example.com": {netip.MustParseAddr("198.19.1.99")}})
	r, err := NewResolver(exampleHosts(), srv)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if a, err := r.Resolve(ctx, "fe09.corp.example.com"); err != nil || a != netip.MustParseAddr("198.19.1.99") {
		t.Fatalf("DMZ name: %v %v", a, err)
	}
	// network.hosts wins over DNS.
	if a, err := r.Resolve(ctx, "fe01.corp.example.com"); err != nil || a != netip.MustParseAddr("198.19.1.11") {
		t.Fatalf("hosts name: %v %v", a, err)
	}
	_, err = r.Resolve(ctx, "fe10.corp.example.com")
	if !errors.Is(err, ErrUnresolved) || !strings.Contains(err.Error(), srv) || !strings.Contains(err.Error(), "network.hosts") {
		t.Fatalf("missing name: %v", err)
	}

	if _, err := NewResolver(nil, "dns.corp.example.com:53"); !errors.Is(err, ErrBadNetwork) {
		t.Fatalf("resolver given as a name: %v", err)
	}
	if r, err := NewResolver(nil, "198.19.0.53"); err != nil || r.server != "198.19.0.53:53" {
		t.Fatalf("resolver without port: %v", err)
	}
}
