package f5

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Kind classifies a report entry.
type Kind int

// Report entry kinds, most important first.
const (
	// Fix: carried over as it is, but wrong for what it publishes; the
	// entry says what to change.
	Fix Kind = iota
	// Unsupported: BIG-IP behaviour that edgeproxy does not reproduce.
	Unsupported
	// Changed: carried over, but edgeproxy behaves somewhat differently.
	Changed
	// Supply: the output refers to something the user must provide
	// (certificate files, addresses).
	Supply
	// Ignored: platform or management settings with no meaning for a
	// proxy host (hardware offload, HA traffic groups, VLAN tags...).
	Ignored
)

func (k Kind) String() string {
	switch k {
	case Fix:
		return "to fix"
	case Unsupported:
		return "not carried over"
	case Changed:
		return "changed"
	case Supply:
		return "to supply"
	case Ignored:
		return "ignored"
	}
	return "?"
}

// Entry is one thing the report tells.
type Entry struct {
	Kind   Kind
	File   string // the input file ("" for the report's)
	Line   int    // line in the input, 0 when not tied to one
	Object string // the object header, e.g. "ltm rule /Common/redirect"
	Msg    string
}

// Report lists what could not be carried over, or only approximately.
type Report struct {
	File    string
	Entries []Entry
}

func (r *Report) add(k Kind, s *Stmt, obj string, format string, args ...any) {
	e := Entry{Kind: k, Object: obj, Msg: fmt.Sprintf(format, args...)}
	if s != nil {
		e.File, e.Line = s.File, s.Line
	}
	for _, x := range r.Entries {
		if x == e {
			return
		}
	}
	r.Entries = append(r.Entries, e)
}

// Count returns the number of entries of kind k.
func (r *Report) Count(k Kind) int {
	n := 0
	for _, e := range r.Entries {
		if e.Kind == k {
			n++
		}
	}
	return n
}

// Find returns the entries whose object or message contains s.
func (r *Report) Find(s string) []Entry {
	var out []Entry
	for _, e := range r.Entries {
		if strings.Contains(e.Object, s) || strings.Contains(e.Msg, s) {
			out = append(out, e)
		}
	}
	return out
}

// WriteTo writes the report as text, grouped by kind and sorted by line,
// each entry as "file:line: object: message".
func (r *Report) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	entries := append([]Entry(nil), r.Entries...)
	sort.SliceStable(entries, func(i, j int) bool {
		if entries[i].Kind != entries[j].Kind {
			return entries[i].Kind < entries[j].Kind
		}
		if entries[i].File != entries[j].File {
			return entries[i].File < entries[j].File
		}
		return entries[i].Line < entries[j].Line
	})
	if len(entries) == 0 {
		fmt.Fprintf(&b, "%s: everything was carried over\n", r.File)
	}
	last := Kind(-1)
	for _, e := range entries {
		if e.Kind != last {
			if last != -1 {
				b.WriteByte('\n')
			}
			fmt.Fprintf(&b, "# %s (%d)\n", e.Kind, r.Count(e.Kind))
			last = e.Kind
		}
		loc := r.File
		if e.File != "" {
			loc = e.File
		}
		if e.Line > 0 {
			loc = fmt.Sprintf("%s:%d", loc, e.Line)
		}
		if e.Object != "" {
			fmt.Fprintf(&b, "%s: %s: %s\n", loc, e.Object, e.Msg)
		} else {
			fmt.Fprintf(&b, "%s: %s\n", loc, e.Msg)
		}
	}
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

// String returns the text of WriteTo.
func (r *Report) String() string {
	var b strings.Builder
	_, _ = r.WriteTo(&b)
	return b.String()
}
