package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/internal/member"
	"github.com/edgeproxy/edgeproxy/l4"
	"github.com/prometheus/client_golang/prometheus"
)

// fastPath drives the XDP data path for the fastl4 virtuals.
type fastPath struct {
	fp  *l4.FastPath
	log *slog.Logger
	pin string
}

// openFastPath loads (or adopts the pinned) XDP program when the file
// runs XDP (spec not nil); otherwise it returns nil and XDP stays off.
func openFastPath(spec *l4.Spec, log *slog.Logger, reg prometheus.Registerer) (*fastPath, error) {
	if spec == nil {
		return nil, nil
	}
	opts := spec.Options
	opts.Logger = log
	fp, err := l4.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open XDP fast path: %w", err)
	}
	if err := reg.Register(fp.Collector()); err != nil {
		fp.Close()
		return nil, fmt.Errorf("register fast path metrics: %w", err)
	}
	return &fastPath{fp: fp, log: log, pin: opts.PinPath}, nil
}

// apply gives the fast path its spec (nil: no fastl4 virtual) with the
// members' current health.
func (f *fastPath) apply(spec *l4.Spec, up map[memberKey]bool) error {
	s := l4.Spec{}
	if spec != nil {
		s = *spec
	}
	pools := s.Pools
	s.Pools = map[string][]l4.Member{}
	for pool, ms := range pools {
		for _, m := range ms {
			m.Up = up[member.New(pool, m.Addr)]
			s.Pools[pool] = append(s.Pools[pool], m)
		}
	}
	return f.fp.Apply(&s)
}

func (f *fastPath) setUp(pool string, addr netip.Addr, up bool) error {
	return f.fp.SetMemberUp(pool, addr, up)
}

func (f *fastPath) run(ctx context.Context) error { return f.fp.Run(ctx) }

func (f *fastPath) close(cleanup bool) error {
	err := f.fp.Close()
	if cleanup {
		if cerr := l4.Cleanup(f.pin); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

type fastPathStatus struct {
	*admin.FastPath
	byVirtual, dropsByVirtual, byMember map[string]uint64
}

func (f *fastPath) status() *fastPathStatus {
	s := f.fp.Status()
	st := &fastPathStatus{
		FastPath: &admin.FastPath{
			Interfaces: s.Interfaces,
			Flows:      uint64(s.Flows),
			MaxFlows:   uint64(s.Capacity),
		},
		byVirtual:      map[string]uint64{},
		dropsByVirtual: s.Drops,
		byMember:       map[string]uint64{},
	}
	for k, v := range s.ByVirtual {
		st.byVirtual[k] = uint64(v)
	}
	for k, v := range s.ByMember {
		st.byMember[k.String()] = uint64(v)
	}
	return st
}
