package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/member"
	"github.com/edgeproxy/edgeproxy/l4"
)

// FlowArgs selects flows for CmdKillFlows; an empty field matches any.
type FlowArgs struct {
	Virtual string `json:"virtual,omitempty"`
	// Member and Client are addresses; ClientPort, when set, the
	// client's port.
	Member     string `json:"member,omitempty"`
	Client     string `json:"client,omitempty"`
	ClientPort uint16 `json:"client_port,omitempty"`
}

// Filter parses the arguments.
func (a FlowArgs) Filter() (l4.FlowFilter, error) {
	q := l4.FlowFilter{Virtual: a.Virtual, ClientPort: a.ClientPort}
	for _, f := range []struct {
		name, val string
		dst       *netip.Addr
	}{{"member", a.Member, &q.Member}, {"client", a.Client, &q.Client}} {
		if f.val == "" {
			continue
		}
		ip, err := netip.ParseAddr(f.val)
		if err != nil {
			return q, fmt.Errorf("parse %s address %q: write an IPv4 or IPv6 address", f.name, f.val)
		}
		*f.dst = ip.Unmap()
	}
	return q, nil
}

// KilledFlow is one flow CmdKillFlows removed.
type KilledFlow struct {
	Virtual string `json:"virtual"`
	Proto   string `json:"proto"`
	Client  string `json:"client"`
	Member  string `json:"member"`
	State   string `json:"state"`
}

// killFlows removes the selected flows of the fast path and resets
// their TCP connections both ways; end (l4.EndKilled, l4.EndDrained) is
// why, in the connection log.
func (d *Daemon) killFlows(q l4.FlowFilter, end string) ([]KilledFlow, error) {
	f := d.fastPath()
	if f == nil {
		return nil, fmt.Errorf("kill flows: the fast path is not open (no fastl4 virtual)")
	}
	flows, err := f.fp.EndFlows(q, end)
	if err != nil {
		return nil, fmt.Errorf("kill flows: %w", err)
	}
	out := make([]KilledFlow, 0, len(flows))
	for _, fl := range flows {
		out = append(out, KilledFlow{Virtual: fl.Virtual, Proto: fl.Proto, Client: fl.Client.String(), Member: fl.Member.String(), State: fl.State})
	}
	if len(out) > 0 {
		d.log.Info("flows killed", "virtual", q.Virtual, "member", q.Member, "client", q.Client, "flows", len(out))
	}
	return out, nil
}

// scheduleDrain ends a draining member's remaining flows in each
// fastl4 virtual of its pool at since plus that virtual's drain_timeout
// (with a RST both ways), and its L7 connections at since plus the
// largest drain_timeout of the L7 virtuals publishing the pool, unless
// the member's state changed since.
func (d *Daemon) scheduleDrain(cfg *config.Config, key poolMember, since time.Time) {
	for _, v := range cfg.Virtuals {
		if v.Mode != config.ModeFastL4 || v.Pool != key.Pool {
			continue
		}
		virtual := v.Name
		d.afterDrain(key, since, since.Add(v.DrainTimeout.D()), func() error { return d.cutMember(key, virtual) })
	}
	if t, ok := l7DrainTimeout(cfg, key.Pool); ok {
		d.afterDrain(key, since, since.Add(t), func() error { d.cutMemberL7(key); return nil })
	}
}

// afterDrain runs cut in turn at by if the member is still draining
// since since.
func (d *Daemon) afterDrain(key poolMember, since, by time.Time, cut func() error) {
	d.spawn("drain "+key.Member, func(ctx context.Context) error {
		t := time.NewTimer(time.Until(by))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		_, err := d.inTurn(ctx, func(context.Context) (any, error) {
			e, ok := d.memberState()[key]
			if !ok || e.State != MemberDrain || !e.Since.Equal(since) {
				return nil, nil
			}
			return nil, cut()
		})
		if err != nil {
			d.log.Error("drain: cut member's connections", "pool", key.Pool, "member", key.Member, "err", err)
		}
		return nil
	})
}

// l7DrainTimeout is the largest drain_timeout of the L7 virtuals with a
// site on the pool: a member's upstream connections serve every one of
// them, so they are cut once, when the longest grace has passed.
func l7DrainTimeout(cfg *config.Config, pool string) (time.Duration, bool) {
	var (
		t     time.Duration
		found bool
	)
	for _, v := range cfg.Virtuals {
		if v.Mode == config.ModeFastL4 {
			continue
		}
		for _, s := range v.Sites {
			if s != nil && s.Pool == pool {
				t, found = max(t, v.DrainTimeout.D()), true
			}
		}
	}
	return t, found
}

// resumeDrains schedules the cut of members left draining by the
// previous run (at once when their drain_timeout has passed).
func (d *Daemon) resumeDrains(cfg *config.Config) {
	for key, e := range d.memberState() {
		if e.State == MemberDrain {
			d.scheduleDrain(cfg, key, e.Since)
		}
	}
}

// cutMember kills the member's flows in a fastl4 virtual.
func (d *Daemon) cutMember(key poolMember, virtual string) error {
	d.mu.Lock()
	pl := d.plan
	d.mu.Unlock()
	if d.fastPath() == nil || pl == nil {
		return nil
	}
	var n int
	for _, tg := range pl.Health.Targets {
		if tg.Pool != key.Pool || tg.Member != key.Member {
			continue
		}
		killed, err := d.killFlows(l4.FlowFilter{Virtual: virtual, Member: tg.Addr}, l4.EndDrained)
		if err != nil {
			return err
		}
		n += len(killed)
	}
	d.log.Info("drain timeout: member's remaining flows cut", "pool", key.Pool, "member", key.Member, "virtual", virtual, "flows", n)
	return nil
}

// cutMemberL7 closes the member's L7 connections: its upstream ones
// and the client connections pinned to it.
func (d *Daemon) cutMemberL7(key poolMember) {
	d.mu.Lock()
	pl := d.plan
	d.mu.Unlock()
	if d.l7 == nil || pl == nil {
		return
	}
	var n int
	for _, tg := range pl.Health.Targets {
		if tg.Pool == key.Pool && tg.Member == key.Member {
			n += d.l7.CloseMember(member.New(tg.Pool, tg.Addr))
		}
	}
	d.log.Info("drain timeout: member's L7 connections closed", "pool", key.Pool, "member", key.Member, "connections", n)
}
