// Package lab builds the namespace topology that edgeproxy's tests,
// demo and benchmarks run in (package runner runs the daemon inside it): an Internet client, the proxy host with an
// external and an internal NIC, and a backend network with pool members.
//
//	client ns            proxy ns                      backend ns
//	c0 198.18.0.1  <->  ext0 198.18.0.2      int0 198.19.0.2  <->  b0 198.19.0.1
//	   2001:db8:1::1        2001:db8:1::2         2001:db8:2::2        2001:db8:2::1
//	                    VIP 198.18.0.10                            lo   198.19.1.11, .12 ...
//	                        2001:db8:1::10                              2001:db8:3::11, ::12 ...
//
// The proxy's default route points at the client side (the "Internet");
// the members' subnet is routed through the internal next hop. The backend
// has no default route: replies reach the proxy only when the proxy SNATs
// to its internal address. Every veth end has TX checksum offload off, and
// the peers of ext0/int0 carry an XDP_PASS program so that XDP_REDIRECT
// into them works.
//
// The package is part of the shipped binary (`edgeproxy demo`), so it
// never imports testing; the helpers that take a testing.TB live in
// internal/testnet and internal/labtest.
package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/edgeproxy/edgeproxy/internal/nsrun"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Interface names inside the namespaces.
const (
	ClientIf  = "c0"
	ExtIf     = "ext0"
	IntIf     = "int0"
	BackendIf = "b0"
	// MemberIf holds the members' addresses in the backend namespace (this
	// kernel may lack the dummy driver, so loopback stands in).
	MemberIf = "lo"
)

// Options shape a Lab.
type Options struct {
	// Members is the number of pool member addresses in the backend
	// (default 2).
	Members int
	// NoAddresses leaves ext0 and int0 without addresses, VIPs and
	// routes, for tests of the code that configures them.
	NoAddresses bool
	// NoDummyXDP skips the XDP_PASS programs on c0 and b0.
	NoDummyXDP bool
	// Prefix names the namespaces (default "ept"); a random suffix keeps
	// parallel labs apart.
	Prefix string
}

// Lab is one instance of the topology.
type Lab struct {
	Client, Proxy, Backend *NS

	ClientAddr4, ClientAddr6 netip.Addr
	ExtAddr4, ExtAddr6       netip.Addr
	VIP4, VIP6               netip.Addr
	IntAddr4, IntAddr6       netip.Addr
	RouterAddr4, RouterAddr6 netip.Addr
	Members4, Members6       []netip.Addr
	// MemberNet4/6 are the members' subnets, routed via the router address.
	MemberNet4, MemberNet6 netip.Prefix

	dummies []*link.Link
}

// NS is a named network namespace.
type NS struct {
	Name   string
	handle netns.NsHandle
}

// Build builds a lab; the caller must Close it.
func Build(opts Options) (_ *Lab, err error) {
	if opts.Members <= 0 {
		opts.Members = 2
	}
	if opts.Members > 200 {
		return nil, fmt.Errorf("build lab: %d members, at most 200", opts.Members)
	}
	if opts.Prefix == "" {
		opts.Prefix = "ept"
	}
	var suffix [3]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return nil, fmt.Errorf("build lab: %w", err)
	}
	id := opts.Prefix + "-" + hex.EncodeToString(suffix[:])
	lab := Plan(opts)
	defer func() {
		if err != nil {
			lab.Close()
		}
	}()
	for _, p := range []struct {
		dst  **NS
		role string
	}{{&lab.Client, "client"}, {&lab.Proxy, "proxy"}, {&lab.Backend, "backend"}} {
		ns, err := NewNS(id + "-" + p.role)
		if err != nil {
			return nil, err
		}
		*p.dst = ns
	}
	if err := lab.wire(opts); err != nil {
		return nil, fmt.Errorf("build lab %s: %w", id, err)
	}
	return lab, nil
}

