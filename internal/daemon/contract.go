package daemon

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
)

// ErrNeedsRestart is returned for a reload that changes a key the
// running daemon cannot change; the old configuration keeps serving.
var ErrNeedsRestart = errors.New("needs restart")

// when says how a change of a key reaches the running daemon.
type when int

const (
	// onReload: a reload applies the change.
	onReload when = iota
	// atStart: the process reads the key once, when it starts.
	atStart
	// fastPathOpen: the fast path reads the key when it opens; a reload
	// applies it until then.
	fastPathOpen
	// boundOnce: a component binds to the value once it is set (an
	// interface): setting it applies on reload, changing it needs a
	// restart, as does any change once the fast path is open.
	boundOnce
)

// reloadKeys classifies every key of the configuration file. A key
// missing here fails the daemon's tests, so a new knob cannot be
// forgotten. Keys under a map use "*", list items "[]".
var reloadKeys = map[string]when{
	"admin.listen":   atStart,
	"control.socket": atStart,
	"control.group":  atStart,
	"log.format":     atStart,
	"log.level":      onReload,
	"log.access":     onReload,

	"log.fastl4.path": onReload,
	"log.fastl4.rate": onReload,

	"network.external.interface":    boundOnce,
	"network.external.addresses":    onReload,
	"network.external.gateway":      onReload,
	"network.external.gateway6":     onReload,
	"network.external.routes[].to":  onReload,
	"network.external.routes[].via": onReload,
	"network.external.xdp_mode":     fastPathOpen,
	"network.internal.interface":    boundOnce,
	"network.internal.addresses":    onReload,
	"network.internal.gateway":      onReload,
	"network.internal.gateway6":     onReload,
	"network.internal.routes[].to":  onReload,
	"network.internal.routes[].via": onReload,
	"network.internal.xdp_mode":     fastPathOpen,
	"network.hosts":                 onReload,
	"network.resolver":              onReload,
	"network.manage":                onReload,

	"fastpath.pin_path":    fastPathOpen,
	"fastpath.max_flows":   fastPathOpen,
	"fastpath.snat_ports":  onReload,
	"fastpath.gc_interval": fastPathOpen,

	"pools.*.members[].address":  onReload,
	"pools.*.members[].disabled": onReload,
	"pools.*.members[].weight":   onReload,
	"pools.*.monitor.type":       onReload,
	"pools.*.monitor.port":       onReload,
	"pools.*.monitor.interval":   onReload,
	"pools.*.monitor.timeout":    onReload,
	"pools.*.monitor.rise":       onReload,
	"pools.*.monitor.fall":       onReload,
	"pools.*.monitor.path":       onReload,
	"pools.*.monitor.host":       onReload,
	"pools.*.monitor.expect":     onReload,
	"pools.*.monitor.auth_alive": onReload,
	"pools.*.monitor.ca":         onReload,
	"pools.*.lb":                 onReload,
	"pools.*.kind":               onReload,

	"virtuals[].name":                             onReload,
	"virtuals[].mode":                             onReload,
	"virtuals[].listen":                           onReload,
	"virtuals[].pool":                             onReload,
	"virtuals[].port":                             onReload,
	"virtuals[].snat":                             onReload,
	"virtuals[].protocol":                         onReload,
	"virtuals[].idle_timeout":                     onReload,
	"virtuals[].handshake_timeout":                onReload,
	"virtuals[].close_timeout":                    onReload,
	"virtuals[].reset_on_timeout":                 onReload,
	"virtuals[].loose_init":                       onReload,
	"virtuals[].loose_close":                      onReload,
	"virtuals[].mss_override":                     onReload,
	"virtuals[].log":                              onReload,
	"virtuals[].certificates[].cert":              onReload,
	"virtuals[].certificates[].key":               onReload,
	"virtuals[].certificates[].acme.names":        onReload,
	"virtuals[].certificates[].acme.ca":           onReload,
	"virtuals[].certificates[].acme.ca_root":      onReload,
	"virtuals[].certificates[].acme.email":        onReload,
	"virtuals[].certificates[].acme.challenge":    onReload,
	"virtuals[].certificates[].acme.key_type":     onReload,
	"acme.state_dir":                              atStart,
	"acme.check_interval":                         atStart,
	"virtuals[].tls.min_version":                  onReload,
	"virtuals[].tls.allow_legacy":                 onReload,
	"virtuals[].tls.hsts":                         onReload,
	"virtuals[].tls.handshake_timeout":            onReload,
	"virtuals[].tls.ticket_rotation":              onReload,
	"virtuals[].tls.session_tickets":              onReload,
	"virtuals[].trusted_proxies":                  onReload,
	"virtuals[].drain_timeout":                    onReload,
	"virtuals[].limits.max_conns":                 onReload,
	"virtuals[].limits.max_conns_per_source":      onReload,
	"virtuals[].limits.max_handshakes_per_source": onReload,

	"virtuals[].bgp.communities": onReload,
	"virtuals[].bgp.local_pref":  onReload,

	// The speaker's identity is fixed while it runs; neighbours are
	// added, changed and removed on reload.
	"bgp.local_as":              atStart,
	"bgp.router_id":             atStart,
	"bgp.neighbors[].address":   onReload,
	"bgp.neighbors[].as":        onReload,
	"bgp.neighbors[].password":  onReload,
	"bgp.neighbors[].bfd":       onReload,
	"bgp.neighbors[].hold_time": onReload,

	"cluster.port":     atStart,
	"cluster.peers":    atStart,
	"cluster.key_file": atStart,
	"cluster.idle":     atStart,

	"virtuals[].sites[].hosts":                            onReload,
	"virtuals[].sites[].pool":                             onReload,
	"virtuals[].sites[].port":                             onReload,
	"virtuals[].sites[].redirect":                         onReload,
	"virtuals[].sites[].profile":                          onReload,
	"virtuals[].sites[].deny":                             onReload,
	"virtuals[].sites[].upgrade":                          onReload,
	"virtuals[].sites[].windows_auth":                     onReload,
	"virtuals[].sites[].strict_paths":                     onReload,
	"virtuals[].sites[].affinity":                         onReload,
	"virtuals[].sites[].lb":                               onReload,
	"virtuals[].sites[].backend_tls.ca":                   onReload,
	"virtuals[].sites[].backend_tls.server_name":          onReload,
	"virtuals[].sites[].backend_tls.insecure_skip_verify": onReload,
	"virtuals[].sites[].header_timeout":                   onReload,
	"virtuals[].sites[].max_header_bytes":                 onReload,
	"virtuals[].sites[].max_body_bytes":                   onReload,
	"virtuals[].sites[].response_timeout":                 onReload,
	"virtuals[].sites[].idle_timeout":                     onReload,
	"virtuals[].sites[].stall_timeout":                    onReload,
	"virtuals[].sites[].dial_timeout":                     onReload,
	"virtuals[].sites[].pool_idle_timeout":                onReload,

	// keepalived reads these, from edgeproxy ha keepalived-conf; the
	// daemon uses only the floating address (SNAT) and the fifo.
	"ha.priority":          onReload,
	"ha.advert_interval":   onReload,
	"ha.external.vrid":     onReload,
	"ha.external.peer":     onReload,
	"ha.external.floating": onReload,
	"ha.internal.vrid":     onReload,
	"ha.internal.peer":     onReload,
	"ha.internal.floating": onReload,
	"ha.fifo":              atStart,
	// The mirror link is opened at start.
	"ha.mirror.listen":    atStart,
	"ha.mirror.peer":      atStart,
	"ha.mirror.key_file":  atStart,
	"ha.mirror.bandwidth": atStart,
	"virtuals[].mirror":   onReload,
}

