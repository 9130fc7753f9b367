// Package l4 is the control plane of edgeproxy's XDP fast path (package
// bpf): it loads and pins the program and its maps, attaches the program
// to the external and internal NICs through pinned bpf_links, drives the
// services, Maglev tables and SNAT addresses from the configuration,
// reaps flows that time out (sending resets where asked), keeps next hops
// resolved, and exports counters.
//
// All state lives in maps pinned under a directory of the BPF file system
// (default /sys/fs/bpf/edgeproxy): a restart or an upgrade of the control
// plane adopts them, and established flows keep going in the meantime.
//
// Open must run in the network namespace of the NICs: the sockets,
// netlink handle and sysctls it sets up belong to that namespace.
package l4

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/metric"
	"github.com/edgeproxy/edgeproxy/internal/nsrun"
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

// Defaults.
const (
	DefaultMaglevSize  = 65537
	DefaultLogInterval = 10 * time.Second
)

// Limits compiled into the program (bpf/common.h).
const (
	maxVirtuals = 64
	maxPools    = 64
	maxSNAT     = 16
	reasonMax   = int(bpf.FastL4ReasonREASON_MAX)
)

// Options configure the fast path.
type Options struct {
	// PinPath is the directory in the BPF file system holding the pinned
	// maps and links (default /sys/fs/bpf/edgeproxy).
	PinPath string
	// ExtIf and IntIf are the NICs the program is attached to. An empty
	// name leaves that side alone.
	ExtIf, IntIf string
	// XDPMode is native (default: falls back to generic, with a warning,
	// when the driver has no native XDP) or generic. IntXDPMode overrides
	// it for IntIf.
	XDPMode, IntXDPMode string
	// MaxFlows is the number of connections the flow table holds (two
	// entries each); default 262144. Changing it needs Cleanup.
	MaxFlows int
	// MaglevSize is the size of each pool's Maglev table, a prime
	// (default 65537). Pinned state keeps the size it was created with.
	MaglevSize int
	// SNATPorts is the source port range of SNAT; Apply takes it from
	// the configuration when set there. Default 40000-59999.
	SNATPorts config.PortRange
	// GCInterval is how often expired flows are reaped (default 1s).
	GCInterval time.Duration
	// LogInterval bounds how often a recurring condition (table full,
	// SNAT exhausted) is logged (default 10s).
	LogInterval time.Duration
	// Logger receives the fast path's records (default slog.Default()).
	Logger *slog.Logger
}

// OptionsFromConfig returns the options a configuration asks for.
func OptionsFromConfig(c *config.Config) Options {
	o := Options{
		PinPath:    c.FastPath.PinPath,
		ExtIf:      c.Network.External.Interface,
		IntIf:      c.Network.Internal.Interface,
		XDPMode:    c.Network.External.XDPMode,
		IntXDPMode: c.Network.Internal.XDPMode,
		MaxFlows:   c.FastPath.MaxFlows,
		SNATPorts:  c.FastPath.SNATPorts,
		GCInterval: c.FastPath.GCInterval.D(),
	}
	if o.XDPMode == config.XDPOff {
		o.ExtIf, o.XDPMode = "", ""
	}
	if o.IntXDPMode == config.XDPOff {
		o.IntIf, o.IntXDPMode = "", ""
	}
	return o
}