// Plan returns the addresses of the lab Build makes for opts (at most
// 200 members), without creating anything: its namespaces are nil. It
// serves code that only needs the addresses, such as configuration text.
func Plan(opts Options) *Lab {
	if opts.Members <= 0 {
		opts.Members = 2
	}
	opts.Members = min(opts.Members, 200)
	lab := &Lab{
		ClientAddr4: netip.MustParseAddr("198.18.0.1"), ClientAddr6: netip.MustParseAddr("2001:db8:1::1"),
		ExtAddr4: netip.MustParseAddr("198.18.0.2"), ExtAddr6: netip.MustParseAddr("2001:db8:1::2"),
		VIP4: netip.MustParseAddr("198.18.0.10"), VIP6: netip.MustParseAddr("2001:db8:1::10"),
		IntAddr4: netip.MustParseAddr("198.19.0.2"), IntAddr6: netip.MustParseAddr("2001:db8:2::2"),
		RouterAddr4: netip.MustParseAddr("198.19.0.1"), RouterAddr6: netip.MustParseAddr("2001:db8:2::1"),
		MemberNet4: netip.MustParsePrefix("198.19.1.0/24"), MemberNet6: netip.MustParsePrefix("2001:db8:3::/64"),
	}
	for i := 0; i < opts.Members; i++ {
		lab.Members4 = append(lab.Members4, netip.AddrFrom4([4]byte{198, 19, 1, byte(11 + i)}))
		a6 := netip.MustParseAddr("2001:db8:3::").As16()
		a6[15] = byte(0x11 + i)
		lab.Members6 = append(lab.Members6, netip.AddrFrom16(a6))
	}
	return lab
}

// NewNS creates a named network namespace (visible to `ip netns`) with
// its loopback up.
func NewNS(name string) (*NS, error) {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("create netns %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		_ = exec.Command("ip", "netns", "del", name).Run()
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	ns := &NS{Name: name, handle: h}
	if err := ns.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}); err != nil {
		ns.Close()
		return nil, fmt.Errorf("set lo up in %s: %w", name, err)
	}
	return ns, nil
}

// Close deletes the namespace.
func (n *NS) Close() {
	if n == nil {
		return
	}
	if n.handle.IsOpen() {
		n.handle.Close()
	}
	_ = exec.Command("ip", "netns", "del", n.Name).Run()
}

// Handle returns the namespace's file handle (owned by n).
func (n *NS) Handle() netns.NsHandle { return n.handle }

// Do runs fn inside the namespace (nsrun.Do). Sockets created by fn stay
// in the namespace for their whole life.
func (n *NS) Do(fn func() error) error {
	return nsrun.Do(n.handle, fn)
}

