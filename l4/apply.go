package l4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/portlist"
)

// virtual is an applied fastl4 virtual.
type virtual struct {
	name string
	id   int
	key  bpf.FastL4SvcKey
	val  bpf.FastL4SvcVal
	snat []netip.Addr
}

// pool is a pool used by fastl4 virtuals.
type pool struct {
	name    string
	index   int
	members []Member
	// installed is the member set of each family's table (0: IPv4,
	// 1: IPv6); nil when the slot is empty.
	installed [2][]netip.Addr
}

// Apply makes the virtuals of spec the ones the fast path serves:
// services, Maglev tables of their pools from spec.Pools, and SNAT
// addresses and ports. Each virtual switches at once: the program sees
// its old or its new settings, never a mix. Flows of removed virtuals
// and members drain: they keep going until they close or time out.
func (f *FastPath) Apply(spec *Spec) error {
	if !f.acquire() {
		return ErrClosed
	}
	defer f.life.RUnlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.tablesSized(spec.Virtuals); err != nil {
		return err
	}
	f.flowLog.setRate(spec.LogRate)
	if spec.SNATPorts != (portlist.Range{}) && spec.SNATPorts != f.ports {
		if err := f.setPorts(spec.SNATPorts); err != nil {
			return err
		}
	}
	want := map[string]*virtual{}
	usedPools := map[string]bool{}
	for i := range spec.Virtuals {
		v := &spec.Virtuals[i]
		nv, err := f.desiredVirtual(spec, v)
		if err != nil {
			return err
		}
		want[v.Name] = nv
		usedPools[v.Pool] = true
	}
	// Pools first: a service never points at a slot without its table.
	if err := f.installPools(spec, usedPools); err != nil {
		return err
	}
	if err := f.installVirtuals(spec, want); err != nil {
		return err
	}
	var snat []netip.Addr
	for _, nv := range want {
		snat = append(snat, nv.snat...)
	}
	if err := f.setMartians(martianPrefixes(spec.Host, snat)); err != nil {
		return err
	}
	// Then remove what is gone.
	if err := f.removeVirtuals(want); err != nil {
		return err
	}
	if err := f.removePools(usedPools); err != nil {
		return err
	}
	if !f.swept {
		if err := f.sweepPinned(); err != nil {
			return err
		}
		f.swept = true
	}
	f.neigh.want(f.memberAddrs())
	return nil
}

// installPools builds the Maglev tables of the pools in use.
func (f *FastPath) installPools(spec *Spec, used map[string]bool) error {
	for name := range used {
		p, err := f.poolFor(name)
		if err != nil {
			return err
		}
		p.members = sortedMembers(spec.Pools[name])
		if err := f.installTables(p); err != nil {
			return err
		}
	}
	return nil
}

// installVirtuals gives each wanted virtual its id and switches its
// service. Virtuals that have an id keep it; then new ones get one, in
// the spec's order, so that a new virtual never takes the id of one
// further down the list.
func (f *FastPath) installVirtuals(spec *Spec, want map[string]*virtual) error {
	ids := map[string]int{}
	for _, v := range spec.Virtuals {
		if id := slices.Index(f.vnames[1:], v.Name); id >= 0 {
			ids[v.Name] = id + 1
		}
	}
	for _, v := range spec.Virtuals {
		if _, ok := ids[v.Name]; ok {
			continue
		}
		id, err := f.virtualID(v.Name, want)
		if err != nil {
			return err
		}
		ids[v.Name] = id
	}
	for _, v := range spec.Virtuals {
		nv := want[v.Name]
		nv.id = ids[v.Name]
		nv.val.Vid = uint32(nv.id)
		nv.val.PoolSlot = uint32(f.pools[v.Pool].index * 2)
		if nv.key.Family == 6 {
			nv.val.PoolSlot++
		}
		if err := f.installVirtual(nv); err != nil {
			return err
		}
	}
	return nil
}

// removeVirtuals deletes the services of virtuals not wanted (or moved
// to another VIP:port).
func (f *FastPath) removeVirtuals(want map[string]*virtual) error {
	for name, old := range f.virtuals {
		nv, ok := want[name]
		if ok && nv.key == old.key {
			continue
		}
		if err := f.objs.Services.Delete(&old.key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove virtual %s: %w", name, err)
		}
		if !ok {
			delete(f.virtuals, name)
			// The id and its name stay until reused, so that draining
			// flows keep their timeouts and labels.
		}
	}
	return nil
}

// removePools empties the tables and slots of pools no longer used.
func (f *FastPath) removePools(used map[string]bool) error {
	for name, p := range f.pools {
		if used[name] {
			continue
		}
		for fam := range 2 {
			if err := f.objs.Maglev.Delete(uint32(p.index*2 + fam)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("remove pool %s: %w", name, err)
			}
		}
		var pi bpf.FastL4Pinfo
		if err := f.objs.Pools.Put(uint32(p.index), &pi); err != nil {
			return fmt.Errorf("remove pool %s: %w", name, err)
		}
		f.pnames[p.index] = ""
		delete(f.pools, name)
	}
	return nil
}

