package hostprobe_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/hostprobe"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

func TestParseKernel(t *testing.T) {
	for _, tc := range []struct {
		in                  string
		major, minor, patch int
	}{
		{"6.1.0-18-amd64", 6, 1, 0},
		{"5.15.0-91-generic", 5, 15, 0},
		{"6.18.44-fc-v782", 6, 18, 44},
		{"5.4.17-2136.307.3.1.el8uek.x86_64", 5, 4, 17},
		{"6.8", 6, 8, 0},
		{"4.19.0+", 4, 19, 0},
	} {
		k, err := hostprobe.ParseKernel(tc.in)
		if err != nil || k.Major != tc.major || k.Minor != tc.minor || k.Patch != tc.patch || k.String() != tc.in {
			t.Errorf("ParseKernel(%q) = %+v, %v", tc.in, k, err)
		}
	}
	for _, bad := range []string{"", "six", "6", "x.1"} {
		if _, err := hostprobe.ParseKernel(bad); !errors.Is(err, hostprobe.ErrBadRelease) {
			t.Errorf("ParseKernel(%q) error = %v, want ErrBadRelease", bad, err)
		}
	}
}

func TestKernelFeatures(t *testing.T) {
	names := func(fs []hostprobe.Feature) string {
		var s []string
		for _, f := range fs {
			s = append(s, f.Version())
		}
		return strings.Join(s, " ")
	}
	for _, tc := range []struct{ release, missing string }{
		{"5.15.0", ""},
		{"6.1.0", ""},
		{"5.10.0", "5.11 5.15"},
		{"5.4.0", "5.8 5.9 5.11 5.15"},
		{"4.19.0", "5.4 5.4 5.8 5.9 5.11 5.15"},
	} {
		k, err := hostprobe.ParseKernel(tc.release)
		if err != nil {
			t.Fatal(err)
		}
		if got := names(k.Missing()); got != tc.missing {
			t.Errorf("%s misses %q, want %q", tc.release, got, tc.missing)
		}
		if ok := k.AtLeast(hostprobe.MinMajor, hostprobe.MinMinor); ok != (tc.missing == "") {
			t.Errorf("%s AtLeast(min) = %v", tc.release, ok)
		}
	}
}

func TestKernelVersionIsTheRunningOne(t *testing.T) {
	out, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Skipf("uname: %v", err)
	}
	k, err := hostprobe.KernelVersion()
	if err != nil {
		t.Fatal(err)
	}
	if k.Release != strings.TrimSpace(string(out)) {
		t.Errorf("KernelVersion = %q, uname -r = %q", k.Release, out)
	}
}

