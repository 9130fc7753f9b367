// Package member names a pool member the same way in every plane: the
// health checker, the L7 proxy and the daemon key their state by ID.
package member

import "net/netip"

// ID is one pool member: the pool and the member's resolved address.
type ID struct {
	Pool string
	Addr netip.Addr
}

// New returns the ID of addr in pool, with an IPv4-mapped address unmapped.
func New(pool string, addr netip.Addr) ID { return ID{Pool: pool, Addr: addr.Unmap()} }

// String is "pool/address".
func (id ID) String() string { return id.Pool + "/" + id.Addr.String() }
