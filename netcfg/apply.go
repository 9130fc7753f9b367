package netcfg

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Apply makes the changes Plan lists, in order. If one fails, the ones
// made before it are undone and the error is an *ApplyError naming the
// change. On success the changes are added to the journal and the whole
// plan is returned (reports included); a second Apply finds nothing to
// do.
func (h *Host) Apply(spec *Spec) ([]Change, error) {
	st, err := Desired(spec)
	if err != nil {
		return nil, err
	}
	if !st.Managed {
		return nil, ErrNotManaged
	}
	return h.applyState(st, func(Change) bool { return true })
}

// ApplyRequired makes only the changes of the sysctls other planes
// declare in spec (the fast path's), as Apply does: what they need is
// kept even with network.manage false, where Apply changes nothing.
func (h *Host) ApplyRequired(spec *Spec) ([]Change, error) {
	st, err := Desired(spec)
	if err != nil {
		return nil, err
	}
	return h.applyState(st, func(c Change) bool { return c.required })
}

// applyState makes the changes of the plan for st that keep says.
func (h *Host) applyState(st *State, keep func(Change) bool) ([]Change, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	j, err := h.loadJournal()
	if err != nil {
		return nil, err
	}
	plan, err := h.plan(st, j)
	if err != nil {
		return nil, err
	}
	var todo []Change
	for _, c := range Changes(plan) {
		if keep(c) {
			todo = append(todo, c)
		}
	}
	if len(todo) == 0 {
		return plan, nil
	}
	if err := h.checkJournal(); err != nil {
		return nil, err
	}
	if err := h.execute(todo); err != nil {
		return nil, err
	}
	for _, c := range todo {
		j.record(time.Now(), c.act.entries()...)
	}
	if err := h.saveJournal(j); err != nil {
		rb := rollback(h, todo)
		return nil, errors.Join(err, rb, errors.New("apply: the changes were rolled back because they could not be recorded"))
	}
	for _, c := range todo {
		h.log.Info("netcfg: changed", "change", c.String())
	}
	return plan, nil
}

// execute makes the changes; on a failure it undoes the ones made.
func (h *Host) execute(todo []Change) error {
	for i, c := range todo {
		if err := c.act.do(h); err != nil {
			ae := &ApplyError{Change: c, Err: err, RolledBack: todo[:i]}
			ae.RollbackErr = rollback(h, todo[:i])
			return ae
		}
	}
	return nil
}

func rollback(h *Host, done []Change) error {
	var errs []error
	for i := len(done) - 1; i >= 0; i-- {
		if err := done[i].act.undo(h); err != nil {
			errs = append(errs, fmt.Errorf("undo %q: %w", done[i].String(), err))
		}
	}
	return errors.Join(errs...)
}

// repair makes each change of the plan on its own (no rollback: a partial
// repair beats none) and records the ones that worked. With
// network.manage false it makes only the changes of required sysctls.
func (h *Host) repair(st *State) (plan, made []Change, failed []failure) {
	h.mu.Lock()
	defer h.mu.Unlock()
	j, err := h.loadJournal()
	if err != nil {
		return nil, nil, []failure{{"journal", err}}
	}
	plan, err = h.plan(st, j)
	if err != nil {
		return nil, nil, []failure{{"plan", err}}
	}
	for _, c := range Changes(plan) {
		if !st.Managed && !c.required {
			continue // reported by the caller
		}
		if err := c.act.do(h); err != nil {
			failed = append(failed, failure{c.Kind, fmt.Errorf("repair %q: %w", c.String(), err)})
			continue
		}
		made = append(made, c)
		j.record(time.Now(), c.act.entries()...)
	}
	if len(made) > 0 {
		if err := h.saveJournal(j); err != nil {
			failed = append(failed, failure{"journal", err})
		}
	}
	return plan, made, failed
}

type failure struct {
	kind Kind
	err  error
}

