package plan

import (
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/health"
)

// compileHealth lists every member as a health target and each pool's
// monitor.
func compileHealth(cfg *config.Config, members map[string][]Member) health.Spec {
	spec := health.Spec{Monitors: map[string]health.Monitor{}}
	for _, pool := range poolNames(members) {
		for _, m := range members[pool] {
			spec.Targets = append(spec.Targets, health.Target{Pool: pool, Member: m.Name, Addr: m.Addr, Disabled: m.Disabled})
		}
		if p := cfg.Pools[pool]; p != nil {
			spec.Monitors[pool] = monitorSpec(p.Monitor)
		}
	}
	return spec
}

func monitorSpec(m config.Monitor) health.Monitor {
	return health.Monitor{
		Type: health.MonitorType(m.Type), Port: m.Port,
		Interval: m.Interval.D(), Timeout: m.Timeout.D(), Rise: m.Rise, Fall: m.Fall,
		Path: m.Path, Host: m.Host, Expect: m.Expect, AuthAlive: m.AuthAlive, CA: m.CA,
	}
}