// desiredVirtual translates a fastl4 virtual into its service entry.
func (f *FastPath) desiredVirtual(spec *Spec, v *Virtual) (*virtual, error) {
	if !v.Listen.IsValid() {
		return nil, fmt.Errorf("%w %s: listen is not set: write it as address:port", ErrBadVirtual, v.Name)
	}
	if _, ok := spec.Pools[v.Pool]; !ok {
		return nil, fmt.Errorf("%w %s: pool %q is not defined in pools", ErrBadVirtual, v.Name, v.Pool)
	}
	if len(v.Name) > 63 {
		return nil, fmt.Errorf("%w %s: name longer than 63 bytes", ErrBadVirtual, v.Name)
	}
	vip := v.Listen.Addr().Unmap()
	nv := &virtual{name: v.Name}
	nv.key.Vip = addrToBPF(vip)
	nv.key.Port = htons(v.Listen.Port())
	nv.key.Family = family(vip)
	switch v.Proto {
	case 0, TCP:
		nv.key.Proto = uint8(TCP)
	case UDP:
		nv.key.Proto = uint8(UDP)
	default:
		return nil, fmt.Errorf("%w %s: %s: use tcp or udp", ErrBadVirtual, v.Name, v.Proto)
	}
	port := v.Port
	if port == 0 {
		port = v.Listen.Port()
	}
	nv.val.MemberPort = htons(port)
	nv.val.Mss = v.MSSOverride
	nv.val.IdleS = seconds(v.IdleTimeout, DefaultIdleTimeout)
	nv.val.HandshakeS = seconds(v.HandshakeTimeout, DefaultHandshakeTimeout)
	nv.val.CloseS = seconds(v.CloseTimeout, DefaultCloseTimeout)
	if v.LooseInit {
		nv.val.Flags |= uint16(bpf.FastL4SvcFlagsSVC_LOOSE_INIT)
	}
	if v.LooseClose {
		nv.val.Flags |= uint16(bpf.FastL4SvcFlagsSVC_LOOSE_CLOSE)
	}
	if v.ResetOnTimeout {
		nv.val.Flags |= uint16(bpf.FastL4SvcFlagsSVC_RESET_ON_TIMEOUT)
	}
	if v.Log {
		nv.val.Flags |= uint16(bpf.FastL4SvcFlagsSVC_LOG)
	}
	if v.Mirror {
		nv.val.Flags |= uint16(bpf.FastL4SvcFlagsSVC_MIRROR)
	}
	if f.opts.OnFlow != nil && nv.key.Proto == uint8(TCP) {
		nv.val.Flags |= uint16(bpf.FastL4SvcFlagsSVC_ANNOUNCE)
	}
	snat, err := f.snatAddrs(v, vip)
	if err != nil {
		return nil, err
	}
	nv.snat = snat
	return nv, nil
}

// snatAddrs are a virtual's SNAT addresses of the VIP's family.
func (f *FastPath) snatAddrs(v *Virtual, vip netip.Addr) ([]netip.Addr, error) {
	var snat []netip.Addr
	for _, a := range v.SNAT {
		if a.Unmap().Is4() == vip.Is4() {
			snat = append(snat, a.Unmap())
		}
	}
	if len(snat) == 0 && v.Automap {
		a, err := f.internalAddr(vip.Is4())
		if err != nil {
			return nil, fmt.Errorf("%w for virtual %s (snat: automap): %w", ErrNoSNATAddress, v.Name, err)
		}
		snat = []netip.Addr{a}
	}
	if len(snat) == 0 {
		return nil, fmt.Errorf("%w for virtual %s: no SNAT address of the VIP's family: list one under snat", ErrNoSNATAddress, v.Name)
	}
	if len(snat) > maxSNAT {
		return nil, fmt.Errorf("%w: virtual %s has %d SNAT addresses, at most %d", ErrTooMany, v.Name, len(snat), maxSNAT)
	}
	return snat, nil
}

// internalAddr is automap's address: the internal NIC's first global
// address of the family.
func (f *FastPath) internalAddr(v4 bool) (netip.Addr, error) {
	if f.opts.IntIf == "" {
		return netip.Addr{}, errors.New("no internal interface: set network.internal.interface")
	}
	l, err := f.nl.LinkByName(f.opts.IntIf)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("find %s: %w", f.opts.IntIf, err)
	}
	fam := netlink.FAMILY_V6
	if v4 {
		fam = netlink.FAMILY_V4
	}
	addrs, err := f.nl.AddrList(l, fam)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list addresses of %s: %w", f.opts.IntIf, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && ip.Unmap().IsGlobalUnicast() {
			return ip.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%s has no global address of that family: add one to network.internal.addresses", f.opts.IntIf)
}