// Revert undoes what the journal records, newest first, and returns what
// it did. Objects already gone are skipped; a sysctl changed by someone
// else since is left as it is and reported. Entries that cannot be undone
// stay in the journal.
func (h *Host) Revert() ([]Change, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	j, err := h.loadJournal()
	if err != nil {
		return nil, err
	}
	var out []Change
	var errs []error
	var keep []Entry
	for i := len(j.Entries) - 1; i >= 0; i-- {
		e := j.Entries[i]
		c, err := h.revertEntry(e)
		if err != nil {
			errs = append(errs, err)
			keep = append([]Entry{e}, keep...)
			continue
		}
		if c != nil {
			out = append(out, *c)
			if !c.IsReport() {
				h.log.Info("netcfg: reverted", "change", c.String())
			}
		}
	}
	j.Entries = keep
	if err := h.saveJournal(j); err != nil {
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// revertEntry undoes one journal entry; a nil change means there was
// nothing left to undo (the link is gone, the change already undone).
func (h *Host) revertEntry(e Entry) (*Change, error) {
	switch e.Kind {
	case KindLink:
		return h.revertLink(e)
	case KindAddress:
		return h.revertAddress(e)
	case KindRoute:
		return h.revertRoute(e)
	case KindSysctl:
		return h.revertSysctl(e)
	case KindNeighbour:
		return h.revertNeighbour(e)
	}
	return nil, fmt.Errorf("revert: journal entry of unknown kind %q", e.Kind)
}

// revertLink sets a link netcfg brought up down again.
func (h *Host) revertLink(e Entry) (*Change, error) {
	lk, err := h.link(e.Link)
	if errors.Is(err, ErrNoLink) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := h.nl.LinkSetDown(lk); err != nil {
		return nil, fmt.Errorf("revert: set link %s down: %w", e.Link, err)
	}
	return &Change{Op: OpModify, Kind: KindLink, Subject: "link " + e.Link, From: "up", To: "down", act: linkUp{e.Link}}, nil
}

// revertAddress removes an address netcfg added, or restores one it removed.
func (h *Host) revertAddress(e Entry) (*Change, error) {
	p, err := netip.ParsePrefix(e.Address)
	if err != nil {
		return nil, fmt.Errorf("revert: journal address %q: %w", e.Address, err)
	}
	lk, err := h.link(e.Link)
	if errors.Is(err, ErrNoLink) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	a := addrAdd{link: e.Link, prefix: p, nodad: e.NoDAD}
	subject := fmt.Sprintf("address %s dev %s", p, e.Link)
	if e.Op == "add" {
		if err := h.nl.AddrDel(lk, a.nl()); err != nil {
			if errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ESRCH) {
				return nil, nil
			}
			return nil, fmt.Errorf("revert: remove %s: %w", subject, err)
		}
		return &Change{Op: OpRemove, Kind: KindAddress, Subject: subject, act: addrDel(a)}, nil
	}
	if err := h.nl.AddrAdd(lk, a.nl()); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, nil
		}
		return nil, fmt.Errorf("revert: add %s: %w", subject, err)
	}
	return &Change{Op: OpAdd, Kind: KindAddress, Subject: subject, act: a}, nil
}

// revertRoute removes a route netcfg added, or restores one it replaced.
func (h *Host) revertRoute(e Entry) (*Change, error) {
	if e.Route == nil {
		return nil, nil
	}
	r, err := h.nlRoute(*e.Route)
	if errors.Is(err, ErrNoLink) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	subject := "route " + e.Route.text()
	if e.Op == "add" {
		if err := h.nl.RouteDel(r); err != nil {
			if errors.Is(err, unix.ESRCH) {
				return nil, nil
			}
			return nil, fmt.Errorf("revert: remove %s: %w", subject, err)
		}
		return &Change{Op: OpRemove, Kind: KindRoute, Subject: subject, act: routeDel{*e.Route}}, nil
	}
	if err := h.nl.RouteAdd(r); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, nil
		}
		return nil, fmt.Errorf("revert: restore %s: %w", subject, err)
	}
	return &Change{Op: OpAdd, Kind: KindRoute, Subject: subject, act: routeSet{want: *e.Route}}, nil
}

// revertSysctl restores a setting netcfg changed, unless it changed since.
func (h *Host) revertSysctl(e Entry) (*Change, error) {
	cur, err := h.readSysctls([]string{e.Key})
	if err != nil {
		return nil, err
	}
	v, ok := cur[e.Key]
	if !ok {
		return nil, nil
	}
	name := Sysctl{Key: e.Key}.Name()
	if v != e.New {
		return &Change{Op: OpReport, Kind: KindSysctl, Subject: "sysctl " + name,
			Reason: fmt.Sprintf("changed since apply (%s, apply set %s): left as it is, it was %s before", show(v), show(e.New), show(e.Old))}, nil
	}
	if err := h.writeSysctl(e.Key, e.Old); err != nil {
		return nil, fmt.Errorf("revert: %w", err)
	}
	return &Change{Op: OpModify, Kind: KindSysctl, Subject: "sysctl " + name, From: show(e.New), To: show(e.Old),
		act: sysctlSet{key: e.Key, old: e.New, new: e.Old}}, nil
}

// revertNeighbour removes a neighbour entry netcfg added, or restores one it removed.
func (h *Host) revertNeighbour(e Entry) (*Change, error) {
	a, err := netip.ParseAddr(e.Address)
	if err != nil {
		return nil, fmt.Errorf("revert: journal neighbour %q: %w", e.Address, err)
	}
	n := neighManage{link: e.Link, addr: a}
	nn, err := n.nl(h)
	if errors.Is(err, ErrNoLink) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	subject := n.String()
	if e.Op == "add" {
		if err := h.nl.NeighDel(nn); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil, nil
			}
			return nil, fmt.Errorf("revert: remove %s: %w", subject, err)
		}
		return &Change{Op: OpRemove, Kind: KindNeighbour, Subject: subject, act: neighDel(n)}, nil
	}
	if err := n.do(h); err != nil {
		return nil, fmt.Errorf("revert: %w", err)
	}
	return &Change{Op: OpAdd, Kind: KindNeighbour, Subject: subject, act: n}, nil
}

func (n neighManage) String() string { return Neighbour{Link: n.link, Addr: n.addr}.String() }
