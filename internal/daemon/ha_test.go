package daemon

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/ha"
)

// TestPairNodeDerivedRole: before keepalived has said anything since the
// daemon started, a node holding no shared address is in fault while its
// own check fails or has passed for less than keepalived's rise, standby
// after; keepalived's word wins once it comes.
func TestPairNodeDerivedRole(t *testing.T) {
	// lo is up and running and holds none of the shared addresses.
	p := &pairNode{ext: "lo", in: "lo", role: ha.RoleUnknown, shared: []netip.Addr{netip.MustParseAddr("198.18.0.10")}}
	check := func(step, role string, cause bool) {
		t.Helper()
		st := p.state()
		if st.Role != role || (st.Cause != "") != cause {
			t.Errorf("%s: role %s, cause %q; want %s (a cause: %v)", step, st.Role, st.Cause, role, cause)
		}
	}
	check("nothing observed", "fault", true)
	p.observe(errors.New("no member is up"))
	check("check failing", "fault", true)
	p.observe(nil)
	check("check passing for a moment", "fault", true)
	p.serving = time.Now().Add(-ha.CheckRise)
	p.observe(nil)
	check("check passing for the rise", "standby", false)
	p.set(ha.RoleFault)
	check("keepalived says fault", "fault", false)
}
