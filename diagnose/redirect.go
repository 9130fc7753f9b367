package diagnose

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"syscall"
)

// PortRedirection: Skype sites are sent to the External Web Site (4443 /
// 8080), never to the members' 443/80, and every member answers on those
// ports from the proxy's internal address (seed 000: most support cases
// are certificates and port redirection).
var PortRedirection = Check{
	Name: "ports",
	Doc:  "virtuals and sites send Skype traffic to 4443/8080, and each member answers there from the internal address",
	Run:  checkPorts,
}

// whyPorts explains the External Web Site's ports.
const whyPorts = "a Skype/Lync front end serves two web sites on one address: the Internal Web Site on 443/80 " +
	"and the External Web Site on 4443/8080; the port is how the server tells outside from inside, " +
	"so traffic from the Internet sent to 443/80 is served as internal (internal names in autodiscover links, " +
	"the internal certificate, the management sites)"

func checkPorts(ctx context.Context, e *Env) []Finding {
	var f findings
	c := e.Config
	skype := skypePools(c)
	ts := targets(c)
	for _, t := range ts {
		subj := fmt.Sprintf("%s → %s:%d", t.Via, t.Pool, t.Port)
		if !skype[t.Pool] {
			f.pass(subj, "pool %s is not a Skype front-end pool: forwarded to port %d as configured (Office Web Apps is published 443 → 443)", t.Pool, t.Port)
			continue
		}
		want := uint16(8080)
		if t.BackendTLS {
			want = 4443
		}
		from := t.Virtual.Listen.Port()
		switch {
		case t.Port == want:
			f.pass(subj, "%d → %d: the External Web Site", from, t.Port)
		case t.Port == 443 || t.Port == 80:
			f.add(Fail, subj, fmt.Sprintf("%d → %d sends Internet clients to the members' Internal Web Site: %s", from, t.Port, whyPorts),
				fmt.Sprintf("set %s to %d", portKey(t), want))
			f.about([]string{"virtual " + t.Virtual.Name}, nil)
		case t.Port == 4443 || t.Port == 8080:
			what := "TLS to the plain HTTP port 8080"
			if t.Port == 4443 {
				what = "plain HTTP to the TLS port 4443"
			}
			f.add(Fail, subj, fmt.Sprintf("%d → %d sends %s", from, t.Port, what),
				fmt.Sprintf("set %s to %d", portKey(t), want))
		default:
			f.add(Warn, subj, fmt.Sprintf("%d → %d: the External Web Site of a Skype front end listens on %d", from, t.Port, want),
				fmt.Sprintf("set %s to %d unless the topology defines another external port", portKey(t), want))
		}
	}

	// Monitors on 443 see the internal site (seed 000, item 2).
	names := make([]string, 0, len(c.Pools))
	for n := range c.Pools {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := c.Pools[n]
		if p == nil || !skype[n] {
			continue
		}
		if p.Monitor.Port == 443 || p.Monitor.Port == 80 {
			f.add(Warn, "pool "+n+" monitor", fmt.Sprintf("the health monitor probes port %d, the Internal Web Site, which answers even when the External Web Site is down", p.Monitor.Port),
				fmt.Sprintf("set pools.%s.monitor.port to 4443 (or 8080)", n))
		}
	}

	// Each member answers on the forwarded ports from the internal address.
	type probe struct {
		addr netip.AddrPort
		src  netip.Addr
	}
	done := map[probe]bool{}
	for _, t := range ts {
		p := c.Pools[t.Pool]
		if p == nil {
			f.add(Fail, t.Via, fmt.Sprintf("pool %q is not defined", t.Pool), "define it under pools")
			continue
		}
		for _, m := range p.Members {
			if m.Disabled {
				continue
			}
			a, from, err := e.resolveMember(ctx, m.Address)
			subj := fmt.Sprintf("member %s:%d", m.Address, t.Port)
			if err != nil {
				f.add(Fail, subj, err.Error(), fmt.Sprintf("add %s to network.hosts", m.Address))
				continue
			}
			src := e.sourceFor(t, a)
			pr := probe{netip.AddrPortFrom(a, t.Port), src}
			if done[pr] {
				continue
			}
			done[pr] = true
			if !src.IsValid() {
				f.add(Fail, subj, fmt.Sprintf("no internal address of the family of %s on %s", a, orIf(c.Network.Internal.Interface, "the internal NIC")),
					"add one to network.internal.addresses")
				continue
			}
			fd := e.probeMember(ctx, subj, pr.addr, src, skype[t.Pool])
			if fd.Verdict == Fail && from == "network.hosts" && !strings.Contains(fd.Evidence, "refuses") {
				// Nothing answers at all: the address may be the wrong one.
				fd.Evidence += fmt.Sprintf("; %s is %s by network.hosts", m.Address, a)
				fd.Fix = fmt.Sprintf("if %s is not %s's address, correct network.hosts; otherwise %s", a, m.Address, fd.Fix)
			}
			fd.explains, fd.needs = []string{"member " + pr.addr.String()}, []string{"member " + a.String()}
			f = append(f, fd)
		}
	}
	return f
}

// probeMember connects to a member from src and explains a failure.
func (e *Env) probeMember(ctx context.Context, subj string, dst netip.AddrPort, src netip.Addr, skype bool) Finding {
	c, err := e.dialFrom(ctx, "tcp", src, dst.String())
	if err == nil {
		c.Close()
		return Finding{Subject: subj, Verdict: Pass, Evidence: fmt.Sprintf("%s answers from %s", dst, src)}
	}
	fd := Finding{Subject: subj, Verdict: Fail}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		fd.Evidence = fmt.Sprintf("%s refuses connections from %s: nothing listens on port %d", dst, src, dst.Port())
		fd.Fix = "start the member's web site on this port"
		if skype {
			other := uint16(443)
			if dst.Port() == 8080 {
				other = 80
			}
			if o, err := e.dialFrom(ctx, "tcp", src, netip.AddrPortFrom(dst.Addr(), other).String()); err == nil {
				o.Close()
				fd.Evidence += fmt.Sprintf("; port %d answers (the Internal Web Site)", other)
			}
			fd.Fix = fmt.Sprintf("check that the External Web Site is bound to port %d on %s (Topology Builder's external web services ports, IIS bindings)",
				dst.Port(), dst.Addr())
		}
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		fd.Evidence = fmt.Sprintf("cannot send from %s: the address is not on this host", src)
		fd.Fix = "add the internal address to the internal NIC (edgeproxy netcfg apply)"
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		fd.Evidence = fmt.Sprintf("%s is unreachable from %s: %v", dst, src, unwrapOp(err))
		fd.Fix = "add a static route to the member's subnet through the internal NIC (network.internal.routes)"
	case isTimeout(err):
		fd.Evidence = fmt.Sprintf("no answer from %s within %s when sending from %s", dst, e.timeout(), src)
		fd.Fix = "a firewall between the DMZ and the internal network drops it, or the member has no route back to " +
			src.String() + ": open the port from the proxy's internal address and route the DMZ subnet back"
	default:
		fd.Evidence = fmt.Sprintf("connect to %s from %s: %v", dst, src, unwrapOp(err))
	}
	return fd
}

func portKey(t target) string {
	if t.Site != nil {
		return fmt.Sprintf("the port of site %s (virtual %s)", siteName(t.Site), t.Virtual.Name)
	}
	return "virtual " + t.Virtual.Name + "'s port"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// unwrapOp drops net.OpError's "dial tcp a->b:" prefix.
func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) {
			return se.Err
		}
		return oe.Err
	}
	return err
}
