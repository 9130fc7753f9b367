package l4

import "github.com/edgeproxy/edgeproxy/internal/portlist"

// Sysctl is a kernel setting the fast path needs. The fast path writes
// none: the owner of the host's settings (netcfg) does.
type Sysctl struct {
	Key   string // path under /proc/sys
	Value string
	Why   string
	// Optional: absent on some hosts (IPv6 disabled) and then skipped.
	Optional bool
	// Merge: Value is a port list added to the current one.
	Merge bool
}

// Sysctls declares the kernel settings the fast path of s needs in its
// network namespace:
//   - forwarding on the loopback device only. bpf_fib_lookup refuses to
//     work unless forwarding is enabled on the device it is given; the
//     program gives it loopback, which never receives packets from
//     outside, so the host still forwards nothing (net.ipv4.ip_forward
//     and net.ipv6.conf.all.forwarding stay 0). A write to
//     all/forwarding resets it: netcfg watches it.
//   - the SNAT port range in net.ipv4.ip_local_reserved_ports (which
//     covers IPv6 too), added to what is there: the host's own outgoing
//     connections, the L7 proxy's among them, then never pick a SNAT
//     port.
func (s *Spec) Sysctls() []Sysctl {
	ports := s.SNATPorts
	if ports == (portlist.Range{}) {
		ports = DefaultSNATPorts
	}
	why := "bpf_fib_lookup needs forwarding on the device it is given, loopback, which never receives packets from outside: the host still forwards nothing"
	return []Sysctl{
		{Key: "net/ipv4/conf/lo/forwarding", Value: "1", Why: why},
		{Key: "net/ipv6/conf/lo/forwarding", Value: "1", Why: why, Optional: true},
		{Key: "net/ipv4/ip_local_reserved_ports", Value: portlist.Of(ports).String(), Merge: true,
			Why: "the SNAT ports of the fast path are kept out of the host's ephemeral ports"},
	}
}
