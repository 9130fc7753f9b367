package diagnose

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/edgeproxy/edgeproxy/config"
	"github.com/vishvananda/netlink"
)

// Listeners: every virtual's address and port is bound (https/http) or
// handled by XDP (fastl4) on the external NIC, the VIPs are on the
// external NIC, and no other process owns the ports (seed 000: "443 isn't
// listening on the public IP").
var Listeners = Check{
	Name: "listeners",
	Doc:  "virtual addresses on the external NIC, bound by edgeproxy or handled by its XDP program, no other owner",
	Run:  checkListeners,
}

// XDP attach modes (IFLA_XDP_ATTACHED).
const (
	xdpAttachedDrv   = 1
	xdpAttachedSKB   = 2
	xdpAttachedHW    = 3
	xdpAttachedMulti = 4
)

func checkListeners(_ context.Context, e *Env) []Finding {
	var f findings
	c := e.Config
	h, err := e.netlink()
	if err != nil {
		f.add(Fail, "host", err.Error(), "run diagnose as root on the proxy host")
		return f
	}
	ext := c.Network.External.Interface
	_, extErr := linkByName(h, ext, "network.external.interface")

	f = append(f, vipFindings(h, ext, extErr, c.Virtuals)...)

	socks, sockErr := e.listeningSockets()
	if sockErr != nil {
		f.add(Fail, "sockets", sockErr.Error(), "run diagnose on the proxy host with access to /proc")
	}

	var fast []*config.Virtual
	for _, v := range c.Virtuals {
		if v.Mode == config.ModeFastL4 {
			fast = append(fast, v)
		}
	}
	xdpOK := map[string]string{} // NIC -> description of its program, when attached
	if len(fast) > 0 {
		names := virtualNames(fast)
		for _, nic := range []struct {
			cfg  config.NIC
			role string
			path string
		}{
			{c.Network.External, "client packets to the VIPs", "network.external"},
			{c.Network.Internal, "members' replies", "network.internal"},
		} {
			desc, fd := xdpFinding(h, nic.cfg, nic.role, nic.path, names)
			f = append(f, fd)
			if desc != "" {
				xdpOK[nic.cfg.Interface] = desc
			}
		}
		f = append(f, pinFinding(c.FastPath.PinPath))
	}

	if sockErr != nil {
		return f
	}
	for _, v := range c.Virtuals {
		f = append(f, e.virtualListener(v, socks, ext, xdpOK[ext]))
	}
	return f
}

// vipFindings: each VIP is an address of the external NIC.
func vipFindings(h *netlink.Handle, ext string, extErr error, virtuals []*config.Virtual) findings {
	var f findings
	// Where each local address lives.
	where := map[netip.Addr][]string{}
	if links, err := h.LinkList(); err == nil {
		for _, lk := range links {
			as, err := h.AddrList(lk, netlink.FAMILY_ALL)
			if err != nil {
				continue
			}
			for _, a := range as {
				if p, ok := prefixOf(a.IPNet); ok {
					where[p.Addr()] = append(where[p.Addr()], lk.Attrs().Name)
				}
			}
		}
	}

	seen := map[netip.Addr]bool{}
	for _, v := range virtuals {
		a := v.Listen.Addr().Unmap()
		if seen[a] {
			continue
		}
		seen[a] = true
		subj := "VIP " + a.String()
		switch {
		case a.IsUnspecified():
			f.add(Warn, "virtual "+v.Name, fmt.Sprintf("%s listens on every address of the host, the internal NIC's included", v.Listen),
				"listen on the published address (a VIP on "+orIf(ext, "the external NIC")+")")
		case extErr != nil:
			f.add(Fail, subj, extErr.Error(), "set network.external.interface to the external NIC's name")
		case slices.Contains(where[a], ext):
			f.pass(subj, "on %s", ext)
		case len(where[a]) > 0:
			f.add(Fail, subj, fmt.Sprintf("%s is on %s, not on the external NIC %s", a, strings.Join(where[a], ", "), ext),
				fmt.Sprintf("move it: ip addr del %s dev %s; ip addr add %s dev %s (or run edgeproxy netcfg apply)",
					hostPrefix(a), where[a][0], hostPrefix(a), ext))
		default:
			f.add(Fail, subj, fmt.Sprintf("%s is not an address of this host: nothing answers ARP/ND for it on %s", a, ext),
				fmt.Sprintf("run edgeproxy netcfg apply, or: ip addr add %s dev %s", hostPrefix(a), ext))
			f.about([]string{"vip " + a.String()}, nil)
		}
	}

	return f
}

