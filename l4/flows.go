package l4

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// Flow is a connection in the fast path's flow table.
type Flow struct {
	Virtual string
	Proto   string         // tcp | udp
	Client  netip.AddrPort // the client as it connected
	VIP     netip.AddrPort // the virtual it connected to
	Member  netip.AddrPort // where it goes
	SNAT    netip.AddrPort // the source the member sees
	State   string         // StateEstablished, ...
	Age     time.Duration  // since the first packet
	Idle    time.Duration  // since the last packet (either way)
	// Partial is set when one half of the pair is missing (being
	// repaired).
	Partial bool
}

// Flows lists the flow table.
func (f *FastPath) Flows() ([]Flow, error) {
	if !f.acquire() {
		return nil, ErrClosed
	}
	defer f.life.RUnlock()
	f.mu.Lock()
	kn := f.knobs
	f.mu.Unlock()
	return listFlows(f.flows, kn)
}

// ReadFlows lists the flow table from the maps pinned under pinPath: it
// works without the daemon.
func ReadFlows(pinPath string) ([]Flow, error) {
	if pinPath == "" {
		pinPath = DefaultPinPath
	}
	ro := &ebpf.LoadPinOptions{ReadOnly: true}
	var t flowTable
	for _, m := range []struct {
		name string
		dst  **ebpf.Map
	}{{bpf.FastL4MapFlows4Tcp, &t.v4tcp}, {bpf.FastL4MapFlows4Udp, &t.v4udp}, {bpf.FastL4MapFlows6, &t.v6}, {bpf.FastL4MapHalfOpen, &t.half}} {
		fm, err := ebpf.LoadPinnedMap(filepath.Join(pinPath, m.name), ro)
		if m.dst == &t.half && errors.Is(err, os.ErrNotExist) {
			continue // pinned by a build without half-open flows
		}
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w under %s: the fast path has not run (or use -pin-path)", ErrNotPinned, pinPath)
		}
		if err != nil {
			return nil, fmt.Errorf("open flow table: %w", err)
		}
		defer fm.Close()
		*m.dst = fm
	}
	var kn [maxVirtuals]knobs
	if vm, err := ebpf.LoadPinnedMap(filepath.Join(pinPath, bpf.FastL4MapVirtuals), ro); err == nil {
		defer vm.Close()
		for id := 1; id < maxVirtuals; id++ {
			var vi bpf.FastL4Vinfo
			if vm.Lookup(uint32(id), &vi) == nil {
				if name := cString(vi.Name[:]); name != "" {
					kn[id] = knobsFromVinfo(name, &vi)
				}
			}
		}
	}
	return listFlows(t, kn)
}

// flowOf describes a pair as a Flow, with its virtual's knobs.
func flowOf(p *pair, kn [maxVirtuals]knobs, now uint64) (Flow, knobs) {
	h := p.any()
	k := defaultKnobs
	if h.val.Vid < maxVirtuals && kn[h.val.Vid].idle > 0 {
		k = kn[h.val.Vid]
	}
	ck, sk := p.keys()
	st, _ := p.state(k)
	fl := Flow{
		Virtual: k.name,
		Proto:   "tcp",
		Client:  addrPort(ck.Saddr, ck.Sport, ck.Family),
		VIP:     addrPort(ck.Daddr, ck.Dport, ck.Family),
		Member:  addrPort(sk.Saddr, sk.Sport, sk.Family),
		SNAT:    addrPort(sk.Daddr, sk.Dport, sk.Family),
		State:   st,
		Partial: p.c == nil || p.s == nil,
	}
	if ck.Proto == unix.IPPROTO_UDP {
		fl.Proto = "udp"
	}
	if c := h.val.CreatedNs; now > c {
		fl.Age = time.Duration(now - c)
	}
	if l := p.last(); now > l {
		fl.Idle = time.Duration(now - l)
	}
	return fl, k
}

func listFlows(t flowTable, kn [maxVirtuals]knobs) ([]Flow, error) {
	pairs, err := t.readPairs()
	if err != nil {
		return nil, err
	}
	now := monoNow()
	out := make([]Flow, 0, len(pairs))
	for _, p := range pairs {
		fl, _ := flowOf(p, kn, now)
		out = append(out, fl)
	}
	slices.SortFunc(out, func(a, b Flow) int {
		return cmp.Or(cmp.Compare(a.Virtual, b.Virtual), a.Client.Compare(b.Client))
	})
	return out, nil
}
