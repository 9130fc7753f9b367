package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/internal/lab"
)

// trial is one installation of one candidate: a fresh lab (so that no
// state — conntrack entries, XDP programs, sysctls, TIME_WAIT sockets —
// leaks from one candidate to the next), the phase's backend servers and
// the candidate in the proxy namespace.
type trial struct {
	env      *env
	lab      *lab.Lab
	dir      string
	napi     map[string][]int // veth name → its NAPI thread(s)
	backend  []*process
	hostsDir string
	// proxy is the candidate installed; hold the idle phase's backend.
	proxy *installation
	hold  *holdBackend
}

// proxyDevs and peerDevs are the veth ends whose receive work is counted
// as the proxy's and as the client's/backend's.
var (
	proxyDevs   = []string{lab.ExtIf, lab.IntIf}
	clientDevs  = []string{lab.ClientIf}
	backendDevs = []string{lab.BackendIf}
)

// nsPrefix names this run's namespaces: runs side by side tell theirs
// apart.
func nsPrefix() string { return "epb" + strconv.Itoa(os.Getpid()) }

// newTrial builds and tunes a lab.
func (e *env) newTrial(ctx context.Context, name string) (_ *trial, err error) {
	l, err := lab.Build(lab.Options{Members: 2, Prefix: nsPrefix()})
	if err != nil {
		return nil, err
	}
	t := &trial{env: e, lab: l, napi: map[string][]int{}}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	t.dir, err = os.MkdirTemp(e.dir, name+"-")
	if err != nil {
		return nil, fmt.Errorf("create trial directory: %w", err)
	}
	if err := os.Chmod(t.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create trial directory: %w", err)
	}
	if err := t.tune(ctx); err != nil {
		return nil, fmt.Errorf("tune lab: %w", err)
	}
	return t, nil
}

