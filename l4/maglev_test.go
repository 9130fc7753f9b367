package l4

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"
)

func TestMaglevTable(t *testing.T) {
	const m = 4099
	backends := []string{"10.10.0.11", "10.10.0.12", "10.10.0.13", "10.10.0.14"}
	table := maglevTable(backends, m)
	if len(table) != m {
		t.Fatalf("table size %d", len(table))
	}
	// Deterministic: the same members give the same table.
	if !slices.Equal(table, maglevTable(slices.Clone(backends), m)) {
		t.Error("two builds of the same pool differ")
	}
	// Balanced: each member holds about m/n entries.
	count := make([]int, len(backends))
	for _, b := range table {
		count[b]++
	}
	for i, c := range count {
		if c < m/len(backends)-2 || c > m/len(backends)+2 {
			t.Errorf("member %d holds %d of %d entries", i, c, m)
		}
	}
	// Removing a member moves little beyond its own entries.
	without := maglevTable([]string{"10.10.0.11", "10.10.0.12", "10.10.0.14"}, m)
	moved := 0
	for i := range table {
		before := backends[table[i]]
		after := []string{"10.10.0.11", "10.10.0.12", "10.10.0.14"}[without[i]]
		if before != "10.10.0.13" && before != after {
			moved++
		}
	}
	if moved > m/20 {
		t.Errorf("removing one member moved %d entries of the others (of %d)", moved, m)
	}
	if maglevTable(nil, m) != nil {
		t.Error("a table for no members")
	}
}

func TestMaglevSizeMustBePrime(t *testing.T) {
	for _, n := range []int{251, 4099, 65537} {
		o := Options{MaglevSize: n}
		if err := o.defaults(); err != nil {
			t.Errorf("size %d: %v", n, err)
		}
	}
	o := Options{MaglevSize: 65536}
	if err := o.defaults(); err == nil {
		t.Error("65536 accepted")
	}
}

func TestPairState(t *testing.T) {
	k := knobs{idle: 300e9, handshake: 5e9, closing: 5e9}
	loose := k
	loose.flags = svcLooseClose
	tcp := func(seenC, seenS uint8, closing uint32) *pair {
		p := &pair{c: &half{}, s: &half{}}
		p.c.key.Proto, p.s.key.Proto = 6, 6
		p.c.val.Seen, p.s.val.Seen = seenC, seenS
		p.c.val.Closing, p.s.val.Closing = closing, closing
		return p
	}
	for _, tc := range []struct {
		p       *pair
		k       knobs
		state   string
		timeout string
	}{
		{tcp(seenSYN|seenAny, 0, 0), k, StateHandshake, "5s"},
		{tcp(seenSYN|seenAny, seenSYNACK|seenAny, 0), k, StateHandshake, "5s"},
		{tcp(seenSYN|seenACK|seenAny, seenSYNACK|seenAny, 0), k, StateEstablished, "5m0s"},
		{tcp(seenACK|seenAny, seenAny, 0), k, StateEstablished, "5m0s"}, // loose_init
		{tcp(seenACK|seenAny, seenAny, closeFinClient), k, StateFinWait, "5m0s"},
		{tcp(seenACK|seenAny, seenAny, closeFinServer), loose, StateFinWait, "5s"},
		{tcp(seenACK|seenAny, seenAny, closeFinClient|closeFinServer), k, StateClosing, "5s"},
		{tcp(seenACK|seenAny, seenAny, closeRST), k, StateReset, "5s"},
	} {
		st, to := tc.p.state(tc.k)
		if st != tc.state || fmt.Sprint(to) != tc.timeout {
			t.Errorf("seen %#x/%#x closing %#x: %s %v, want %s %s", tc.p.c.val.Seen, tc.p.s.val.Seen, tc.p.c.val.Closing, st, to, tc.state, tc.timeout)
		}
	}
	udp := &pair{c: &half{}}
	udp.c.key.Proto = 17
	if st, to := udp.state(k); st != StateUDP || to != k.idle {
		t.Errorf("udp: %s %v", st, to)
	}
}

// countHandler counts log records.
type countHandler struct{ n *int }

func (h countHandler) Enabled(context.Context, slog.Level) bool  { return true }
func (h countHandler) Handle(context.Context, slog.Record) error { *h.n++; return nil }
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler        { return h }
func (h countHandler) WithGroup(string) slog.Handler             { return h }

func TestLogLimiter(t *testing.T) {
	var n int
	log := slog.New(countHandler{&n})
	l := newLogLimiter(time.Hour)
	// The first reading is the baseline; growth is reported once per
	// interval, the rest accumulates.
	if d := l.delta("table_full", 10); d != 0 {
		t.Errorf("baseline reported %d", d)
	}
	if d := l.delta("table_full", 15); d != 5 {
		t.Errorf("first growth: %d, want 5", d)
	}
	l.log(log, "table_full", slog.LevelWarn, "flow table full")
	if d := l.delta("table_full", 20); d != 0 {
		t.Errorf("growth within the interval reported: %d", d)
	}
	l.log(log, "table_full", slog.LevelWarn, "flow table full")
	l.log(log, "other", slog.LevelWarn, "another condition")
	if n != 2 {
		t.Errorf("%d records, want 2 (one per kind within the interval)", n)
	}
	l.last["table_full"] = time.Now().Add(-2 * time.Hour)
	if d := l.delta("table_full", 21); d != 6 {
		t.Errorf("after the interval: %d, want the accumulated 6", d)
	}
}
