package l4

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// TestPrivilegedEndToEndGeneric runs the fast path with xdp_mode: generic
// on both NICs of a lab whose peers carry no XDP program (as with a NIC
// driver without native XDP): connections through the VIPs reach a member,
// which sees the SNAT address, and the kernel reports the program attached
// in generic (SKB) mode.
func TestPrivilegedEndToEndGeneric(t *testing.T) {
	testnet.RequireRoot(t, "curl")
	lab := testnet.New(t, testnet.Options{Members: 2, NoDummyXDP: true})
	e := &env{t: t, lab: lab, spec: testSpec(lab, e2eVirtuals...)}
	e.opts = Options{
		PinPath: testPinPath(t), ExtIf: testnet.ExtIf, IntIf: testnet.IntIf, XDPMode: XDPGeneric,
		MaxFlows: 1024, MaglevSize: 251, Logger: newEnvLogger(t),
	}
	e.open()
	t.Cleanup(func() { e.fp.Close() })
	x := &e2eEnv{env: e, whoErrs: make(chan error, 64)}
	cert := selfSigned(t)
	for _, m := range append(append([]netip.Addr(nil), lab.Members4...), lab.Members6...) {
		x.serveHTTPS(t, m, cert)
		x.serveWhoami(t, m)
	}
	x.start()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var ifaces []string
	e.do(func() {
		ifaces = e.fp.Interfaces()
		for _, name := range []string{testnet.ExtIf, testnet.IntIf} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			if xdp := l.Attrs().Xdp; xdp == nil || !xdp.Attached || xdp.AttachMode != xdpAttachedSKB {
				t.Errorf("%s: XDP attachment %+v, want generic (SKB) mode", name, xdp)
			}
		}
	})
	if want := []string{"ext0 (generic)", "int0 (generic)"}; strings.Join(ifaces, ",") != strings.Join(want, ",") {
		t.Errorf("Interfaces() = %q, want %q", ifaces, want)
	}

	curlSeesSNAT(ctx, t, lab)
	members := map[string]bool{}
	for i := range 40 {
		client, member, err := x.whoami(ctx, netip.MustParseAddrPort("198.18.0.10:7000"))
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if !strings.HasPrefix(client, lab.IntAddr4.String()+":") {
			t.Errorf("connection %d: the member saw client %s, want %s", i, client, lab.IntAddr4)
		}
		members[member[:strings.LastIndex(member, ":")]] = true
	}
	if len(members) != 2 {
		t.Errorf("40 connections reached %v, want both members", members)
	}
	// The packets went through the program, not around it.
	for _, r := range []bpf.FastL4Reason{bpf.FastL4ReasonREASON_FWD_NEW, bpf.FastL4ReasonREASON_FWD_CLIENT, bpf.FastL4ReasonREASON_FWD_SERVER} {
		if n := e.counter("whoami", r); n == 0 {
			t.Errorf("counter %d of the whoami virtual is 0", r)
		}
	}
}
