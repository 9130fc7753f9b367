// Package health checks pool members with their pool's monitor (tcp
// connect, tls handshake, http/https GET) and tells the data paths which
// members are up.
//
// State machine of a member:
//
//   - A member starts "unknown" (not up). The first successful check
//     makes it "up" at once, so a freshly started proxy sends traffic as
//     soon as a member answers; fall consecutive failures from the start
//     make it "down".
//   - An up member goes down after fall consecutive failed checks; a down
//     member comes back up after rise consecutive successful checks.
//   - A disabled member is "disabled": it is not checked and never up.
//     Enabling it again starts it as unknown.
//   - A pool whose monitor has no type has no monitor: its members are up
//     without being checked.
//
// Every change of state is logged, passed to Options.OnChange and to the
// subscribers, right after the check that caused it. Checks of one member
// run one after another, the first at once, then one per interval.
package health

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// State of a member.
type State string

// States.
const (
	StateUnknown  State = "unknown"
	StateUp       State = "up"
	StateDown     State = "down"
	StateDisabled State = "disabled"
	// StateRemoved only appears in the Event sent when a member leaves
	// the configuration.
	StateRemoved State = "removed"
)

// Target is a pool member to check.
type Target struct {
	Pool     string     // pool name
	Member   string     // the member as written in the configuration (name or address)
	Addr     netip.Addr // resolved address
	Disabled bool       // disabled in the configuration: drains, never up
}

// Event is a change of a member's state.
type Event struct {
	Pool   string
	Member string
	Addr   netip.Addr
	// Up tells whether the member now takes new traffic.
	Up bool
	// State is the new state, Prev the one before.
	State State
	Prev  State
	// Reason is why: the failed check's error, or what succeeded.
	Reason string
	Time   time.Time
}

// MemberStatus is a member's health as reported by Snapshot.
type MemberStatus struct {
	Pool    string     `json:"pool"`
	Member  string     `json:"member"`
	Addr    netip.Addr `json:"address"`
	Monitor string     `json:"monitor"` // e.g. "tls:4443", "https:4443/", "none"
	State   State      `json:"state"`
	// Reason of the last change of state.
	Reason     string    `json:"reason,omitempty"`
	LastChange time.Time `json:"last_change"`
	// LastError is the most recent failed check's error, kept after the
	// member recovers; LastErrorTime says when.
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
	LastCheck     time.Time `json:"last_check,omitzero"`
	Checks        uint64    `json:"checks"`
	Failures      uint64    `json:"failures"`
	// Streak is the number of consecutive results equal to the last one
	// (positive for successes, negative for failures).
	Streak int `json:"streak"`
}

// Options configure a Checker.
type Options struct {
	// Dial opens the monitor connections (for example inside a network
	// namespace or from the internal NIC's address). Nil: net.Dialer.
	Dial DialFunc
	// Logger gets a record for every change of state. Nil: slog.Default().
	Logger *slog.Logger
	// OnChange is called for every change of state, in order, one call
	// at a time, right after the check that caused it. It may call the
	// Checker's methods (Snapshot, Up, Update).
	OnChange func(Event)
}

type memberKey struct {
	pool, member string
	addr         netip.Addr
}

type member struct {
	t   Target
	mon *monitor

	state      State
	reason     string
	lastChange time.Time
	lastErr    string
	lastErrAt  time.Time
	lastCheck  time.Time
	checks     uint64
	failures   uint64
	streak     int

	gen    uint64 // bumped whenever the prober is replaced
	cancel context.CancelFunc
}

// Checker runs the monitors of every member.
type Checker struct {
	opts Options
	log  *slog.Logger
	dial DialFunc

	mu      sync.Mutex
	members map[memberKey]*member
	runCtx  context.Context // non-nil while Run runs
	gen     uint64
	wg      sync.WaitGroup

	// Events are queued in pending under mu, in the order the states
	// changed, and delivered by one goroutine at a time (dispatching).
	pending     []Event
	dispatching bool
	subs        map[*subscriber]struct{}
	// changes counts the changes of state by pool, member and new state.
	changes map[[3]string]uint64
}

