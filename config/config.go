package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Report is everything Analyze found in a file.
type Report struct {
	// Config is what could be decoded, with defaults applied; nil only
	// when the file is not YAML at all. When Errors is not empty it is
	// for reporting only and must not be run.
	Config   *Config
	Errors   []*Error
	Warnings []*Error
}

// Err returns the errors as *Errors, or nil when there are none.
func (r *Report) Err() error {
	if len(r.Errors) == 0 {
		return nil
	}
	return &Errors{List: r.Errors}
}

// Load reads and parses the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes data strictly, applies the defaults and validates the
// result, including the certificate files it names. file names the source
// in messages; relative paths in the file (certificates, keys, CAs, the
// access log) are resolved against file's directory and stored absolute
// or as given when file is "". On failure the error is *Errors (which
// matches ErrInvalid) with every error found, and the Config is nil.
// Warnings are in Config.Warnings.
func Parse(file string, data []byte) (*Config, error) {
	r := Analyze(file, data)
	if err := r.Err(); err != nil {
		return nil, err
	}
	return r.Config, nil
}

// Analyze is Parse for tools that report: it returns whatever could be
// decoded together with all errors and warnings.
func Analyze(file string, data []byte) *Report {
	return analyze(file, data, time.Now())
}

func analyze(file string, data []byte, now time.Time) *Report {
	c := &Config{File: file, Pos: Positions{}}
	d := &decoder{file: file, pos: c.Pos}
	d.decodeFile(data, c)
	if _, ok := c.Pos[""]; !ok {
		// Nothing decodable: a syntax error or an empty file.
		sortFindings(d.errs)
		return &Report{Errors: d.errs}
	}
	resolvePaths(c, baseDir(file))
	applyDefaults(c)
	v := &validator{c: c, now: now, errs: d.errs}
	v.validate()
	sortFindings(v.errs)
	sortFindings(v.warns)
	c.Warnings = v.warns
	return &Report{Config: c, Errors: v.errs, Warnings: v.warns}
}

func baseDir(file string) string {
	if file == "" {
		return ""
	}
	return filepath.Dir(file)
}

// resolvePaths makes the file paths in c relative to base.
func resolvePaths(c *Config, base string) {
	if base == "" {
		return
	}
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
	if a := c.Log.Access; a != "" && a != "off" && a != "stderr" {
		abs(&c.Log.Access)
	}
	if a := c.Log.FastL4.Path; a != "" && a != "off" && a != "stderr" {
		abs(&c.Log.FastL4.Path)
	}
	if c.HA != nil && c.HA.Mirror != nil {
		abs(&c.HA.Mirror.KeyFile)
	}
	for _, p := range c.Pools {
		if p != nil {
			abs(&p.Monitor.CA)
		}
	}
	for _, v := range c.Virtuals {
		if v == nil {
			continue
		}
		for i := range v.Certificates {
			abs(&v.Certificates[i].Cert)
			abs(&v.Certificates[i].Key)
		}
		for _, s := range v.Sites {
			if s != nil && s.BackendTLS != nil {
				abs(&s.BackendTLS.CA)
			}
		}
	}
}

// Where returns "file:line:column" for a key path, or the nearest
// enclosing key that is in the file, for messages in other packages.
func (c *Config) Where(path string) string {
	p := c.Pos.Find(path)
	loc := c.File
	if p.Line > 0 {
		if loc != "" {
			loc += ":"
		}
		loc += strconv.Itoa(p.Line) + ":" + strconv.Itoa(p.Column)
	}
	return loc
}

// Find returns the position of path, or of its nearest ancestor that was
// written in the file.
func (p Positions) Find(path string) Position {
	for {
		if pos, ok := p[path]; ok {
			return pos
		}
		if path == "" {
			return Position{}
		}
		path = parentPath(path)
	}
}

// Has reports whether the key path was written in the file.
func (p Positions) Has(path string) bool {
	_, ok := p[path]
	return ok
}

// parentPath strips the last element of a key path: a.b[1] -> a.b,
// a["x.y"] -> a, a.b -> a.
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndex(path, "["); i >= 0 {
			// A quoted key may contain '[': find the opening bracket
			// that starts a quoted or numeric index.
			if j := strings.LastIndex(path, `["`); j >= 0 && strings.HasSuffix(path, `"]`) {
				return path[:j]
			}
			return path[:i]
		}
	}
	if i := strings.LastIndex(path, "."); i >= 0 {
		return path[:i]
	}
	return ""
}

// VirtualPath is the key path of virtual i, for Where.
func VirtualPath(i int) string { return joinIndex("virtuals", i) }

// PoolPath is the key path of the named pool, for Where.
func PoolPath(name string) string { return joinKey("pools", name) }

// MemberAddr resolves a pool member: a literal address, or a name from
// network.hosts. ok is false for names that need the resolver.
func (c *Config) MemberAddr(m Member) (netip.Addr, bool) {
	if a, ok := m.Addr(); ok {
		return a, true
	}
	a, ok := c.Network.Hosts[strings.ToLower(m.Address)]
	if !ok {
		a, ok = c.Network.Hosts[m.Address]
	}
	return a, ok && a.IsValid()
}

// SNATAddresses returns the source addresses a fastl4 virtual translates
// to, for the VIP's address family: the internal NIC's first address of
// that family for automap (in an HA pair the floating address), else the
// listed addresses of that family.
func (c *Config) SNATAddresses(v *Virtual) []netip.Addr {
	is4 := v.Listen.Addr().Is4()
	if v.SNAT.Automap && c.HA != nil {
		if a, ok := c.floating(is4); ok {
			return []netip.Addr{a}
		}
		return nil
	}
	if v.SNAT.Automap {
		for _, p := range c.Network.Internal.Addresses {
			if p.Addr().Is4() == is4 {
				return []netip.Addr{p.Addr()}
			}
		}
		return nil
	}
	var out []netip.Addr
	for _, a := range v.SNAT.Addresses {
		if a.Is4() == is4 {
			out = append(out, a)
		}
	}
	return out
}

// IsL7 reports whether the virtual is served by the L7 proxy (http or
// https) rather than the XDP fast path.
func (v *Virtual) IsL7() bool { return v.Mode == ModeHTTP || v.Mode == ModeHTTPS }

// NeedsXDP reports whether the configuration runs the XDP fast path: it
// has a fastl4 virtual and the external NIC's xdp_mode is not off (the
// fast path takes client packets on the external NIC only).
func (c *Config) NeedsXDP() bool {
	if c.Network.External.XDPMode == XDPOff {
		return false
	}
	for _, v := range c.Virtuals {
		if v != nil && v.Mode == ModeFastL4 {
			return true
		}
	}
	return false
}
