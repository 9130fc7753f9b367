// Package l4 is the control plane of edgeproxy's XDP fast path (package
// bpf): it loads and pins the program and its maps, attaches the program
// to the external and internal NICs through pinned bpf_links, drives the
// services, Maglev tables and SNAT addresses from its Spec,
// reaps flows that time out (sending resets where asked), keeps next hops
// resolved, and exports counters.
//
// All state lives in maps pinned under a directory of the BPF file system
// (default /sys/fs/bpf/edgeproxy): a restart or an upgrade of the control
// plane adopts them, and established flows keep going in the meantime.
//
// Open must run in the network namespace of the NICs: the sockets and
// netlink handle it sets up belong to that namespace.
//
// The FastPath is a small core (this file: options, open, close) around
// the loader (load.go: the program, its maps and the pinned state;
// layout.go, migrate.go, convert.go: the layout the pins record, and the
// migration of pins of an older layout), the
// attacher (attach.go: the bpf_links on the NICs), the programmer
// (apply.go: services, Maglev tables, SNAT; guard.go: martians) and the
// upkeep (upkeep.go, gc.go, neigh.go, flood.go: reaping, resets, next
// hops). It takes a Spec (spec.go) built by internal/plan and declares
// the sysctls it needs (sysctl.go) for netcfg to keep.
package l4

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/metric"
	"github.com/edgeproxy/edgeproxy/internal/portlist"
)

// Errors.
var (
	ErrBadOptions      = errors.New("bad fast path options")
	ErrIncompatible    = errors.New("pinned fast path state does not match this build")
	ErrAttach          = errors.New("attach XDP program")
	ErrTooMany         = errors.New("too many fastl4 objects")
	ErrNoSNATAddress   = errors.New("no SNAT address")
	ErrUnknownMember   = errors.New("unknown pool member")
	ErrNotPinned       = errors.New("no pinned fast path state")
	ErrBadVirtual      = errors.New("bad fastl4 virtual")
	ErrClosed          = errors.New("fast path closed")
	errMaglevNotPrime  = errors.New("maglev table size must be a prime")
	errUnsupportedMode = errors.New("unsupported XDP mode")
)

// Defaults, the same as the configuration file's.
const (
	DefaultPinPath     = "/sys/fs/bpf/edgeproxy"
	DefaultMaxFlows    = 262144
	DefaultMaglevSize  = 65537
	DefaultGCInterval  = time.Second
	DefaultLogInterval = 10 * time.Second
	// F5's FastL4 profile, for a virtual that leaves a timeout at zero
	// and for flows of a virtual removed before a restart.
	DefaultIdleTimeout      = 300 * time.Second
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultCloseTimeout     = 5 * time.Second
)

// DefaultSNATPorts is the SNAT source port range.
var DefaultSNATPorts = portlist.Range{First: 40000, Last: 59999}

// Limits compiled into the program (bpf/common.h).
const (
	maxVirtuals = 64
	maxPools    = 64
	maxSNAT     = 16
	reasonMax   = int(bpf.FastL4ReasonREASON_MAX)
)