// Listen opens a listener inside the namespace.
func (n *NS) Listen(network, addr string) (ln net.Listener, err error) {
	err = n.Do(func() error {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket opens a packet listener inside the namespace.
func (n *NS) ListenPacket(network, addr string) (pc net.PacketConn, err error) {
	err = n.Do(func() error {
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// Dial connects from inside the namespace.
func (n *NS) Dial(network, addr string) (net.Conn, error) {
	return n.DialContext(context.Background(), network, addr)
}

// DialContext connects from inside the namespace; it fits
// http.Transport.DialContext.
func (n *NS) DialContext(ctx context.Context, network, addr string) (c net.Conn, err error) {
	err = n.Do(func() error {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Command returns a command that runs inside the namespace.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Fataler is the part of a testing.TB that Run uses.
type Fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Output runs a command inside the namespace, for at most 2 minutes, and
// returns its combined output.
func (n *NS) Output(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("run %s %s in %s: %w\n%s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return string(out), nil
}

// Run is Output for a test: a failing command fails the test.
func (n *NS) Run(t Fataler, name string, args ...string) string {
	t.Helper()
	out, err := n.Output(name, args...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return out
}

// Close tears the lab down.
func (l *Lab) Close() {
	for _, d := range l.dummies {
		if *d != nil {
			(*d).Close()
		}
	}
	l.dummies = nil
	for _, ns := range []*NS{l.Client, l.Proxy, l.Backend} {
		ns.Close()
	}
}

func (l *Lab) wire(opts Options) error {
	// Veth pairs are created inside the proxy namespace with their peers
	// moved to the client and backend namespaces, so the fixed interface
	// names never meet in one namespace and labs can run in parallel.
	ph, err := netlink.NewHandleAt(l.Proxy.handle)
	if err != nil {
		return fmt.Errorf("netlink handle in proxy: %w", err)
	}
	defer ph.Close()
	for _, p := range []struct {
		local, peer string
		ns          *NS
	}{
		{ExtIf, ClientIf, l.Client}, {IntIf, BackendIf, l.Backend},
	} {
		v := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: p.local},
			PeerName:      p.peer,
			PeerNamespace: netlink.NsFd(int(p.ns.handle)),
		}
		if err := ph.LinkAdd(v); err != nil {
			return fmt.Errorf("add veth %s/%s: %w", p.local, p.peer, err)
		}
	}

	type addrs struct {
		ns    *NS
		ifc   string
		addrs []netip.Prefix
	}
	p := func(a netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(a, bits) }
	plan := []addrs{
		{l.Client, ClientIf, []netip.Prefix{p(l.ClientAddr4, 24), p(l.ClientAddr6, 64)}},
		{l.Backend, BackendIf, []netip.Prefix{p(l.RouterAddr4, 24), p(l.RouterAddr6, 64)}},
		{l.Proxy, ExtIf, nil},
		{l.Proxy, IntIf, nil},
	}
	var mem []netip.Prefix
	for i := range l.Members4 {
		mem = append(mem, p(l.Members4[i], 32), p(l.Members6[i], 128))
	}
	plan = append(plan, addrs{l.Backend, MemberIf, mem})
	if !opts.NoAddresses {
		plan[2].addrs = append(l.extPrefixes(), p(l.VIP4, 32), p(l.VIP6, 128))
		plan[3].addrs = l.intPrefixes()
	}
	for _, a := range plan {
		if err := a.ns.Do(func() error { return setupLink(a.ifc, a.addrs) }); err != nil {
			return fmt.Errorf("set up %s in %s: %w", a.ifc, a.ns.Name, err)
		}
	}
	for _, a := range []struct {
		ns  *NS
		ifc string
	}{{l.Client, ClientIf}, {l.Proxy, ExtIf}, {l.Proxy, IntIf}, {l.Backend, BackendIf}} {
		if out, err := a.ns.Command(context.Background(), "ethtool", "-K", a.ifc, "tx", "off").CombinedOutput(); err != nil {
			return fmt.Errorf("turn off tx checksum offload on %s: %v: %s", a.ifc, err, strings.TrimSpace(string(out)))
		}
	}
	if !opts.NoAddresses {
		if err := l.Proxy.Do(func() error {
			return addRoutes(
				route{IntIf, l.MemberNet4, l.RouterAddr4},
				route{IntIf, l.MemberNet6, l.RouterAddr6},
				route{ExtIf, netip.Prefix{}, l.ClientAddr4},
				route{ExtIf, netip.Prefix{}, l.ClientAddr6},
			)
		}); err != nil {
			return fmt.Errorf("add proxy routes: %w", err)
		}
	}
	if !opts.NoDummyXDP {
		for _, a := range []struct {
			ns  *NS
			ifc string
		}{{l.Client, ClientIf}, {l.Backend, BackendIf}} {
			var lk link.Link
			if err := a.ns.Do(func() (err error) {
				lk, err = AttachPass(a.ifc)
				return err
			}); err != nil {
				return err
			}
			l.dummies = append(l.dummies, &lk)
		}
	}
	return nil
}

func setupLink(name string, addrs []netip.Prefix) error {
	lk, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	for _, a := range addrs {
		na := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}}
		if a.Addr().Is6() {
			na.Flags = nodad
		}
		if err := netlink.AddrAdd(lk, na); err != nil {
			return fmt.Errorf("add address %s: %w", a, err)
		}
	}
	return netlink.LinkSetUp(lk)
}

// nodad is IFA_F_NODAD: test addresses are usable at once.
const nodad = 0x02

type route struct {
	dev string
	dst netip.Prefix
	via netip.Addr
}

func addRoutes(rs ...route) error {
	for _, r := range rs {
		lk, err := netlink.LinkByName(r.dev)
		if err != nil {
			return err
		}
		nr := &netlink.Route{LinkIndex: lk.Attrs().Index, Gw: r.via.AsSlice()}
		if r.dst.IsValid() {
			nr.Dst = &net.IPNet{IP: r.dst.Addr().AsSlice(), Mask: net.CIDRMask(r.dst.Bits(), r.dst.Addr().BitLen())}
		} else if r.via.Is4() {
			nr.Dst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
		} else {
			nr.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		if err := netlink.RouteReplace(nr); err != nil {
			return fmt.Errorf("add route %v via %s dev %s: %w", r.dst, r.via, r.dev, err)
		}
	}
	return nil
}

// AttachPass attaches a native XDP program returning XDP_PASS to the named
// interface of the calling thread's namespace. A veth only accepts frames
// redirected into it by XDP when its peer runs an XDP program.
func AttachPass(ifname string) (link.Link, error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("attach XDP pass program: %w", err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:    "xdp_pass",
		Type:    ebpf.XDP,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 2), // XDP_PASS
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load XDP pass program: %w", err)
	}
	defer prog.Close()
	lk, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifc.Index, Flags: link.XDPDriverMode})
	if err != nil {
		return nil, fmt.Errorf("attach XDP pass program to %s: %w", ifname, err)
	}
	return lk, nil
}

// BPFFSRoot is a BPF file system mounted outside /sys: `ip netns exec`
// mounts a fresh /sys for the command it runs, which hides
// /sys/fs/bpf, so pins shared between a process in a lab namespace and
// the rest of the host live here.
const BPFFSRoot = "/run/edgeproxy-bpffs"

// PinDir returns a new directory on a BPF file system that processes
// started with NS.Command see too, and mounts that file system first
// when needed. The caller removes the directory with os.RemoveAll.
func PinDir(name string) (string, error) {
	if err := os.MkdirAll(BPFFSRoot, 0o700); err != nil {
		return "", fmt.Errorf("create %s: %w", BPFFSRoot, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(BPFFSRoot, &st); err != nil {
		return "", fmt.Errorf("stat %s: %w", BPFFSRoot, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		if err := unix.Mount("bpf", BPFFSRoot, "bpf", 0, "mode=0700"); err != nil {
			return "", fmt.Errorf("mount bpffs on %s: %w", BPFFSRoot, err)
		}
	}
	dir := filepath.Join(BPFFSRoot, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("create pin directory: %w", err)
	}
	return dir, nil
}

// RecreateInternal deletes int0, and so its peer b0, then wires a new
// pair the way Build did: addresses, routes and b0's XDP program. The new
// int0 has another ifindex and MAC, as a NIC re-created under a running
// proxy would.
func (l *Lab) RecreateInternal() error {
	ph, err := netlink.NewHandleAt(l.Proxy.handle)
	if err != nil {
		return fmt.Errorf("netlink handle in proxy: %w", err)
	}
	defer ph.Close()
	old, err := ph.LinkByName(IntIf)
	if err != nil {
		return fmt.Errorf("find %s: %w", IntIf, err)
	}
	if err := ph.LinkDel(old); err != nil {
		return fmt.Errorf("delete %s: %w", IntIf, err)
	}
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: IntIf}, PeerName: BackendIf, PeerNamespace: netlink.NsFd(int(l.Backend.handle))}
	if err := ph.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s/%s: %w", IntIf, BackendIf, err)
	}
	p := func(a netip.Addr, bits int) netip.Prefix { return netip.PrefixFrom(a, bits) }
	if err := l.Backend.Do(func() error {
		return setupLink(BackendIf, []netip.Prefix{p(l.RouterAddr4, 24), p(l.RouterAddr6, 64)})
	}); err != nil {
		return fmt.Errorf("set up %s: %w", BackendIf, err)
	}
	if err := l.Proxy.Do(func() error {
		if err := setupLink(IntIf, l.intPrefixes()); err != nil {
			return err
		}
		return addRoutes(route{IntIf, l.MemberNet4, l.RouterAddr4}, route{IntIf, l.MemberNet6, l.RouterAddr6})
	}); err != nil {
		return fmt.Errorf("set up %s: %w", IntIf, err)
	}
	for _, a := range []struct {
		ns  *NS
		ifc string
	}{{l.Proxy, IntIf}, {l.Backend, BackendIf}} {
		if out, err := a.ns.Command(context.Background(), "ethtool", "-K", a.ifc, "tx", "off").CombinedOutput(); err != nil {
			return fmt.Errorf("turn off tx checksum offload on %s: %v: %s", a.ifc, err, strings.TrimSpace(string(out)))
		}
	}
	var lk link.Link
	if err := l.Backend.Do(func() (err error) {
		lk, err = AttachPass(BackendIf)
		return err
	}); err != nil {
		return err
	}
	l.dummies = append(l.dummies, &lk)
	return nil
}
