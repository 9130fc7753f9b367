package config_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
)

const bgpSection = `
bgp:
  local_as: 65100
  router_id: 10.20.0.10
  neighbors:
    - {address: 203.0.113.1, as: 65000, bfd: true}
    - {address: 10.20.0.1, as: 65000, hold_time: 9s, password: secret}
`

// A bgp section is decoded with the rest: neighbours on either NIC's
// subnets, communities per virtual.
func TestBGPAccepted(t *testing.T) {
	text := apply(t, example(t), []edit{{"snat: automap  ", "snat: automap\n    bgp: {communities: [\"65100:100\"], local_pref: 200}  "}}) + bgpSection
	c, err := config.Parse("skype.yaml", []byte(text))
	if err != nil {
		t.Fatalf("bgp section rejected:\n%v", err)
	}
	b := c.BGP
	if b == nil || b.LocalAS != 65100 || len(b.Neighbors) != 2 || !b.Neighbors[0].BFD || b.Neighbors[1].HoldTime.D().Seconds() != 9 {
		t.Fatalf("bgp = %+v", b)
	}
	if nic := config.NeighborNIC(c, b.Neighbors[1].Address); nic != "internal" {
		t.Errorf("neighbour 10.20.0.1 is on the %q NIC, want internal", nic)
	}
	if a := c.Virtuals[0].Announce; a.LocalPref != 200 || len(a.Communities) != 1 {
		t.Errorf("virtual bgp = %+v", a)
	}
}

// Each mistake is named at its line with the fix.
func TestBGPRejected(t *testing.T) {
	cases := []struct {
		name     string
		old, new string
		at, msg  string
	}{
		{"neighbour on no subnet", "address: 203.0.113.1,", "address: 192.0.2.1,", "192.0.2.1", "on no subnet of network.external (203.0.113.0/24)"},
		{"router id missing", "  router_id: 10.20.0.10\n", "", "bgp:", "needs router_id"},
		{"reserved AS", "local_as: 65100", "local_as: 23456", "local_as", "is reserved"},
		{"hold time too short", "hold_time: 9s", "hold_time: 1s", "hold_time", "from 3s to 65535s"},
		{"unknown key", "bfd: true", "bdf: true", "bdf", `did you mean "bfd"?`},
	}
	for _, c := range cases {
		text := apply(t, example(t)+bgpSection, []edit{{c.old, c.new}})
		_, err := config.Parse("skype.yaml", []byte(text))
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.msg)
			continue
		}
		line := lineOf(t, text, c.at)
		if !strings.Contains(err.Error(), "skype.yaml:"+strconv.Itoa(line)+":") {
			t.Errorf("%s: error does not name line %d:\n%v", c.name, line, err)
		}
	}
}

// In scale-out every node SNATs to its own internal address: a listed
// address the node does not own could be another node's.
func TestBGPRefusesSharedSNAT(t *testing.T) {
	text := apply(t, example(t), []edit{{"snat: automap  ", "snat: [10.20.0.99]  "}})
	if _, err := config.Parse("skype.yaml", []byte(text)); err != nil {
		t.Fatalf("without bgp a SNAT address on the internal subnet is accepted, got:\n%v", err)
	}
	_, err := config.Parse("skype.yaml", []byte(text+bgpSection))
	if err == nil || !strings.Contains(err.Error(), "not one of this node's network.internal.addresses") {
		t.Errorf("with bgp, error %v; want the shared SNAT address refused", err)
	}
}

// In scale-out the VIP is announced, not on a subnet of the nodes: with
// bgp a VIP outside the external subnets is accepted, without it refused.
func TestBGPVIPOffSubnet(t *testing.T) {
	text := strings.ReplaceAll(example(t), "listen: 203.0.113.20:", "listen: 198.51.100.20:")
	if _, err := config.Parse("skype.yaml", []byte(text)); err == nil || !strings.Contains(err.Error(), "or announce it with bgp") {
		t.Fatalf("without bgp, error %v; want the VIP off the subnets refused", err)
	}
	if _, err := config.Parse("skype.yaml", []byte(text+bgpSection)); err != nil {
		t.Errorf("with bgp the announced VIP is refused:\n%v", err)
	}
}
