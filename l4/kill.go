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
	sel, err := f.selectFlows(q)
	if err != nil {
		return nil, err
	}
	f.endSelected(sel, end)
	return sel.killed, nil
}

// flowSelection is what EndFlows read and ends: the pairs by their keys
// (dead: established, deadHalf: half-open entries).
type flowSelection struct {
	killed   []Flow
	resets   []reapedFlow
	dead     [][2]bpf.FastL4FlowKey
	deadHalf [][2]bpf.FastL4FlowKey
}

// selectFlows reads the tables and picks the flows q selects.
func (f *FastPath) selectFlows(q FlowFilter) (*flowSelection, error) {
	f.mu.Lock()
	kn := f.knobs
	f.mu.Unlock()
	pairs, err := f.flows.readPairs()
	if err != nil {
		return nil, err
	}
	now := monoNow()
	sel := &flowSelection{}
	for id, p := range pairs {
		fl, k := flowOf(p, kn, now)
		if !q.Match(fl) {
			continue
		}
		ck, sk := p.keys()
		if id.half {
			sel.deadHalf = append(sel.deadHalf, [2]bpf.FastL4FlowKey{ck, sk})
		} else {
			sel.dead = append(sel.dead, [2]bpf.FastL4FlowKey{ck, sk})
		}
		sel.killed = append(sel.killed, fl)
		sel.resets = append(sel.resets, reapedFlow{p: p, state: fl.State, k: k, half: id.half})
	}
	return sel, nil
}

// endSelected removes the selected pairs, as they still are (a key
// another flow took since the read stays its own: deletePairs), logs
// their close records and resets them.
func (f *FastPath) endSelected(sel *flowSelection, end string) {
	for i, dead := range [][][2]bpf.FastL4FlowKey{sel.dead, sel.deadHalf} {
		if err := f.flows.deletePairs(dead, i == 1); err != nil {
			f.log.Warn("end flows", "err", err)
		}
	}
	f.logClosed(sel.resets, end)
	f.mirrorClosed(sel.resets)
	for _, r := range sel.resets {
		f.resetFlow(r)
	}
}
