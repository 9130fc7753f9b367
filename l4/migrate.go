package l4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// migration carries the pinned maps whose layout differs from this
// build's into new maps of this build's layout.
type migration struct {
	from, to layout
	reasons  []string // this build's
	build    string   // of the pins
	maps     []*mapMigration
	// meta and metaReasons are the specs of the bookkeeping maps, staged
	// anew with the others (repin).
	meta, metaReasons *ebpf.MapSpec
}

// mapMigration is one pinned map to carry across.
type mapMigration struct {
	name     string
	old      *ebpf.Map
	key, val *conversion
	reset    bool // the new map starts empty (the counters)
	// flow, for a flow table, tells one flow from another under a key;
	// copied holds the creation time of each flow the first pass wrote,
	// by new key.
	flow   *flowIdentity
	copied map[string]uint64
	// reasons, for the counters, places each by its reason's name.
	reasons *reasonMap
}

// reasonMap moves the counters (stats: virtual id * REASON_MAX + reason)
// from one numbering of the reasons to another, by name.
type reasonMap struct {
	from, to []string
	index    map[string]int // to's
}

func newReasonMap(from, to []string) *reasonMap {
	r := &reasonMap{from: from, to: to, index: make(map[string]int, len(to))}
	for i, n := range to {
		r.index[n] = i
	}
	return r
}

// key is the new key of the counter at old key k; false for a reason this
// build lacks.
func (r *reasonMap) key(k uint32, entries uint32) (uint32, bool) {
	vid, reason := k/uint32(len(r.from)), k%uint32(len(r.from))
	i, ok := r.index[r.from[reason]]
	if !ok {
		return 0, false
	}
	nk := vid*uint32(len(r.to)) + uint32(i)
	return nk, nk < entries
}

// migrateFault, when set, fails the migration at the named step ("copy",
// "swap", "rename": after each rename of a staged pin): what a failure
// part way does is tested with it.
var migrateFault func(step string) error

// pinSuffix names a new map pinned beside the old one before it takes
// the old one's name: the staged set (repin).
const pinSuffix = "_migrating" // bpffs refuses names with a dot

// planMigration compares the pinned maps with spec. It refuses pins of a
// newer layout, touching nothing; for pins of another layout it opens
// every pinned map whose key or value layout differs, plans the
// conversion of its entries, and unpins its spec so that loading creates
// the new map beside the old one. It returns nil when the pins can be
// used as they are.
func planMigration(spec *ebpf.CollectionSpec, pinPath string, to layout, reasons []string) (_ *migration, err error) {
	from, build, ok, err := pinnedLayout(pinPath)
	if err != nil || !ok {
		return nil, err
	}
	pinnedReasons, err := pinnedReasons(pinPath)
	if err != nil {
		return nil, err
	}
	if from == to && (pinnedReasons == nil || slices.Equal(pinnedReasons, reasons)) {
		return nil, nil
	}
	if from.version > to.version {
		return nil, fmt.Errorf("%w: the pins under %s have layout version %d (build %s), this build reads up to %d: run the newer build, or remove the pins (edgeproxy flows -cleanup), which drops the established flows",
			ErrNewerPins, pinPath, from.version, build, to.version)
	}
	mg := &migration{from: from, to: to, reasons: reasons, build: build,
		meta: spec.Maps[bpf.FastL4MapMeta].Copy(), metaReasons: spec.Maps[bpf.FastL4MapMetaReasons].Copy()}
	defer func() {
		if err != nil {
			mg.close()
		}
	}()
	names := make([]string, 0, len(spec.Maps))
	for name := range spec.Maps {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		ms := spec.Maps[name]
		if ms.Pinning != ebpf.PinByName || pinBookkeeping(name) {
			continue
		}
		var rm *reasonMap
		if name == bpf.FastL4MapStats && pinnedReasons != nil {
			rm = newReasonMap(pinnedReasons, reasons)
		}
		mm, err := planMapMigration(spec, name, filepath.Join(pinPath, name), from.version, to.version, rm)
		if err != nil {
			return nil, fmt.Errorf("migrate pinned map %s from layout %d to %d: %w: remove %s (edgeproxy flows -cleanup) to start afresh, which drops the established flows",
				name, from.version, to.version, err, pinPath)
		}
		if mm != nil {
			mg.maps = append(mg.maps, mm)
		}
	}
	for _, mm := range mg.maps {
		spec.Maps[mm.name].Pinning = ebpf.PinNone
	}
	return mg, nil
}

