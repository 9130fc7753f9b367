package l4

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/btf"
)

// errLayoutIncompatible means a pinned map's entries cannot be carried to
// this build's layout.
var errLayoutIncompatible = errors.New("incompatible layout change")

// conversion rewrites an entry laid out as one BTF type into another,
// member by member by name: members of the same layout are copied, integers
// widened (never narrowed), members only the new type has zeroed, members
// only the old type has dropped.
type conversion struct {
	size     int
	identity bool
	ops      []copyOp
	hook     *valueHook // converts what the plan leaves out, or nil
}

// copyOp copies srcN bytes at src to dst, extending to dstN bytes (sign
// extension when signed). The program is little endian (bpfel).
type copyOp struct {
	dst, src, dstN, srcN int
	signed               bool
}

// newConversion plans the conversion from one layout to another. Without
// BTF on either side, only identical sizes convert (as a plain copy).
func newConversion(from, to btf.Type, fromSize, toSize uint32) (*conversion, error) {
	return newHookedConversion(from, to, fromSize, toSize, nil)
}

// newHookedConversion is newConversion leaving the members the hook
// writes (when not nil) to it.
func newHookedConversion(from, to btf.Type, fromSize, toSize uint32, hook *valueHook) (*conversion, error) {
	c := &conversion{size: int(toSize), hook: hook}
	if from == nil || to == nil {
		if fromSize != toSize {
			return nil, fmt.Errorf("%w: %d bytes become %d and the types are unknown", errLayoutIncompatible, fromSize, toSize)
		}
		c.identity = true
		return c, nil
	}
	if describeType(from, fromSize) == describeType(to, toSize) && hook == nil {
		c.identity = true
		return c, nil
	}
	if err := c.plan(from, to, 0, 0, "value"); err != nil {
		return nil, err
	}
	return c, nil
}

// plan adds the copies of from (at src) into to (at dst).
func (c *conversion) plan(from, to btf.Type, src, dst int, path string) error {
	from, to = btf.UnderlyingType(from), btf.UnderlyingType(to)
	df, dt := describeType(from, 0), describeType(to, 0)
	incompatible := fmt.Errorf("%w: %s changes from %s to %s", errLayoutIncompatible, path, df, dt)
	if df == dt {
		n, err := btf.Sizeof(to)
		if err != nil {
			return incompatible
		}
		c.ops = append(c.ops, copyOp{dst: dst, src: src, dstN: n, srcN: n})
		return nil
	}
	switch t := to.(type) {
	case *btf.Struct:
		f, ok := from.(*btf.Struct)
		if !ok {
			return incompatible
		}
		for _, m := range t.Members {
			om, found := memberNamed(f, m.Name)
			if !found || (path == "value" && c.hook != nil && c.hook.writes(m.Name)) {
				continue
			}
			if m.Name == "" || m.BitfieldSize != 0 || om.BitfieldSize != 0 {
				return incompatible
			}
			if err := c.plan(om.Type, m.Type, src+int(om.Offset.Bytes()), dst+int(m.Offset.Bytes()), path+"."+m.Name); err != nil {
				return err
			}
		}
		return nil
	case *btf.Int, *btf.Enum:
		fn, fsigned, ok := integer(from)
		tn, _, _ := integer(to)
		if !ok || fn > tn {
			return incompatible
		}
		c.ops = append(c.ops, copyOp{dst: dst, src: src, dstN: tn, srcN: fn, signed: fsigned})
		return nil
	case *btf.Array:
		f, ok := from.(*btf.Array)
		if !ok {
			return incompatible
		}
		fe, err1 := btf.Sizeof(f.Type)
		te, err2 := btf.Sizeof(t.Type)
		if err1 != nil || err2 != nil {
			return incompatible
		}
		for i := range int(min(f.Nelems, t.Nelems)) {
			if err := c.plan(f.Type, t.Type, src+i*fe, dst+i*te, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	}
	return incompatible
}

// memberNamed finds the member of s called name.
func memberNamed(s *btf.Struct, name string) (btf.Member, bool) {
	for _, m := range s.Members {
		if m.Name == name {
			return m, true
		}
	}
	return btf.Member{}, false
}

// integer is the size and signedness of an integer or enum type.
func integer(t btf.Type) (size int, signed, ok bool) {
	switch t := t.(type) {
	case *btf.Int:
		return int(t.Size), t.Encoding&btf.Signed != 0, true
	case *btf.Enum:
		return int(t.Size), t.Signed, true
	}
	return 0, false, false
}

// convert converts one entry, refusing it when the hook cannot carry it.
func (c *conversion) convert(src []byte) ([]byte, error) {
	dst := c.apply(src)
	if c.hook == nil {
		return dst, nil
	}
	if err := c.hook.fill(src, dst); err != nil {
		return nil, fmt.Errorf("%w: %w", errLayoutIncompatible, err)
	}
	return dst, nil
}

// apply converts one entry, as planned.
func (c *conversion) apply(src []byte) []byte {
	if c.identity {
		return src
	}
	dst := make([]byte, c.size)
	for _, op := range c.ops {
		copy(dst[op.dst:op.dst+op.srcN], src[op.src:op.src+op.srcN])
		if op.signed && op.dstN > op.srcN && src[op.src+op.srcN-1]&0x80 != 0 {
			for i := op.dst + op.srcN; i < op.dst+op.dstN; i++ {
				dst[i] = 0xff
			}
		}
	}
	return dst
}
