package l4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// Second chance between nodes behind one ECMP route (bpf/peers.h): the
// peers' connections, which the program sends to their owner when the
// router moves them here.

// The program's second chance counters (enum peer_stat).
const (
	peerForwarded = iota
	peerSYNLocal
	peerFromPeer
)

// PeerStats is what second chance did since the program was loaded.
type PeerStats struct {
	// Forwarded segments (and their bytes) went to the peer owning their
	// connection.
	Forwarded, ForwardedBytes uint64
	// SYNLocal counts SYNs for a tuple a peer owned, opened here.
	SYNLocal uint64
	// FromPeer counts segments a peer forwarded that were not forwarded
	// again (the loop guard).
	FromPeer uint64
	// Held counts segments to the L7 proxy dropped because neither a
	// local socket nor a peer knew their connection (yet): the client
	// retransmits instead of being reset.
	Held uint64
}

func flowKey(src, dst netip.AddrPort, proto uint8) bpf.FastL4FlowKey {
	return bpf.FastL4FlowKey{
		Saddr: addrToBPF(src.Addr()), Daddr: addrToBPF(dst.Addr()),
		Sport: htons(src.Port()), Dport: htons(dst.Port()),
		Proto: proto, Family: family(src.Addr()),
	}
}

// macKey is a MAC in the low 6 bytes of peer_macs' key, as the program
// copies it from the frame.
func macKey(mac net.HardwareAddr) (uint64, error) {
	if len(mac) != 6 {
		return 0, fmt.Errorf("peer MAC %q: want 6 bytes", mac)
	}
	var b [8]byte
	copy(b[:], mac)
	return binary.NativeEndian.Uint64(b[:]), nil
}

// resetPeers turns second chance off and forgets the peers and their
// connections, which the pins keep from the previous control plane: the
// cluster fills them again (SetPeers, SetOwner).
func (f *FastPath) resetPeers() error {
	if err := f.objs.PeerCount.Put(uint32(0), uint32(0)); err != nil {
		return fmt.Errorf("turn second chance off: %w", err)
	}
	for _, m := range []*ebpf.Map{f.objs.PeerMacs, f.objs.Owners} {
		if err := clearMap(m); err != nil {
			return fmt.Errorf("clear %s: %w", m, err)
		}
	}
	return nil
}

// clearMap deletes every entry of a hash map.
func clearMap(m *ebpf.Map) error {
	key := make([]byte, m.KeySize())
	val := make([]byte, m.ValueSize())
	var keys [][]byte
	it := m.Iterate()
	for it.Next(key, val) {
		keys = append(keys, slices.Clone(key))
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, k := range keys {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

// SetPeers replaces the peers' MACs on the external segment; with none,
// second chance is off.
func (f *FastPath) SetPeers(macs []net.HardwareAddr) error {
	if !f.acquire() {
		return ErrClosed
	}
	defer f.life.RUnlock()
	want := map[uint64]bool{}
	for _, m := range macs {
		k, err := macKey(m)
		if err != nil {
			return fmt.Errorf("set peers: %w", err)
		}
		want[k] = true
		if err := f.objs.PeerMacs.Put(k, uint32(1)); err != nil {
			return fmt.Errorf("set peer %s: %w", m, err)
		}
	}
	var k uint64
	var v uint32
	var stale []uint64
	for it := f.objs.PeerMacs.Iterate(); it.Next(&k, &v); {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	for _, k := range stale {
		if err := f.objs.PeerMacs.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove peer: %w", err)
		}
	}
	if err := f.objs.PeerCount.Put(uint32(0), uint32(len(want))); err != nil {
		return fmt.Errorf("set peer count: %w", err)
	}
	return nil
}

// SetOwner records that the peer at mac owns the TCP connection client ->
// vip.
func (f *FastPath) SetOwner(client, vip netip.AddrPort, mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("set owner of %s: MAC %q: want 6 bytes", client, mac)
	}
	if !f.acquire() {
		return ErrClosed
	}
	defer f.life.RUnlock()
	var o bpf.FastL4Owner
	copy(o.Mac[:], mac)
	if err := f.objs.Owners.Put(flowKey(client, vip, unix.IPPROTO_TCP), o); err != nil {
		return fmt.Errorf("set owner of %s: %w", client, err)
	}
	return nil
}

// DeleteOwner forgets the owner of the TCP connection client -> vip.
func (f *FastPath) DeleteOwner(client, vip netip.AddrPort) error {
	if !f.acquire() {
		return ErrClosed
	}
	defer f.life.RUnlock()
	err := f.objs.Owners.Delete(flowKey(client, vip, unix.IPPROTO_TCP))
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete owner of %s: %w", client, err)
	}
	return nil
}

// PeerStats reads the second chance counters.
func (f *FastPath) PeerStats() (PeerStats, error) {
	if !f.acquire() {
		return PeerStats{}, ErrClosed
	}
	defer f.life.RUnlock()
	return f.peerStats()
}

func (f *FastPath) peerStats() (PeerStats, error) {
	c, err := sumStats(f.objs.PeerStats)
	if err != nil || len(c) <= peerFromPeer {
		return PeerStats{}, fmt.Errorf("read peer counters: %w", err)
	}
	held, err := sumStats(f.objs.PeerHeld)
	if err != nil || len(held) < 1 {
		return PeerStats{}, fmt.Errorf("read held segments counter: %w", err)
	}
	return PeerStats{Forwarded: c[peerForwarded].Packets, ForwardedBytes: c[peerForwarded].Bytes,
		SYNLocal: c[peerSYNLocal].Packets, FromPeer: c[peerFromPeer].Packets, Held: held[0].Packets}, nil
}