// virtualID hands out an id to a new virtual: one never used, else one
// whose virtual is gone (neither applied nor wanted).
func (f *FastPath) virtualID(name string, want map[string]*virtual) (int, error) {
	live := map[string]bool{}
	for n := range f.virtuals {
		live[n] = true
	}
	for n := range want {
		live[n] = true
	}
	for pass := range 2 {
		for id := 1; id < maxVirtuals; id++ {
			if f.vnames[id] == "" || (pass == 1 && !live[f.vnames[id]]) {
				// The counters of the id's previous virtual are not
				// the new one's.
				if err := f.zeroCounters(id); err != nil {
					return 0, err
				}
				f.vnames[id] = name
				return id, nil
			}
		}
	}
	return 0, fmt.Errorf("%w: more than %d fastl4 virtuals", ErrTooMany, maxVirtuals-1)
}

// poolFor returns the pool by name, keeping its pinned index.
func (f *FastPath) poolFor(name string) (*pool, error) {
	if p, ok := f.pools[name]; ok {
		return p, nil
	}
	idx := slices.Index(f.pnames[:], name)
	if idx < 0 {
		idx = slices.Index(f.pnames[:], "")
		if idx < 0 {
			return nil, fmt.Errorf("%w: more than %d pools in fastl4 virtuals", ErrTooMany, maxPools)
		}
		var pi bpf.FastL4Pinfo
		putCString(pi.Name[:], name)
		if err := f.objs.Pools.Put(uint32(idx), &pi); err != nil {
			return nil, fmt.Errorf("record pool %s: %w", name, err)
		}
		f.pnames[idx] = name
	}
	p := &pool{name: name, index: idx}
	// After a restart the installed tables are unknown: rebuild them.
	f.pools[name] = p
	return p, nil
}

// installVirtual writes the virtual's names and knobs, its SNAT
// addresses into the generation not in use, then switches the service.
func (f *FastPath) installVirtual(nv *virtual) error {
	var vi bpf.FastL4Vinfo
	putCString(vi.Name[:], nv.name)
	vi.IdleS, vi.HandshakeS, vi.CloseS = nv.val.IdleS, nv.val.HandshakeS, nv.val.CloseS
	vi.Flags = uint32(nv.val.Flags)
	if err := f.objs.Virtuals.Put(uint32(nv.id), &vi); err != nil {
		return fmt.Errorf("record virtual %s: %w", nv.name, err)
	}
	f.knobs[nv.id] = knobsFromVinfo(nv.name, &vi)

	var cur bpf.FastL4SvcVal
	gen := 0
	if err := f.objs.Services.Lookup(&nv.key, &cur); err == nil && cur.Vid == uint32(nv.id) {
		if old, ok := f.virtuals[nv.name]; ok && slices.Equal(old.snat, nv.snat) && old.key == nv.key {
			nv.val.SnatBase, nv.val.SnatCount = cur.SnatBase, cur.SnatCount
			if cur == nv.val {
				f.virtuals[nv.name] = nv
				return nil
			}
			return f.putService(nv)
		}
		gen = 1 - int(cur.SnatBase/maxSNAT)%2
	}
	base := (nv.id*2 + gen) * maxSNAT
	for i, a := range nv.snat {
		if err := f.objs.SnatAddrs.Put(uint32(base+i), addrToBPF(a)); err != nil {
			return fmt.Errorf("write SNAT addresses of %s: %w", nv.name, err)
		}
	}
	nv.val.SnatBase = uint32(base)
	nv.val.SnatCount = uint16(len(nv.snat))
	return f.putService(nv)
}

func (f *FastPath) putService(nv *virtual) error {
	if err := f.objs.Services.Put(&nv.key, &nv.val); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) || strings.Contains(err.Error(), "too big") {
			return fmt.Errorf("%w: the services table is full", ErrTooMany)
		}
		return fmt.Errorf("write virtual %s: %w", nv.name, err)
	}
	f.virtuals[nv.name] = nv
	return nil
}

// installTables builds and swaps in the Maglev tables of a pool (one per
// address family) when its set of members taking new flows changed.
func (f *FastPath) installTables(p *pool) error {
	for fam := range 2 {
		var up []netip.Addr
		for _, m := range p.members {
			if m.Up && !m.Disabled && m.Addr.Is4() == (fam == 0) {
				up = append(up, m.Addr)
			}
		}
		slot := uint32(p.index*2 + fam)
		if len(up) > 0 && p.installed[fam] != nil && slices.Equal(up, p.installed[fam]) {
			continue
		}
		if len(up) == 0 {
			if err := f.objs.Maglev.Delete(slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("empty Maglev table of pool %s: %w", p.name, err)
			}
			p.installed[fam] = nil
			continue
		}
		if err := f.swapTable(slot, up); err != nil {
			return fmt.Errorf("install Maglev table of pool %s: %w", p.name, err)
		}
		p.installed[fam] = up
		f.log.Info("pool members taking new flows", "pool", p.name, "members", addrStrings(up))
	}
	return nil
}