// planMapMigration opens the pinned map at pin, of layout version
// version, and plans its conversion to the map name of spec (layout
// version to), or returns nil when it is absent or already laid out that
// way. The counters are indexed by reason (enum reason), whose numbering
// each build may change: with the pinned build's reason names (rm) they
// are placed by name; without them (pins of a build that did not record
// them) they start afresh at a change of layout version or size.
func planMapMigration(spec *ebpf.CollectionSpec, name, pin string, version, to uint32, rm *reasonMap) (*mapMigration, error) {
	ms := spec.Maps[name]
	old, err := ebpf.LoadPinnedMap(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	key, val, err := kernelMapTypes(old)
	if err != nil {
		old.Close()
		return nil, err
	}
	info, err := old.Info()
	if err != nil {
		old.Close()
		return nil, fmt.Errorf("read map info: %w", err)
	}
	mm := &mapMigration{name: name, old: old}
	if name == bpf.FastL4MapStats {
		resized := info.MaxEntries != ms.MaxEntries
		switch {
		case rm != nil && (resized || !slices.Equal(rm.from, rm.to)):
			mm.reasons = rm
		case rm == nil:
			mm.reset = version != to || resized
		}
	}
	if info.KeySize == ms.KeySize && info.ValueSize == ms.ValueSize && sameLayout(key, ms.Key) && sameLayout(val, ms.Value) &&
		!mm.reset && mm.reasons == nil {
		old.Close()
		return nil, nil
	}
	switch {
	case mm.reset:
	case ms.Type == ebpf.ArrayOfMaps || ms.Type == ebpf.HashOfMaps:
		err = fmt.Errorf("%w: maps of maps are not migrated", errLayoutIncompatible)
	default:
		var hook *valueHook
		if hook, err = valueHookFor(version, val, ms.Value); err != nil {
			break
		}
		if mm.key, err = newConversion(key, ms.Key, info.KeySize, ms.KeySize); err == nil {
			mm.val, err = newHookedConversion(val, ms.Value, info.ValueSize, ms.ValueSize, hook)
		}
		mm.flow = flowIdentityOf(ms.Value)
	}
	if err != nil {
		old.Close()
		return nil, err
	}
	return mm, nil
}

// sameLayout compares two types as far as both are known.
func sameLayout(a, b btf.Type) bool {
	return a == nil || b == nil || describeType(a, 0) == describeType(b, 0)
}

func (mg *migration) close() {
	if mg == nil {
		return
	}
	for _, mm := range mg.maps {
		mm.old.Close()
	}
}

// migrate carries every planned map across once the collection is loaded:
// it copies the entries into the new maps, swaps the program of every
// pinned link to this build (one update each), copies the flows the old
// program opened meanwhile, and pins the new maps under the old names.
// Until the swap nothing pinned has changed; a failure of the swap puts
// the links back, so the old program keeps serving with the old maps.
func (f *FastPath) migrate(mg *migration) error {
	defer mg.close()
	fail := func(step string) error {
		if migrateFault == nil {
			return nil
		}
		return migrateFault(step)
	}
	entries := 0
	for _, mm := range mg.maps {
		n, err := mm.copy(f.mapNamed(mm.name), false)
		if err != nil {
			return fmt.Errorf("migrate pinned map %s: %w: the old program keeps serving", mm.name, err)
		}
		entries += n
	}
	if err := fail("copy"); err != nil {
		return fmt.Errorf("migrate pinned maps: %w: the old program keeps serving", err)
	}
	swap, err := swapLinks(f.opts.PinPath, f.objs.EdgeproxyFastl4)
	if err == nil {
		if err = fail("swap"); err != nil {
			swap.undo()
		}
	}
	if err != nil {
		return fmt.Errorf("migrate pinned maps: %w: the old program keeps serving", err)
	}
	late := 0
	for _, mm := range mg.maps {
		var n int
		var err error
		if mm.flow != nil {
			n, err = mm.syncFlows(f.mapNamed(mm.name))
		} else {
			n, err = mm.copy(f.mapNamed(mm.name), true)
		}
		if err != nil {
			f.log.Warn("copy the flows opened during the migration", "map", mm.name, "err", err)
		}
		late += n
	}
	if staged, err := f.repin(mg); err != nil && staged {
		swap.close()
		return fmt.Errorf("%w: the new program serves; the next start finishes the re-pinning", err)
	} else if err != nil {
		swap.undo()
		return fmt.Errorf("%w: the old program keeps serving", err)
	}
	swap.close()
	names := make([]string, len(mg.maps))
	for i, mm := range mg.maps {
		names[i] = mm.name
		if mm.reasons != nil {
			f.log.Info("the fast path's packet counters are kept, placed by their reasons' names", "map", mm.name,
				"reasons_before", len(mm.reasons.from), "reasons", len(mm.reasons.to))
		}
		if mm.reset {
			f.log.Info("the fast path's packet counters start at zero: the pinned ones are numbered by the reasons of layout "+fmt.Sprint(mg.from.version),
				"map", mm.name, "from", mg.from.version, "to", mg.to.version)
		}
	}
	f.log.Info("migrated the pinned maps to this build's layout", "from", mg.from.version, "from_build", mg.build, "to", mg.to.version,
		"maps", strings.Join(names, ","), "entries", entries, "late_entries", late)
	return nil
}

// copy copies the old map's entries into m, converted. The second pass
// (late) only adds the keys m lacks: entries the old program created
// while the first ran; the new program owns the others by then. Arrays
// have nothing to add in that pass. The flow tables' late pass is
// syncFlows.
func (mm *mapMigration) copy(m *ebpf.Map, late bool) (int, error) {
	hash := mm.old.Type() == ebpf.Hash || mm.old.Type() == ebpf.LRUHash || mm.old.Type() == ebpf.PerCPUHash || mm.old.Type() == ebpf.LRUCPUHash
	if (late && !hash) || mm.reset {
		return 0, nil
	}
	flags := ebpf.UpdateAny
	if late {
		flags = ebpf.UpdateNoExist
	}
	n := 0
	var k, v []byte
	var vs [][]byte
	if perCPU(mm.old.Type()) {
		cpus, err := ebpf.PossibleCPU()
		if err != nil {
			return 0, err
		}
		vs = make([][]byte, cpus)
	}
	it := mm.old.Iterate()
	for {
		var val any
		if vs != nil {
			if !it.Next(&k, vs) {
				break
			}
			conv := make([][]byte, len(vs))
			for i := range vs {
				var err error
				if conv[i], err = mm.val.convert(vs[i]); err != nil {
					return n, fmt.Errorf("convert entry: %w", err)
				}
			}
			val = conv
		} else {
			if !it.Next(&k, &v) {
				break
			}
			var err error
			if val, err = mm.val.convert(v); err != nil {
				return n, fmt.Errorf("convert entry: %w", err)
			}
		}
		nk := mm.key.apply(k)
		if mm.reasons != nil {
			k32, ok := mm.reasons.key(binary.NativeEndian.Uint32(nk), m.MaxEntries())
			if !ok {
				continue
			}
			nk = binary.NativeEndian.AppendUint32(nil, k32)
		}
		err := m.Update(nk, val, flags)
		if late && errors.Is(err, ebpf.ErrKeyExist) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("copy entry: %w", err)
		}
		if b, ok := val.([]byte); ok && mm.flow != nil {
			if mm.copied == nil {
				mm.copied = make(map[string]uint64)
			}
			mm.copied[string(nk)] = mm.flow.createdNs(b)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("read entries: %w", err)
	}
	return n, nil
}

func perCPU(t ebpf.MapType) bool {
	return t == ebpf.PerCPUArray || t == ebpf.PerCPUHash || t == ebpf.LRUCPUHash
}

// mapNamed is the loaded map of the given name.
func (f *FastPath) mapNamed(name string) *ebpf.Map {
	v := reflect.ValueOf(&f.objs.FastL4Maps).Elem()
	for i := range v.NumField() {
		if v.Type().Field(i).Tag.Get("ebpf") == name {
			m, _ := v.Field(i).Interface().(*ebpf.Map)
			return m
		}
	}
	return nil
}

// linkSwap is the programs of the pinned links, swapped.
type linkSwap struct {
	links []link.Link
	old   []*ebpf.Program
}

// swapLinks points every pinned XDP link under pinPath that is attached to
// an interface at prog, one update each. On failure it points the ones it
// swapped back at their old programs.
func swapLinks(pinPath string, prog *ebpf.Program) (*linkSwap, error) {
	s := &linkSwap{}
	pins, err := filepath.Glob(filepath.Join(pinPath, "link_*"))
	if err != nil {
		return nil, err
	}
	for _, pin := range pins {
		l, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			s.undo()
			return nil, fmt.Errorf("load pinned link %s: %w", pin, err)
		}
		info, err := l.Info()
		if err != nil || info.XDP() == nil || info.XDP().Ifindex == 0 {
			l.Close() // not attached any more: attach replaces it
			continue
		}
		old, err := ebpf.NewProgramFromID(info.Program)
		if err == nil {
			if err = l.Update(prog); err != nil {
				old.Close()
			}
		}
		if err != nil {
			l.Close()
			s.undo()
			return nil, fmt.Errorf("swap the program of %s: %w", pin, err)
		}
		s.links, s.old = append(s.links, l), append(s.old, old)
	}
	return s, nil
}

