package ha

import (
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/admin"
)

// A node serves when ready and some enabled member is up; a node that
// reaches none of its members, or is not ready, does not.
func TestServes(t *testing.T) {
	m := func(states ...string) []admin.Member {
		var out []admin.Member
		for _, s := range states {
			out = append(out, admin.Member{State: s})
		}
		return out
	}
	cases := []struct {
		st   admin.Status
		want string // "" serves
	}{
		{admin.Status{Ready: true, Members: m("down", "up")}, ""},
		{admin.Status{Ready: true}, ""},
		{admin.Status{Ready: true, Members: m("disabled")}, ""},
		{admin.Status{Ready: true, Members: m("down", "unknown", "disabled")}, "no member is up"},
		{admin.Status{Ready: false, Reason: "starting", Members: m("up")}, "daemon not ready: starting"},
		{admin.Status{Ready: true, Members: m("up"), HA: &admin.HA{Mirror: &admin.Mirror{Synced: false}}}, "flows not synced"},
		{admin.Status{Ready: true, Members: m("up"), HA: &admin.HA{Mirror: &admin.Mirror{Synced: true}}}, ""},
	}
	for _, tc := range cases {
		err := Serves(&tc.st)
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.st, err, tc.want)
		}
	}
}
