package daemon

import (
	"context"
	"maps"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/health"
	"github.com/edgeproxy/edgeproxy/internal/member"
)

// status answers /status: the running configuration's virtuals with their
// members' health, L7 request counts and L4 flow counts.
func (d *Daemon) status(context.Context) (*admin.Status, error) {
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
		return st, nil
	}
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
	for i, m := range st.Members {
		if e, ok := runtime[poolMember{m.Pool, m.Member}]; ok {
			st.Members[i].Runtime, st.Members[i].RuntimeSince = e.State, e.Since
			st.Members[i].Reason = e.State + " with edgeproxy member since " + e.Since.Format(time.RFC3339)
		}
	}
	up := map[string]int{}
	total := map[string]int{}
	for _, m := range snap {
		total[m.Pool]++
		if m.State == "up" {
			up[m.Pool]++
		}
	}
	l7 := d.l7.Stats()
	var fp *fastPathStatus
	if l4 := d.fastPath(); l4 != nil {
		fp = l4.status()
		st.FastPath = fp.FastPath
		for i := range st.Members {
			st.Members[i].Flows = fp.byMember[st.Members[i].Address]
		}
	}
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
		st.Virtuals = append(st.Virtuals, av)
	}
	for _, a := range d.l7.ACMEStatus() {
		st.ACME = append(st.ACME, admin.ACMECert{Names: a.Names, CA: a.CA, Challenge: a.Challenge,
			NotAfter: a.NotAfter, Serial: a.Serial, LastOutcome: a.LastOutcome, LastAt: a.LastAt, LastError: a.LastError})
	}
	return st, nil
}
