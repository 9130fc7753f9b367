package l4

import (
	"net/netip"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// FlowFilter selects flows; a zero field matches any.
type FlowFilter struct {
	Virtual string
	// Member is the member's address (any port).
	Member netip.Addr
	// Client is the client's address; ClientPort, when set, its port.
	Client     netip.Addr
	ClientPort uint16
}

// Match reports whether the filter selects fl.
func (q FlowFilter) Match(fl Flow) bool {
	switch {
	case q.Virtual != "" && fl.Virtual != q.Virtual:
	case q.Member.IsValid() && fl.Member.Addr().Unmap() != q.Member.Unmap():
	case q.Client.IsValid() && fl.Client.Addr().Unmap() != q.Client.Unmap():
	case q.ClientPort != 0 && fl.Client.Port() != q.ClientPort:
	default:
		return true
	}
	return false
}

// KillFlows removes the flows q selects from the table and resets both
// sides of each TCP connection among them, as reset-on-timeout does,
// from the sequence numbers last seen; it returns the flows removed.
// Their close records give the termination EndKilled.
func (f *FastPath) KillFlows(q FlowFilter) ([]Flow, error) {
	return f.EndFlows(q, EndKilled)
}

// EndFlows is KillFlows, with end (EndKilled, EndDrained) as the
// termination of the close records.
func (f *FastPath) EndFlows(q FlowFilter, end string) ([]Flow, error) {
	if !f.acquire() {
		return nil, ErrClosed
	}
	defer f.life.RUnlock()
	f.mu.Lock()
	kn := f.knobs
	f.mu.Unlock()
	pairs, err := f.flows.readPairs()
	if err != nil {
		return nil, err
	}
	now := monoNow()
	var dead, deadHalf []bpf.FastL4FlowKey
	var killed []Flow
	var resets []reapedFlow
	for id, p := range pairs {
		fl, k := flowOf(p, kn, now)
		if !q.Match(fl) {
			continue
		}
		ck, sk := p.keys()
		keys := &dead
		if id.half {
			keys = &deadHalf
		}
		if p.c != nil {
			*keys = append(*keys, ck)
		}
		if p.s != nil {
			*keys = append(*keys, sk)
		}
		killed = append(killed, fl)
		resets = append(resets, reapedFlow{p: p, state: fl.State, k: k, half: id.half})
	}
	f.flows.deleteKeys(dead)
	f.flows.deleteHalfOpen(deadHalf)
	f.logClosed(resets, end)
	f.mirrorClosed(resets)
	for _, r := range resets {
		f.resetFlow(r)
	}
	return killed, nil
}
