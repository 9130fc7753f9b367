package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// decoder walks a yaml.Node tree against the Go types, strictly: every key
// must name a field, every value must have the field's type. It records the
// position of every key path and collects every error instead of stopping
// at the first.
type decoder struct {
	file  string
	pos   Positions
	errs  []*Error
	depth int
}

const maxDepth = 64

var (
	typeDuration  = reflect.TypeFor[Duration]()
	typePortRange = reflect.TypeFor[PortRange]()
	typeBandwidth = reflect.TypeFor[Bandwidth]()
	typeSNAT      = reflect.TypeFor[SNAT]()
	typeMember    = reflect.TypeFor[Member]()
	typeAddr      = reflect.TypeFor[netip.Addr]()
	typePrefix    = reflect.TypeFor[netip.Prefix]()
	typeAddrPort  = reflect.TypeFor[netip.AddrPort]()
)

var yamlLineRE = regexp.MustCompile(`line (\d+)(?:, column (\d+))?`)

// decodeFile parses data as one YAML document and decodes it into c.
func (d *decoder) decodeFile(data []byte, c *Config) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		d.errorAt(Position{}, "", "the file is empty: expected a mapping with the keys network, pools and virtuals")
		return
	}
	if err != nil {
		d.syntaxError(err, data)
		return
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.errorAt(nodePos(&extra), "", "a second YAML document (after ---) is not allowed: keep the whole configuration in one document")
	} else if !errors.Is(err, io.EOF) {
		d.syntaxError(err, data)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			d.errorAt(Position{}, "", "the file is empty: expected a mapping with the keys network, pools and virtuals")
			return
		}
		root = root.Content[0]
	}
	if isNull(root) {
		d.errorAt(nodePos(root), "", "the file holds no settings: expected a mapping with the keys network, pools and virtuals")
		return
	}
	d.pos[""] = nodePos(root)
	d.decode(root, reflect.ValueOf(c).Elem(), "")
}

// syntaxError turns a YAML parser error into an Error. The parser names
// the line where the enclosing block starts, not always the line at fault,
// so the line is found by parsing growing prefixes of the file until one
// fails the same way.
func (d *decoder) syntaxError(err error, data []byte) {
	line, msg := splitYAMLError(err)
	if exact := faultyLine(data, line, msg); exact > 0 {
		line = exact
	}
	d.errorAt(Position{Line: line}, "", "YAML syntax: %s (check the indentation and the quoting on this line and the one before)", msg)
}

// splitYAMLError separates "yaml: line N: message".
func splitYAMLError(err error) (int, string) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = strings.TrimSpace(yamlLineRE.ReplaceAllString(msg, ""))
		msg = strings.TrimPrefix(msg, ": ")
	}
	return line, msg
}

// faultyLine returns the first line whose addition to the document makes
// the parser fail with the same message and reported line, or 0.
func faultyLine(data []byte, line int, msg string) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > 2000 {
		return 0
	}
	var prefix []byte
	for k, l := range lines {
		prefix = append(prefix, l...)
		var n yaml.Node
		dec := yaml.NewDecoder(bytes.NewReader(prefix))
		err := dec.Decode(&n)
		for err == nil {
			err = dec.Decode(&n)
		}
		if errors.Is(err, io.EOF) {
			continue
		}
		if pl, pm := splitYAMLError(err); pm == msg && pl == line {
			return k + 1
		}
	}
	return 0
}

func (d *decoder) errorAt(p Position, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: p.Line, Column: p.Column, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errorAt(nodePos(n), path, format, args...)
}

func nodePos(n *yaml.Node) Position { return Position{Line: n.Line, Column: n.Column} }

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return "nothing (null)"
		case "!!bool":
			return "the boolean " + n.Value
		case "!!int", "!!float":
			return "the number " + n.Value
		}
		return fmt.Sprintf("the string %q", n.Value)
	}
	return "an unexpected node"
}

