package testnet

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
	"gopkg.in/yaml.v3"
)

func TestNetworkYAML(t *testing.T) {
	lab := Plan(Options{Members: 3})
	hosts := lab.MemberHosts("fe02.corp.example.com", "fe01.corp.example.com")
	if len(hosts) != 2 || hosts["fe02.corp.example.com"] != lab.Members4[0] || hosts["fe01.corp.example.com"] != lab.Members4[1] {
		t.Fatalf("MemberHosts = %v: want the names on Members4 in order", hosts)
	}
	mp := netip.MustParsePrefix
	for _, opts := range []NetworkOptions{
		{},
		{Hosts: hosts},
		{Hosts: hosts, Unmanaged: true, NoGateway6: true},
	} {
		text := lab.NetworkYAML(opts)
		// The daemon accepts the section as part of a configuration file.
		if _, err := config.Parse("edgeproxy.yaml", []byte(text+minimalConfig)); err != nil {
			t.Fatalf("%+v: config.Parse: %v\n%s", opts, err, text)
		}
		// As written (before defaults), it is what Network describes.
		var doc struct {
			Network config.Network `yaml:"network"`
		}
		if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
			t.Fatalf("%+v: %v\n%s", opts, err, text)
		}
		n := doc.Network
		if want := lab.Network(opts); !reflect.DeepEqual(n, want) {
			t.Errorf("%+v: the YAML reads as\n%+v\nwant\n%+v\n%s", opts, n, want, text)
		}
		if n.External.Interface != ExtIf || !reflect.DeepEqual(n.External.Addresses, []netip.Prefix{mp("198.18.0.2/24"), mp("2001:db8:1::2/64")}) ||
			n.External.Gateway != lab.ClientAddr4 {
			t.Errorf("%+v: external %+v, want ext0 with the lab's addresses and the client as gateway", opts, n.External)
		}
		if n.Internal.Interface != IntIf || !reflect.DeepEqual(n.Internal.Addresses, []netip.Prefix{mp("198.19.0.2/24"), mp("2001:db8:2::2/64")}) ||
			n.Internal.Gateway.IsValid() || !reflect.DeepEqual(n.Internal.Routes, []config.Route{
			{To: mp("198.19.1.0/24"), Via: lab.RouterAddr4}, {To: mp("2001:db8:3::/64"), Via: lab.RouterAddr6}}) {
			t.Errorf("%+v: internal %+v, want int0 with routes to the members and no gateway", opts, n.Internal)
		}
		if got, want := n.External.Gateway6.IsValid(), !opts.NoGateway6; got != want {
			t.Errorf("%+v: gateway6 %s", opts, n.External.Gateway6)
		}
		if got := n.Manage != nil && !*n.Manage; got != opts.Unmanaged {
			t.Errorf("%+v: manage %v", opts, n.Manage)
		}
		if !reflect.DeepEqual(n.Hosts, opts.Hosts) && len(n.Hosts)+len(opts.Hosts) > 0 {
			t.Errorf("%+v: hosts %v", opts, n.Hosts)
		}
		if !strings.HasPrefix(text, "network:\n") || !strings.HasSuffix(text, "\n") {
			t.Errorf("%+v: not a section of its own:\n%s", opts, text)
		}
	}
}

// minimalConfig completes a network section into a valid configuration.
const minimalConfig = `pools:
  p:
    members: [198.19.1.11]
    monitor: {type: tcp, port: 4443}
virtuals:
  - name: v
    mode: fastl4
    listen: 198.18.0.10:443
    pool: p
    port: 4443
    snat: automap
`
