package hostprobe

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Status of a host check.
const (
	StatusOK      = "ok"
	StatusInfo    = "info"
	StatusWarning = "warning"
	StatusError   = "error"
)

// Needs is what a configuration asks of the host: `edgeproxy run`
// refuses to start on an error Probe finds for it, and `edgeproxy check`
// prints every check.
type Needs struct {
	// FastPath: the XDP fast path loads (kernel features, BTF, CAP_BPF
	// and CAP_PERFMON, PinPath on a BPF file system).
	FastPath bool
	PinPath  string
	// NetAdmin: netcfg changes the network or XDP attaches.
	NetAdmin bool
	// LowestPort is the lowest port an L7 virtual listens on (0: none).
	LowestPort int
}

// Check is the result of one probe.
type Check struct {
	Name   string // kernel, BTF, bpffs, privileges
	Status string
	// Key is the configuration key that decides it ("" none).
	Key    string
	Detail string
}

// Probe checks the kernel, BTF, the BPF file system and the process's
// privileges against needs. What only the fast path needs is a warning
// when it does not load.
func Probe(n Needs) []Check {
	must := StatusWarning
	if n.FastPath {
		must = StatusError
	}
	return []Check{kernelCheck(must), btfCheck(must), bpffsCheck(must, n.PinPath), privilegesCheck(n)}
}

func kernelCheck(must string) Check {
	c := Check{Name: "kernel"}
	k, err := KernelVersion()
	if err != nil {
		c.Status, c.Detail = StatusWarning, fmt.Sprintf("cannot tell the kernel release: %v", err)
		return c
	}
	if missing := k.Missing(); len(missing) > 0 {
		var ms []string
		for _, f := range missing {
			ms = append(ms, f.Name+" ("+f.Version()+")")
		}
		c.Status, c.Detail = must, fmt.Sprintf("%s is older than %d.%d; missing: %s; upgrade the kernel", k, MinMajor, MinMinor, strings.Join(ms, "; "))
		return c
	}
	c.Status, c.Detail = StatusOK, fmt.Sprintf("%s (%d.%d or newer needed)", k, MinMajor, MinMinor)
	return c
}

func btfCheck(must string) Check {
	c := Check{Name: "BTF", Status: must}
	switch err := CheckBTF(BTFPath); {
	case err == nil:
		c.Status, c.Detail = StatusOK, BTFPath
	case errors.Is(err, os.ErrNotExist):
		c.Detail = BTFPath + " is missing: the fast path needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (the default in Debian, Ubuntu and RHEL kernels)"
	default:
		c.Detail = err.Error()
	}
	return c
}

func bpffsCheck(must, pin string) Check {
	c := Check{Name: "bpffs", Status: must, Key: "fastpath.pin_path"}
	ok, base, err := PinDirOnBPFFS(pin)
	switch {
	case err != nil:
		c.Detail = fmt.Sprintf("cannot inspect %s: %v", base, err)
	case !ok:
		c.Detail = fmt.Sprintf("%s is not on a BPF file system, so pinned flows would not survive a restart: mount -t bpf bpf %s (and add \"bpf %s bpf defaults 0 0\" to /etc/fstab)", pin, BPFFSPath, BPFFSPath)
	default:
		c.Status, c.Key, c.Detail = StatusOK, "", fmt.Sprintf("%s is on bpffs (mounted at %s)", pin, base)
	}
	return c
}

func privilegesCheck(n Needs) Check {
	c := Check{Name: "privileges"}
	caps, err := EffectiveCaps()
	if err != nil {
		c.Status, c.Detail = StatusWarning, fmt.Sprintf("cannot read the capabilities: %v", err)
		return c
	}
	var missing []string
	if n.FastPath && !caps.CanLoadBPF() {
		missing = append(missing, "CAP_BPF", "CAP_PERFMON")
	}
	if n.NetAdmin && !caps.Has(CapNetAdmin) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	lowest := 1024
	if v, err := Sysctl("net.ipv4.ip_unprivileged_port_start"); err == nil {
		if p, err := strconv.Atoi(v); err == nil {
			lowest = p
		}
	}
	if n.LowestPort > 0 && n.LowestPort < lowest && !caps.Has(CapNetBindService) {
		missing = append(missing, "CAP_NET_BIND_SERVICE")
	}
	if len(missing) > 0 {
		c.Status, c.Detail = StatusError, fmt.Sprintf("missing %s: run edgeproxy as root, or grant them (systemd: AmbientCapabilities=%s)", strings.Join(missing, ", "), strings.Join(missing, " "))
		return c
	}
	who := "uid " + strconv.Itoa(os.Geteuid())
	if os.Geteuid() == 0 {
		who = "root"
	}
	c.Status, c.Detail = StatusOK, who+" with the capabilities run needs"
	return c
}
