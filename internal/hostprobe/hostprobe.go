// Package hostprobe inspects the host for what the fast path and the
// proxy need: the kernel release and its BPF features, BTF, the BPF file
// system, the process's capabilities, and the network interfaces with
// their XDP support. Probes only read; none changes the host.
package hostprobe

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Sentinel errors.
var (
	ErrNoInterface   = errors.New("no such interface")
	ErrNotBTF        = errors.New("not a BTF file")
	ErrBadRelease    = errors.New("unrecognised kernel release")
	ErrNoCapsInProcs = errors.New("no CapEff line in process status")
)

// Well-known paths.
const (
	BTFPath   = "/sys/kernel/btf/vmlinux"
	BPFFSPath = "/sys/fs/bpf"
)

// Kernel is a kernel release.
type Kernel struct {
	Release             string // as uname -r prints it
	Major, Minor, Patch int
}

// String returns the release.
func (k Kernel) String() string { return k.Release }

// AtLeast reports whether the kernel is major.minor or newer.
func (k Kernel) AtLeast(major, minor int) bool {
	return k.Major > major || k.Major == major && k.Minor >= minor
}

// ParseKernel parses a release such as "6.1.0-18-amd64" or
// "5.15.0-91-generic".
func ParseKernel(release string) (Kernel, error) {
	k := Kernel{Release: release}
	num := release
	if i := strings.IndexFunc(num, func(r rune) bool { return r != '.' && (r < '0' || r > '9') }); i >= 0 {
		num = num[:i]
	}
	parts := strings.Split(strings.TrimSuffix(num, "."), ".")
	if len(parts) < 2 {
		return k, fmt.Errorf("parse kernel release %q: %w", release, ErrBadRelease)
	}
	var err error
	if k.Major, err = strconv.Atoi(parts[0]); err != nil {
		return k, fmt.Errorf("parse kernel release %q: %w", release, ErrBadRelease)
	}
	if k.Minor, err = strconv.Atoi(parts[1]); err != nil {
		return k, fmt.Errorf("parse kernel release %q: %w", release, ErrBadRelease)
	}
	if len(parts) > 2 {
		k.Patch, _ = strconv.Atoi(parts[2])
	}
	return k, nil
}

// KernelVersion returns the running kernel's release.
func KernelVersion() (Kernel, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return Kernel{}, fmt.Errorf("read kernel release: %w", err)
	}
	return ParseKernel(unix.ByteSliceToString(u.Release[:]))
}

// Feature is a kernel facility edgeproxy uses and the release that
// brought it.
type Feature struct {
	Name         string
	Major, Minor int
}

// Version returns "major.minor".
func (f Feature) Version() string { return fmt.Sprintf("%d.%d", f.Major, f.Minor) }

// MinMajor and MinMinor are the oldest kernel edgeproxy supports: the
// oldest long-term release that has every feature in Features.
const (
	MinMajor = 5
	MinMinor = 15
)

// Features are the kernel facilities the fast path relies on.
var Features = []Feature{
	{"bpf_fib_lookup helper (next hop and MACs after the rewrite)", 4, 18},
	{"BPF_MAP_TYPE_DEVMAP_HASH (redirect between the NICs by ifindex)", 5, 4},
	{"kernel BTF for CO-RE relocations", 5, 4},
	{"CAP_BPF and CAP_PERFMON (BPF without CAP_SYS_ADMIN)", 5, 8},
	{"XDP bpf_link (atomic program replacement, pinned links that survive restarts)", 5, 9},
	{"memory-cgroup accounting of BPF maps (no RLIMIT_MEMLOCK limit)", 5, 11},
	{"the oldest long-term release edgeproxy is tested on", MinMajor, MinMinor},
}

// Missing returns the features the kernel predates.
func (k Kernel) Missing() []Feature {
	var out []Feature
	for _, f := range Features {
		if !k.AtLeast(f.Major, f.Minor) {
			out = append(out, f)
		}
	}
	return out
}

// btfMagic starts every BTF blob (struct btf_header).
const btfMagic = 0xeB9F