// joinKey appends a mapping key to a path: a.b for plain keys, a["x.y"]
// for keys that contain dots or other punctuation.
func joinKey(path, key string) string {
	if plainKey(key) {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	return path + "[" + strconv.Quote(key) + "]"
}

func plainKey(key string) bool {
	if key == "" {
		return false
	}
	for _, r := range key {
		if !(r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

func joinIndex(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// decode stores n into v, which must be settable.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	d.depth++
	defer func() { d.depth-- }()
	if d.depth > maxDepth {
		d.errorf(n, path, "nesting is too deep (aliases that refer to themselves?)")
		return
	}
	if n.Kind == yaml.AliasNode {
		if n.Alias == nil {
			d.errorf(n, path, "unknown alias")
			return
		}
		n = n.Alias
	}
	switch v.Type() {
	case typeDuration:
		d.decodeDuration(n, v, path)
		return
	case typePortRange:
		d.decodePortRange(n, v, path)
		return
	case typeBandwidth:
		d.decodeBandwidth(n, v, path)
		return
	case typeSNAT:
		d.decodeSNAT(n, v, path)
		return
	case typeMember:
		d.decodeMember(n, v, path)
		return
	case typeAddr:
		d.decodeAddr(n, v, path)
		return
	case typePrefix:
		d.decodePrefix(n, v, path)
		return
	case typeAddrPort:
		d.decodeAddrPort(n, v, path)
		return
	}

	switch v.Kind() {
	case reflect.Pointer:
		if isNull(n) {
			v.SetZero()
			return
		}
		p := reflect.New(v.Type().Elem())
		d.decode(n, p.Elem(), path)
		v.Set(p)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		d.decodeSlice(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.String:
		if s, ok := d.scalar(n, path, "a string"); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		d.decodeBool(n, v, path)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		d.decodeInt(n, v, path)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		d.decodeUint(n, v, path)
	default:
		d.errorf(n, path, "internal: cannot decode into %s", v.Type())
	}
}

// decodeAddr stores an IP address.
func (d *decoder) decodeAddr(n *yaml.Node, v reflect.Value, path string) {
	if s, ok := d.scalar(n, path, "an IP address such as 10.20.0.1 or 2001:db8::1"); ok && s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			d.errorf(n, path, "%q is not an IP address: write it like 10.20.0.1 or 2001:db8::1 (no prefix length, no port)", s)
			return
		}
		v.Set(reflect.ValueOf(a.Unmap()))
	}
}

// decodePrefix stores an address with its prefix length.
func (d *decoder) decodePrefix(n *yaml.Node, v reflect.Value, path string) {
	if s, ok := d.scalar(n, path, "an address with prefix length such as 10.20.0.10/24"); ok && s != "" {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			hint := "write it as address/length, e.g. 10.20.0.10/24 or 2001:db8::10/64"
			if a, aerr := netip.ParseAddr(s); aerr == nil {
				bits := 32
				if a.Is6() {
					bits = 128
				}
				hint = fmt.Sprintf("add the prefix length, e.g. %s/%d", s, bits)
			}
			d.errorf(n, path, "%q is not an address with prefix length: %s", s, hint)
			return
		}
		v.Set(reflect.ValueOf(netip.PrefixFrom(p.Addr().Unmap(), p.Bits())))
	}
}

// decodeAddrPort stores an address and port.
func (d *decoder) decodeAddrPort(n *yaml.Node, v reflect.Value, path string) {
	if s, ok := d.scalar(n, path, "an address and port such as 203.0.113.20:443"); ok && s != "" {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			hint := "write it as address:port, e.g. 203.0.113.20:443 or [2001:db8::20]:443"
			if _, aerr := netip.ParseAddr(s); aerr == nil {
				hint = "add the port, e.g. " + s + ":443 (IPv6: [" + s + "]:443)"
			} else if strings.HasPrefix(s, ":") {
				hint = "name the address, e.g. 0.0.0.0" + s + " or [::]" + s
			}
			d.errorf(n, path, "%q is not an address:port: %s", s, hint)
			return
		}
		v.Set(reflect.ValueOf(netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())))
	}
}

// decodeBool stores true or false; null is false.
func (d *decoder) decodeBool(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		v.SetBool(false)
		return
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		d.errorf(n, path, "expected true or false, found %s", kindName(n))
		return
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		d.errorf(n, path, "expected true or false, found %s", kindName(n))
		return
	}
	v.SetBool(b)
}

// decodeInt stores a signed integer; null is 0.
func (d *decoder) decodeInt(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		v.SetInt(0)
		return
	}
	i, ok := d.integer(n, path)
	if !ok {
		return
	}
	if v.OverflowInt(i) {
		d.errorf(n, path, "%s is out of range", n.Value)
		return
	}
	v.SetInt(i)
}

