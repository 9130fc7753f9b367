package plan

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
)

// In an HA pair netcfg leaves the VIPs, the floating address and the
// SNAT pool addresses to keepalived, which moves them between the nodes;
// the internal instance carries the floating and SNAT pool addresses.
func TestHANetworkLeavesSharedAddressesToKeepalived(t *testing.T) {
	cfg := testConfig()
	cfg.Virtuals[1].SNAT = config.SNAT{Addresses: []netip.Addr{netip.MustParseAddr("198.18.3.7")}}
	cfg.Network.External = config.NIC{Interface: "ext0", Addresses: []netip.Prefix{netip.MustParsePrefix("198.18.2.11/24")}}
	cfg.Network.Internal = config.NIC{Interface: "int0", Addresses: []netip.Prefix{netip.MustParsePrefix("198.18.3.11/24")}}
	single := Network(cfg)
	if len(single.VIPs) == 0 || len(single.SNAT) == 0 {
		t.Fatalf("a single node's netcfg spec lacks the VIPs or SNAT addresses: %+v", single)
	}
	cfg.HA = &config.HA{Priority: 150, AdvertInterval: config.DefaultAdvertInterval, Fifo: config.DefaultHAFifo,
		External: config.HASide{VRID: 51, Peer: netip.MustParseAddr("198.18.2.12")},
		Internal: config.HASide{VRID: 52, Peer: netip.MustParseAddr("198.18.3.12"), Floating: []netip.Prefix{netip.MustParsePrefix("198.18.3.10/24")}}}
	pair := Network(cfg)
	if len(pair.VIPs) != 0 || len(pair.SNAT) != 0 {
		t.Errorf("netcfg would manage keepalived's addresses: VIPs %v, SNAT %v", pair.VIPs, pair.SNAT)
	}
	s, err := HA(cfg, []string{"/usr/local/bin/edgeproxy", "ha", "check"})
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("198.18.2.1/32")}; !slices.Equal(s.External.Addresses, want) {
		t.Errorf("external instance moves %v, want the VIP once %v", s.External.Addresses, want)
	}
	if want := []netip.Prefix{netip.MustParsePrefix("198.18.3.10/24"), netip.MustParsePrefix("198.18.3.7/32")}; !slices.Equal(s.Internal.Addresses, want) {
		t.Errorf("internal instance moves %v, want %v", s.Internal.Addresses, want)
	}
	if s.External.Source != netip.MustParseAddr("198.18.2.11") || s.Internal.Source != netip.MustParseAddr("198.18.3.11") {
		t.Errorf("unicast sources %s %s, want this node's addresses", s.External.Source, s.Internal.Source)
	}
}
