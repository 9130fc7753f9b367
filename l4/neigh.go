package l4

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// neighbours keeps the next hops of the fast path resolved. XDP cannot
// resolve a neighbour: bpf_fib_lookup reports NO_NEIGH and the program
// drops the packet, records the next hop in the neigh_miss map and counts
// drop_no_neigh. This side turns next hops into managed neighbour entries
// (NTF_EXT_MANAGED): the kernel resolves them and keeps them fresh
// without traffic through the stack. The next hops of the members are
// made managed up front, those of clients when they are first missed.
type neighbours struct {
	nl  *netlink.Handle
	log *slog.Logger

	mu      sync.Mutex
	members []netip.Addr
	managed map[nextHop]bool // entries made managed
	dirty   bool
}

type nextHop struct {
	addr    netip.Addr
	ifindex int
}

func newNeighbours(nl *netlink.Handle, log *slog.Logger) *neighbours {
	return &neighbours{nl: nl, log: log, managed: map[nextHop]bool{}}
}

// want records the members whose next hops must stay resolved.
func (n *neighbours) want(members []netip.Addr) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.members = members
	n.dirty = true
}

// renew has poll resolve the members' next hops again: after a NIC came
// back, their neighbour entries are new ones.
func (n *neighbours) renew() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dirty = true
}

// poll resolves the members' next hops after a change, and the next hops
// the program reported missing.
func (n *neighbours) poll(miss *ebpf.Map) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dirty {
		n.dirty = false
		for _, m := range n.members {
			if nh, ok := n.route(m); ok {
				n.manage(nh)
			}
		}
	}
	var (
		k    bpf.FastL4NeighKey
		v    uint64
		seen []bpf.FastL4NeighKey
	)
	it := miss.Iterate()
	for it.Next(&k, &v) {
		seen = append(seen, k)
	}
	for _, k := range seen {
		a := addrFromBPF(k.Addr, uint8(k.Family))
		nh := nextHop{addr: a, ifindex: int(k.Ifindex)}
		if nh.ifindex == 0 {
			var ok bool
			if nh, ok = n.route(a); !ok {
				_ = miss.Delete(&k)
				continue
			}
		}
		n.manage(nh)
		_ = miss.Delete(&k)
	}
}

// route finds the next hop towards dst.
func (n *neighbours) route(dst netip.Addr) (nextHop, bool) {
	rs, err := n.nl.RouteGet(net.IP(dst.AsSlice()))
	if err != nil || len(rs) == 0 {
		n.log.Debug("no route to member", "address", dst, "err", err)
		return nextHop{}, false
	}
	nh := nextHop{addr: dst, ifindex: rs[0].LinkIndex}
	if gw, ok := netip.AddrFromSlice(rs[0].Gw); ok && gw.IsValid() && !gw.IsUnspecified() {
		nh.addr = gw.Unmap()
	}
	return nh, true
}

// manage makes the neighbour entry of nh managed, once.
func (n *neighbours) manage(nh nextHop) {
	if n.managed[nh] || !nh.addr.IsValid() || nh.ifindex == 0 {
		return
	}
	fam := unix.AF_INET6
	if nh.addr.Is4() {
		fam = unix.AF_INET
	}
	// An entry the kernel already resolved keeps its address: only the
	// managed flag is added (the kernel refuses to change the state of a
	// managed entry from here anyway).
	neigh := &netlink.Neigh{
		LinkIndex: nh.ifindex,
		Family:    fam,
		IP:        net.IP(nh.addr.AsSlice()),
		State:     netlink.NUD_NONE,
		FlagsExt:  netlink.NTF_EXT_MANAGED,
	}
	if err := n.nl.NeighSet(neigh); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			// Kernels before 5.16: ask for resolution the old way.
			neigh.FlagsExt = 0
			neigh.State = netlink.NUD_PROBE
			err = n.nl.NeighSet(neigh)
		}
		if err != nil {
			n.log.Warn("resolve next hop", "address", nh.addr, "ifindex", nh.ifindex, "err", err)
			return
		}
	}
	n.managed[nh] = true
	n.log.Debug("next hop kept resolved", "address", nh.addr, "ifindex", nh.ifindex)
}
