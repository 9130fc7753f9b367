package l4

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
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
func reservePorts(r config.PortRange) error {
	const key = "net/ipv4/ip_local_reserved_ports"
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		return fmt.Errorf("read sysctl %s: %w", key, err)
	}
	have, err := parsePortList(string(b))
	if err != nil {
		return err
	}
	want := mergePorts(append(slices.Clone(have), r))
	if slices.Equal(have, want) {
		return nil
	}
	return ensureSysctl(key, formatPortList(want))
}

func parsePortList(s string) ([]config.PortRange, error) {
	var out []config.PortRange
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("parse reserved ports %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 16); err != nil {
				return nil, fmt.Errorf("parse reserved ports %q: %w", s, err)
			}
		}
		out = append(out, config.PortRange{First: uint16(a), Last: uint16(b)})
	}
	return mergePorts(out), nil
}

func mergePorts(rs []config.PortRange) []config.PortRange {
	slices.SortFunc(rs, func(a, b config.PortRange) int { return int(a.First) - int(b.First) })
	var out []config.PortRange
	for _, r := range rs {
		if n := len(out); n > 0 && int(r.First) <= int(out[n-1].Last)+1 {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}

func formatPortList(rs []config.PortRange) string {
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		if r.First == r.Last {
			parts = append(parts, strconv.Itoa(int(r.First)))
		} else {
			parts = append(parts, r.String())
		}
	}
	return strings.Join(parts, ",")
}