// virtualListener: a virtual's port is bound by edgeproxy (https/http)
// or handled by its XDP program (fastl4, desc describing the program
// attached to ext), and no other process owns it.
func (e *Env) virtualListener(v *config.Virtual, socks []socket, ext, desc string) Finding {
	var f findings
	subj := fmt.Sprintf("%s %s", v.Name, v.Listen)
	var holders []string
	var foreign []string
	unknown := 0
	for _, s := range socks {
		if !s.accepts(v.Listen) {
			continue
		}
		o, ok := e.owner(s.Inode)
		switch {
		case !ok:
			unknown++
			holders = append(holders, fmt.Sprintf("socket %s (owner not found)", s.Local))
		case e.isProxy(o.PID, o.Comm):
			holders = append(holders, fmt.Sprintf("%s on %s", o, s.Local))
		default:
			foreign = append(foreign, fmt.Sprintf("%s on %s", o, s.Local))
		}
	}
	if v.Mode == config.ModeFastL4 {
		switch {
		case desc == "":
			f.add(Fail, subj, fmt.Sprintf("fastl4 virtual with no XDP program on %s: nothing translates %s", orIf(ext, "the external NIC"), v.Listen),
				"start edgeproxy run and read its log for the XDP attach error")
		case len(foreign) > 0:
			f.add(Warn, subj, fmt.Sprintf("handled by %s on %s, but a local socket also listens: %s; it never sees these packets",
				desc, ext, strings.Join(foreign, ", ")),
				"stop or rebind the other listener so that the host's state matches what the clients reach")
		default:
			f.pass(subj, "handled by %s on %s", desc, ext)
		}
		return f[0]
	}
	switch {
	case len(foreign) > 0:
		ev := "the port is owned by another process: " + strings.Join(foreign, ", ")
		if d := e.daemon(); e.IsProxy == nil && d.PID == 0 {
			ev += " (" + d.Why + ")"
		}
		f.add(Fail, subj, ev,
			fmt.Sprintf("stop it or move it off %s (e.g. a web server bound to every address), then restart edgeproxy", v.Listen))
	case len(holders) == 0:
		f.add(Fail, subj, "nothing listens on "+v.Listen.String(),
			"start edgeproxy run and read its log for the listen error")
	case unknown > 0:
		f.pass(subj, "listening: %s (run as root to name the owner)", strings.Join(holders, ", "))
	default:
		f.pass(subj, "listening: %s", strings.Join(holders, ", "))
	}
	return f[0]
}

