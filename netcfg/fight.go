package netcfg

import (
	"strconv"
	"time"
)

// fight is the repairs of one object since it was last quiet.
type fight struct {
	n    int       // repairs
	last time.Time // of the last repair
}

// object names what a change is about, the same whether it is added
// back, replaced or removed: the id of its last journal entry.
func object(c Change) string {
	es := c.act.entries()
	if len(es) == 0 {
		return c.Subject
	}
	return es[len(es)-1].id()
}

// allow says whether the object of c may be restored now: always within
// the budget, then once per Backoff. A contradiction of an object
// restored before counts as a conflict.
func (r *Reconciler) allow(now time.Time, held *bool) func(Change) bool {
	return func(c Change) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		f := r.fights[object(c)]
		if f == nil || now.Sub(f.last) > r.opts.Quiet {
			return true
		}
		r.conflicts.WithLabelValues(string(c.Kind)).Inc()
		if f.n < r.opts.Budget || now.Sub(f.last) >= r.opts.Backoff {
			return true
		}
		*held = true
		return false
	}
}

// check compares the host with the desired state and repairs it; false
// means a retry is due (a repair failed or was held back).
func (r *Reconciler) check() bool {
	r.checks.Inc()
	now := time.Now()
	held := false
	st, plan, made, failed := r.h.repair(r.allow(now, &held))
	if st == nil {
		return true
	}
	for _, c := range made {
		r.repaired(now, c)
	}
	if plan != nil || len(failed) == 0 { // nil with a failure: not compared
		r.findings(st, plan)
	}
	for _, f := range failed {
		r.failures.WithLabelValues(string(f.kind)).Inc()
		r.log.Error("netcfg: repair failed", "err", f.err)
	}
	return len(failed) == 0 && !held
}

// repaired counts a repair and logs the first of a fight as a warning
// naming the object and, when known, the other party; the rest of the
// fight is logged at debug level and counted.
func (r *Reconciler) repaired(now time.Time, c Change) {
	r.repairs.WithLabelValues(string(c.Kind)).Inc()
	r.mu.Lock()
	r.count[c.Kind]++
	key := object(c)
	f := r.fights[key]
	if f == nil || now.Sub(f.last) > r.opts.Quiet {
		f = &fight{}
		r.fights[key] = f
	}
	f.n++
	f.last = now
	n := f.n
	r.mu.Unlock()
	args := []any{"change", c.String(), "kind", string(c.Kind)}
	if c.other != "" {
		args = append(args, "other", c.other)
	}
	switch {
	case n == 1:
		r.log.Warn("netcfg: restored the host network; if something keeps changing it, edgeproxy restores it "+
			strconv.Itoa(r.opts.Budget)+" times, then once per "+r.opts.Backoff.String(), args...)
	case n == r.opts.Budget:
		r.log.Info("netcfg: repair budget spent, restoring at most once per "+r.opts.Backoff.String(), args...)
	default:
		r.log.Debug("netcfg: restored the host network again", args...)
	}
}

// findings logs each finding once while it lasts and exports their
// number by kind: the reports of the plan, and with network.manage false
// every change it would make.
func (r *Reconciler) findings(st *State, plan []Change) {
	n := map[Kind]float64{}
	now := map[string]bool{}
	for _, c := range plan {
		if !c.IsReport() && (st.Managed || c.required) {
			continue
		}
		n[c.Kind]++
		s := c.String()
		now[s] = true
		r.mu.Lock()
		said := r.said[s]
		r.mu.Unlock()
		if said {
			continue
		}
		if st.Managed {
			r.log.Warn("netcfg: host network differs from the file; edgeproxy leaves this to the administrator", "finding", s, "kind", string(c.Kind))
		} else {
			r.log.Warn("netcfg: host network differs from the file (network.manage is false)", "change", s, "kind", string(c.Kind))
		}
	}
	r.mu.Lock()
	r.said = now
	r.mu.Unlock()
	for _, k := range []Kind{KindLink, KindAddress, KindRoute, KindSysctl, KindNeighbour} {
		r.drift.WithLabelValues(string(k)).Set(n[k])
	}
}