func (o *Options) defaults() error {
	if o.PinPath == "" {
		o.PinPath = config.DefaultPinPath
	}
	if o.XDPMode == "" {
		o.XDPMode = config.XDPNative
	}
	if o.IntXDPMode == "" {
		o.IntXDPMode = o.XDPMode
	}
	for _, m := range []string{o.XDPMode, o.IntXDPMode} {
		if m != config.XDPNative && m != config.XDPGeneric {
			return fmt.Errorf("%w: %w %q: use native or generic", ErrBadOptions, errUnsupportedMode, m)
		}
	}
	if o.MaxFlows == 0 {
		o.MaxFlows = config.DefaultMaxFlows
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
	if o.SNATPorts.IsZero() {
		o.SNATPorts = config.DefaultSNATPorts
	}
	if o.SNATPorts.First == 0 || o.SNATPorts.First > o.SNATPorts.Last {
		return fmt.Errorf("%w: SNAT ports %s: write a range such as 40000-59999", ErrBadOptions, o.SNATPorts)
	}
	if o.GCInterval <= 0 {
		o.GCInterval = config.DefaultGCInterval.D()
	}
	if o.LogInterval <= 0 {
		o.LogInterval = DefaultLogInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return nil
}

// Member is a pool member as the fast path sees it.
type Member struct {
	Name     string // as written in the configuration
	Addr     netip.Addr
	Up       bool // passes its health checks
	Disabled bool // drains: keeps its flows, takes no new ones
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
	modes    map[string]string    // attach mode by interface name
	virtuals map[string]*virtual  // by name
	vnames   [maxVirtuals]string  // id -> name, "" free (id 0 is reserved)
	pools    map[string]*pool     // by name
	pnames   [maxPools]string     // index -> name
	knobs    [maxVirtuals]knobs   // per virtual id, for the GC
	ports    config.PortRange     // SNAT ports in force
	nics     [2]nic               // external, internal (zero: not attached)

	ns      netns.NsHandle // the namespace Open ran in
	nl      *netlink.Handle
	resets  *resetter
	neigh   *neighbours
	stats   *gcStats
	flood   floodWatch
	limiter *logLimiter
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
		ns:       netns.None(),
		log:      opts.Logger.With("component", "fastpath"),
		links:    map[string]link.Link{},
		modes:    map[string]string{},
		virtuals: map[string]*virtual{},
		pools:    map[string]*pool{},
		stats:    newGCStats(),
		limiter:  newLogLimiter(opts.LogInterval),
	}
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
	if f.ns, err = netns.Get(); err != nil {
		return nil, fmt.Errorf("get network namespace: %w", err)
	}
	if f.nl, err = netlink.NewHandle(); err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	if err := enableFIBLookups(); err != nil {
		return nil, err
	}
	if err := reservePorts(f.ports); err != nil {
		return nil, err
	}
	if f.resets, err = newResetter(); err != nil {
		return nil, err
	}
	f.neigh = newNeighbours(f.nl, f.log)
	// The egress slots in tx_ports: 1 for the external NIC, 2 for the
	// internal one (0 means "none" to the program).
	for _, nic := range []struct {
		name, mode string
		slot       uint32
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
	return f, nil
}

// halfOpenEntries sizes the half-open table (bpf/flood.h): as many
// entries as the flow table has connections, so half as many half-open
// connections, at least 1024 entries (an LRU needs room per CPU).
func halfOpenEntries(maxFlows int) int { return max(maxFlows, 1024) }

// loadSpec returns the program's collection spec (benchmarks compare
// other builds through it).
var loadSpec = bpf.LoadFastL4

// load loads the collection with its maps pinned under PinPath.
func (f *FastPath) load() error {
	spec, err := loadSpec()
	if err != nil {
		return fmt.Errorf("load fast path spec: %w", err)
	}
	spec.Maps[bpf.FastL4MapFlows4Tcp].MaxEntries = uint32(2 * f.opts.MaxFlows)
	spec.Maps[bpf.FastL4MapFlows4Udp].MaxEntries = uint32(2 * f.opts.MaxFlows)
	spec.Maps[bpf.FastL4MapFlows6].MaxEntries = uint32(2 * f.opts.MaxFlows)
	spec.Maps[bpf.FastL4MapHalfOpen].MaxEntries = uint32(halfOpenEntries(f.opts.MaxFlows))
	f.maglevSize = f.opts.MaglevSize
	if size, ok := pinnedMaglevSize(f.opts.PinPath); ok && size != f.maglevSize {
		f.log.Warn("keeping the Maglev table size of the pinned state", "pinned", size, "asked", f.maglevSize)
		f.maglevSize = size
	}
	spec.Maps[bpf.FastL4MapMaglev].InnerMap.MaxEntries = uint32(f.maglevSize)
	if err := os.MkdirAll(f.opts.PinPath, 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w (is the BPF file system mounted on /sys/fs/bpf?)", err)
	}
	err = spec.LoadAndAssign(&f.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: f.opts.PinPath}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return fmt.Errorf("%w: %w: remove %s (edgeproxy flows -cleanup) to start afresh, which drops the established flows", ErrIncompatible, err, f.opts.PinPath)
	}
	if err != nil {
		return fmt.Errorf("load fast path: %w", err)
	}
	f.flows = flowTable{v4tcp: f.objs.Flows4Tcp, v4udp: f.objs.Flows4Udp, v6: f.objs.Flows6, half: f.objs.HalfOpen}
	return nil
}

// pinnedMaglevSize reads the table size from pinned settings.
func pinnedMaglevSize(pinPath string) (int, bool) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinPath, bpf.FastL4MapSettings), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return 0, false
	}
	defer m.Close()
	var s bpf.FastL4Config
	if err := m.Lookup(uint32(0), &s); err != nil || s.MaglevSize == 0 {
		return 0, false
	}
	return int(s.MaglevSize), true
}