// running is what the running daemon has opened, which decides whether
// a fastPathOpen or boundOnce key can still change.
type running struct {
	fastPath bool
}

// restartKeys compares the running configuration with the new one key
// by key and returns an error naming each changed key a reload cannot
// apply (nil: the reload may go ahead). A key the table does not know
// needs a restart, to be safe.
func restartKeys(old, next *config.Config, r running) error {
	was, now := flatten(old), flatten(next)
	var errs []error
	for _, key := range changedKeys(was, now) {
		if needsRestart(key, was[key], now[key], r) {
			errs = append(errs, fmt.Errorf("%w: %s", ErrNeedsRestart, key))
		}
	}
	return errors.Join(errs...)
}

func needsRestart(key string, was, now []string, r running) bool {
	w, ok := reloadKeys[key]
	switch {
	case !ok || w == atStart:
		return true
	case w == fastPathOpen:
		return r.fastPath
	case w == boundOnce:
		return r.fastPath || slices.ContainsFunc(was, func(v string) bool { return v != "" })
	}
	return false
}

// changedKeys returns the keys whose values differ, sorted.
func changedKeys(was, now map[string][]string) []string {
	var out []string
	for k, v := range was {
		if !slices.Equal(v, now[k]) {
			out = append(out, k)
		}
	}
	for k := range now {
		if _, ok := was[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// flatten lists the values of every key of cfg, in file order (maps in
// key order), so two configurations compare key by key.
func flatten(cfg *config.Config) map[string][]string {
	out := map[string][]string{}
	if cfg != nil {
		walkValue(reflect.ValueOf(cfg).Elem(), "", out)
	}
	return out
}

func walkValue(v reflect.Value, key string, out map[string][]string) {
	for v.Kind() == reflect.Pointer && isSection(v.Type()) {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	switch {
	case !isSection(v.Type()):
		out[key] = append(out[key], leafString(v))
	case v.Kind() == reflect.Slice:
		for i := range v.Len() {
			walkValue(v.Index(i), key+"[]", out)
		}
	case v.Kind() == reflect.Map:
		keys := v.MapKeys()
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		for _, k := range keys {
			walkValue(v.MapIndex(k), join(key, "*"), out)
		}
	default:
		for i := range v.NumField() {
			if name, ok := yamlName(v.Type().Field(i)); ok {
				walkValue(v.Field(i), join(key, name), out)
			}
		}
	}
}

func leafString(v reflect.Value) string {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return ""
		}
		v = v.Elem()
	}
	return fmt.Sprint(v.Interface())
}

// configKeys lists every key the configuration types define.
func configKeys() []string {
	var out []string
	walkType(reflect.TypeFor[config.Config](), "", &out)
	slices.Sort(out)
	return out
}

func walkType(t reflect.Type, key string, out *[]string) {
	switch {
	case !isSection(t):
		*out = append(*out, key)
	case t.Kind() == reflect.Pointer:
		walkType(t.Elem(), key, out)
	case t.Kind() == reflect.Slice:
		walkType(t.Elem(), key+"[]", out)
	case t.Kind() == reflect.Map:
		walkType(t.Elem(), join(key, "*"), out)
	default:
		for i := range t.NumField() {
			if name, ok := yamlName(t.Field(i)); ok {
				walkType(t.Field(i).Type, join(key, name), out)
			}
		}
	}
}

// isSection reports whether t (or what it points to, lists or maps) is
// a struct of the configuration with keys of its own; anything else is
// a value.
func isSection(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t.PkgPath() != reflect.TypeFor[config.Config]().PkgPath() {
		return false
	}
	for i := range t.NumField() {
		if _, ok := t.Field(i).Tag.Lookup("yaml"); ok {
			return true
		}
	}
	return false
}

// yamlName returns a field's key ("" for an inlined struct) and whether
// the file has it at all.
func yamlName(f reflect.StructField) (string, bool) {
	tag, ok := f.Tag.Lookup("yaml")
	name, opts, _ := strings.Cut(tag, ",")
	if !ok || name == "-" || !f.IsExported() {
		return "", false
	}
	if opts == "inline" {
		return "", true
	}
	return name, true
}

func join(key, name string) string {
	switch {
	case key == "":
		return name
	case name == "":
		return key
	}
	return key + "." + name
}
