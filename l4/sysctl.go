package l4

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/edgeproxy/edgeproxy/internal/portlist"
)

// enableFIBLookups sets forwarding on the loopback device only.
// bpf_fib_lookup refuses to work unless forwarding is enabled on the
// device it is given; the program gives it loopback, which never receives
// packets from outside, so the host still forwards nothing
// (net.ipv4.ip_forward and net.ipv6.conf.all.forwarding stay 0). A write
// to all/forwarding resets it, which is why upkeep sets it again.
func enableFIBLookups() error {
	for _, key := range []string{"net/ipv4/conf/lo/forwarding", "net/ipv6/conf/lo/forwarding"} {
		if err := ensureSysctl(key, "1"); err != nil {
			if key == "net/ipv6/conf/lo/forwarding" && errors.Is(err, fs.ErrNotExist) {
				continue // IPv6 disabled on this host
			}
			return err
		}
	}
	return nil
}

func ensureSysctl(key, value string) error {
	p := "/proc/sys/" + key
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("read sysctl %s: %w", key, err)
	}
	if strings.TrimSpace(string(b)) == value {
		return nil
	}
	if err := os.WriteFile(p, []byte(value+"\n"), 0o644); err != nil {
		return fmt.Errorf("write sysctl %s = %s: %w", key, value, err)
	}
	return nil
}

// reservePorts adds the SNAT port range to net.ipv4.ip_local_reserved_ports
// (which covers IPv6 too), keeping what is there: the host's own outgoing
// connections, the L7 proxy's among them, then never pick a SNAT port.
func reservePorts(r portlist.Range) error {
	const key = "net/ipv4/ip_local_reserved_ports"
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		return fmt.Errorf("read sysctl %s: %w", key, err)
	}
	have, err := portlist.Parse(string(b))
	if err != nil {
		return err
	}
	want := have.Add(r)
	if slices.Equal(have, want) {
		return nil
	}
	return ensureSysctl(key, want.String())
}
