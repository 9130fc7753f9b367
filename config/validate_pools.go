package config

import (
	"net/netip"
	"sort"
	"strings"
	"time"
)

func (v *validator) pools() {
	names := v.poolNames()
	used := map[string]bool{}
	for _, vs := range v.c.Virtuals {
		if vs == nil {
			continue
		}
		if vs.Mode == ModeFastL4 {
			used[vs.Pool] = true
		}
		for _, s := range vs.Sites {
			if s != nil {
				used[s.Pool] = true
			}
		}
	}
	hostNames := make([]string, 0, len(v.c.Network.Hosts))
	for h := range v.c.Network.Hosts {
		hostNames = append(hostNames, h)
	}
	sort.Strings(hostNames)

	for _, name := range names {
		p := v.c.Pools[name]
		base := PoolPath(name)
		if !plainKey(name) {
			v.errorf(base, "pool name %q: use letters, digits, '-' and '_'", name)
		}
		if !used[name] {
			v.warnf(base, "pool %s is not used by any virtual or site", name)
		}
		if len(p.Members) == 0 {
			v.errorf(base+".members", "pool %s has no members: list names from network.hosts or addresses, e.g. members: [fe01.corp.example.com]", name)
		}
		seen := map[string]int{}
		seenAddr := map[netip.Addr]int{}
		enabled := 0
		for i, m := range p.Members {
			path := joinIndex(base+".members", i)
			if m.Address == "" {
				if v.c.Pos.Has(path) {
					v.errorf(path, "member without address: write a name from network.hosts or an address")
				}
				continue
			}
			if j, dup := seen[strings.ToLower(m.Address)]; dup {
				v.errorf(path, "member %s is listed twice (also members[%d]): keep one", m.Address, j)
				continue
			}
			seen[strings.ToLower(m.Address)] = i
			if m.Weight < 1 || m.Weight > 1000 {
				v.errorf(path+".weight", "weight %d is out of range: choose 1 to 1000", m.Weight)
			}
			if !m.Disabled {
				enabled++
			}
			a, ok := v.c.MemberAddr(m)
			if !ok {
				if _, literal := m.Addr(); !literal && !validHostname(m.Address, false) {
					v.errorf(path, "%q is neither an address nor a host name", m.Address)
					continue
				}
				if v.c.Network.Resolver == "" {
					v.errorf(path, "member %q is not in network.hosts and no network.resolver is set: add it to network.hosts (%s: <address>) or write its address%s", m.Address, m.Address, didYouMean(m.Address, hostNames))
				}
				continue
			}
			if j, dup := seenAddr[a]; dup {
				v.errorf(path, "member %s is %s, the same as members[%d]: keep one", m.Address, a, j)
				continue
			}
			seenAddr[a] = i
			if a.IsUnspecified() || a.IsMulticast() {
				v.errorf(path, "member address %s is not a host address", a)
			} else if !a.IsLoopback() && !v.c.reachableInternally(a) {
				v.errorf(path, "member %s is not reachable through the internal NIC: no internal subnet or route covers it, so its traffic would leave by the external default route; add a route under network.internal.routes, e.g. {to: %s, via: <internal router>}", memberName(m, a), coverExample(a))
			}
		}
		if len(p.Members) > 0 && enabled == 0 {
			v.warnf(base+".members", "every member of pool %s is disabled: its virtuals will refuse connections", name)
		}
		choice(v, base+".lb", "lb", p.LB, false, LBRoundRobin, LBLeastConn)
		choice(v, base+".kind", "kind", p.Kind, true, PoolKindSkypeFE)
		v.monitor(p, base+".monitor")
	}
}

// memberName is "name (address)" for named members, else the address.
func memberName(m Member, a netip.Addr) string {
	if _, literal := m.Addr(); literal {
		return a.String()
	}
	return m.Address + " (" + a.String() + ")"
}

func coverExample(a netip.Addr) string {
	bits := 16
	if a.Is6() {
		bits = 48
	}
	p, _ := a.Prefix(bits)
	return p.String()
}

func (v *validator) poolNames() []string {
	names := make([]string, 0, len(v.c.Pools))
	for n := range v.c.Pools {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (v *validator) monitor(p *Pool, base string) {
	m := &p.Monitor
	if !choice(v, base+".type", "monitor type", m.Type, false, MonitorTCP, MonitorTLS, MonitorHTTPS, MonitorHTTP) {
		return
	}
	if m.Interval.D() < 100*time.Millisecond {
		v.errorf(base+".interval", "interval %s is too short: at least 100ms (default %s)", m.Interval, DefaultMonitorInterval)
	}
	if m.Timeout.D() < 10*time.Millisecond {
		v.errorf(base+".timeout", "timeout %s is too short: at least 10ms (default %s)", m.Timeout, DefaultMonitorTimeout)
	} else if m.Timeout >= m.Interval {
		v.errorf(base+".timeout", "timeout %s must be shorter than interval %s, or checks overlap", m.Timeout, m.Interval)
	}
	if m.Rise < 1 || m.Rise > 100 {
		v.errorf(base+".rise", "rise %d is out of range: choose 1 to 100 (default %d)", m.Rise, DefaultMonitorRise)
	}
	if m.Fall < 1 || m.Fall > 100 {
		v.errorf(base+".fall", "fall %d is out of range: choose 1 to 100 (default %d)", m.Fall, DefaultMonitorFall)
	}
	web := m.Type == MonitorHTTP || m.Type == MonitorHTTPS
	if !web {
		for _, k := range []string{"path", "host", "expect", "auth_alive"} {
			if v.c.Pos.Has(base + "." + k) {
				v.errorf(base+"."+k, "%s applies only to http and https monitors, not %s: remove it or change the type", k, m.Type)
			}
		}
	} else {
		if !strings.HasPrefix(m.Path, "/") {
			v.errorf(base+".path", "path %q must start with /", m.Path)
		}
		for i, code := range m.Expect {
			if code < 100 || code > 599 {
				v.errorf(joinIndex(base+".expect", i), "%d is not an HTTP status code (100-599)", code)
			}
		}
		if m.Host != "" && !validHostname(m.Host, false) {
			v.errorf(base+".host", "%q is not a host name", m.Host)
		}
	}
	if m.CA != "" {
		if m.Type != MonitorTLS && m.Type != MonitorHTTPS {
			v.errorf(base+".ca", "ca applies only to tls and https monitors, not %s", m.Type)
		} else {
			v.caFile(base+".ca", m.CA)
		}
	}
}
