package daemon

import (
	"context"
	"maps"
	"slices"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/ha"
	"github.com/edgeproxy/edgeproxy/health"
	"github.com/edgeproxy/edgeproxy/internal/member"
)

// status answers /status: the running configuration's virtuals with their
// members' health, L7 request counts and L4 flow counts.
func (d *Daemon) status(ctx context.Context) (*admin.Status, error) {
	d.mu.Lock()
	cfg, loaded := d.cfg, d.loaded
	inPlanes := maps.Clone(d.inPlanes)
	st := &admin.Status{
		Version:    d.opts.Version,
		Started:    d.started,
		Time:       time.Now(),
		Config:     d.opts.ConfigPath,
		Loaded:     loaded,
		Rejected:   d.rejected,
		RejectedAt: d.rejectedAt,
	}
	d.mu.Unlock()
	if err := d.ready(); err != nil {
		st.Reason = err.Error()
	} else {
		st.Ready = true
	}
	if cfg == nil {
		d.pairState(st)
		return st, nil
	}
	snap := d.statusMembers(st, inPlanes)
	st.Reloads = d.reloads.Recent()
	for file, na := range d.l7.Certificates() {
		st.Certificates = append(st.Certificates, admin.Certificate{File: file, NotAfter: na})
	}
	slices.SortFunc(st.Certificates, func(a, b admin.Certificate) int { return a.NotAfter.Compare(b.NotAfter) })
	var fp *fastPathStatus
	if l4 := d.fastPath(); l4 != nil {
		fp = l4.status()
		st.FastPath = fp.FastPath
		for i := range st.Members {
			st.Members[i].Flows = fp.byMember[st.Members[i].Address]
		}
	} else if r := d.retiredFastPath(); r != nil {
		st.FastPath = r
	}
	st.Virtuals = d.statusVirtuals(cfg, snap, fp)
	for _, a := range d.l7.ACMEStatus() {
		st.ACME = append(st.ACME, admin.ACMECert{Names: a.Names, CA: a.CA, Challenge: a.Challenge,
			NotAfter: a.NotAfter, Serial: a.Serial, LastOutcome: a.LastOutcome, LastAt: a.LastAt, LastError: a.LastError})
	}
	st.BGP = d.bgpStatus(ctx)
	st.Cluster = d.clusterStatus()
	d.pairState(st)
	return st, nil
}

// pairState fills st.HA on a pair node, after noting whether the node
// can serve by the rest of st (what keepalived's check sees).
func (d *Daemon) pairState(st *admin.Status) {
	if d.pair == nil {
		return
	}
	var mirror *admin.Mirror
	if d.mirror != nil {
		mirror = d.mirror.status()
	}
	// The check reads the mirror's sync state from st, as keepalived's
	// check script does from /status.
	st.HA = &admin.HA{Mirror: mirror}
	d.pair.observe(ha.Serves(st))
	st.HA = d.pair.state()
	st.HA.Mirror = mirror
}

// statusMembers fills st.Members with the health the data planes apply,
// the runtime state and the L7 request counts; it returns the health
// snapshot, in the order of st.Members.
func (d *Daemon) statusMembers(st *admin.Status, inPlanes map[member.ID]bool) []health.MemberStatus {
	snap := d.checker.Snapshot()
	for i, m := range snap {
		// A change the data planes have not applied yet is not reported.
		in, ok := inPlanes[member.New(m.Pool, m.Addr)]
		switch {
		case !ok:
		case in && m.State == health.StateDown:
			snap[i].State = health.StateUp
		case !in && m.State == health.StateUp:
			snap[i].State = health.StateDown
		}
	}
	st.Members = admin.MembersFromHealth(snap)
	runtime := d.memberState()
	byMember := d.l7.MemberStats()
	for i, m := range snap {
		if e, ok := runtime[poolMember{st.Members[i].Pool, st.Members[i].Member}]; ok {
			st.Members[i].Runtime, st.Members[i].RuntimeSince = e.State, e.Since
			st.Members[i].Reason = e.State + " with edgeproxy member since " + e.Since.Format(time.RFC3339)
		}
		c := byMember[member.New(m.Pool, m.Addr)]
		st.Members[i].Requests, st.Members[i].Errors = c.Requests, c.Errors
	}
	return snap
}

// statusVirtuals is the running virtuals with their pools' member counts,
// fastl4 flows (fp nil: no fast path) and L7 requests.
func (d *Daemon) statusVirtuals(cfg *config.Config, snap []health.MemberStatus, fp *fastPathStatus) []admin.Virtual {
	up := map[string]int{}
	total := map[string]int{}
	for _, m := range snap {
		total[m.Pool]++
		if m.State == health.StateUp {
			up[m.Pool]++
		}
	}
	l7 := d.l7.Stats()
	var out []admin.Virtual
	for _, v := range cfg.Virtuals {
		av := admin.Virtual{Name: v.Name, Mode: string(v.Mode), Listen: v.Listen.String(), Port: v.Port}
		pools := map[string]bool{}
		if v.Pool != "" {
			pools[v.Pool] = true
		}
		for _, s := range v.Sites {
			if s.Pool != "" {
				pools[s.Pool] = true
			}
		}
		for p := range pools {
			av.Pools = append(av.Pools, p)
			av.MembersUp += up[p]
			av.Members += total[p]
		}
		if v.Mode == config.ModeFastL4 && fp != nil {
			av.Flows = fp.byVirtual[v.Name]
			av.Errors = fp.dropsByVirtual[v.Name]
		}
		if c, ok := l7[v.Name]; ok {
			av.Requests, av.Errors, av.Connections = c.Requests, c.Errors, c.Connections
		}
		out = append(out, av)
	}
	return out
}