// swapTable fills a new inner map and puts it in the slot: lookups see
// the whole old or the whole new table.
func (f *FastPath) swapTable(slot uint32, up []netip.Addr) error {
	names := addrStrings(up)
	table := maglevTable(names, f.maglevSize)
	keys := make([]uint32, len(table))
	vals := make([]bpf.FastL4Addr, len(table))
	for i, b := range table {
		keys[i] = uint32(i)
		vals[i] = addrToBPF(up[b])
	}
	inner, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "maglev_table",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  16,
		MaxEntries: uint32(f.maglevSize),
	})
	if err != nil {
		return err
	}
	defer inner.Close()
	if _, err := inner.BatchUpdate(keys, vals, nil); err != nil {
		return err
	}
	return f.objs.Maglev.Put(slot, inner)
}

// SetMemberUp records a member's health and rebuilds its pool's tables:
// new flows go to members that are up; flows to a member that went down
// keep going (they drain).
func (f *FastPath) SetMemberUp(poolName string, addr netip.Addr, up bool) error {
	if !f.acquire() {
		return ErrClosed
	}
	defer f.life.RUnlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pools[poolName]
	if !ok {
		return fmt.Errorf("%w: pool %s is not used by a fastl4 virtual", ErrUnknownMember, poolName)
	}
	addr = addr.Unmap()
	found := false
	for i := range p.members {
		if p.members[i].Addr == addr {
			p.members[i].Up = up
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%w: %s is not a member of pool %s", ErrUnknownMember, addr, poolName)
	}
	return f.installTables(p)
}

// setPorts changes the SNAT port range.
func (f *FastPath) setPorts(r portlist.Range) error {
	if err := checkPorts(r); err != nil {
		return err
	}
	var s bpf.FastL4Config
	if err := f.objs.Settings.Lookup(uint32(0), &s); err != nil {
		return fmt.Errorf("read fast path settings: %w", err)
	}
	s.SnatPortMin, s.SnatPortMax = r.First, r.Last
	if err := f.objs.Settings.Put(uint32(0), &s); err != nil {
		return fmt.Errorf("write fast path settings: %w", err)
	}
	f.ports = r
	return nil
}

// memberAddrs lists every member of every fastl4 pool.
func (f *FastPath) memberAddrs() []netip.Addr {
	var out []netip.Addr
	for _, p := range f.pools {
		for _, m := range p.members {
			out = append(out, m.Addr)
		}
	}
	return out
}

func sortedMembers(ms []Member) []Member {
	out := slices.Clone(ms)
	for i := range out {
		out[i].Addr = out[i].Addr.Unmap()
	}
	slices.SortFunc(out, func(a, b Member) int { return a.Addr.Compare(b.Addr) })
	return slices.CompactFunc(out, func(a, b Member) bool { return a.Addr == b.Addr })
}

func knobsFromVinfo(name string, vi *bpf.FastL4Vinfo) knobs {
	return knobs{
		name:      name,
		idle:      time.Duration(vi.IdleS) * time.Second,
		handshake: time.Duration(vi.HandshakeS) * time.Second,
		closing:   time.Duration(vi.CloseS) * time.Second,
		flags:     vi.Flags,
	}
}

func seconds(d, def time.Duration) uint32 {
	if d <= 0 {
		d = def
	}
	return uint32((d + time.Second - 1) / time.Second)
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// addrToBPF lays an address out as the program stores it: network order
// bytes, IPv4 in the first word.
func addrToBPF(a netip.Addr) bpf.FastL4Addr {
	var out bpf.FastL4Addr
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		out.W[0] = binary.LittleEndian.Uint32(b[:])
		return out
	}
	b := a.As16()
	for i := range 4 {
		out.W[i] = binary.LittleEndian.Uint32(b[i*4:])
	}
	return out
}

func addrFromBPF(x bpf.FastL4Addr, fam uint8) netip.Addr {
	if fam == 4 {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], x.W[0])
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	for i := range 4 {
		binary.LittleEndian.PutUint32(b[i*4:], x.W[i])
	}
	return netip.AddrFrom16(b)
}

// htons gives the in-memory form of a port in network order.
func htons(p uint16) uint16 { return bits.ReverseBytes16(p) }

func ntohs(p uint16) uint16 { return bits.ReverseBytes16(p) }

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return 4
	}
	return 6
}