// undo points the links back at their old programs.
func (s *linkSwap) undo() {
	for i, l := range s.links {
		_ = l.Update(s.old[i])
	}
	s.close()
}

// close releases the handles; the links stay pinned.
func (s *linkSwap) close() {
	for i, l := range s.links {
		l.Close()
		s.old[i].Close()
	}
	s.links, s.old = nil, nil
}

// repin pins the new maps under the old names, with new bookkeeping maps
// (meta, meta_reasons) recording this build's layout: all are staged
// beside the old pins first, meta last, then renamed over them, meta last
// (a rename replaces a pin in one step). A staged meta marks a complete
// set: once it is pinned (staged), a start meeting the set finishes the
// renames (finishRepin), so an interruption never leaves pins of two
// layouts for long.
func (f *FastPath) repin(mg *migration) (staged bool, err error) {
	meta, names, err := f.newBookkeeping(mg)
	if err != nil {
		return false, err
	}
	set := make([]*ebpf.Map, 0, len(mg.maps)+2)
	pinNames := make([]string, 0, len(mg.maps)+2)
	for _, mm := range mg.maps {
		set, pinNames = append(set, f.mapNamed(mm.name)), append(pinNames, mm.name)
	}
	set, pinNames = append(set, names, meta), append(pinNames, bpf.FastL4MapMetaReasons, bpf.FastL4MapMeta)
	for i, m := range set {
		tmp := filepath.Join(f.opts.PinPath, pinNames[i]+pinSuffix)
		_ = os.Remove(tmp)
		if err := m.Pin(tmp); err != nil {
			removeStaged(f.opts.PinPath)
			meta.Close()
			names.Close()
			return false, fmt.Errorf("pin migrated map %s: %w", pinNames[i], err)
		}
	}
	f.objs.Meta.Close()
	f.objs.MetaReasons.Close()
	f.objs.Meta, f.objs.MetaReasons = meta, names
	if _, err := finishRepin(f.opts.PinPath); err != nil {
		return true, err
	}
	return true, nil
}

