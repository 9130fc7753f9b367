// Package netcfg makes the dual-NIC DMZ host look like the network:
// section of the configuration and keeps it that way.
//
// A Spec, compiled from the file by internal/plan, is turned into a
// desired state (links up, addresses on both NICs and the virtuals'
// addresses on the external NIC, the default route through the external
// gateway only, static routes through the internal next hops, managed
// neighbour entries for the next hops, the sysctls a dual-homed host needs
// and those other planes declare: netcfg is the one writer of sysctls).
// Plan compares it with the host through netlink and lists the
// differences; Apply makes exactly those changes, each recorded in a
// small JSON journal and synced to disk before it is made and marked done
// after (a process killed anywhere leaves a journal Revert can undo), and
// rolls back if one of them fails; ApplyRequired makes only those of the
// sysctls other planes need, kept even with network.manage false; Revert
// undoes what the journal records, restoring what was removed with its
// attributes. A Reconciler watches netlink events and restores whatever
// someone else changes, keeping the state of the last Apply, with a
// repair budget per object against another party fighting over it.
//
// Everything works inside a chosen network namespace, so the daemon (the
// host's namespace) and the tests (fresh namespaces) run the same code.
package netcfg

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/nsrun"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// DefaultStatePath is where Apply records what it changed.
const DefaultStatePath = "/var/lib/edgeproxy/netcfg.json"

var (
	// ErrNoNetwork: the configuration names no interface to manage.
	ErrNoNetwork = errors.New("no network interfaces configured")
	// ErrNotManaged: network.manage is false, so netcfg only reports.
	ErrNotManaged = errors.New("network.manage is false: netcfg only reports; set network.manage: true to let edgeproxy change the host")
	// ErrNoLink: a configured interface does not exist.
	ErrNoLink = errors.New("interface not found")
	// ErrBadNetwork: the network section cannot be turned into a state.
	ErrBadNetwork = errors.New("invalid network configuration")
	// ErrJournal: the state file cannot be read or written.
	ErrJournal = errors.New("netcfg state file")
)

// Options configure a Host.
type Options struct {
	// NetNS is the network namespace to manage, as an open handle that
	// the Host duplicates. 0 or netns.None() manages the caller's
	// namespace.
	NetNS netns.NsHandle
	// StatePath is the journal of what Apply changed. Empty means
	// DefaultStatePath; "-" disables the journal (Revert then has nothing
	// to undo).
	StatePath string
	// Logger receives what the Host and its Reconciler do. Default
	// slog.Default().
	Logger *slog.Logger
}

// Host is the network configuration of one namespace.
type Host struct {
	ns    netns.NsHandle // -1: the caller's namespace
	nl    *netlink.Handle
	state string
	log   *slog.Logger

	mu      sync.Mutex // serialises Plan/Apply/Revert and repairs
	crashes int        // crash points passed (CrashEnv)

	// desired is the state the Reconciler keeps, switched by Apply under
	// mu: a repair never works from a state older than the last apply.
	// Written under mu and dmu, read under either.
	dmu     sync.Mutex
	desired *State
}

// setDesired switches the state repairs keep. Caller holds h.mu.
func (h *Host) setDesired(st *State) {
	h.dmu.Lock()
	h.desired = st
	h.dmu.Unlock()
}

// desiredState returns the state repairs keep (nil before any).
func (h *Host) desiredState() *State {
	h.dmu.Lock()
	defer h.dmu.Unlock()
	return h.desired
}

// Open returns a Host for the namespace in opts.
func Open(opts Options) (*Host, error) {
	h := &Host{ns: netns.None(), state: opts.StatePath, log: opts.Logger}
	if h.state == "" {
		h.state = DefaultStatePath
	}
	if h.state == "-" {
		h.state = ""
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	var err error
	if opts.NetNS > 0 {
		fd, derr := dupHandle(opts.NetNS)
		if derr != nil {
			return nil, fmt.Errorf("open netns handle: %w", derr)
		}
		h.ns = fd
		h.nl, err = netlink.NewHandleAt(h.ns)
	} else {
		h.nl, err = netlink.NewHandle()
	}
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	if err := h.nl.SetSocketTimeout(10 * time.Second); err != nil {
		h.Close()
		return nil, fmt.Errorf("set netlink timeout: %w", err)
	}
	return h, nil
}

// Close releases the netlink sockets and the namespace handle.
func (h *Host) Close() error {
	if h.nl != nil {
		h.nl.Close()
		h.nl = nil
	}
	if h.ns.IsOpen() {
		err := h.ns.Close()
		h.ns = netns.None()
		return err
	}
	return nil
}

// Plan is Host.Plan in the caller's namespace with the default journal.
func Plan(spec *Spec) ([]Change, error) {
	h, err := Open(Options{})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return h.Plan(spec)
}

// Apply is Host.Apply in the caller's namespace with the default journal.
func Apply(spec *Spec) ([]Change, error) {
	h, err := Open(Options{})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return h.Apply(spec)
}

// Revert is Host.Revert in the caller's namespace with the default
// journal.
func Revert() ([]Change, error) {
	h, err := Open(Options{})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return h.Revert()
}

// StatePath returns the journal's path ("" when disabled).
func (h *Host) StatePath() string { return h.state }

// inNS runs fn inside the Host's namespace (nsrun.Do).
func (h *Host) inNS(fn func() error) error { return nsrun.Do(h.ns, fn) }

// nsHandle returns the namespace for netlink subscriptions (nil: the
// caller's).
func (h *Host) nsHandle() *netns.NsHandle {
	if !h.ns.IsOpen() {
		return nil
	}
	ns := h.ns
	return &ns
}

func dupHandle(h netns.NsHandle) (netns.NsHandle, error) {
	fd, err := unix.FcntlInt(uintptr(h), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return netns.None(), err
	}
	return netns.NsHandle(fd), nil
}