// New returns a Checker without members; give it members with Update and
// start it with Run.
func New(opts Options) *Checker {
	c := &Checker{
		opts:    opts,
		log:     opts.Logger,
		dial:    opts.Dial,
		members: map[memberKey]*member{},
		subs:    map[*subscriber]struct{}{},
		changes: map[[3]string]uint64{},
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.dial == nil {
		c.dial = defaultDial
	}
	return c
}

// Update replaces the set of members and monitors (monitors are keyed by
// pool name; a pool missing from monitors has no monitor). Members that
// stay (same pool, name and address) keep their state and counters; their
// prober restarts with the new monitor, so a renewed CA file is read. New
// members start unknown, removed ones stop being checked and are reported
// with an Event in state "removed". Update checks everything first: on
// error nothing changes.
func (c *Checker) Update(targets []Target, monitors map[string]Monitor) error {
	mons := map[string]*monitor{}
	seen := map[memberKey]bool{}
	names := map[[2]string]bool{}
	for _, t := range targets {
		if !t.Addr.IsValid() {
			return fmt.Errorf("update member %q of pool %q: %w: resolve it through network.hosts", t.Member, t.Pool, ErrInvalidAddr)
		}
		k := memberKey{t.Pool, t.Member, t.Addr}
		if names[[2]string{t.Pool, t.Member}] {
			return fmt.Errorf("update pool %q: %w: %s: list each member once", t.Pool, ErrDuplicate, t.Member)
		}
		names[[2]string{t.Pool, t.Member}] = true
		seen[k] = true
		if _, ok := mons[t.Pool]; ok {
			continue
		}
		m, err := newMonitor(t.Pool, monitors[t.Pool])
		if err != nil {
			return err
		}
		mons[t.Pool] = m
	}

	now := time.Now()
	var events []Event
	c.mu.Lock()
	for k, m := range c.members {
		if seen[k] {
			continue
		}
		c.stopLocked(m)
		delete(c.members, k)
		events = append(events, Event{
			Pool: k.pool, Member: k.member, Addr: k.addr,
			State: StateRemoved, Prev: m.state,
			Reason: "removed from the configuration", Time: now,
		})
	}
	for _, t := range targets {
		k := memberKey{t.Pool, t.Member, t.Addr}
		mon := mons[t.Pool]
		m, ok := c.members[k]
		if !ok {
			m = &member{t: t, state: StateUnknown, lastChange: now}
			c.members[k] = m
		} else {
			c.stopLocked(m)
			if m.mon != nil && m.mon.String() != mon.String() {
				m.streak = 0
			}
		}
		m.t = t
		m.mon = mon
		var next State
		var reason string
		switch {
		case t.Disabled:
			next, reason = StateDisabled, "disabled in the configuration"
		case mon.none():
			next, reason = StateUp, "pool has no monitor"
		case m.state == StateDisabled:
			next, reason = StateUnknown, "enabled in the configuration"
		}
		if next != "" && next != m.state {
			events = append(events, c.setLocked(m, next, reason, now))
		}
		if !t.Disabled && !mon.none() {
			c.startLocked(m)
		}
	}
	c.pending = append(c.pending, events...)
	c.mu.Unlock()
	c.flush()
	return nil
}

// Run checks the members until ctx is done, then stops every prober and
// returns nil. Members given to Update before Run are checked from the
// start of Run.
func (c *Checker) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.runCtx != nil {
		c.mu.Unlock()
		return fmt.Errorf("run health checker: %w", ErrAlreadyActive)
	}
	c.runCtx = ctx
	for _, m := range c.members {
		if !m.t.Disabled && !m.mon.none() {
			c.startLocked(m)
		}
	}
	c.mu.Unlock()

	<-ctx.Done()

	c.mu.Lock()
	for _, m := range c.members {
		c.stopLocked(m)
	}
	c.runCtx = nil
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}

func (c *Checker) startLocked(m *member) {
	if c.runCtx == nil || m.cancel != nil {
		return
	}
	c.gen++
	m.gen = c.gen
	ctx, cancel := context.WithCancel(c.runCtx)
	m.cancel = cancel
	c.wg.Add(1)
	go c.probe(ctx, m, m.gen, m.mon, m.t)
}

func (c *Checker) stopLocked(m *member) {
	if m.cancel != nil {
		m.cancel()
		m.cancel = nil
	}
	m.gen = 0
}

