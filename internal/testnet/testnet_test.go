package testnet

import (
	"flag"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
)

// TestPrivilegedLab checks the topology a user of the lab relies on: the
// client reaches the proxy's external addresses and VIPs, the proxy
// reaches every member through the internal next hop, and the backend
// cannot reach the client (no default route: replies need SNAT).
func TestPrivilegedLab(t *testing.T) {
	RequireRoot(t, "ping")
	t.Parallel()
	lab := New(t, Options{Members: 2})

	for _, dst := range []netip.Addr{lab.ExtAddr4, lab.VIP4, lab.ExtAddr6, lab.VIP6} {
		lab.Client.Run(t, "ping", "-c1", "-W2", dst.String())
	}
	for _, m := range append(append([]netip.Addr{}, lab.Members4...), lab.Members6...) {
		lab.Proxy.Run(t, "ping", "-c1", "-W2", m.String())
	}
	out, err := lab.Backend.Command(t.Context(), "ping", "-c1", "-W1", lab.ClientAddr4.String()).CombinedOutput()
	if err == nil {
		t.Fatalf("backend reached the client without SNAT:\n%s", out)
	}

	// A TCP exchange between sockets opened in two namespaces.
	ln, err := lab.Backend.Listen("tcp", netip.AddrPortFrom(lab.Members4[1], 4443).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, c.RemoteAddr().String())
	}()
	c, err := lab.Proxy.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, _ := io.ReadAll(c)
	host, _, _ := net.SplitHostPort(string(b))
	if host != lab.IntAddr4.String() {
		t.Fatalf("member saw %q, want the proxy's internal address %s", b, lab.IntAddr4)
	}

	if got := lab.Proxy.Run(t, "ethtool", "-k", ExtIf); !strings.Contains(got, "tx-checksumming: off") {
		t.Fatalf("tx checksum offload still on for %s:\n%s", ExtIf, got)
	}
	if got := lab.Client.Run(t, "ip", "link", "show", ClientIf); !strings.Contains(got, "xdp") {
		t.Fatalf("no XDP program on %s:\n%s", ClientIf, got)
	}
}

// TestPrivilegedLabCleanup checks that a closed lab leaves no namespace.
func TestPrivilegedLabCleanup(t *testing.T) {
	RequireRoot(t)
	lab, err := Build(Options{NoAddresses: true, Prefix: "eptc"})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{lab.Client.Name, lab.Proxy.Name, lab.Backend.Name}
	lab.Close()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Fatalf("namespace %s left behind:\n%s", n, out)
		}
	}
}

// TestRequireRootShort checks that -short (make test-unit) skips a
// privileged test even for root, before it touches the host.
func TestRequireRootShort(t *testing.T) {
	was := flag.Lookup("test.short").Value.String()
	if err := flag.Set("test.short", "true"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = flag.Set("test.short", was) })
	ran := false
	t.Run("privileged", func(t *testing.T) {
		New(t, Options{})
		ran = true
	})
	if ran {
		t.Fatal("a lab was built under -short")
	}
}