// decodeUint stores an unsigned integer in its range; null is 0.
func (d *decoder) decodeUint(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		v.SetUint(0)
		return
	}
	i, ok := d.integer(n, path)
	if !ok {
		return
	}
	if i < 0 || v.OverflowUint(uint64(i)) {
		maxv := uint64(math.MaxUint64) >> (64 - v.Type().Bits())
		what := "a number"
		if v.Kind() == reflect.Uint16 {
			what = "a port number"
		}
		d.errorf(n, path, "%s is out of range: expected %s from 0 to %d", n.Value, what, maxv)
		return
	}
	v.SetUint(uint64(i))
}

// scalar returns a scalar node's text; null is "". what describes the
// expected value for the error message.
func (d *decoder) scalar(n *yaml.Node, path, what string) (string, bool) {
	if isNull(n) {
		return "", true
	}
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected %s, found %s", what, kindName(n))
		return "", false
	}
	return n.Value, true
}

func (d *decoder) integer(n *yaml.Node, path string) (int64, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		hint := ""
		if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
			if _, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
				hint = " (remove the quotes)"
			}
		}
		d.errorf(n, path, "expected a whole number, found %s%s", kindName(n), hint)
		return 0, false
	}
	var i int64
	if err := n.Decode(&i); err != nil {
		d.errorf(n, path, "%s is out of range", n.Value)
		return 0, false
	}
	return i, true
}

// field describes one YAML key of a struct.
type field struct {
	name  string
	index []int
}

var fieldCache sync.Map // reflect.Type -> []field

// structFields lists the YAML keys of t in declaration order, flattening
// ",inline" fields.
func structFields(t reflect.Type) []field {
	if f, ok := fieldCache.Load(t); ok {
		return f.([]field)
	}
	var out []field
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("yaml")
		if tag == "-" || !sf.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(","+opts+",", ",inline,") {
			for _, sub := range structFields(sf.Type) {
				out = append(out, field{name: sub.name, index: append([]int{i}, sub.index...)})
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(sf.Name)
		}
		out = append(out, field{name: name, index: []int{i}})
	}
	fieldCache.Store(t, out)
	return out
}

// keyValue is one entry of a mapping, after merge keys are expanded.
type keyValue struct {
	key, value *yaml.Node
}

// entries returns the pairs of a mapping node, expanding YAML merge keys
// (<<: *anchor); explicit keys take precedence over merged ones.
func (d *decoder) entries(n *yaml.Node, path string) []keyValue {
	var explicit, merged []keyValue
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			srcs := []*yaml.Node{v}
			if v.Kind == yaml.AliasNode {
				srcs = []*yaml.Node{v.Alias}
			} else if v.Kind == yaml.SequenceNode {
				srcs = v.Content
			}
			for _, s := range srcs {
				if s.Kind == yaml.AliasNode {
					s = s.Alias
				}
				if s == nil || s.Kind != yaml.MappingNode {
					d.errorf(k, path, "a merge key (<<) needs a mapping or a list of mappings")
					continue
				}
				d.depth++
				if d.depth <= maxDepth {
					merged = append(merged, d.entries(s, path)...)
				}
				d.depth--
			}
			continue
		}
		explicit = append(explicit, keyValue{k, v})
	}
	if len(merged) == 0 {
		return explicit
	}
	seen := map[string]bool{}
	for _, kv := range explicit {
		seen[kv.key.Value] = true
	}
	out := explicit
	for _, kv := range merged {
		if !seen[kv.key.Value] {
			seen[kv.key.Value] = true
			out = append(out, kv)
		}
	}
	return out
}

