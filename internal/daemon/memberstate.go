package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/metric"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMemberState is where the members' runtime state is kept.
const DefaultMemberState = "/var/lib/edgeproxy/members.json"

// Runtime states of a member, set with `edgeproxy member`.
const (
	// MemberEnabled: the member takes traffic as its health allows.
	MemberEnabled = "enable"
	// MemberDisabled: no new flows or requests; open ones continue.
	MemberDisabled = "disable"
	// MemberDrain: as disabled, and the open ones end at drain_timeout.
	MemberDrain = "drain"
)

// MemberArgs asks for a member's runtime state.
type MemberArgs struct {
	Pool   string `json:"pool"`
	Member string `json:"member"`
	State  string `json:"state"`
}

// MemberResult answers CmdMember.
type MemberResult struct {
	Pool   string    `json:"pool"`
	Member string    `json:"member"`
	State  string    `json:"state"`
	Since  time.Time `json:"since"`
	// DrainBy is when a draining member's remaining connections are cut.
	DrainBy time.Time `json:"drain_by,omitzero"`
}

type poolMember struct{ Pool, Member string }

type memberEntry struct {
	Pool   string    `json:"pool"`
	Member string    `json:"member"`
	State  string    `json:"state"`
	Since  time.Time `json:"since"`
}

// memberStateFile is the file's form, versioned.
type memberStateFile struct {
	Version int           `json:"version"`
	Members []memberEntry `json:"members"`
}

// loadMemberState reads the members' runtime state ("-": none kept); a
// missing file is an empty state.
func loadMemberState(path string) (map[poolMember]memberEntry, error) {
	out := map[poolMember]memberEntry{}
	if path == "-" {
		return out, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read member state: %w", err)
	}
	var f memberStateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode member state %s: %w (fix or remove the file; every member is then enabled)", path, err)
	}
	for _, e := range f.Members {
		out[poolMember{e.Pool, e.Member}] = e
	}
	return out, nil
}

// saveMemberState writes the state atomically: a new file beside the old
// one, synced, renamed over it.
func saveMemberState(path string, st map[poolMember]memberEntry) error {
	if path == "-" {
		return nil
	}
	f := memberStateFile{Version: 1, Members: slices.SortedFunc(maps.Values(st), func(a, b memberEntry) int {
		return strings.Compare(a.Pool+"\x00"+a.Member, b.Pool+"\x00"+b.Member)
	})}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode member state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("create member state directory: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".members-*.json")
	if err != nil {
		return fmt.Errorf("write member state: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(b, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write member state %s: %w", path, err)
	}
	return nil
}

// withMemberState returns cfg with the members set disabled or drain at
// runtime marked disabled, the input the plan compiles for both data
// planes and the monitors; cfg itself is not changed.
func withMemberState(cfg *config.Config, st map[poolMember]memberEntry) *config.Config {
	if len(st) == 0 {
		return cfg
	}
	out := *cfg
	out.Pools = maps.Clone(cfg.Pools)
	for name, p := range cfg.Pools {
		if p == nil {
			continue
		}
		cp := *p
		cp.Members = slices.Clone(p.Members)
		for i, m := range cp.Members {
			if _, ok := st[poolMember{name, m.Address}]; ok {
				cp.Members[i].Disabled = true
			}
		}
		out.Pools[name] = &cp
	}
	return &out
}

// setMemberState records a member's runtime state, keeps it in the state
// file and applies it to both planes and the monitors through the same
// steps as a reload of the running file.
func (d *Daemon) setMemberState(ctx context.Context, a MemberArgs) (any, error) {
	d.mu.Lock()
	cfg := d.cfg
	d.mu.Unlock()
	if err := checkMember(cfg, a); err != nil {
		return nil, err
	}
	key := poolMember{a.Pool, a.Member}
	next := maps.Clone(d.memberState())
	res := MemberResult{Pool: a.Pool, Member: a.Member, State: a.State, Since: time.Now()}
	if a.State == MemberEnabled {
		delete(next, key)
	} else {
		if e, ok := next[key]; ok && e.State == a.State {
			res.Since = e.Since
		}
		next[key] = memberEntry{Pool: a.Pool, Member: a.Member, State: a.State, Since: res.Since}
	}
	if err := saveMemberState(d.opts.MemberState, next); err != nil {
		return nil, err
	}
	prev := d.memberState()
	d.setMemberStates(next)
	if err := d.switchTo(ctx, cfg); err != nil {
		d.setMemberStates(prev)
		return nil, errors.Join(fmt.Errorf("apply member state: %w", err), saveMemberState(d.opts.MemberState, prev))
	}
	if a.State == MemberDrain {
		res.DrainBy = res.Since.Add(poolDrainTimeout(cfg, a.Pool))
		d.scheduleDrain(cfg, key, res.Since)
	}
	d.log.Info("member state set", "pool", a.Pool, "member", a.Member, "state", a.State)
	return res, nil
}

func checkMember(cfg *config.Config, a MemberArgs) error {
	switch a.State {
	case MemberEnabled, MemberDisabled, MemberDrain:
	default:
		return fmt.Errorf("set member state: %q is not a state: use enable, disable or drain", a.State)
	}
	p := cfg.Pools[a.Pool]
	if p == nil {
		return fmt.Errorf("set member state: no pool %q in the running configuration: pools are %s", a.Pool, strings.Join(slices.Sorted(maps.Keys(cfg.Pools)), ", "))
	}
	var names []string
	for _, m := range p.Members {
		if m.Address == a.Member {
			return nil
		}
		names = append(names, m.Address)
	}
	return fmt.Errorf("set member state: no member %q in pool %q: its members are %s", a.Member, a.Pool, strings.Join(names, ", "))
}

func (d *Daemon) memberState() map[poolMember]memberEntry {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.members
}

func (d *Daemon) setMemberStates(st map[poolMember]memberEntry) {
	d.mu.Lock()
	d.members = st
	d.mu.Unlock()
}

// poolDrainTimeout is the largest drain_timeout of the virtuals using
// the pool, fastl4 ones and L7 ones with a site on it: by then a
// draining member has no flow or connection left.
func poolDrainTimeout(cfg *config.Config, pool string) time.Duration {
	t, _ := l7DrainTimeout(cfg, pool)
	for _, v := range cfg.Virtuals {
		if v.Mode == config.ModeFastL4 && v.Pool == pool {
			t = max(t, v.DrainTimeout.D())
		}
	}
	if t == 0 {
		t = config.DefaultDrainTimeout.D()
	}
	return t
}

// memberStateMetric exports the runtime states as
// edgeproxy_member_runtime_state{pool,member,state} 1.
type memberStateMetric struct {
	d    *Daemon
	desc *prometheus.Desc
}

func newMemberStateMetric(d *Daemon) *memberStateMetric {
	return &memberStateMetric{d: d, desc: prometheus.NewDesc(metric.Name("member_runtime_state"),
		"Members set disabled or draining with edgeproxy member (1 per member and state), kept until enabled.",
		[]string{"pool", "member", "state"}, nil)}
}

func (m *memberStateMetric) Describe(ch chan<- *prometheus.Desc) { ch <- m.desc }

func (m *memberStateMetric) Collect(ch chan<- prometheus.Metric) {
	for _, e := range m.d.memberState() {
		ch <- prometheus.MustNewConstMetric(m.desc, prometheus.GaugeValue, 1, e.Pool, e.Member, e.State)
	}
}
