package daemon

import "time"

// scheduleDrain cuts a draining member's remaining connections at by,
// unless its state changed since.
func (d *Daemon) scheduleDrain(key poolMember, since, by time.Time) {
}