// probe checks one member until ctx is done.
func (c *Checker) probe(ctx context.Context, m *member, gen uint64, mon *monitor, t Target) {
	defer c.wg.Done()
	tick := time.NewTicker(mon.interval)
	defer tick.Stop()
	for {
		err := mon.check(ctx, c.dial, t)
		if ctx.Err() != nil {
			return
		}
		c.record(m, gen, err)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// record applies one check result to m, if gen is still m's prober.
func (c *Checker) record(m *member, gen uint64, err error) {
	now := time.Now()
	c.mu.Lock()
	if m.gen != gen {
		c.mu.Unlock()
		return
	}
	m.checks++
	m.lastCheck = now
	var next State
	var reason string
	if err == nil {
		if m.streak < 0 {
			m.streak = 0
		}
		m.streak++
		switch {
		case m.state == StateUnknown:
			next, reason = StateUp, "first check succeeded"
		case m.state == StateDown && m.streak >= m.mon.rise:
			next, reason = StateUp, fmt.Sprintf("%d consecutive checks succeeded", m.streak)
		}
	} else {
		m.failures++
		m.lastErr = err.Error()
		m.lastErrAt = now
		if m.streak > 0 {
			m.streak = 0
		}
		m.streak--
		if (m.state == StateUnknown || m.state == StateUp) && -m.streak >= m.mon.fall {
			next = StateDown
			reason = fmt.Sprintf("%d consecutive checks failed: %v", -m.streak, err)
		}
	}
	var events []Event
	if next != "" {
		events = append(events, c.setLocked(m, next, reason, now))
	}
	c.pending = append(c.pending, events...)
	c.mu.Unlock()
	c.flush()
}

func (c *Checker) setLocked(m *member, s State, reason string, now time.Time) Event {
	ev := Event{
		Pool: m.t.Pool, Member: m.t.Member, Addr: m.t.Addr,
		Up: s == StateUp, State: s, Prev: m.state, Reason: reason, Time: now,
	}
	m.state = s
	m.reason = reason
	m.lastChange = now
	c.changes[[3]string{m.t.Pool, m.t.Member, string(s)}]++
	return ev
}

// flush delivers the pending events unless another goroutine (or a
// caller up the stack, from OnChange) is delivering them already.
func (c *Checker) flush() {
	c.mu.Lock()
	if c.dispatching {
		c.mu.Unlock()
		return
	}
	c.dispatching = true
	for len(c.pending) > 0 {
		events := c.pending
		c.pending = nil
		subs := make([]*subscriber, 0, len(c.subs))
		for s := range c.subs {
			subs = append(subs, s)
		}
		c.mu.Unlock()
		c.dispatch(events, subs)
		c.mu.Lock()
	}
	c.dispatching = false
	c.mu.Unlock()
}

// dispatch logs events and hands them to OnChange and the subscribers.
func (c *Checker) dispatch(events []Event, subs []*subscriber) {
	for _, ev := range events {
		level := slog.LevelInfo
		if ev.Prev == StateUp && !ev.Up {
			level = slog.LevelWarn
		}
		c.log.Log(context.Background(), level, "member "+string(ev.State),
			"pool", ev.Pool, "member", ev.Member, "address", ev.Addr.String(),
			"previous", string(ev.Prev), "reason", ev.Reason)
		if c.opts.OnChange != nil {
			c.opts.OnChange(ev)
		}
		for _, s := range subs {
			s.push(ev)
		}
	}
}

// Snapshot returns every member's status, sorted by pool, member and
// address.
func (c *Checker) Snapshot() []MemberStatus {
	c.mu.Lock()
	out := make([]MemberStatus, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, MemberStatus{
			Pool: m.t.Pool, Member: m.t.Member, Addr: m.t.Addr,
			Monitor: m.mon.String(), State: m.state, Reason: m.reason,
			LastChange: m.lastChange, LastError: m.lastErr, LastErrorTime: m.lastErrAt,
			LastCheck: m.lastCheck, Checks: m.checks, Failures: m.failures, Streak: m.streak,
		})
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b MemberStatus) int {
		return cmp.Or(cmp.Compare(a.Pool, b.Pool), cmp.Compare(a.Member, b.Member), a.Addr.Compare(b.Addr))
	})
	return out
}

// Up returns the members of pool that are up, sorted by member and
// address.
func (c *Checker) Up(pool string) []Target {
	c.mu.Lock()
	var out []Target
	for _, m := range c.members {
		if m.t.Pool == pool && m.state == StateUp {
			out = append(out, m.t)
		}
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Target) int {
		return cmp.Or(cmp.Compare(a.Member, b.Member), a.Addr.Compare(b.Addr))
	})
	return out
}

// subscriber queues events without ever blocking the probers.
type subscriber struct {
	mu    sync.Mutex
	queue []Event
	wake  chan struct{}
}

func (s *subscriber) push(ev Event) {
	s.mu.Lock()
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Subscribe returns a channel that receives every Event from now on, in
// order, until ctx is done; then it is closed. A slow reader delays only
// itself: events queue up for it.
func (c *Checker) Subscribe(ctx context.Context) <-chan Event {
	s := &subscriber{wake: make(chan struct{}, 1)}
	out := make(chan Event)
	c.mu.Lock()
	c.subs[s] = struct{}{}
	c.mu.Unlock()
	go func() {
		defer close(out)
		defer func() {
			c.mu.Lock()
			delete(c.subs, s)
			c.mu.Unlock()
		}()
		for {
			s.mu.Lock()
			q := s.queue
			s.queue = nil
			s.mu.Unlock()
			for _, ev := range q {
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-s.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