// Options configure the fast path when it opens.
type Options struct {
	// PinPath is the directory in the BPF file system holding the pinned
	// maps and links (default DefaultPinPath).
	PinPath string
	// ExtIf and IntIf are the NICs the program is attached to. An empty
	// name leaves that side alone.
	ExtIf, IntIf string
	// XDPMode is the attach mode (default XDPNative); IntXDPMode
	// overrides it for IntIf.
	XDPMode, IntXDPMode XDPMode
	// MaxFlows is the number of connections the flow table holds, each
	// taking two entries (one per direction) in the program's flow maps
	// (bpf/common.h MAX_FLOWS counts connections too); default
	// DefaultMaxFlows. A table pinned by an earlier run keeps its size
	// while it holds flows.
	MaxFlows int
	// Tables are the flow tables the virtuals use (TablesFor); the others
	// get one entry. The zero value sizes all of them.
	Tables FlowTables
	// MaglevSize is the size of each pool's Maglev table, a prime
	// (default 65537). Pinned state keeps the size it was created with.
	MaglevSize int
	// SNATPorts is the source port range of SNAT (default
	// DefaultSNATPorts); Apply changes it to its Spec's.
	SNATPorts portlist.Range
	// GCInterval is how often the drop counters are checked (default
	// 1s), and at most how long the reaper waits between two looks at
	// its schedule: flows expire on their timeouts (reap.go).
	GCInterval time.Duration
	// LogInterval bounds how often a recurring condition (table full,
	// SNAT exhausted) is logged (default 10s).
	LogInterval time.Duration
	// Logger receives the fast path's records (default slog.Default()).
	Logger *slog.Logger
	// FlowLog receives the connection log of the virtuals with Log, one
	// record per open and close (nil: nowhere).
	FlowLog *slog.Logger
	// OnFlow, when set, receives the open and close of every fastl4 TCP
	// connection as soon as the program reports it (the peers' second
	// chance, bpf/peers.h). It must not block.
	OnFlow func(FlowChange)
}

// FlowChange is a fastl4 TCP connection that opened or ended.
type FlowChange struct {
	Open        bool
	Client, VIP netip.AddrPort
}

