package l4

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/portlist"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
	"github.com/edgeproxy/edgeproxy/netcfg"
)

// env is a fast path opened in the proxy namespace of a lab.
type env struct {
	t    testing.TB
	lab  *testnet.Lab
	fp   *FastPath
	opts Options
	spec *Spec
	nics map[string]nicAddr // by name, filled by nic
}

// nicAddr is a NIC of the proxy namespace as a frame arriving on it sees
// it.
type nicAddr struct {
	ifindex int
	mac     net.HardwareAddr
}

// nic is the NIC name of the proxy namespace, looked up once.
func (e *env) nic(name string) nicAddr {
	e.t.Helper()
	if n, ok := e.nics[name]; ok {
		return n
	}
	n := nicAddr{e.ifindex(name), linkMAC(e.t, e.lab.Proxy, name)}
	if e.nics == nil {
		e.nics = map[string]nicAddr{}
	}
	e.nics[name] = n
	return n
}

// testPinPath is a fresh directory of the BPF file system, removed (with
// whatever is pinned there) when the test ends.
func testPinPath(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	p := filepath.Join("/sys/fs/bpf", "edgeproxy-test-"+hex.EncodeToString(b[:]))
	t.Cleanup(func() {
		if err := Cleanup(p); err != nil {
			t.Errorf("clean up pins: %v", err)
		}
	})
	return p
}

// fastl4 is a virtual of a test spec with F5's defaults (automap,
// reset on timeout), changed by tune.
func fastl4(name, listen, pool string, port uint16, tune ...func(*Virtual)) Virtual {
	v := Virtual{Name: name, Listen: netip.MustParseAddrPort(listen), Proto: TCP, Pool: pool, Port: port,
		Automap: true, ResetOnTimeout: true}
	for _, f := range tune {
		f(&v)
	}
	return v
}

// addrs parses addresses.
func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// snatPorts sets the SNAT port range of a test fast path.
func snatPorts(first, last uint16) func(*Options) {
	return func(o *Options) { o.SNATPorts = portlist.Range{First: first, Last: last} }
}

// testSpec is the fast path of the lab: pools fe4 and fe6 of the lab's
// members, one4 of the first IPv4 member, and the given virtuals.
func testSpec(lab *testnet.Lab, virtuals ...Virtual) *Spec {
	pool := func(as ...netip.Addr) []Member {
		var ms []Member
		for _, a := range as {
			ms = append(ms, Member{Name: a.String(), Addr: a, Up: true})
		}
		return ms
	}
	s := &Spec{
		Virtuals: virtuals,
		Pools:    map[string][]Member{"fe4": pool(lab.Members4...), "fe6": pool(lab.Members6...), "one4": pool(lab.Members4[0])},
		Host: Host{
			Addresses: []netip.Prefix{netip.PrefixFrom(lab.ExtAddr4, 24), netip.PrefixFrom(lab.ExtAddr6, 64),
				netip.PrefixFrom(lab.IntAddr4, 24), netip.PrefixFrom(lab.IntAddr6, 64)},
			Internal: []netip.Prefix{netip.PrefixFrom(lab.IntAddr4, 24), netip.PrefixFrom(lab.IntAddr6, 64), lab.MemberNet4, lab.MemberNet6},
		},
	}
	for _, v := range virtuals {
		s.Host.VIPs = append(s.Host.VIPs, v.Listen.Addr())
	}
	return s
}

// newEnv builds a lab, opens the fast path in its proxy namespace on ext0
// and int0 and applies the spec mk builds for the lab.
func newEnv(t testing.TB, mk func(*testnet.Lab) *Spec, tune func(*Options)) *env {
	t.Helper()
	testnet.RequireRoot(t)
	lab := testnet.New(t, testnet.Options{Members: 2})
	e := &env{t: t, lab: lab}
	e.spec = mk(lab)
	e.opts = Options{
		PinPath:    testPinPath(t),
		ExtIf:      testnet.ExtIf,
		IntIf:      testnet.IntIf,
		MaxFlows:   1024,
		MaglevSize: 251,
		Logger:     newEnvLogger(t),
	}
	if tune != nil {
		tune(&e.opts)
	}
	e.open()
	t.Cleanup(func() { e.fp.Close() })
	return e
}

// open opens (or re-opens) the fast path and applies the spec with the
// env's options, after netcfg has set the sysctls the spec declares.
func (e *env) open() {
	e.t.Helper()
	spec := *e.spec
	spec.Options = e.opts
	keepSysctls(e.t, e.lab, &spec)
	e.do(func() {
		fp, err := Open(e.opts)
		if err != nil {
			e.t.Fatalf("open fast path: %v", err)
		}
		e.fp = fp
		if err := fp.Apply(&spec); err != nil {
			e.t.Fatalf("apply: %v", err)
		}
	})
}

