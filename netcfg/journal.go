package netcfg

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Entry is one thing netcfg changed on the host, as the journal keeps
// it. Revert undoes the entries newest first.
type Entry struct {
	Kind Kind `json:"kind"`
	// Op: "add" and "remove" (addresses, routes, neighbours), "set"
	// (sysctls), "up" (links).
	Op      string `json:"op"`
	Link    string `json:"link,omitempty"`
	Address string `json:"address,omitempty"` // prefix of an address, IP of a neighbour
	NoDAD   bool   `json:"nodad,omitempty"`
	// AddrAttrs: of an address removed, restored with it.
	AddrAttrs *AddrAttrs `json:"addr_attrs,omitempty"`
	Route     *RouteSpec `json:"route,omitempty"`
	Key       string     `json:"key,omitempty"`
	Old       string     `json:"old,omitempty"`
	New       string     `json:"new,omitempty"`
	At        time.Time  `json:"at"`
	// Pending: recorded before the change was made, not yet marked done
	// (the process may have died in between). Revert undoes it as far
	// as it was made.
	Pending bool `json:"pending,omitempty"`
}

// id identifies the object an entry is about (not what was done to it).
func (e Entry) id() string {
	switch e.Kind {
	case KindRoute:
		if e.Route != nil {
			return "route|" + e.Route.key()
		}
	case KindSysctl:
		return "sysctl|" + e.Key
	}
	return string(e.Kind) + "|" + e.Link + "|" + e.Address
}

type journal struct {
	Version int     `json:"version"`
	Entries []Entry `json:"entries"`
}

// record adds what was just done. Undoing an earlier entry cancels it
// instead, so the journal stays the net difference from the host as it
// was before netcfg touched it.
func (j *journal) record(now time.Time, es ...Entry) {
	for _, e := range es {
		e.At = now
		j.add(e)
	}
}

// begin records what a change is about to do, as pending entries kept
// apart from the net difference until commit.
func (j *journal) begin(now time.Time, es ...Entry) {
	for _, e := range es {
		e.At, e.Pending = now, true
		j.Entries = append(j.Entries, e)
	}
}

// commit marks the pending entries done, folding them into the net
// difference.
func (j *journal) commit() {
	var pending []Entry
	kept := j.Entries[:0]
	for _, e := range j.Entries {
		if e.Pending {
			e.Pending = false
			pending = append(pending, e)
		} else {
			kept = append(kept, e)
		}
	}
	j.Entries = kept
	for _, e := range pending {
		j.add(e)
	}
}

// abort drops the pending entries of a change that failed (and undid
// what part of it was made).
func (j *journal) abort() {
	kept := j.Entries[:0]
	for _, e := range j.Entries {
		if !e.Pending {
			kept = append(kept, e)
		}
	}
	j.Entries = kept
}

func (j *journal) add(e Entry) {
	id := e.id()
	for i, old := range j.Entries {
		if old.id() != id {
			continue
		}
		switch {
		case e.Kind == KindSysctl:
			j.Entries[i].New = e.New
			if old.Old == e.New {
				j.Entries = append(j.Entries[:i], j.Entries[i+1:]...)
			}
			return
		case old.Op == e.Op:
			return
		case (old.Op == "add" && e.Op == "remove") || (old.Op == "remove" && e.Op == "add"):
			j.Entries = append(j.Entries[:i], j.Entries[i+1:]...)
			return
		}
	}
	j.Entries = append(j.Entries, e)
}

func (h *Host) loadJournal() (*journal, error) {
	j := &journal{Version: 1}
	if h.state == "" {
		return j, nil
	}
	b, err := os.ReadFile(h.state)
	if errors.Is(err, fs.ErrNotExist) {
		return j, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %v", ErrJournal, h.state, err)
	}
	if err := json.Unmarshal(b, j); err != nil {
		return nil, fmt.Errorf("%w: parse %s: %v: fix or remove the file (it lists what netcfg apply changed)", ErrJournal, h.state, err)
	}
	if j.Version != 1 {
		return nil, fmt.Errorf("%w: %s has version %d, this edgeproxy reads version 1", ErrJournal, h.state, j.Version)
	}
	return j, nil
}

// checkJournal makes sure the journal can be written before the host is
// changed.
func (h *Host) checkJournal() error {
	if h.state == "" {
		return nil
	}
	dir := filepath.Dir(h.state)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("%w: create %s: %v", ErrJournal, dir, err)
	}
	f, err := os.CreateTemp(dir, ".netcfg-*.tmp")
	if err != nil {
		return fmt.Errorf("%w: cannot write in %s: %v: make it writable or choose another state path", ErrJournal, dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// saveJournal writes the journal atomically; an empty one removes the
// file.
func (h *Host) saveJournal(j *journal) error {
	if h.state == "" {
		return nil
	}
	if len(j.Entries) == 0 {
		if err := os.Remove(h.state); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: remove %s: %v", ErrJournal, h.state, err)
		}
		return syncDir(filepath.Dir(h.state))
	}
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return fmt.Errorf("%w: encode: %v", ErrJournal, err)
	}
	dir := filepath.Dir(h.state)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("%w: create %s: %v", ErrJournal, dir, err)
	}
	f, err := os.CreateTemp(dir, ".netcfg-*.tmp")
	if err != nil {
		return fmt.Errorf("%w: write %s: %v", ErrJournal, h.state, err)
	}
	tmp := f.Name()
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, h.state)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%w: write %s: %v", ErrJournal, h.state, err)
	}
	return syncDir(dir)
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = d.Sync()
		d.Close()
	}
	if err != nil {
		return fmt.Errorf("%w: sync directory %s: %v", ErrJournal, dir, err)
	}
	return nil
}
