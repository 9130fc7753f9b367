// Package portlist is the kernel's port list format, as in
// net.ipv4.ip_local_reserved_ports: "8080,40000-59999".
package portlist

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Range is an inclusive range of ports.
type Range struct{ First, Last uint16 }

// List is a normalised port list: sorted, with overlapping and adjacent
// ranges merged.
type List []Range

// Parse reads a port list; commas, blanks and newlines separate its
// items, and an empty text is an empty list.
func Parse(s string) (List, error) {
	var out []Range
	for f := range strings.FieldsFuncSeq(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }) {
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := strconv.ParseUint(lo, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("parse port list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 16); err != nil {
				return nil, fmt.Errorf("parse port list %q: %w", s, err)
			}
		}
		if b < a {
			return nil, fmt.Errorf("parse port list %q: range %s is reversed", s, f)
		}
		out = append(out, Range{uint16(a), uint16(b)})
	}
	return Of(out...), nil
}

// Of returns the ranges as a normalised list.
func Of(rs ...Range) List {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b Range) int { return int(a.First) - int(b.First) })
	var out List
	for _, r := range rs {
		if n := len(out); n > 0 && uint32(r.First) <= uint32(out[n-1].Last)+1 {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}

// Add returns l with the ports of rs added.
func (l List) Add(rs ...Range) List { return Of(append(slices.Clone(l), rs...)...) }

// Contains reports whether port p is in the list.
func (l List) Contains(p uint16) bool {
	for _, r := range l {
		if r.First <= p && p <= r.Last {
			return true
		}
	}
	return false
}

// Covers reports whether the list holds every port of every range of o.
func (l List) Covers(o List) bool {
	for _, w := range o {
		if !slices.ContainsFunc(l, func(r Range) bool { return r.First <= w.First && w.Last <= r.Last }) {
			return false
		}
	}
	return true
}

// String writes the list in the kernel's format.
func (l List) String() string {
	parts := make([]string, 0, len(l))
	for _, r := range l {
		if r.First == r.Last {
			parts = append(parts, strconv.Itoa(int(r.First)))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", r.First, r.Last))
		}
	}
	return strings.Join(parts, ",")
}