// mapping checks that n is a mapping (null counts as empty).
func (d *decoder) mapping(n *yaml.Node, path, what string) bool {
	if isNull(n) {
		return false
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected %s, found %s", what, kindName(n))
		return false
	}
	return true
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if !d.mapping(n, path, "a mapping of keys") {
		return
	}
	fields := structFields(v.Type())
	byName := make(map[string]field, len(fields))
	names := make([]string, 0, len(fields))
	for _, f := range fields {
		byName[f.name] = f
		names = append(names, f.name)
	}
	first := map[string]*yaml.Node{}
	for _, kv := range d.entries(n, path) {
		k := kv.key
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "a key must be a plain word, found %s", kindName(k))
			continue
		}
		name := k.Value
		kpath := joinKey(path, name)
		if prev, dup := first[name]; dup {
			d.errorf(k, kpath, "duplicate key %q (first set on line %d): keep one", name, prev.Line)
			continue
		}
		first[name] = k
		f, ok := byName[name]
		if !ok {
			where := path
			if where == "" {
				where = "the top level"
			}
			d.errorf(k, kpath, "unknown key %q in %s%s (expected one of: %s)", name, where, didYouMean(name, names), strings.Join(names, ", "))
			continue
		}
		d.pos[kpath] = nodePos(k)
		d.decode(kv.value, v.FieldByIndex(f.index), kpath)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		v.SetZero()
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "expected a list (- item, or [a, b]), found %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, e := range n.Content {
		ipath := joinIndex(path, i)
		d.pos[ipath] = nodePos(e)
		d.decode(e, s.Index(i), ipath)
	}
	v.Set(s)
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if !d.mapping(n, path, "a mapping of names") {
		if isNull(n) {
			v.SetZero()
		}
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		d.errorf(n, path, "internal: map key type %s", v.Type().Key())
		return
	}
	m := reflect.MakeMap(v.Type())
	first := map[string]*yaml.Node{}
	for _, kv := range d.entries(n, path) {
		k := kv.key
		if k.Kind != yaml.ScalarNode || isNull(k) {
			d.errorf(k, path, "a name must be a plain string, found %s", kindName(k))
			continue
		}
		kpath := joinKey(path, k.Value)
		if prev, dup := first[k.Value]; dup {
			d.errorf(k, kpath, "duplicate name %q (first defined on line %d): names must be unique", k.Value, prev.Line)
			continue
		}
		first[k.Value] = k
		d.pos[kpath] = nodePos(k)
		e := reflect.New(v.Type().Elem()).Elem()
		d.decode(kv.value, e, kpath)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
	}
	v.Set(m)
}

func (d *decoder) decodeDuration(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.scalar(n, path, `a duration such as "300s" or "16m"`)
	if !ok || s == "" {
		return
	}
	dur, err := ParseDuration(s)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return
	}
	v.Set(reflect.ValueOf(dur))
}

func (d *decoder) decodePortRange(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.scalar(n, path, `a port range such as "40000-59999"`)
	if !ok || s == "" {
		return
	}
	r, err := ParsePortRange(s)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return
	}
	v.Set(reflect.ValueOf(r))
}

func (d *decoder) decodeBandwidth(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.scalar(n, path, `a rate such as "10MB/s" or "80Mbit/s"`)
	if !ok || s == "" {
		return
	}
	b, err := ParseBandwidth(s)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return
	}
	v.Set(reflect.ValueOf(b))
}

func (d *decoder) decodeSNAT(n *yaml.Node, v reflect.Value, path string) {
	const want = `"automap" or a list of internal addresses such as [10.20.0.11, 10.20.0.12]`
	if isNull(n) {
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	var out SNAT
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Value == SNATAutomap {
			out.Automap = true
			break
		}
		a, err := netip.ParseAddr(n.Value)
		if err != nil {
			d.errorf(n, path, "snat %q: expected %s%s", n.Value, want, didYouMean(n.Value, []string{SNATAutomap}))
			return
		}
		out.Addresses = []netip.Addr{a.Unmap()}
	case yaml.SequenceNode:
		if len(n.Content) == 0 {
			d.errorf(n, path, "an empty SNAT list: expected %s", want)
			return
		}
		for i, e := range n.Content {
			ipath := joinIndex(path, i)
			d.pos[ipath] = nodePos(e)
			var a netip.Addr
			d.decode(e, reflect.ValueOf(&a).Elem(), ipath)
			if a.IsValid() {
				out.Addresses = append(out.Addresses, a)
			} else if isNull(e) {
				d.errorf(e, ipath, "an empty SNAT address: expected an IP address")
			}
		}
	default:
		d.errorf(n, path, "expected %s, found %s", want, kindName(n))
		return
	}
	v.Set(reflect.ValueOf(out))
}

func (d *decoder) decodeMember(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch n.Kind {
	case yaml.ScalarNode:
		if isNull(n) {
			d.errorf(n, path, "an empty member: write a name from network.hosts or an address")
			return
		}
		v.Set(reflect.ValueOf(Member{Address: n.Value}))
	case yaml.MappingNode:
		var m Member
		d.decodeStruct(n, reflect.ValueOf(&m).Elem(), path)
		v.Set(reflect.ValueOf(m))
	default:
		d.errorf(n, path, "expected a member name or address, or a mapping {address: , weight: , disabled: }, found %s", kindName(n))
	}
}
