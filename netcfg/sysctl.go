package netcfg

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const procSys = "/proc/sys"

// readSysctls reads keys inside the Host's namespace. A key that does not
// exist maps to ok=false.
func (h *Host) readSysctls(keys []string) (map[string]string, error) {
	out := make(map[string]string, len(keys))
	err := h.inNS(func() error {
		for _, k := range keys {
			b, err := os.ReadFile(filepath.Join(procSys, k))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return fmt.Errorf("read sysctl %s: %w", k, err)
			}
			out[k] = strings.TrimSpace(string(b))
		}
		return nil
	})
	return out, err
}

// writeSysctl sets one key inside the Host's namespace.
func (h *Host) writeSysctl(key, value string) error {
	return h.inNS(func() error {
		f, err := os.OpenFile(filepath.Join(procSys, key), os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return fmt.Errorf("write sysctl %s: %w", key, err)
		}
		_, err = f.WriteString(value + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("write sysctl %s = %q: %w", key, value, err)
		}
		return nil
	})
}

// portRange is an inclusive range of ports.
type portRange struct{ first, last uint16 }

// parsePorts reads the kernel's port list format: "8080,40000-59999".
func parsePorts(s string) ([]portRange, error) {
	var out []portRange
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
		out = append(out, portRange{uint16(a), uint16(b)})
	}
	return normalizePorts(out), nil
}

// normalizePorts sorts and merges overlapping and adjacent ranges.
func normalizePorts(rs []portRange) []portRange {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b portRange) int { return int(a.first) - int(b.first) })
	var out []portRange
	for _, r := range rs {
		if n := len(out); n > 0 && uint32(r.first) <= uint32(out[n-1].last)+1 {
			out[n-1].last = max(out[n-1].last, r.last)
			continue
		}
		out = append(out, r)
	}
	return out
}

func formatPorts(rs []portRange) string {
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		if r.first == r.last {
			parts = append(parts, strconv.Itoa(int(r.first)))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", r.first, r.last))
		}
	}
	return strings.Join(parts, ",")
}

// portsCover reports whether have reserves every port of want.
func portsCover(have, want []portRange) bool {
	have = normalizePorts(have)
	for _, w := range want {
		ok := false
		for _, h := range have {
			if h.first <= w.first && w.last <= h.last {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