func TestCheckBTF(t *testing.T) {
	dir := t.TempDir()
	if err := hostprobe.CheckBTF(filepath.Join(dir, "vmlinux")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("\x7fELF not btf"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := hostprobe.CheckBTF(other); !errors.Is(err, hostprobe.ErrNotBTF) {
		t.Errorf("non-BTF file: %v, want ErrNotBTF", err)
	}
	if _, err := os.Stat(hostprobe.BTFPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI kernel without BTF: %v", err)
		}
		t.Skipf("this kernel has no BTF: %v", err)
	}
	if err := hostprobe.CheckBTF(hostprobe.BTFPath); err != nil {
		t.Errorf("the kernel's BTF: %v", err)
	}
}

func TestIsBPFFSOnOtherFileSystems(t *testing.T) {
	for _, p := range []string{t.TempDir(), "/proc"} {
		ok, err := hostprobe.IsBPFFS(p)
		if err != nil || ok {
			t.Errorf("IsBPFFS(%s) = %v, %v; want false", p, ok, err)
		}
	}
	if _, err := hostprobe.IsBPFFS(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing directory: %v", err)
	}
}

func TestPrivilegedBPFFS(t *testing.T) {
	testnet.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	ok, err := hostprobe.IsBPFFS(dir)
	if err != nil || !ok {
		t.Errorf("IsBPFFS(mounted bpffs) = %v, %v", ok, err)
	}
	// A pin directory that does not exist yet is judged by its parent.
	ok, base, err := hostprobe.PinDirOnBPFFS(filepath.Join(dir, "edgeproxy", "maps"))
	if err != nil || !ok || base != dir {
		t.Errorf("PinDirOnBPFFS = %v, %q, %v; want true, %q", ok, base, err, dir)
	}
	ok, _, err = hostprobe.PinDirOnBPFFS(filepath.Join(t.TempDir(), "edgeproxy"))
	if err != nil || ok {
		t.Errorf("PinDirOnBPFFS(tmp) = %v, %v; want false", ok, err)
	}
}

func TestParseCapEff(t *testing.T) {
	status := "Name:\tedgeproxy\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000000c000001000\n"
	c, err := hostprobe.ParseCapEff([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	// 0xc000001000: CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
	if !c.Has(hostprobe.CapNetAdmin) || !c.Has(hostprobe.CapBPF) || !c.Has(hostprobe.CapPerfmon) || c.Has(hostprobe.CapSysAdmin) || c.Has(hostprobe.CapNetBindService) {
		t.Errorf("caps %x decoded wrong", uint64(c))
	}
	if !c.CanLoadBPF() {
		t.Error("CAP_BPF+CAP_PERFMON must allow loading BPF")
	}
	if hostprobe.Caps(1 << hostprobe.CapBPF).CanLoadBPF() {
		t.Error("CAP_BPF alone must not be enough (CAP_PERFMON is needed for the fast path's pointer arithmetic)")
	}
	if _, err := hostprobe.ParseCapEff([]byte("Name:\tx\n")); !errors.Is(err, hostprobe.ErrNoCapsInProcs) {
		t.Errorf("no CapEff: %v", err)
	}
	if hostprobe.CapName(hostprobe.CapBPF) != "CAP_BPF" {
		t.Errorf("CapName = %s", hostprobe.CapName(hostprobe.CapBPF))
	}
}

func TestPrivilegedCapabilitiesOfRoot(t *testing.T) {
	testnet.RequireRoot(t)
	c, err := hostprobe.EffectiveCaps()
	if err != nil {
		t.Fatal(err)
	}
	if !c.CanLoadBPF() || !c.Has(hostprobe.CapNetAdmin) || !c.Has(hostprobe.CapNetBindService) {
		t.Errorf("root's effective capabilities %x lack what run needs", uint64(c))
	}
}

func TestInterfaceMissing(t *testing.T) {
	if _, err := hostprobe.Interface("nosuchif0"); !errors.Is(err, hostprobe.ErrNoInterface) {
		t.Errorf("Interface(nosuchif0) = %v, want ErrNoInterface", err)
	}
}

// XDP support as the real kernel reports it: veth has native XDP, the
// loopback device only generic XDP; a veth is a redirect target when its
// peer runs an XDP program (the lab puts one on c0, the peer of ext0), and
// that program is seen on c0.
func TestPrivilegedInterfaces(t *testing.T) {
	lab := testnet.New(t, testnet.Options{})
	k, err := hostprobe.KernelVersion()
	if err != nil {
		t.Fatal(err)
	}
	err = lab.Proxy.Do(func() error {
		ext, err := hostprobe.Interface(testnet.ExtIf)
		if err != nil {
			return err
		}
		if ext.Type != "veth" || ext.Driver != "veth" || !ext.Up {
			t.Errorf("ext0 = %+v, want an up veth", ext)
		}
		if !ext.NativeXDP() || !ext.RedirectTarget() {
			t.Errorf("veth ext0 (peer with XDP) reported without native XDP or as no redirect target: %+v", ext)
		}
		if k.AtLeast(6, 3) && (!ext.FeaturesKnown || ext.Features&hostprobe.XDPRedirect == 0) {
			t.Errorf("kernel %s did not report ext0's XDP features: %+v", k, ext)
		}
		if !ext.HasAddr(lab.ExtAddr4) || !ext.HasAddr(lab.VIP4) || !ext.HasAddr(lab.ExtAddr6) {
			t.Errorf("ext0 addresses %v lack %v/%v/%v", ext.Addrs, lab.ExtAddr4, lab.VIP4, lab.ExtAddr6)
		}
		if ext.HasAddr(lab.IntAddr4) {
			t.Errorf("ext0 reported with int0's address")
		}
		if ext.ProgID != 0 {
			t.Errorf("ext0 has XDP program %d attached", ext.ProgID)
		}

		lo, err := hostprobe.Interface("lo")
		if err != nil {
			return err
		}
		if lo.NativeXDP() {
			t.Errorf("loopback reported with native XDP: %+v", lo)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = lab.Client.Do(func() error {
		c0, err := hostprobe.Interface(testnet.ClientIf)
		if err != nil {
			return err
		}
		if c0.ProgID == 0 || c0.AttachMode != "native" {
			t.Errorf("c0 XDP program %d mode %q, want the lab's native program", c0.ProgID, c0.AttachMode)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Without a program on the peer, the kernel does not offer a veth as a
// redirect target, and the probe says so.
func TestPrivilegedRedirectTargetNeedsPeerProgram(t *testing.T) {
	k, err := hostprobe.KernelVersion()
	if err != nil {
		t.Fatal(err)
	}
	if !k.AtLeast(6, 3) {
		t.Skipf("kernel %s does not report XDP features", k)
	}
	lab := testnet.New(t, testnet.Options{NoDummyXDP: true})
	err = lab.Proxy.Do(func() error {
		ext, err := hostprobe.Interface(testnet.ExtIf)
		if err != nil {
			return err
		}
		if !ext.NativeXDP() || ext.RedirectTarget() {
			t.Errorf("ext0 without a program on c0: native %v, redirect target %v (%v)", ext.NativeXDP(), ext.RedirectTarget(), ext.Features)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSysctl(t *testing.T) {
	first, last, err := hostprobe.PortRange("net.ipv4.ip_local_port_range")
	if err != nil {
		t.Fatal(err)
	}
	if first < 1 || last > 65535 || first > last {
		t.Errorf("ip_local_port_range %d-%d", first, last)
	}
	if _, err := hostprobe.Sysctl("net.ipv4.no_such_knob"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing sysctl: %v", err)
	}
}

// TestProbePinPath: a pin directory off the BPF file system is an error
// naming its key and the mount to add when the fast path loads, a warning
// otherwise.
func TestProbePinPath(t *testing.T) {
	pin := filepath.Join(t.TempDir(), "pins")
	find := func(cs []hostprobe.Check) hostprobe.Check {
		for _, c := range cs {
			if c.Name == "bpffs" {
				return c
			}
		}
		t.Fatalf("no bpffs check in %+v", cs)
		return hostprobe.Check{}
	}
	c := find(hostprobe.Probe(hostprobe.Needs{FastPath: true, PinPath: pin}))
	if c.Status != hostprobe.StatusError || c.Key != "fastpath.pin_path" || !strings.Contains(c.Detail, "mount -t bpf bpf /sys/fs/bpf") {
		t.Errorf("fast path with %s off bpffs: %+v", pin, c)
	}
	if c := find(hostprobe.Probe(hostprobe.Needs{PinPath: pin})); c.Status != hostprobe.StatusWarning {
		t.Errorf("no fast path, %s off bpffs: %+v, want a warning", pin, c)
	}
}
