package netcfg

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
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
		h.setDesired(st)
		return plan, nil
	}
	if err := h.checkJournal(); err != nil {
		return nil, err
	}
	before := slices.Clone(j.Entries)
	if err := h.execute(j, todo); err != nil {
		// The changes were rolled back: the journal is as before.
		j.Entries = before
		return nil, errors.Join(err, h.saveJournal(j))
	}
	h.setDesired(st)
	for _, c := range todo {
		h.log.Info("netcfg: changed", "change", c.String())
	}
	return plan, nil
}

// execute makes the changes; on a failure it undoes the ones made.
func (h *Host) execute(j *journal, todo []Change) error {
	for i, c := range todo {
		if err := h.make(j, c); err != nil {
			ae := &ApplyError{Change: c, Err: err, RolledBack: todo[:i]}
			ae.RollbackErr = rollback(h, todo[:i])
			return ae
		}
	}
	return nil
}

// make makes one change, write-ahead: what it will do is recorded and
// synced to disk before it is made, and marked done after, so a process
// killed at any point leaves a journal that Revert can undo.
func (h *Host) make(j *journal, c Change) error {
	j.begin(time.Now(), c.act.entries()...)
	if err := h.saveJournal(j); err != nil {
		j.abort()
		return fmt.Errorf("record the change before making it: %w", err)
	}
	h.crashPoint()
	if err := c.act.do(h); err != nil {
		j.abort()
		return errors.Join(err, h.saveJournal(j))
	}
	h.crashPoint()
	j.commit()
	if err := h.saveJournal(j); err != nil {
		return errors.Join(fmt.Errorf("mark the change done: %w", err), c.act.undo(h))
	}
	return nil
}

// CrashEnv names the variable that makes netcfg kill its own process
// (SIGKILL) at the Nth point between two steps of a change, counted from
// 1: around every change, once after it is recorded and once after it
// is made. The crash tests use it to prove that Revert undoes a change
// interrupted anywhere.
const CrashEnv = "EDGEPROXY_NETCFG_CRASH_AT"

func (h *Host) crashPoint() {
	at, err := strconv.Atoi(os.Getenv(CrashEnv))
	if err != nil || at <= 0 {
		return
	}
	h.crashes++
	if h.crashes == at {
		_ = unix.Kill(os.Getpid(), unix.SIGKILL)
		select {} // the signal is on its way
	}
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

// repair makes each change of the plan for the desired state on its own
// (no rollback: a partial repair beats none), through the journal as
// Apply does; allow says which changes it may make now. With
// network.manage false it makes only the changes of required sysctls.
func (h *Host) repair(allow func(Change) bool) (st *State, plan, made []Change, failed []failure) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st = h.desiredState()
	if st == nil {
		return nil, nil, nil, nil
	}
	j, err := h.loadJournal()
	if err != nil {
		return st, nil, nil, []failure{{"journal", err}}
	}
	plan, err = h.plan(st, j)
	if err != nil {
		return st, nil, nil, []failure{{"plan", err}}
	}
	for _, c := range Changes(plan) {
		if !st.Managed && !c.required {
			continue // reported by the caller
		}
		if !allow(c) {
			continue
		}
		if err := h.make(j, c); err != nil {
			failed = append(failed, failure{c.Kind, fmt.Errorf("repair %q: %w", c.String(), err)})
			continue
		}
		made = append(made, c)
	}
	return st, plan, made, failed
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
	a := addrAdd{link: e.Link, prefix: p, nodad: e.NoDAD, attrs: e.AddrAttrs}
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
	if err := h.putRoute(*e.Route, false); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, nil
		}
		if errors.Is(err, errExpired) {
			return &Change{Op: OpReport, Kind: KindRoute, Subject: subject,
				Reason: "expired since edgeproxy removed it (" + e.Route.ExpiresAt.Format(time.RFC3339) + "): not restored"}, nil
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
	if e.Pending && v == e.Old {
		return nil, nil // killed before the write
	}
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