func (o *Options) defaults() error {
	if o.PinPath == "" {
		o.PinPath = DefaultPinPath
	}
	if o.XDPMode == "" {
		o.XDPMode = XDPNative
	}
	if o.IntXDPMode == "" {
		o.IntXDPMode = o.XDPMode
	}
	for _, m := range []XDPMode{o.XDPMode, o.IntXDPMode} {
		if m != XDPNative && m != XDPGeneric {
			return fmt.Errorf("%w: %w %q: use native or generic", ErrBadOptions, errUnsupportedMode, m)
		}
	}
	if o.MaxFlows == 0 {
		o.MaxFlows = DefaultMaxFlows
	}
	if o.MaxFlows < 1 || o.MaxFlows > 1<<24 {
		return fmt.Errorf("%w: max flows %d: use 1 to %d", ErrBadOptions, o.MaxFlows, 1<<24)
	}
	if o.MaglevSize == 0 {
		o.MaglevSize = DefaultMaglevSize
	}
	if !isPrime(o.MaglevSize) || o.MaglevSize > 1<<20 {
		return fmt.Errorf("%w: %w: %d (65537 is the default, 251 or 4099 suit small pools)", ErrBadOptions, errMaglevNotPrime, o.MaglevSize)
	}
	if o.SNATPorts == (portlist.Range{}) {
		o.SNATPorts = DefaultSNATPorts
	}
	if err := checkPorts(o.SNATPorts); err != nil {
		return err
	}
	if o.GCInterval <= 0 {
		o.GCInterval = DefaultGCInterval
	}
	if o.LogInterval <= 0 {
		o.LogInterval = DefaultLogInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// checkPorts refuses an empty or reversed SNAT port range.
func checkPorts(r portlist.Range) error {
	if r.First == 0 || r.First > r.Last {
		return fmt.Errorf("%w: SNAT ports %d-%d: write a range such as 40000-59999", ErrBadOptions, r.First, r.Last)
	}
	return nil
}

// FastPath is the loaded, attached fast path.
type FastPath struct {
	opts  Options
	log   *slog.Logger
	objs  bpf.FastL4Objects
	flows flowTable

	// maglevSize is the size of the pinned Maglev tables.
	maglevSize int

	// life orders the map users (read side) against Close (write side):
	// Close waits for a GC pass or a scrape in progress, and they see
	// closed afterwards instead of using closed file descriptors.
	life   sync.RWMutex
	closed bool

	mu       sync.Mutex           // the desired state below
	links    map[string]link.Link // by interface name
	tracing  []link.Link          // the programs counting refused frames (txerr.go)
	modes    map[string]XDPMode   // attach mode by interface name
	virtuals map[string]*virtual  // by name
	vnames   [maxVirtuals]string  // id -> name, "" free (id 0 is reserved)
	pools    map[string]*pool     // by name
	pnames   [maxPools]string     // index -> name
	knobs    [maxVirtuals]knobs   // per virtual id, for the GC
	ports    portlist.Range       // SNAT ports in force
	nics     [2]nic               // external, internal (zero: not attached)
	swept    bool                 // the pinned state of earlier runs is reconciled
	netns    netns.NsHandle       // the fast path's network namespace

	nl      *netlink.Handle
	resets  *resetter
	neigh   *neighbours
	stats   *gcStats
	reap    reaper
	floor   counterFloor // readCounters' last values
	flood   floodWatch
	limiter *logLimiter
	flowLog flowLog
	mirror  mirrorState
	evFlush eventFlush
	// scrapeErrs reports the maps the collector failed to read.
	scrapeErrs *metric.ScrapeErrors
}

// knobs are the FastL4 settings the GC needs, by virtual id.
type knobs struct {
	name                     string
	idle, handshake, closing time.Duration
	flags                    uint32
}

// Open loads the program and its maps, adopting pinned state under
// PinPath when there is some, and attaches the program to the NICs. When
// the pinned links carry another build of the program, it is replaced
// atomically. The caller's network namespace is the fast path's.
func Open(opts Options) (_ *FastPath, err error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	f := &FastPath{
		opts:     opts,
		log:      opts.Logger.With("component", "fastpath"),
		links:    map[string]link.Link{},
		modes:    map[string]XDPMode{},
		virtuals: map[string]*virtual{},
		pools:    map[string]*pool{},
		stats:    newGCStats(),
		limiter:  newLogLimiter(opts.LogInterval),
		netns:    netns.None(),
	}
	f.flowLog.log = opts.FlowLog
	f.flowLog.setRate(0)
	f.scrapeErrs = metric.NewScrapeErrors("fastpath", f.log)
	defer func() {
		if err != nil {
			f.release()
		}
	}()
	if err := f.load(); err != nil {
		return nil, err
	}
	if err := f.adopt(); err != nil {
		return nil, err
	}
	if err := f.resetPeers(); err != nil {
		return nil, err
	}
	if f.netns, err = ownNetns(); err != nil {
		return nil, err
	}
	if f.nl, err = netlink.NewHandle(); err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	if f.resets, err = newResetter(); err != nil {
		return nil, err
	}
	f.neigh = newNeighbours(f.nl, f.log)
	// The egress slots in tx_ports: 1 for the external NIC, 2 for the
	// internal one (0 means "none" to the program).
	for _, nic := range []struct {
		name string
		mode XDPMode
		slot uint32
	}{{opts.ExtIf, opts.XDPMode, 1}, {opts.IntIf, opts.IntXDPMode, 2}} {
		if nic.name == "" {
			continue
		}
		if err := f.attach(nic.name, nic.mode, nic.slot); err != nil {
			return nil, err
		}
	}
	if err := f.setNICs(); err != nil {
		return nil, err
	}
	if err := f.attachTxErrors(); err != nil {
		return nil, err
	}
	return f, nil
}

// Close detaches nothing but the counting of refused frames (txerr.go):
// the program stays attached through the pinned links and the maps stay
// pinned, so flows keep going. It releases the control plane's handles.
//
// Call it after Run has returned; calls that race with it wait, and
// later ones return ErrClosed.
func (f *FastPath) Close() error {
	f.life.Lock()
	defer f.life.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	f.release()
	return nil
}

// acquire takes the read side of life unless the fast path is closed; the
// caller releases it with f.life.RUnlock.
func (f *FastPath) acquire() bool {
	f.life.RLock()
	if f.closed {
		f.life.RUnlock()
		return false
	}
	return true
}

func (f *FastPath) release() {
	for _, l := range f.links {
		l.Close()
	}
	f.links = map[string]link.Link{}
	for _, l := range f.tracing {
		l.Close()
	}
	f.tracing = nil
	f.reap.close()
	f.objs.Close()
	if f.resets != nil {
		f.resets.Close()
	}
	if f.nl != nil {
		f.nl.Close()
	}
	if f.netns.IsOpen() {
		f.netns.Close()
	}
}
