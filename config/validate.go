package config

import (
	"fmt"
	"net/netip"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// validator checks a decoded configuration with defaults applied.
type validator struct {
	c     *Config
	now   time.Time
	errs  []*Error
	warns []*Error
	// decoded marks the paths the decoder already reported, so that a
	// value that did not decode is not reported again as missing.
	decoded map[string]bool
	// acmeHA is set once the HA pair's shared ACME state is warned about.
	acmeHA bool
}

func (v *validator) finding(path, format string, args ...any) *Error {
	p := v.c.Pos.Find(path)
	return &Error{File: v.c.File, Line: p.Line, Column: p.Column, Path: path, Msg: fmt.Sprintf(format, args...)}
}

func (v *validator) errorf(path, format string, args ...any) {
	if v.decoded[path] {
		return
	}
	v.errs = append(v.errs, v.finding(path, format, args...))
}

func (v *validator) warnf(path, format string, args ...any) {
	v.warns = append(v.warns, v.finding(path, format, args...))
}

// line returns " (line N)" for a path's position, for messages that
// refer to another place in the file.
func (v *validator) line(path string) string {
	if p := v.c.Pos.Find(path); p.Line > 0 {
		return fmt.Sprintf(" (line %d)", p.Line)
	}
	return ""
}

// choice checks that value is one of options; "" is accepted when
// allowEmpty.
func choice[T ~string](v *validator, path, what string, value T, allowEmpty bool, options ...T) bool {
	if value == "" && allowEmpty || slices.Contains(options, value) {
		return true
	}
	val, choices := string(value), make([]string, len(options))
	for i, o := range options {
		choices[i] = string(o)
	}
	if val == "" {
		v.errorf(path, "%s is required: one of %s", what, oneOf(quoteAll(choices)))
		return false
	}
	v.errorf(path, "unknown %s %q: expected %s%s", what, val, oneOf(quoteAll(choices)), didYouMean(val, choices))
	return false
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, x := range s {
		out[i] = fmt.Sprintf("%q", x)
	}
	return out
}

func (v *validator) validate() {
	v.decoded = map[string]bool{}
	for _, e := range v.errs {
		v.decoded[e.Path] = true
	}
	v.admin()
	v.control()
	v.log()
	v.network()
	v.fastPath()
	v.pools()
	v.virtuals()
	v.listeners()
	v.bgp()
	v.cluster()
	v.ha()
}

func (v *validator) admin() {
	l := v.c.Admin.Listen
	if l == "" {
		return // disabled
	}
	ap, err := netip.ParseAddrPort(l)
	if err != nil {
		v.errorf("admin.listen", "%q is not an address:port: write it like 127.0.0.1:9469 (or null to disable the endpoint)", l)
		return
	}
	if ap.Port() == 0 {
		v.errorf("admin.listen", "port 0: choose a port, e.g. 127.0.0.1:9469")
	}
	if !ap.Addr().IsLoopback() {
		v.warnf("admin.listen", "the admin endpoint %s is reachable beyond this host: /status and /metrics reveal the configuration and traffic; keep it on 127.0.0.1 unless a firewall guards it", l)
	}
}

func (v *validator) control() {
	if s := v.c.Control.Socket; !filepath.IsAbs(s) {
		v.errorf("control.socket", "%q is not an absolute path: write it like %s", s, DefaultControlSocket)
	}
	if g := v.c.Control.Group; g != "" {
		if _, err := user.LookupGroup(g); err != nil {
			v.errorf("control.group", "no group %q on this host: create it (groupadd %s) or leave the key out (root only)", g, g)
		}
	}
}

func (v *validator) log() {
	choice(v, "log.format", "log format", v.c.Log.Format, false, "text", "json")
	choice(v, "log.level", "log level", v.c.Log.Level, false, "debug", "info", "warn", "error")
	if r := v.c.Log.FastL4.Rate; r < 1 || r > 1000000 {
		v.errorf("log.fastl4.rate", "rate %d is out of range: 1 to 1000000 lines a second (default %d)", r, DefaultFastL4LogRate)
	}
	if a := v.c.Log.FastL4.Path; a != "" && a == v.c.Log.Access && a != "off" && a != "stderr" {
		v.errorf("log.fastl4.path", "%s is the access log too: give the connection log a file of its own", a)
	}
}

func (v *validator) fastPath() {
	fp := &v.c.FastPath
	if !filepath.IsAbs(fp.PinPath) {
		v.errorf("fastpath.pin_path", "%q is not an absolute path: use a directory on the BPF file system, e.g. %s", fp.PinPath, DefaultPinPath)
	} else if !strings.HasPrefix(filepath.Clean(fp.PinPath)+"/", "/sys/fs/bpf/") {
		v.warnf("fastpath.pin_path", "%s is not under /sys/fs/bpf: it must be on a mounted BPF file system (mount -t bpf bpf DIR)", fp.PinPath)
	}
	const maxFlows = 1 << 24
	if fp.MaxFlows < 0 || fp.MaxFlows > maxFlows {
		v.errorf("fastpath.max_flows", "%d flows is out of range: choose 1 to %d (default %d)", fp.MaxFlows, maxFlows, DefaultMaxFlows)
	}
	if r := fp.SNATPorts; !r.IsZero() {
		if r.First < 1024 {
			v.errorf("fastpath.snat_ports", "%s includes privileged ports below 1024 that services on this host may use: start at 1024 or above, e.g. %s", r, DefaultSNATPorts)
		} else if r.Size() < 1024 {
			v.warnf("fastpath.snat_ports", "%s holds only %d ports: each SNAT address can carry that many flows per member at once", r, r.Size())
		}
	}
	if g := fp.GCInterval.D(); g < 100*time.Millisecond || g > time.Minute {
		v.errorf("fastpath.gc_interval", "%s is out of range: choose 100ms to 1m (default %s)", g, DefaultGCInterval)
	}
}