// newBookkeeping creates meta and meta_reasons recording this build's
// layout and reasons.
func (f *FastPath) newBookkeeping(mg *migration) (meta, names *ebpf.Map, err error) {
	mg.meta.Pinning, mg.metaReasons.Pinning = ebpf.PinNone, ebpf.PinNone
	if meta, err = ebpf.NewMap(mg.meta); err != nil {
		return nil, nil, fmt.Errorf("create the pins' %s: %w", bpf.FastL4MapMeta, err)
	}
	if names, err = ebpf.NewMap(mg.metaReasons); err == nil {
		err = f.writeLayoutTo(meta, names, mg.to, mg.reasons)
	}
	if err != nil {
		meta.Close()
		if names != nil {
			names.Close()
		}
		return nil, nil, fmt.Errorf("create the pins' %s: %w", bpf.FastL4MapMetaReasons, err)
	}
	return meta, names, nil
}

// finishRepin completes a staged set under pinPath: it renames every
// staged pin over its name, meta last. A set without a staged meta is
// incomplete (pinning it stopped part way, before any rename) and is
// removed, the pins staying as they were. It reports whether it renamed
// anything.
func finishRepin(pinPath string) (bool, error) {
	staged, err := filepath.Glob(filepath.Join(pinPath, "*"+pinSuffix))
	if err != nil || len(staged) == 0 {
		return false, err
	}
	metaTmp := filepath.Join(pinPath, bpf.FastL4MapMeta+pinSuffix)
	if !slices.Contains(staged, metaTmp) {
		removeStaged(pinPath)
		return false, nil
	}
	staged = append(slices.DeleteFunc(staged, func(p string) bool { return p == metaTmp }), metaTmp)
	for _, p := range staged {
		if err := os.Rename(p, strings.TrimSuffix(p, pinSuffix)); err != nil {
			return false, fmt.Errorf("pin migrated map %s: %w", filepath.Base(p), err)
		}
		if migrateFault != nil {
			if err := migrateFault("rename"); err != nil {
				return false, fmt.Errorf("pin migrated map %s: %w", filepath.Base(p), err)
			}
		}
	}
	return true, nil
}

