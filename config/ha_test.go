package config_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
)

// haNode returns examples/ha/NODE.yaml with its certificate paths moved
// to freshly issued certificates.
func haNode(t *testing.T, node string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("../examples/ha", node+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(data), "/etc/edgeproxy/tls/", filepath.Join(exampleCerts(t), "tls")+"/")
	key := filepath.Join(t.TempDir(), "mirror.key")
	if err := os.WriteFile(key, []byte(strings.Repeat("k", 48)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(text, "/etc/edgeproxy/mirror.key", key)
}

// Both nodes of the example pair are accepted; automap translates to the
// floating address, not the node's own internal address.
func TestHAExampleNodes(t *testing.T) {
	for _, node := range []string{"node-a", "node-b"} {
		c, err := config.Parse(node+".yaml", []byte(haNode(t, node)))
		if err != nil {
			t.Fatalf("%s: %v", node, err)
		}
		if got := c.SNATAddresses(c.Virtuals[0]); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("10.20.0.10")}) {
			t.Errorf("%s: automap translates to %v, want the floating 10.20.0.10", node, got)
		}
		if c.HA.AdvertInterval.D() != 100*time.Millisecond || c.HA.Fifo != config.DefaultHAFifo {
			t.Errorf("%s: defaults %v %q", node, c.HA.AdvertInterval.D(), c.HA.Fifo)
		}
		if m := c.HA.Mirror; m == nil || m.Bandwidth != config.DefaultMirrorBandwidth || !c.Virtuals[0].Mirrors() {
			t.Errorf("%s: mirroring %+v, virtual mirrors %v; want the default bandwidth and mirroring on", node, m, c.Virtuals[0].Mirrors())
		}
	}
}

func TestHABadConfigs(t *testing.T) {
	base := haNode(t, "node-a")
	cases := []struct {
		name  string
		edits []edit
		at    string // text on the line the error must name
		path  string
		msg   []string
	}{
		{"unknown key", []edit{{"advert_interval:", "advert_intervall:"}},
			"advert_intervall", "ha.advert_intervall", []string{`unknown key "advert_intervall"`, `did you mean "advert_interval"?`}},
		{"priority out of range", []edit{{"priority: 150", "priority: 255"}},
			"priority: 255", "ha.priority", []string{"priority 255 is out of range", "1 to 254"}},
		{"advert interval not in 10ms steps", []edit{{"advert_interval: 100ms", "advert_interval: 105ms"}},
			"advert_interval: 105ms", "ha.advert_interval", []string{"not a VRRPv3 advertisement interval", "steps of 10ms"}},
		{"same VRID twice", []edit{{"vrid: 52", "vrid: 51"}},
			"internal: {vrid: 51", "ha.internal.vrid", []string{"VRID 51 is also the external instance's"}},
		{"peer off the subnet", []edit{{"peer: 10.20.0.12", "peer: 10.30.0.12"}},
			"internal: {vrid", "ha.internal.peer", []string{"10.30.0.12 is on none of this NIC's subnets", "10.20.0.0/24"}},
		{"peer is this node", []edit{{"peer: 203.0.113.12", "peer: 203.0.113.11"}},
			"external: {vrid", "ha.external.peer", []string{"203.0.113.11 is this node's own address"}},
		{"missing floating", []edit{{", floating: [10.20.0.10/24]", ""}},
			"internal: {vrid", "ha.internal.floating", []string{"the floating address is required", "e.g. 10.20.0.10/24"}},
		{"floating is the node's address", []edit{{"floating: [10.20.0.10/24]", "floating: [10.20.0.11/24]"}},
			"internal: {vrid", "ha.internal.floating[0]", []string{"10.20.0.11 is a node's own address"}},
		{"VIP is the node's own address", []edit{{"listen: 203.0.113.21:443", "listen: 203.0.113.11:443"}},
			"listen: 203.0.113.11:443", "virtuals[1].listen", []string{"this node's own external address", "neither node owns"}},
		{"wildcard VIP", []edit{{"listen: 203.0.113.21:443", "listen: 0.0.0.0:443"}},
			"listen: 0.0.0.0:443", "virtuals[1].listen", []string{"listens on every address", "VIP that keepalived moves"}},
		{"mirror without a peer", []edit{{"    peer: 10.20.0.12:7400\n", ""}},
			"mirror:", "ha.mirror.peer", []string{"the peer's address and port for flow mirroring are required"}},
		{"mirror peer of another family", []edit{{"peer: 10.20.0.12:7400", "peer: '[2001:db8::12]:7400'"}},
			"peer: '[2001:db8::12]:7400'", "ha.mirror.peer", []string{"different families"}},
		{"mirror listen on every address", []edit{{"listen: 10.20.0.11:7400", "listen: 0.0.0.0:7400"}},
			"listen: 0.0.0.0:7400", "ha.mirror.listen", []string{"listens on every address"}},
		{"mirror key file missing", []edit{{"key_file: ", "key_file: /nonexistent"}},
			"key_file:", "ha.mirror.key_file", []string{"read key file", "no such file"}},
		{"mirror bandwidth without a unit", []edit{{"    key_file:", "    bandwidth: 10\n    key_file:"}},
			"bandwidth: 10", "ha.mirror.bandwidth", []string{`bandwidth "10"`, "e.g. 10MB/s"}},
		{"mirror bandwidth too little", []edit{{"    key_file:", "    bandwidth: 1kB/s\n    key_file:"}},
			"bandwidth: 1kB/s", "ha.mirror.bandwidth", []string{"at least 100kB/s"}},
		{"automap without a floating address of the family", []edit{{"listen: 203.0.113.20:443", "listen: '[2001:db8::20]:443'"}},
			"snat: automap\n  - name: web-tls", "virtuals[0].snat", []string{"no", "floating address", "2001:db8::20", "ha.internal.floating"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			text := apply(t, base, tc.edits)
			_, err := config.Parse("node-a.yaml", []byte(text))
			var errs *config.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("accepted or not *config.Errors: %v", err)
			}
			var found *config.Error
			for _, e := range errs.List {
				if e.Path == tc.path && containsAll(e.Msg, tc.msg) {
					found = e
				}
			}
			if found == nil {
				t.Fatalf("no error at %s with %q; got:\n%v", tc.path, tc.msg, err)
			}
			if want := lineOf(t, text, tc.at); found.Line != want {
				t.Errorf("line %d, want %d: %v", found.Line, want, found)
			}
		})
	}
}
