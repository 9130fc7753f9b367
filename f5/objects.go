package f5

import (
	"sort"
	"strings"
)

// object is an indexed top-level statement.
type object struct {
	st   *Stmt
	kind string // header without the name: "ltm virtual", "ltm profile fastl4"
	path string // full path of the name: "/Common/vs_443"
	used bool
}

// label is how the report names the object: "ltm virtual /Common/vs".
func (o *object) label() string { return o.kind + " " + o.path }

// folder is the folder references inside the object are relative to.
func (o *object) folder() string { return folderOf(o.path) }

// index holds the objects by kind and by full path.
type index struct {
	all    []*object
	byKind map[string]map[string]*object
}

func newIndex(f *File) *index {
	ix := &index{byKind: map[string]map[string]*object{}}
	for _, st := range f.Objects {
		o := &object{st: st}
		w := st.Words
		if len(w) <= 2 && !strings.HasPrefix(w[len(w)-1], "/") {
			// "sys global-settings { }", "ltm default-node-monitor { }"
			o.kind = strings.Join(w, " ")
		} else {
			o.kind = strings.Join(w[:len(w)-1], " ")
			o.path = w[len(w)-1]
			if !strings.Contains(o.path, "/") {
				o.path = fullPath("/Common", o.path)
			}
		}
		ix.all = append(ix.all, o)
		m := ix.byKind[o.kind]
		if m == nil {
			m = map[string]*object{}
			ix.byKind[o.kind] = m
		}
		if o.path != "" {
			m[o.path] = o
		}
	}
	return ix
}

// get finds an object of kind by full path.
func (ix *index) get(kind, path string) *object {
	return ix.byKind[kind][path]
}

// getPrefix finds an object whose kind starts with prefix (for example
// any "ltm profile ..." or "ltm monitor ...") by full path.
func (ix *index) getPrefix(prefix, path string) *object {
	kinds := make([]string, 0, len(ix.byKind))
	for k := range ix.byKind {
		if strings.HasPrefix(k, prefix) {
			kinds = append(kinds, k)
		}
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		if o := ix.byKind[k][path]; o != nil {
			return o
		}
	}
	return nil
}

// ofKind lists the objects of a kind in file order.
func (ix *index) ofKind(kind string) []*object {
	var out []*object
	for _, o := range ix.all {
		if o.kind == kind {
			out = append(out, o)
		}
	}
	return out
}
