package l7

import (
	"testing"
)

// A standby node binds its listeners to VIPs keepalived has not given it
// yet: with FreeBind the bind succeeds, without it fails.
func TestFreeBindListensOnAnAddressNotHeld(t *testing.T) {
	const vip = "198.18.250.77:0" // not on any interface of the test host
	if ln, err := defaultListen("tcp", vip); err == nil {
		ln.Close()
		t.Skipf("this host holds %s: nothing to show", vip)
	}
	for _, addr := range []string{vip, "[2001:db8:fa::77]:0"} {
		ln, err := freeBindListen("tcp", addr)
		if err != nil {
			t.Fatalf("listen on %s not held: %v", addr, err)
		}
		ln.Close()
	}
}