// adopt reads the pinned settings, virtual and pool names, or writes
// fresh settings.
func (f *FastPath) adopt() error {
	var s bpf.FastL4Config
	if err := f.objs.Settings.Lookup(uint32(0), &s); err != nil {
		return fmt.Errorf("read fast path settings: %w", err)
	}
	if s.MaglevSize == 0 {
		var seed [4]byte
		if _, err := rand.Read(seed[:]); err != nil {
			return fmt.Errorf("seed flow hash: %w", err)
		}
		s = bpf.FastL4Config{
			MaglevSize: uint32(f.maglevSize),
			HashSeed:   binary.LittleEndian.Uint32(seed[:]),
		}
	} else {
		f.log.Info("adopting pinned fast path state", "pin_path", f.opts.PinPath)
	}
	s.SnatPortMin, s.SnatPortMax = f.opts.SNATPorts.First, f.opts.SNATPorts.Last
	// bpf_fib_lookup runs against the loopback device (see
	// enableFIBLookups).
	s.FibIfindex = 1
	if err := f.objs.Settings.Put(uint32(0), &s); err != nil {
		return fmt.Errorf("write fast path settings: %w", err)
	}
	f.ports = f.opts.SNATPorts

	for id := 1; id < maxVirtuals; id++ {
		var vi bpf.FastL4Vinfo
		if err := f.objs.Virtuals.Lookup(uint32(id), &vi); err != nil {
			return fmt.Errorf("read virtual names: %w", err)
		}
		if name := cString(vi.Name[:]); name != "" {
			f.vnames[id] = name
			f.knobs[id] = knobsFromVinfo(name, &vi)
		}
	}
	for i := range maxPools {
		var pi bpf.FastL4Pinfo
		if err := f.objs.Pools.Lookup(uint32(i), &pi); err != nil {
			return fmt.Errorf("read pool names: %w", err)
		}
		f.pnames[i] = cString(pi.Name[:])
	}
	return nil
}

// Run reaps expired flows, sends resets, keeps neighbours resolved and
// logs table-full and SNAT-exhaustion conditions until ctx is done.
func (f *FastPath) Run(ctx context.Context) error {
	gc := time.NewTicker(f.opts.GCInterval)
	defer gc.Stop()
	nb := time.NewTicker(200 * time.Millisecond)
	defer nb.Stop()
	f.upkeep()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-gc.C:
			if err := f.collect(); err != nil {
				if errors.Is(err, ErrClosed) {
					return err
				}
				f.limiter.log(f.log, "gc", slog.LevelWarn, "reap flows", "err", err)
			}
			f.warnDrops()
		case <-nb.C:
			f.upkeep()
		}
	}
}

// upkeep resolves reported and wanted next hops and keeps the loopback
// forwarding flag the FIB lookups need.
func (f *FastPath) upkeep() {
	if !f.acquire() {
		return
	}
	defer f.life.RUnlock()
	if err := f.inNS(enableFIBLookups); err != nil {
		f.limiter.log(f.log, "fib", slog.LevelWarn, "keep FIB lookups enabled", "err", err)
	}
	f.neigh.poll(f.objs.NeighMiss)
}

// Close detaches nothing: the program stays attached through the pinned
// links and the maps stay pinned, so flows keep going. It releases the
// control plane's handles.
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
	f.objs.Close()
	if f.resets != nil {
		f.resets.Close()
	}
	if f.nl != nil {
		f.nl.Close()
	}
	if f.ns.IsOpen() {
		f.ns.Close()
	}
}

// inNS runs fn in the fast path's network namespace, on a locked thread:
// Run and the methods may be called from any goroutine, and sysctls are
// read and written in the namespace of the calling thread.
func (f *FastPath) inNS(fn func() error) error { return nsrun.Do(f.ns, fn) }

// Cleanup detaches the program from every NIC it is pinned to and removes
// the pinned state under pinPath: established flows stop.
func Cleanup(pinPath string) error {
	if pinPath == "" {
		pinPath = config.DefaultPinPath
	}
	entries, err := os.ReadDir(pinPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clean up fast path: %w", err)
	}
	var errs []error
	for _, e := range entries {
		p := filepath.Join(pinPath, e.Name())
		if l, err := link.LoadPinnedLink(p, nil); err == nil {
			if err := l.Unpin(); err != nil {
				errs = append(errs, err)
			}
			l.Close()
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(pinPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean up fast path: %w", err)
	}
	return nil
}

func cString(b []int8) string {
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	out := make([]byte, n)
	for i := range n {
		out[i] = byte(b[i])
	}
	return string(out)
}

func putCString(dst []int8, s string) {
	for i := range dst {
		dst[i] = 0
	}
	for i := 0; i < len(s) && i < len(dst)-1; i++ {
		dst[i] = int8(s[i])
	}
}

func isPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

func defaultPinPath() string { return config.DefaultPinPath }
