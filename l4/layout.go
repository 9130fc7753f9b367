package l4

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
)

// ErrNewerPins means the pinned maps were written by a build with a newer
// layout than this one: this build cannot read them.
var ErrNewerPins = errors.New("pinned fast path state is newer than this build")

// layout is what a collection's pinned maps hold: the version the program
// declares (LAYOUT_VERSION in bpf/common.h) and a hash of the key and
// value types of every map pinned by name.
type layout struct {
	version uint32
	hash    uint64
}

func (l layout) String() string { return fmt.Sprintf("%d (%016x)", l.version, l.hash) }

// specLayout is the layout of the collection spec.
func specLayout(spec *ebpf.CollectionSpec) (layout, error) {
	var l layout
	v, ok := spec.Variables[bpf.FastL4VarLayoutVersion]
	if !ok {
		return l, fmt.Errorf("read layout version: the program declares no %s", bpf.FastL4VarLayoutVersion)
	}
	if err := v.Get(&l.version); err != nil {
		return l, fmt.Errorf("read layout version: %w", err)
	}
	h := sha256.New()
	names := make([]string, 0, len(spec.Maps))
	for name, m := range spec.Maps {
		if m.Pinning == ebpf.PinByName && !pinBookkeeping(name) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		desc := mapSpecLayout(spec.Maps[name])
		if name == bpf.FastL4MapStats {
			// REASON_MAX: a new reason resizes the counters.
			desc += fmt.Sprintf(" entries %d", spec.Maps[name].MaxEntries)
		}
		fmt.Fprintf(h, "%s %s\n", name, desc)
	}
	l.hash = binary.LittleEndian.Uint64(h.Sum(nil))
	return l, nil
}

// pinBookkeeping reports the pinned maps that describe the others (meta,
// meta_reasons): outside the layout, never migrated, their own layout
// fixed for good.
func pinBookkeeping(name string) bool {
	return name == bpf.FastL4MapMeta || name == bpf.FastL4MapMetaReasons
}

// specReasons are the names of the program's enum reason by value
// ("pass_not_ip" for REASON_PASS_NOT_IP), REASON_MAX of them: what the
// counters (stats) are indexed by.
func specReasons(spec *ebpf.CollectionSpec) ([]string, error) {
	var e *btf.Enum
	if err := spec.Types.TypeByName("reason", &e); err != nil {
		return nil, fmt.Errorf("read the program's reasons: %w", err)
	}
	n := -1
	for _, v := range e.Values {
		if v.Name == "REASON_MAX" {
			n = int(v.Value)
		}
	}
	if limit := int(spec.Maps[bpf.FastL4MapMetaReasons].MaxEntries); n < 0 || n > limit {
		return nil, fmt.Errorf("read the program's reasons: REASON_MAX is %d, want 0 to %d (REASON_NAMES_MAX)", n, limit)
	}
	names := make([]string, n)
	for _, v := range e.Values {
		if int(v.Value) < n {
			names[v.Value] = strings.ToLower(strings.TrimPrefix(v.Name, "REASON_"))
		}
	}
	return names, nil
}

// pinnedReasons reads the reason names recorded beside the pins under
// pinPath: nil when none are (pins of a build that did not record them).
func pinnedReasons(pinPath string) ([]string, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinPath, bpf.FastL4MapMetaReasons), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned %s: %w", bpf.FastL4MapMetaReasons, err)
	}
	defer m.Close()
	var names []string
	var rn bpf.FastL4ReasonName
	for i := range m.MaxEntries() {
		if err := m.Lookup(i, &rn); err != nil {
			return nil, fmt.Errorf("read pinned reason %d: %w", i, err)
		}
		names = append(names, cString(rn.Name[:]))
	}
	for len(names) > 0 && names[len(names)-1] == "" {
		names = names[:len(names)-1]
	}
	if len(names) == 0 {
		return nil, nil // created, never written
	}
	return names, nil
}

// mapSpecLayout describes the map's type, key and value (and its inner
// map's, for a map of maps).
func mapSpecLayout(m *ebpf.MapSpec) string {
	s := fmt.Sprintf("%s key %s value %s", m.Type, describeType(m.Key, m.KeySize), describeType(m.Value, m.ValueSize))
	if m.InnerMap != nil {
		s += " inner " + mapSpecLayout(m.InnerMap)
	}
	return s
}

// describeType is a canonical description of a BTF type's memory layout:
// sizes, member names and offsets, array lengths, signedness, without the
// names of typedefs. Two types with the same description lay out the same
// bytes the same way. Without BTF, only the size is known.
func describeType(t btf.Type, size uint32) string {
	if t == nil {
		return fmt.Sprintf("bytes%d", size)
	}
	var b strings.Builder
	describeTo(&b, t)
	return b.String()
}

func describeTo(b *strings.Builder, t btf.Type) {
	switch t := btf.UnderlyingType(t).(type) {
	case *btf.Int:
		sign := "u"
		if t.Encoding&btf.Signed != 0 {
			sign = "s"
		}
		fmt.Fprintf(b, "%s%d", sign, t.Size*8)
	case *btf.Enum:
		fmt.Fprintf(b, "enum%d", t.Size*8)
	case *btf.Array:
		fmt.Fprintf(b, "[%d]", t.Nelems)
		describeTo(b, t.Type)
	case *btf.Struct:
		describeMembers(b, "struct", t.Size, t.Members)
	case *btf.Union:
		describeMembers(b, "union", t.Size, t.Members)
	case *btf.Pointer:
		b.WriteString("ptr")
	default:
		fmt.Fprintf(b, "%T", t)
	}
}

