package checkcmd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/hostprobe"
	"github.com/edgeproxy/edgeproxy/internal/plan"
	"github.com/edgeproxy/edgeproxy/internal/portlist"
)

// Status of a host check.
const (
	StatusOK      = hostprobe.StatusOK
	StatusInfo    = hostprobe.StatusInfo
	StatusWarning = hostprobe.StatusWarning
	StatusError   = hostprobe.StatusError
)

// HostCheck is one line of the host table.
type HostCheck struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
}

// hostChecker collects host checks and the findings they raise.
type hostChecker struct {
	c      *config.Config
	checks []HostCheck
	found  []Finding
}

func (h *hostChecker) add(check, status, path, format string, args ...any) {
	detail := fmt.Sprintf(format, args...)
	h.checks = append(h.checks, HostCheck{Check: check, Status: status, Detail: detail})
	if status != StatusWarning && status != StatusError {
		return
	}
	f := Finding{Severity: status, Source: "host", Path: path, Msg: check + ": " + detail}
	if h.c.Pos.Has(path) {
		f.Where = h.c.Where(path)
	}
	h.found = append(h.found, f)
}

// hostChecks inspects the host (in the calling thread's network
// namespace) against the configuration: the probe run shares, then the
// NICs and sysctls.
func hostChecks(c *config.Config) ([]HostCheck, []Finding) {
	h := &hostChecker{c: c}
	needs := plan.HostNeeds(c)
	for _, p := range hostprobe.Probe(needs) {
		h.add(p.Name, p.Status, p.Key, "%s", p.Detail)
	}
	h.nic(c.Network.External, "network.external", needs.FastPath, true)
	h.nic(c.Network.Internal, "network.internal", needs.FastPath, false)
	h.sysctls()
	return h.checks, h.found
}

func interfaceNames() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return ""
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return strings.Join(names, ", ")
}

func (h *hostChecker) nic(nic config.NIC, base string, xdp, external bool) {
	if nic.Interface == "" {
		return // a configuration error already
	}
	name := nic.Interface
	check := "interface " + name
	l, err := hostprobe.Interface(name)
	if errors.Is(err, hostprobe.ErrNoInterface) {
		h.add(check, StatusError, base+".interface", "%s does not exist on this host (it has: %s): fix %s.interface", name, interfaceNames(), base)
		return
	}
	if err != nil {
		h.add(check, StatusError, base+".interface", "%v", err)
		return
	}
	drv := l.Driver
	if drv == "" {
		drv = l.Type
	}

	// Addresses: run adds what is missing when it manages the network.
	sev, fix := StatusWarning, "run adds it"
	if !h.c.Network.Managed() {
		sev, fix = StatusError, "network.manage is false, so add it yourself: ip addr add"
	}
	type missing struct{ path, msg string }
	var present []string
	var absent []missing
	for i, p := range nic.Addresses {
		if !p.IsValid() {
			continue
		}
		if l.HasAddr(p.Addr()) {
			present = append(present, p.String())
			continue
		}
		absent = append(absent, missing{fmt.Sprintf("%s.addresses[%d]", base, i),
			fmt.Sprintf("address %s is not on %s yet: %s", p, name, fixCmd(fix, p.String(), name))})
	}
	if external {
		for i, v := range h.c.Virtuals {
			if v == nil || !v.Listen.IsValid() {
				continue
			}
			a := v.Listen.Addr()
			if a.IsUnspecified() || a.IsLoopback() || isHostAddr(nic.Addresses, a) {
				continue
			}
			if l.HasAddr(a) {
				present = append(present, a.String())
				continue
			}
			absent = append(absent, missing{config.VirtualPath(i) + ".listen",
				fmt.Sprintf("VIP %s of %s is not on %s yet: %s", a, v.Name, name, fixCmd(fix, netip.PrefixFrom(a, a.BitLen()).String(), name))})
		}
	}
	if l.Up {
		h.add(check, StatusOK, "", "up, driver %s, addresses present: %s", drv, orNone(present))
	} else {
		h.add(check, StatusWarning, base+".interface", "%s is down: bring it up (ip link set %s up); driver %s, addresses present: %s", name, name, drv, orNone(present))
	}

	if xdp && nic.XDPMode != config.XDPOff {
		xdpCheck := "XDP on " + name
		switch {
		case !l.NativeXDP() && nic.XDPMode == config.XDPNative:
			h.add(xdpCheck, StatusWarning, base+".interface", "driver %s has no native XDP: the fast path falls back to generic XDP, which is several times slower; use a NIC whose driver has native XDP, or set %s.xdp_mode: generic to accept it", drv, base)
		case nic.XDPMode == config.XDPGeneric:
			h.add(xdpCheck, StatusInfo, "", "generic XDP (xdp_mode: generic), driver %s", drv)
		case l.FeaturesKnown && l.Features&hostprobe.XDPRedirect == 0:
			h.add(xdpCheck, StatusWarning, base+".interface", "driver %s has native XDP but not XDP_REDIRECT (%s): packets cannot be forwarded to the other NIC in the driver", drv, l.Features)
		default:
			detail := "native, driver " + drv
			if l.FeaturesKnown {
				detail += " (" + l.Features.String() + ")"
			}
			h.add(xdpCheck, StatusOK, "", "%s", detail)
		}
		if l.ProgID != 0 {
			h.add(xdpCheck, StatusInfo, "", "XDP program %d is attached (%s); run replaces it through its pinned link", l.ProgID, l.AttachMode)
		}
	}
	for _, m := range absent {
		h.add(check, sev, m.path, "%s", m.msg)
	}
}