// keepSysctls has netcfg, their owner, set the sysctls the fast path of
// spec declares in the lab's proxy namespace, as the daemon does.
func keepSysctls(t testing.TB, lab *testnet.Lab, spec *Spec) {
	t.Helper()
	h, err := netcfg.Open(netcfg.Options{NetNS: lab.Proxy.Handle(), StatePath: "-", Logger: newEnvLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ns := &netcfg.Spec{External: netcfg.NIC{Interface: testnet.ExtIf}, Internal: netcfg.NIC{Interface: testnet.IntIf}}
	for _, s := range spec.Sysctls() {
		ns.Sysctls = append(ns.Sysctls, netcfg.Sysctl{Key: s.Key, Value: s.Value, Why: s.Why, Optional: s.Optional, Merge: s.Merge})
	}
	if _, err := h.ApplyRequired(ns); err != nil {
		t.Fatalf("set the fast path's sysctls: %v", err)
	}
}

// do runs fn in the proxy namespace.
func (e *env) do(fn func()) {
	e.t.Helper()
	if err := e.lab.Proxy.Do(func() error { fn(); return nil }); err != nil {
		e.t.Fatal(err)
	}
}

// xdpMD is the program's context (struct xdp_md) for a test run: the
// frame arrives on ingress_ifindex.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// run runs the program on a frame as it arrives in the lab: on int0 when
// it comes from the internal side (the internal subnet or the members),
// else on ext0, addressed to that NIC's MAC.
func (e *env) run(in []byte) (uint32, []byte) {
	e.t.Helper()
	nic := e.ingressOf(in)
	return e.runOn(e.toNIC(in, nic), nic)
}

// ingressOf is the NIC a frame from its source address arrives on.
func (e *env) ingressOf(in []byte) string {
	src, ok := frameSource(in)
	lab := e.lab
	for _, p := range []netip.Prefix{netip.PrefixFrom(lab.IntAddr4, 24).Masked(), netip.PrefixFrom(lab.IntAddr6, 64).Masked(), lab.MemberNet4, lab.MemberNet6} {
		if ok && p.Contains(src) {
			return testnet.IntIf
		}
	}
	return testnet.ExtIf
}

// frameSource reads the IP source address of an untagged frame.
func frameSource(b []byte) (netip.Addr, bool) {
	if len(b) < 14+40 {
		return netip.Addr{}, false
	}
	switch binary.BigEndian.Uint16(b[12:]) {
	case 0x0800:
		return netip.AddrFrom4([4]byte(b[14+12:])), true
	case 0x86dd:
		return netip.AddrFrom16([16]byte(b[14+8:])), true
	}
	return netip.Addr{}, false
}

// toNIC returns a copy of the frame addressed to the MAC of nic.
func (e *env) toNIC(in []byte, nic string) []byte {
	out := slices.Clone(in)
	if len(out) >= 6 {
		copy(out, e.nic(nic).mac)
	}
	return out
}

// runOn runs the program on a frame arriving on nic, as it is.
func (e *env) runOn(in []byte, nic string) (uint32, []byte) {
	e.t.Helper()
	var ret uint32
	var out []byte
	idx := e.nic(nic).ifindex
	e.do(func() {
		ret, out = e.runHere(in, idx)
	})
	return ret, out
}

// runHere runs the program on a frame arriving on the device ifindex; the
// caller is in the proxy namespace.
func (e *env) runHere(in []byte, ifindex int) (uint32, []byte) {
	r, out, err := runProgram(e.fp.objs.EdgeproxyFastl4, in, ifindex)
	if err != nil {
		e.t.Fatalf("run program: %v", err)
	}
	return r, out
}

// runProgram runs prog on a frame arriving on the device ifindex.
func runProgram(prog *ebpf.Program, in []byte, ifindex int) (uint32, []byte, error) {
	buf := make([]byte, len(in)+256)
	opts := ebpf.RunOptions{Data: in, DataOut: buf, Context: xdpMD{DataEnd: uint32(len(in)), IngressIfindex: uint32(ifindex)}}
	r, err := prog.Run(&opts)
	return r, opts.DataOut, err
}

// ifindex is the index of a NIC of the proxy namespace.
func (e *env) ifindex(nic string) int {
	e.t.Helper()
	var idx int
	if err := e.lab.Proxy.Do(func() error {
		l, err := netlink.LinkByName(nic)
		if err != nil {
			return err
		}
		idx = l.Attrs().Index
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	return idx
}

// resolve makes the next hops of the lab resolved in the proxy namespace.
func (e *env) resolve() {
	e.t.Helper()
	lab := e.lab
	for _, a := range []netip.Addr{lab.ClientAddr4, lab.ClientAddr6, lab.RouterAddr4, lab.RouterAddr6} {
		lab.Proxy.Run(e.t, "ping", "-c1", "-W2", a.String())
	}
}

// counter returns a counter of the program, summed over CPUs.
func (e *env) counter(virtual string, r bpf.FastL4Reason) uint64 {
	e.t.Helper()
	c, err := e.fp.readCounters()
	if err != nil {
		e.t.Fatal(err)
	}
	vid := 0
	if virtual != "" {
		names := e.fp.virtualNames()
		for i, n := range names {
			if n == virtual {
				vid = i
			}
		}
		if vid == 0 {
			e.t.Fatalf("no virtual %s", virtual)
		}
	}
	return c[vid*reasonMax+int(r)].Packets
}

// flowCount counts the entries of the flow table.
func (e *env) flowEntries() int {
	e.t.Helper()
	n := 0
	if err := e.fp.flows.each(func(bpf.FastL4FlowKey, *bpf.FastL4FlowVal) { n++ }); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// lookupFlow reads a flow entry by its tuple.
func (e *env) lookupFlow(src, dst netip.AddrPort, proto uint8) (bpf.FastL4FlowVal, bool) {
	k := flowKey(src, dst, proto)
	var v bpf.FastL4FlowVal
	err := e.fp.flows.Lookup(k, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return v, false
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return v, true
}

// linkMAC is the MAC address of an interface in a namespace.
func linkMAC(t testing.TB, ns *testnet.NS, name string) net.HardwareAddr {
	t.Helper()
	var mac net.HardwareAddr
	if err := ns.Do(func() error {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		mac = l.Attrs().HardwareAddr
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return mac
}

func newEnvLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func mkdirAll(p string) error { return os.MkdirAll(p, 0o700) }

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