// tune applies the settings every candidate runs with.
func (t *trial) tune(ctx context.Context) error {
	l := t.lab
	sysctls := []struct {
		ns       *lab.NS
		key, val string
	}{
		// The load generators open tens of thousands of short connections.
		{l.Client, "net/ipv4/ip_local_port_range", "1024 65535"},
		{l.Client, "net/ipv4/tcp_tw_reuse", "1"},
		// HAProxy, nginx and the L7 proxy close towards the backend first.
		{l.Proxy, "net/ipv4/tcp_tw_reuse", "1"},
		{l.Backend, "net/core/somaxconn", "8192"},
		{l.Proxy, "net/core/somaxconn", "8192"},
	}
	for _, s := range sysctls {
		if err := s.ns.Do(func() error { return os.WriteFile("/proc/sys/"+s.key, []byte(s.val), 0) }); err != nil {
			return fmt.Errorf("set %s in %s: %w", s.key, s.ns.Name, err)
		}
	}
	// Each veth end gets GRO (as a NIC would) and threaded NAPI, so that
	// the receive work of each namespace runs in a kernel thread that is
	// pinned with that namespace's processes and whose CPU time is
	// counted: the proxy's ext0/int0 threads on the proxy CPUs.
	devs := []struct {
		ns   *lab.NS
		dev  string
		cpus string
	}{
		{l.Client, lab.ClientIf, t.env.cpus.client},
		{l.Proxy, lab.ExtIf, t.env.cpus.proxy},
		{l.Proxy, lab.IntIf, t.env.cpus.proxy},
		{l.Backend, lab.BackendIf, t.env.cpus.backend},
	}
	for _, d := range devs {
		// A qdisc gives the stack backpressure when the peer's ring is
		// full (veth's default noqueue drops instead), as a NIC's would.
		if out, err := d.ns.Command(ctx, "tc", "qdisc", "replace", "dev", d.dev, "root", "pfifo_fast").CombinedOutput(); err != nil {
			return fmt.Errorf("add qdisc to %s: %v: %s", d.dev, err, strings.TrimSpace(string(out)))
		}
		if t.env.o.NoThreadedNAPI {
			continue
		}
		if out, err := d.ns.Command(ctx, "ethtool", "-K", d.dev, "gro", "on").CombinedOutput(); err != nil {
			return fmt.Errorf("turn on GRO on %s: %v: %s", d.dev, err, strings.TrimSpace(string(out)))
		}
		prefix := "napi/" + d.dev + "-"
		before := map[int]bool{}
		for _, p := range byComm(listProcs(), func(c string) bool { return strings.HasPrefix(c, prefix) }) {
			before[p] = true
		}
		cmd := d.ns.Command(ctx, "sh", "-c", "echo 1 > /sys/class/net/"+d.dev+"/threaded")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("turn on threaded NAPI on %s: %v: %s", d.dev, err, strings.TrimSpace(string(out)))
		}
		for _, p := range byComm(listProcs(), func(c string) bool { return strings.HasPrefix(c, prefix) }) {
			if !before[p] {
				t.napi[d.dev] = append(t.napi[d.dev], p)
			}
		}
		if len(t.napi[d.dev]) == 0 {
			return fmt.Errorf("turn on threaded NAPI on %s: no %s* thread appeared", d.dev, prefix)
		}
		if d.cpus != "" {
			set, err := parseCPUSet(d.cpus)
			if err != nil {
				return err
			}
			for _, p := range t.napi[d.dev] {
				if err := unix.SchedSetaffinity(p, &set); err != nil {
					return fmt.Errorf("pin NAPI thread %d of %s: %w", p, d.dev, err)
				}
			}
		}
		// Receive work preempts processes, as softirq does; at the default
		// priority the NAPI thread waits behind the load generators, the
		// peer's ring overflows and XDP_REDIRECT (which has no qdisc to
		// push back) drops. -napi-prio sets the proxy namespace's threads
		// (they share the proxy's CPU and preempt only the proxy) apart.
		for _, p := range t.napi[d.dev] {
			attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: 50}
			if d.ns == l.Proxy {
				attr = t.env.napiSched
			}
			if err := unix.SchedSetAttr(p, &attr, 0); err != nil {
				return fmt.Errorf("set scheduling of NAPI thread %d of %s: %w", p, d.dev, err)
			}
		}
	}
	// The L7 clients resolve the published name to the VIP:
	// `ip netns exec` mounts /etc/netns/<ns>/hosts over /etc/hosts.
	t.hostsDir = filepath.Join("/etc/netns", l.Client.Name)
	if err := os.MkdirAll(t.hostsDir, 0o755); err != nil {
		return fmt.Errorf("write client hosts file: %w", err)
	}
	hosts := "127.0.0.1 localhost\n" + l.VIP4.String() + " " + strings.Join(siteNames, " ") + "\n"
	if err := os.WriteFile(filepath.Join(t.hostsDir, "hosts"), []byte(hosts), 0o644); err != nil {
		return fmt.Errorf("write client hosts file: %w", err)
	}
	return nil
}

// napiPids returns the NAPI threads of the named devices.
func (t *trial) napiPids(devs []string) []int {
	var out []int
	for _, d := range devs {
		out = append(out, t.napi[d]...)
	}
	return out
}

func (t *trial) close() {
	for _, p := range t.backend {
		p.stop(syscall.SIGTERM, 5*time.Second)
	}
	t.backend = nil
	if t.hold != nil {
		t.hold.close()
	}
	if t.hostsDir != "" {
		_ = os.RemoveAll(t.hostsDir)
	}
	if t.lab != nil {
		t.lab.Close()
	}
}

func (t *trial) backendPids() []int {
	var out []int
	for _, p := range t.backend {
		out = append(out, p.pid())
	}
	return out
}