// xdpFinding reports the XDP program on one NIC; desc is non-empty when
// one is attached.
func xdpFinding(h *netlink.Handle, nic config.NIC, role, path string, virtuals string) (desc string, fd Finding) {
	subj := "XDP " + orIf(nic.Interface, path)
	if nic.XDPMode == config.XDPOff {
		return "", Finding{Subject: subj, Verdict: Fail,
			Evidence: fmt.Sprintf("%s.xdp_mode is off but fastl4 virtuals (%s) need XDP on this NIC for the %s", path, virtuals, role),
			Fix:      fmt.Sprintf("set %s.xdp_mode to native (or generic), or publish these virtuals in https mode", path)}
	}
	lk, err := linkByName(h, nic.Interface, path+".interface")
	if err != nil {
		return "", Finding{Subject: subj, Verdict: Fail, Evidence: err.Error(), Fix: "set " + path + ".interface to the NIC's name"}
	}
	x := lk.Attrs().Xdp
	if x == nil || !x.Attached || x.ProgId == 0 {
		return "", Finding{Subject: subj, Verdict: Fail,
			Evidence: fmt.Sprintf("no XDP program attached to %s: the %s of fastl4 virtuals (%s) are not translated", nic.Interface, role, virtuals),
			Fix:      "start edgeproxy run (it attaches the program); `ip link show " + nic.Interface + "` shows xdp when attached"}
	}
	name := ""
	if p, err := ebpf.NewProgramFromID(ebpf.ProgramID(x.ProgId)); err == nil {
		if info, err := p.Info(); err == nil {
			name = info.Name
		}
		p.Close()
	}
	desc = fmt.Sprintf("XDP program %q (id %d, %s)", name, x.ProgId, xdpModeName(x.AttachMode))
	if name == "" {
		desc = fmt.Sprintf("XDP program id %d (%s)", x.ProgId, xdpModeName(x.AttachMode))
	}
	fd = Finding{Subject: subj, Verdict: Pass, Evidence: desc + " attached to " + nic.Interface}
	if x.AttachMode == xdpAttachedSKB && nic.XDPMode != config.XDPGeneric {
		fd.Verdict = Warn
		fd.Evidence += ": generic (SKB) mode runs after the kernel allocated the packet, far slower than native"
		fd.Fix = "use a driver with native XDP, or set " + path + ".xdp_mode: generic to accept it"
	}
	return desc, fd
}

func xdpModeName(m uint32) string {
	switch m {
	case xdpAttachedDrv:
		return "native"
	case xdpAttachedSKB:
		return "generic"
	case xdpAttachedHW:
		return "offloaded"
	case xdpAttachedMulti:
		return "multiple modes"
	}
	return fmt.Sprintf("mode %d", m)
}

// pinFinding reports the maps pinned under the fast path's pin path: the
// flow table survives daemon restarts only when pinned.
func pinFinding(pinPath string) Finding {
	if pinPath == "" {
		pinPath = config.DefaultPinPath
	}
	subj := "pinned maps " + pinPath
	if _, err := os.Stat(pinPath); err != nil {
		return Finding{Subject: subj, Verdict: Fail,
			Evidence: fmt.Sprintf("%s: the fast path's maps are not pinned (the daemon has not loaded it, or bpffs is not mounted)", errText(err)),
			Fix:      "mount bpffs (mount -t bpf bpf /sys/fs/bpf) and start edgeproxy run"}
	}
	var maps, other []string
	_ = filepath.WalkDir(pinPath, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(pinPath, p)
		m, err := ebpf.LoadPinnedMap(p, &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			other = append(other, rel)
			return nil
		}
		m.Close()
		maps = append(maps, rel)
		return nil
	})
	if len(maps) == 0 {
		ev := "no BPF map pinned under " + pinPath
		if len(other) > 0 {
			ev += " (other objects: " + strings.Join(other, ", ") + ")"
		}
		return Finding{Subject: subj, Verdict: Fail, Evidence: ev, Fix: "start edgeproxy run; check fastpath.pin_path"}
	}
	ev := "maps: " + strings.Join(maps, ", ")
	if len(other) > 0 {
		ev += "; other: " + strings.Join(other, ", ")
	}
	return Finding{Subject: subj, Verdict: Pass, Evidence: ev}
}

func linkByName(h *netlink.Handle, name, key string) (netlink.Link, error) {
	if name == "" {
		return nil, fmt.Errorf("%s is not set", key)
	}
	lk, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, fmt.Errorf("interface %s (%s) does not exist on this host", name, key)
		}
		return nil, fmt.Errorf("look up interface %s: %w", name, err)
	}
	return lk, nil
}

func virtualNames(vs []*config.Virtual) string {
	var n []string
	for _, v := range vs {
		n = append(n, v.Name)
	}
	return strings.Join(n, ", ")
}

func orIf(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

func hostPrefix(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// errText drops the "op path:" prefix of a *fs.PathError for messages
// that already name the path.
func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Path + ": " + pe.Err.Error()
	}
	return err.Error()
}
