package checkcmd

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/hostprobe"
)

// Status of a host check.
const (
	StatusOK      = "ok"
	StatusInfo    = "info"
	StatusWarning = "warning"
	StatusError   = "error"
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
// namespace) against the configuration.
func hostChecks(c *config.Config) ([]HostCheck, []Finding) {
	h := &hostChecker{c: c}
	xdp := c.NeedsXDP()
	must := StatusError
	if !xdp {
		must = StatusWarning
	}

	// Kernel.
	if k, err := hostprobe.KernelVersion(); err != nil {
		h.add("kernel", StatusWarning, "", "cannot tell the kernel release: %v", err)
	} else if missing := k.Missing(); len(missing) > 0 {
		var ms []string
		for _, f := range missing {
			ms = append(ms, f.Name+" ("+f.Version()+")")
		}
		h.add("kernel", must, "", "%s is older than %d.%d; missing: %s; upgrade the kernel", k, hostprobe.MinMajor, hostprobe.MinMinor, strings.Join(ms, "; "))
	} else {
		h.add("kernel", StatusOK, "", "%s (%d.%d or newer needed)", k, hostprobe.MinMajor, hostprobe.MinMinor)
	}

	// BTF.
	switch err := hostprobe.CheckBTF(hostprobe.BTFPath); {
	case err == nil:
		h.add("BTF", StatusOK, "", "%s", hostprobe.BTFPath)
	case errors.Is(err, os.ErrNotExist):
		h.add("BTF", must, "", "%s is missing: the fast path needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (the default in Debian, Ubuntu and RHEL kernels)", hostprobe.BTFPath)
	default:
		h.add("BTF", must, "", "%v", err)
	}

	// BPF file system for the pinned maps and links.
	pin := c.FastPath.PinPath
	if ok, base, err := hostprobe.PinDirOnBPFFS(pin); err != nil {
		h.add("bpffs", must, "fastpath.pin_path", "cannot inspect %s: %v", base, err)
	} else if !ok {
		h.add("bpffs", must, "fastpath.pin_path", "%s is not on a BPF file system, so pinned flows would not survive a restart: mount -t bpf bpf %s (and add \"bpf %s bpf defaults 0 0\" to /etc/fstab)", pin, hostprobe.BPFFSPath, hostprobe.BPFFSPath)
	} else {
		h.add("bpffs", StatusOK, "", "%s is on bpffs (mounted at %s)", pin, base)
	}

	h.privileges(xdp)
	h.nic(c.Network.External, "network.external", xdp, true)
	h.nic(c.Network.Internal, "network.internal", xdp, false)
	h.sysctls()
	return h.checks, h.found
}

func (h *hostChecker) privileges(xdp bool) {
	caps, err := hostprobe.EffectiveCaps()
	if err != nil {
		h.add("privileges", StatusWarning, "", "cannot read the capabilities: %v", err)
		return
	}
	var missing []string
	if xdp && !caps.CanLoadBPF() {
		missing = append(missing, "CAP_BPF", "CAP_PERFMON")
	}
	if (xdp || h.c.Network.Managed()) && !caps.Has(hostprobe.CapNetAdmin) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	lowest := 1024
	if v, err := hostprobe.Sysctl("net.ipv4.ip_unprivileged_port_start"); err == nil {
		if n, err := strconv.Atoi(v); err == nil {
			lowest = n
		}
	}
	for _, v := range h.c.Virtuals {
		if v != nil && v.IsL7() && v.Listen.IsValid() && int(v.Listen.Port()) < lowest && !caps.Has(hostprobe.CapNetBindService) {
			missing = append(missing, "CAP_NET_BIND_SERVICE")
			break
		}
	}
	if len(missing) > 0 {
		h.add("privileges", StatusError, "", "missing %s: run edgeproxy as root, or grant them (systemd: AmbientCapabilities=%s)", strings.Join(missing, ", "), strings.Join(missing, " "))
		return
	}
	who := "uid " + strconv.Itoa(os.Geteuid())
	if os.Geteuid() == 0 {
		who = "root"
	}
	h.add("privileges", StatusOK, "", "%s with the capabilities run needs", who)
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
	if int(r.First) <= last && int(r.Last) >= first {
		h.add("SNAT ports", StatusInfo, "", "%s overlaps the ephemeral range %d-%d; run reserves it with net.ipv4.ip_local_reserved_ports", r, first, last)
	} else {
		h.add("SNAT ports", StatusOK, "", "%s is outside the ephemeral range %d-%d", r, first, last)
	}
}