// startBackend starts a backend server and waits until it listens on
// every port in tcpPorts.
func (t *trial) startBackend(env []string, tcpPorts []uint16, name string, args ...string) error {
	p, err := startProcess(t.lab.Backend, t.env.cpus.backend, env, name, args...)
	if err != nil {
		return err
	}
	t.backend = append(t.backend, p)
	deadline := time.Now().Add(10 * time.Second)
	for {
		missing := uint16(0)
		for _, port := range tcpPorts {
			ok, err := listening(t.lab.Backend, "tcp", netip.Addr{}, port)
			if err != nil {
				return err
			}
			if !ok {
				missing = port
				break
			}
		}
		if missing == 0 {
			return nil
		}
		if done, err := p.exited(); done {
			return fmt.Errorf("start backend %s: %v: %s", name, err, p.tail(5))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("start backend %s: not listening on port %d after 10s: %s", name, missing, p.tail(5))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// listening reports whether a socket in ns listens (TCP) or is bound (UDP)
// on port, on addr or on a wildcard address (addr invalid: any address).
// IPv6 sockets count too: a server bound to [::] takes IPv4 as well.
func listening(ns *lab.NS, proto string, addr netip.Addr, port uint16) (bool, error) {
	var found bool
	err := ns.Do(func() error {
		for _, file := range []string{proto, proto + "6"} {
			// /proc/thread-self/net shows the calling thread's namespace.
			f, err := os.Open("/proc/thread-self/net/" + file)
			if err != nil {
				return err
			}
			found, err = scanSockets(f, proto, addr, port)
			f.Close()
			if err != nil || found {
				return err
			}
		}
		return nil
	})
	return found, err
}

func scanSockets(r io.Reader, proto string, addr netip.Addr, port uint16) (bool, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 4 || !strings.Contains(fl[1], ":") {
			continue
		}
		local, st := fl[1], fl[3]
		if proto == "tcp" && st != "0A" {
			continue
		}
		hexIP, hexPort, _ := strings.Cut(local, ":")
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil || uint16(p) != port {
			continue
		}
		if !addr.IsValid() || strings.Trim(hexIP, "0") == "" || strings.HasSuffix(hexIP, procNetIPv4(addr)) {
			return true, nil
		}
	}
	return false, sc.Err()
}

// procNetIPv4 formats an IPv4 address as /proc/net/tcp does (host byte
// order on little-endian machines).
func procNetIPv4(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("%02X%02X%02X%02X", b[3], b[2], b[1], b[0])
}

// parseNAPIPrio parses -napi-prio: a SCHED_FIFO priority, or "other".
func parseNAPIPrio(s string) (unix.SchedAttr, error) {
	a := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL}
	if s == "other" {
		return a, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 99 {
		return a, fmt.Errorf("check flags: -napi-prio %q: use a SCHED_FIFO priority 1 to 99, or other", s)
	}
	a.Policy, a.Priority = unix.SCHED_FIFO, uint32(n)
	return a, nil
}

// napiSchedName describes the proxy NAPI threads' scheduling for the report.
func napiSchedName(a unix.SchedAttr) string {
	if a.Policy == unix.SCHED_FIFO {
		return fmt.Sprintf("SCHED_FIFO priority %d", a.Priority)
	}
	return "SCHED_OTHER"
}

// proxyNAPINote names the proxy NAPI threads' scheduling when -napi-prio
// moved it from the default.
func proxyNAPINote(a unix.SchedAttr) string {
	if a.Policy == unix.SCHED_FIFO && a.Priority == 50 {
		return ""
	}
	return "; the proxy namespace's at " + napiSchedName(a) + " by -napi-prio"
}

// parseCPUSet parses a CPU list such as "0", "1-3" or "0,2".
func parseCPUSet(list string) (unix.CPUSet, error) {
	var set unix.CPUSet
	for part := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return set, fmt.Errorf("parse CPU list %q: %w", list, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return set, fmt.Errorf("parse CPU list %q: bad range %q", list, part)
			}
		}
		for c := a; c <= b; c++ {
			set.Set(c)
		}
	}
	if set.Count() == 0 {
		return set, fmt.Errorf("parse CPU list %q: empty", list)
	}
	return set, nil
}
