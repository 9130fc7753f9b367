package ha

import (
	"errors"
	"fmt"

	"github.com/edgeproxy/edgeproxy/admin"
)

// Serves tells whether a node with this status can take or keep the
// active role: the daemon is ready, holds the peer's flows when it
// mirrors them (a restarted node first receives a full copy), and when pools have members enabled
// at least one of them is up (a node that reaches no member over its
// internal NIC gives the role to its peer). nil: it can.
func Serves(st *admin.Status) error {
	if !st.Ready {
		return fmt.Errorf("daemon not ready: %s", st.Reason)
	}
	if st.HA != nil && st.HA.Mirror != nil && !st.HA.Mirror.Synced {
		return errors.New("flows not synced: this node is receiving a full copy of the peer's flows")
	}
	enabled := 0
	for _, m := range st.Members {
		switch m.State {
		case "up":
			return nil
		case "disabled":
		default:
			enabled++
		}
	}
	if enabled > 0 {
		return errors.New("no member is up: this node reaches none over its internal NIC")
	}
	return nil
}
