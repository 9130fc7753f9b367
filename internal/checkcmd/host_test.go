package checkcmd

import (
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
)

// What the host keeps of its ephemeral ports beside the SNAT range and
// the ports reserved already.
func TestHostPorts(t *testing.T) {
	for _, c := range []struct {
		first, last int
		snat        config.PortRange
		reserved    string
		want        int
	}{
		{32768, 60999, config.DefaultSNATPorts, "", 8232},
		{32768, 60999, config.DefaultSNATPorts, "8080,33000-33999", 7232},
		{32768, 60999, config.PortRange{First: 10000, Last: 20000}, "", 28232},
		{32768, 60999, config.PortRange{First: 30000, Last: 65535}, "", 0},
		{1024, 65535, config.DefaultSNATPorts, "not a list", 44512},
	} {
		if got := hostPorts(c.first, c.last, c.snat, c.reserved); got != c.want {
			t.Errorf("ephemeral %d-%d, SNAT %s, reserved %q: the host keeps %d ports, want %d", c.first, c.last, c.snat, c.reserved, got, c.want)
		}
	}
}