// CheckBTF verifies that path (BTFPath on a host) holds the kernel's BTF,
// which the fast path's CO-RE relocations need.
func CheckBTF(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open kernel BTF: %w", err)
	}
	defer f.Close()
	var hdr [2]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return fmt.Errorf("read kernel BTF %s: %w", path, ErrNotBTF)
	}
	if binary.NativeEndian.Uint16(hdr[:]) != btfMagic {
		return fmt.Errorf("read kernel BTF %s: %w", path, ErrNotBTF)
	}
	return nil
}

// IsBPFFS reports whether path is a mounted BPF file system.
func IsBPFFS(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, fmt.Errorf("stat file system of %s: %w", path, err)
	}
	return uint32(st.Type) == unix.BPF_FS_MAGIC, nil
}

// PinDirOnBPFFS reports whether pin directory dir (which may not exist
// yet) would be on a BPF file system: dir itself or its nearest existing
// parent.
func PinDirOnBPFFS(dir string) (bool, string, error) {
	p := filepath.Clean(dir)
	for {
		if _, err := os.Stat(p); err == nil {
			ok, err := IsBPFFS(p)
			return ok, p, err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return false, p, nil
		}
		p = parent
	}
}

// Caps is a capability set (bit n is capability n).
type Caps uint64

// Capabilities the proxy checks.
const (
	CapNetBindService = unix.CAP_NET_BIND_SERVICE
	CapNetAdmin       = unix.CAP_NET_ADMIN
	CapNetRaw         = unix.CAP_NET_RAW
	CapSysAdmin       = unix.CAP_SYS_ADMIN
	CapPerfmon        = unix.CAP_PERFMON
	CapBPF            = unix.CAP_BPF
)

var capNames = map[int]string{
	CapNetBindService: "CAP_NET_BIND_SERVICE",
	CapNetAdmin:       "CAP_NET_ADMIN",
	CapNetRaw:         "CAP_NET_RAW",
	CapSysAdmin:       "CAP_SYS_ADMIN",
	CapPerfmon:        "CAP_PERFMON",
	CapBPF:            "CAP_BPF",
}

// CapName returns the capability's name, e.g. CAP_BPF.
func CapName(c int) string {
	if n, ok := capNames[c]; ok {
		return n
	}
	return "capability " + strconv.Itoa(c)
}

// Has reports whether capability c is in the set.
func (s Caps) Has(c int) bool { return c >= 0 && c < 64 && s&(1<<uint(c)) != 0 }

// CanLoadBPF reports whether the set allows loading the fast path's
// programs and maps: CAP_BPF with CAP_PERFMON, or CAP_SYS_ADMIN.
func (s Caps) CanLoadBPF() bool {
	return s.Has(CapSysAdmin) || s.Has(CapBPF) && s.Has(CapPerfmon)
}

// ParseCapEff reads the effective capability set from the text of
// /proc/<pid>/status.
func ParseCapEff(status []byte) (Caps, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "CapEff:")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return 0, fmt.Errorf("parse CapEff %q: %w", strings.TrimSpace(v), err)
		}
		return Caps(n), nil
	}
	return 0, ErrNoCapsInProcs
}

// EffectiveCaps returns the process's effective capabilities.
func EffectiveCaps() (Caps, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	return ParseCapEff(b)
}

// Sysctl reads a sysctl such as "net.ipv4.ip_forward" in the calling
// thread's network namespace.
func Sysctl(name string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	if err != nil {
		return "", fmt.Errorf("read sysctl %s: %w", name, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// PortRange reads a two-number sysctl such as
// net.ipv4.ip_local_port_range.
func PortRange(name string) (first, last int, err error) {
	v, err := Sysctl(name)
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(v)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("read sysctl %s: unexpected value %q", name, v)
	}
	if first, err = strconv.Atoi(f[0]); err == nil {
		last, err = strconv.Atoi(f[1])
	}
	if err != nil {
		return 0, 0, fmt.Errorf("read sysctl %s: %w", name, err)
	}
	return first, last, nil
}
