package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ParseDuration parses a Go duration ("300s", "16m", "1h30m"). A bare
// number is refused with a hint, since its unit would be a guess.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return 0, fmt.Errorf("duration %q has no unit: write %ss for seconds (or ms, m, h)", s, s)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: write it like 300s, 16m or 1h30m", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return Duration(d), nil
}

// String formats the duration as Go does ("5m0s").
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes the duration as in the file.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads a duration such as "300s".
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// ParsePortRange parses "first-last" (or a single port) with ports 1-65535.
func ParsePortRange(s string) (PortRange, error) {
	bad := fmt.Errorf("%q is not a port range: write it as first-last, e.g. 40000-59999", s)
	a, b, found := strings.Cut(strings.TrimSpace(s), "-")
	if !found {
		b = a
	}
	first, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	last, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
	if err1 != nil || err2 != nil {
		return PortRange{}, bad
	}
	if first == 0 {
		return PortRange{}, fmt.Errorf("port range %q starts at port 0: ports start at 1", s)
	}
	if first > last {
		return PortRange{}, fmt.Errorf("port range %q is backwards: write the lower port first (%d-%d)", s, last, first)
	}
	return PortRange{First: uint16(first), Last: uint16(last)}, nil
}

// IsZero reports whether the range is unset.
func (r PortRange) IsZero() bool { return r.First == 0 && r.Last == 0 }

// Size is the number of ports in the range.
func (r PortRange) Size() int {
	if r.IsZero() {
		return 0
	}
	return int(r.Last) - int(r.First) + 1
}

// Contains reports whether port p is in the range.
func (r PortRange) Contains(p uint16) bool { return !r.IsZero() && p >= r.First && p <= r.Last }

// String formats the range as "first-last".
func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

// MarshalText writes the range as in the file.
func (r PortRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads "first-last".
func (r *PortRange) UnmarshalText(b []byte) error {
	v, err := ParsePortRange(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// IsZero reports whether no SNAT was configured.
func (s SNAT) IsZero() bool { return !s.Automap && len(s.Addresses) == 0 }

// String formats the SNAT setting as in the file.
func (s SNAT) String() string {
	if s.Automap {
		return SNATAutomap
	}
	parts := make([]string, len(s.Addresses))
	for i, a := range s.Addresses {
		parts[i] = a.String()
	}
	return strings.Join(parts, ", ")
}

// MarshalText writes "automap" or the comma-separated addresses.
func (s SNAT) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String returns the member as written: its host name or address.
func (m Member) String() string { return m.Address }

// Addr returns the member's address when it is written as a literal
// address rather than a name.
func (m Member) Addr() (netip.Addr, bool) {
	a, err := netip.ParseAddr(m.Address)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