func describeMembers(b *strings.Builder, kind string, size uint32, ms []btf.Member) {
	fmt.Fprintf(b, "%s%d{", kind, size)
	for _, m := range ms {
		fmt.Fprintf(b, "%s@%d", m.Name, m.Offset)
		if m.BitfieldSize != 0 {
			fmt.Fprintf(b, ":%d", m.BitfieldSize)
		}
		b.WriteByte(' ')
		describeTo(b, m.Type)
		b.WriteString(";")
	}
	b.WriteString("}")
}

// pinnedLayout reads the layout the pinned maps under pinPath were
// written with. It reports false when nothing is pinned there; pins
// without a meta map (written before the layout was recorded) are
// version 0.
func pinnedLayout(pinPath string) (l layout, build string, ok bool, err error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinPath, bpf.FastL4MapMeta), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		_, err := os.Stat(filepath.Join(pinPath, bpf.FastL4MapSettings))
		return l, "", err == nil, nil
	}
	if err != nil {
		return l, "", false, fmt.Errorf("open pinned layout %s: %w", bpf.FastL4MapMeta, err)
	}
	defer m.Close()
	var raw []byte
	if err := m.Lookup(uint32(0), &raw); err != nil {
		return l, "", false, fmt.Errorf("read pinned layout: %w", err)
	}
	var pm bpf.FastL4PinMeta
	if len(raw) < int(unsafe.Sizeof(pm)) {
		return l, "", false, fmt.Errorf("read pinned layout: %d bytes, want at least %d", len(raw), unsafe.Sizeof(pm))
	}
	pm.LayoutVersion = binary.LittleEndian.Uint32(raw[0:])
	pm.LayoutHash = binary.LittleEndian.Uint64(raw[8:])
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&pm.Build[0])), len(pm.Build)), raw[16:])
	return layout{pm.LayoutVersion, pm.LayoutHash}, cString(pm.Build[:]), true, nil
}

// writeLayout records this build's layout in the meta map, and its
// reasons in meta_reasons, once the pinned maps are this build's.
func (f *FastPath) writeLayout(l layout, reasons []string) error {
	return f.writeLayoutTo(f.objs.Meta, f.objs.MetaReasons, l, reasons)
}

// writeLayoutTo writes the layout into the maps meta and names.
func (f *FastPath) writeLayoutTo(meta, names *ebpf.Map, l layout, reasons []string) error {
	var rn bpf.FastL4ReasonName
	for i := range names.MaxEntries() {
		name := ""
		if int(i) < len(reasons) {
			name = reasons[i]
		}
		putCString(rn.Name[:], name)
		if err := names.Put(i, &rn); err != nil {
			return fmt.Errorf("record the reasons of the pinned counters: %w", err)
		}
	}
	pm := bpf.FastL4PinMeta{LayoutVersion: l.version, LayoutHash: l.hash}
	build := "go"
	if info, ok := debug.ReadBuildInfo(); ok {
		build = info.Main.Version
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				build = s.Value[:12]
			}
		}
	}
	if pi, err := f.objs.EdgeproxyFastl4.Info(); err == nil {
		build = fmt.Sprintf("tag %s %s", pi.Tag, build)
	}
	putCString(pm.Build[:], build)
	if err := meta.Put(uint32(0), &pm); err != nil {
		return fmt.Errorf("record the pinned layout: %w", err)
	}
	return nil
}

// kernelMapTypes reads the BTF key and value types the kernel holds for a
// map; nil types when the map was created without BTF.
func kernelMapTypes(m *ebpf.Map) (key, value btf.Type, err error) {
	// struct bpf_map_info up to btf_value_type_id (include/uapi/linux/bpf.h).
	type mapInfo struct {
		_                            [6]uint32
		_                            [16]byte
		_, _                         uint32
		_, _                         uint64
		BTFID, KeyTypeID, ValueTypID uint32
		_                            uint32
	}
	info := new(mapInfo)
	attr := struct {
		fd, infoLen uint32
		info        uint64
	}{uint32(m.FD()), uint32(unsafe.Sizeof(*info)), uint64(uintptr(unsafe.Pointer(info)))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(info)
	runtime.KeepAlive(m)
	if errno != 0 {
		return nil, nil, fmt.Errorf("read map info: %w", errno)
	}
	if info.BTFID == 0 {
		return nil, nil, nil
	}
	h, err := btf.NewHandleFromID(btf.ID(info.BTFID))
	if err != nil {
		return nil, nil, fmt.Errorf("open map BTF: %w", err)
	}
	defer h.Close()
	spec, err := h.Spec(nil)
	if err != nil {
		return nil, nil, fmt.Errorf("read map BTF: %w", err)
	}
	if key, err = spec.TypeByID(btf.TypeID(info.KeyTypeID)); err != nil {
		return nil, nil, fmt.Errorf("read map key type: %w", err)
	}
	if value, err = spec.TypeByID(btf.TypeID(info.ValueTypID)); err != nil {
		return nil, nil, fmt.Errorf("read map value type: %w", err)
	}
	return key, value, nil
}
