package runner

import (
	"testing"

	"github.com/edgeproxy/edgeproxy/admin"
)

func TestPoolUp(t *testing.T) {
	st := &admin.Status{Ready: true, Members: []admin.Member{
		{Pool: "sfb-fe", Member: "fe01", State: "up"},
		{Pool: "sfb-fe", Member: "fe02", State: "down"},
		{Pool: "bulk", Member: "fe02", State: "up"},
	}}
	if PoolUp("sfb-fe", 2)(st) {
		t.Error("ready with one of two sfb-fe members up")
	}
	if !PoolUp("sfb-fe", 1)(st) || !PoolUp("bulk", 1)(st) {
		t.Error("not ready with the pool's members up")
	}
	st.Members[1].State = "up"
	if !PoolUp("sfb-fe", 2)(st) {
		t.Error("not ready with both sfb-fe members up")
	}
	st.Ready = false
	if PoolUp("sfb-fe", 2)(st) {
		t.Error("ready while the daemon is not")
	}
}
