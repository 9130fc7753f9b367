package l7

import (
	"io"
	"sync"
)

// memberConns tracks, per member, the open upstream connections and the
// client connections pinned to the member, so that a drain can end
// them. Each one is removed when it closes.
type memberConns struct {
	mu sync.Mutex
	m  map[memberKey]map[io.Closer]struct{}
}

// add tracks c under id; the returned func stops tracking it.
func (r *memberConns) add(id memberKey, c io.Closer) (remove func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[memberKey]map[io.Closer]struct{}{}
	}
	set := r.m[id]
	if set == nil {
		set = map[io.Closer]struct{}{}
		r.m[id] = set
	}
	set[c] = struct{}{}
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.m[id], c)
		if len(r.m[id]) == 0 {
			delete(r.m, id)
		}
	}
}

// closeAll closes every connection tracked under id and returns how many.
func (r *memberConns) closeAll(id memberKey) int {
	r.mu.Lock()
	cs := make([]io.Closer, 0, len(r.m[id]))
	for c := range r.m[id] {
		cs = append(cs, c)
	}
	r.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	return len(cs)
}

// CloseMember closes the member's upstream connections, pooled and
// pinned, and the client connections pinned to it: a request in flight
// to the member ends (502 before its response headers, its connection
// closed in the middle of a body). No new connection goes to the member
// until the configuration enables it, so that no request cut is sent to
// it again. It returns how many connections it closed.
func (p *Proxy) CloseMember(id memberKey) int {
	p.mu.Lock()
	if m := p.members[id]; m != nil {
		m.cut.Store(true)
	}
	p.mu.Unlock()
	return p.conns.closeAll(id)
}
