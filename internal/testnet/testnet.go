// Package testnet is the test side of internal/lab: the namespace
// topology with its teardown registered on the test, and the checks that
// skip or fail a privileged test. The types and constants are lab's.
package testnet

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"

	"github.com/edgeproxy/edgeproxy/internal/lab"
)

// The lab's types.
type (
	Lab            = lab.Lab
	NS             = lab.NS
	Options        = lab.Options
	NetworkOptions = lab.NetworkOptions
	DNSTable       = lab.DNSTable
)

// Interface names inside the namespaces.
const (
	ClientIf  = lab.ClientIf
	ExtIf     = lab.ExtIf
	IntIf     = lab.IntIf
	BackendIf = lab.BackendIf
	MemberIf  = lab.MemberIf
)

// Build, Plan, AttachPass and PinDir are lab's.
var (
	Build      = lab.Build
	Plan       = lab.Plan
	AttachPass = lab.AttachPass
	PinDir     = lab.PinDir
)

// New builds a lab (a privileged step: see RequireRoot) and registers
// its teardown with t.Cleanup.
func New(t testing.TB, opts Options) *Lab {
	t.Helper()
	RequireRoot(t)
	l, err := lab.Build(opts)
	if err != nil {
		t.Fatalf("build test network: %v", err)
	}
	t.Cleanup(l.Close)
	return l
}

// RequireRoot skips the test under -short (`make test-unit`), and fails
// (in CI) or skips it when not running as root or when a needed command
// is missing.
func RequireRoot(t testing.TB, cmds ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("privileged test: skipped under -short")
	}
	missing := func(msg string) {
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if os.Geteuid() != 0 {
		missing("privileged test: needs root")
	}
	for _, c := range append([]string{"ip", "ethtool"}, cmds...) {
		if _, err := exec.LookPath(c); err != nil {
			missing(fmt.Sprintf("privileged test: needs %s in PATH", c))
		}
	}
}

// TestPinDir is PinDir for a test: the directory is removed, with
// everything pinned in it, at cleanup.
func TestPinDir(t testing.TB, name string) string {
	t.Helper()
	dir, err := lab.PinDir(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// DNSServer starts a lab DNS responder (lab.ServeDNS) for table on a
// loopback UDP port until the test ends and returns its address.
func DNSServer(t testing.TB, table DNSTable) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ServeDNS(t, pc, table)
	return pc.LocalAddr().String()
}

// ServeDNS answers the queries reaching pc from table until the test's
// cleanup closes pc.
func ServeDNS(t testing.TB, pc net.PacketConn, table DNSTable) {
	t.Cleanup(func() { pc.Close() })
	go lab.ServeDNS(pc, table)
}