// removeStaged removes the staged pins under pinPath.
func removeStaged(pinPath string) {
	staged, _ := filepath.Glob(filepath.Join(pinPath, "*"+pinSuffix))
	for _, p := range staged {
		_ = os.Remove(p)
	}
}

// flowIdentity locates, in a flow table's value (struct flow_val), what
// tells one flow from another under the same key: its creation time and
// its peer's key.
type flowIdentity struct {
	created, peer, peerSize uint32
}

// flowIdentityOf is the identity of a flow value of type t; nil for a
// table of other values.
func flowIdentityOf(t btf.Type) *flowIdentity {
	s, ok := btf.UnderlyingType(t).(*btf.Struct)
	if !ok || s.Name != "flow_val" {
		return nil
	}
	id, found := &flowIdentity{}, 0
	for _, m := range s.Members {
		n, err := btf.Sizeof(m.Type)
		switch {
		case err != nil:
		case m.Name == "created_ns" && n == 8:
			id.created, found = m.Offset.Bytes(), found+1
		case m.Name == "peer":
			id.peer, id.peerSize, found = m.Offset.Bytes(), uint32(n), found+1
		}
	}
	if found != 2 {
		return nil
	}
	return id
}

func (id *flowIdentity) createdNs(v []byte) uint64 {
	return binary.NativeEndian.Uint64(v[id.created:])
}

// same tells whether two values are of one flow.
func (id *flowIdentity) same(a, b []byte) bool {
	p := func(v []byte) []byte { return v[id.peer : id.peer+id.peerSize] }
	return id.createdNs(a) == id.createdNs(b) && slices.Equal(p(a), p(b))
}

// syncFlows is the late pass of a flow table: it makes m hold the old
// table's flows, the ones the old program opened, re-opened or ended
// after the first pass. A key m lacks is added, unless the first pass
// copied that flow (the new program promoted or ended it since). Where m
// still holds the flow the first pass wrote, another flow under the key
// in the old table overwrites it, and the key goes when the old table no
// longer has it. What the new program wrote since the swap (a flow it
// opened, promoted or re-opened) is left as it is.
func (mm *mapMigration) syncFlows(m *ebpf.Map) (int, error) {
	n := 0
	var k, v, cur []byte
	it := mm.old.Iterate()
	for it.Next(&k, &v) {
		val, err := mm.val.convert(v)
		if err != nil {
			return n, fmt.Errorf("convert entry: %w", err)
		}
		nk := mm.key.apply(k)
		created, copied := mm.copied[string(nk)]
		delete(mm.copied, string(nk)) // left: the copies whose keys are gone
		if copied && created == mm.flow.createdNs(val) {
			continue
		}
		err = m.Update(nk, val, ebpf.UpdateNoExist)
		if errors.Is(err, ebpf.ErrKeyExist) {
			if err = m.Lookup(nk, &cur); err == nil {
				if !copied || mm.flow.createdNs(cur) != created || mm.flow.same(cur, val) {
					continue
				}
				err = m.Update(nk, val, ebpf.UpdateExist)
			}
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue // the new program ended it
			}
		}
		if err != nil {
			return n, fmt.Errorf("copy entry: %w", err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("read entries: %w", err)
	}
	for key, created := range mm.copied {
		err := m.Lookup([]byte(key), &cur)
		if err == nil && mm.flow.createdNs(cur) == created {
			err = m.Delete([]byte(key))
			n++
		}
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("delete an ended flow: %w", err)
		}
	}
	return n, nil
}