func fixCmd(fix, addr, dev string) string {
	if strings.HasSuffix(fix, "ip addr add") {
		return fix + " " + addr + " dev " + dev
	}
	return fix
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func (h *hostChecker) sysctls() {
	if v, err := hostprobe.Sysctl("net.ipv4.ip_forward"); err == nil && v != "0" {
		h.add("forwarding", StatusWarning, "", "net.ipv4.ip_forward is on: edgeproxy does not need it and a DMZ host should not route between its NICs; sysctl -w net.ipv4.ip_forward=0")
	}
	first, last, err := hostprobe.PortRange("net.ipv4.ip_local_port_range")
	if err != nil {
		return
	}
	r := h.c.FastPath.SNATPorts
	if r.IsZero() {
		return
	}
	reserved, _ := hostprobe.Sysctl("net.ipv4.ip_local_reserved_ports")
	kept := hostPorts(first, last, r, reserved)
	switch {
	case kept < minHostPorts:
		h.add("SNAT ports", StatusWarning, "", "%s leaves the host %d of its ephemeral ports %d-%d: its own connections (the L7 proxy's to members, monitors) run out of source ports; narrow fastpath.snat_ports or move net.ipv4.ip_local_port_range out of it", r, kept, first, last)
	case int(r.First) <= last && int(r.Last) >= first:
		h.add("SNAT ports", StatusInfo, "", "%s (%d connections per SNAT address, member and member port) overlaps the ephemeral range %d-%d: run reserves it with net.ipv4.ip_local_reserved_ports, the host keeps %d ports", r, r.Size(), first, last, kept)
	default:
		h.add("SNAT ports", StatusOK, "", "%s (%d connections per SNAT address, member and member port) is outside the ephemeral range %d-%d", r, r.Size(), first, last)
	}
}

// minHostPorts is the fewest ephemeral ports the SNAT range may leave the
// host without a warning.
const minHostPorts = 1024

// hostPorts counts the ports of the ephemeral range first-last the host
// keeps once the SNAT range r is reserved beside the ports reserved
// already (net.ipv4.ip_local_reserved_ports, unreadable: none).
func hostPorts(first, last int, r config.PortRange, reserved string) int {
	others, err := portlist.Parse(reserved)
	if err != nil {
		others = nil
	}
	n := 0
	for p := max(first, 1); p <= min(last, 65535); p++ {
		if !r.Contains(uint16(p)) && !others.Contains(uint16(p)) {
			n++
		}
	}
	return n
}
