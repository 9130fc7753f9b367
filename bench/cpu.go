package main

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of the times in /proc/<pid>/stat and /proc/stat
// (USER_HZ, 100 on every Linux architecture the harness runs on).
const userHZ = 100

// CPU groups a sample distinguishes.
const (
	grpProxy       = "proxy"        // the candidate's processes and their children
	grpProxyNAPI   = "proxy-napi"   // threaded NAPI of ext0/int0: receive work in the proxy namespace
	grpClientNAPI  = "client-napi"  // threaded NAPI of c0: receive work of the load generator
	grpBackendNAPI = "backend-napi" // threaded NAPI of b0: receive work of the backend
	grpBackend     = "backend"      // backend servers
	grpSoftirqd    = "ksoftirqd"    // softirq work deferred to the per-CPU threads
)

// cpuSample is the CPU time consumed so far by the processes of a trial,
// by group, and by the machine.
type cpuSample struct {
	at      time.Time
	pids    map[int]float64 // seconds of user+system time
	sys     map[int]float64 // seconds of system time (in the kernel on the process's behalf)
	groups  map[string][]int
	softirq float64 // seconds, all CPUs, from /proc/stat
	busy    float64 // seconds, all CPUs: everything but idle, iowait and steal
}

// procTimes reads the user+system and the system time (all threads) of
// a process in seconds.
func procTimes(pid int) (total, sys float64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	user, sys, ok := parseProcTimes(b)
	return user + sys, sys, ok
}

// parseProcTimes returns utime and stime of a /proc/<pid>/stat line in
// seconds.
func parseProcTimes(b []byte) (user, sys float64, ok bool) {
	f, ok := statFields(b)
	if !ok || len(f) < 13 {
		return 0, 0, false
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return ut / userHZ, st / userHZ, true
}

// statFields returns the fields of /proc/<pid>/stat after the command
// name: f[0] is the state, f[1] the parent pid, f[11] utime, f[12] stime.
func statFields(b []byte) ([]string, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, false
	}
	return strings.Fields(string(b[i+1:])), true
}

// procEntry is a numeric entry of /proc with its parent pid and command
// name.
type procEntry struct {
	pid, ppid int
	comm      string
}

func listProcs() []procEntry {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procEntry
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		open := bytes.IndexByte(b, '(')
		closeI := bytes.LastIndexByte(b, ')')
		f, ok := statFields(b)
		if open < 0 || closeI < open || !ok || len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		out = append(out, procEntry{pid: pid, ppid: ppid, comm: string(b[open+1 : closeI])})
	}
	return out
}

// descendants returns the roots and every process below them.
func descendants(all []procEntry, roots ...int) []int {
	children := map[int][]int{}
	for _, p := range all {
		children[p.ppid] = append(children[p.ppid], p.pid)
	}
	var out []int
	seen := map[int]bool{}
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p <= 0 || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
		queue = append(queue, children[p]...)
	}
	return out
}

// byComm returns the pids whose command name satisfies match.
func byComm(all []procEntry, match func(string) bool) []int {
	var out []int
	for _, p := range all {
		if match(p.comm) {
			out = append(out, p.pid)
		}
	}
	return out
}

// machineCPU reads the aggregate line of /proc/stat: softirq and busy time
// in seconds, summed over all CPUs.
func machineCPU() (softirq, busy float64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	return parseProcStat(b)
}

func parseProcStat(b []byte) (softirq, busy float64, err error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || f[0] != "cpu" {
			continue
		}
		var v [8]float64
		for i := range v {
			v[i], err = strconv.ParseFloat(f[i+1], 64)
			if err != nil {
				return 0, 0, fmt.Errorf("parse /proc/stat: %w", err)
			}
		}
		// user nice system idle iowait irq softirq steal
		busy = v[0] + v[1] + v[2] + v[5] + v[6]
		return v[6] / userHZ, busy / userHZ, nil
	}
	return 0, 0, fmt.Errorf("parse /proc/stat: no aggregate cpu line")
}

// sample takes a CPU sample of the groups given as root pids (process
// trees) or exact pids (threads).
func sample(trees map[string][]int, exact map[string][]int) cpuSample {
	all := listProcs()
	s := cpuSample{at: time.Now(), pids: map[int]float64{}, sys: map[int]float64{}, groups: map[string][]int{}}
	add := func(g string, pids []int) {
		for _, p := range pids {
			if t, sys, ok := procTimes(p); ok {
				s.pids[p], s.sys[p] = t, sys
				s.groups[g] = append(s.groups[g], p)
			}
		}
	}
	for g, roots := range trees {
		add(g, descendants(all, roots...))
	}
	for g, pids := range exact {
		add(g, pids)
	}
	add(grpSoftirqd, byComm(all, func(c string) bool { return strings.HasPrefix(c, "ksoftirqd/") }))
	s.softirq, s.busy, _ = machineCPU()
	return s
}

// delta is the CPU seconds a group consumed between a and b; processes
// that appeared in between count from zero.
func delta(a, b cpuSample, group string) float64 {
	return sumDelta(a.pids, b.pids, b.groups[group])
}

// deltaSys is the system part of delta: the CPU seconds the kernel spent
// on the group's behalf (system calls, and the network stack work they do).
func deltaSys(a, b cpuSample, group string) float64 {
	return sumDelta(a.sys, b.sys, b.groups[group])
}

func sumDelta(a, b map[int]float64, pids []int) float64 {
	var sum float64
	for _, p := range pids {
		sum += b[p] - a[p]
	}
	return max(sum, 0)
}

// saturatedShare is the share of its CPUs at which a side counts as
// saturated.
const saturatedShare = 0.9

// saturation says why a measurement does not measure the proxy: the load
// generators and backend servers used up their CPUs while the proxy side
// still had room, so they set the pace. It is "" when the proxy side
// saturated, or neither did. Cores are used cores; caps are CPUs.
func saturation(proxy, proxyCap, peers, peersCap float64) string {
	if peersCap <= 0 || peers < saturatedShare*peersCap {
		return ""
	}
	if proxyCap > 0 && proxy >= saturatedShare*proxyCap {
		return ""
	}
	return fmt.Sprintf("invalid: load generator and backend saturated first (%.2f of %.0f cores, proxy side %.2f of %.0f): the client side set the pace, not the proxy",
		peers, peersCap, proxy, proxyCap)
}

// loadCheck says why a measurement does not measure the proxy ("" when
// it does): the client side or the machine saturated first. Arguments
// are cores used during the measurement.
func (e *env) loadCheck(busy, other, proxy, peers float64) string {
	n := runtime.NumCPU()
	proxyCap := cpuCount(n, e.cpus.proxy)
	if why := saturation(proxy, proxyCap, peers, cpuCount(n, e.cpus.client, e.cpus.backend)); why != "" {
		return why
	}
	return crowded(busy, other, proxy, proxyCap, float64(n))
}

// crowded says why a measurement in which neither side saturated does not
// measure the proxy either: the machine was busy, others' work (other
// cores) taking the CPU the proxy side could have had. Cores are used
// cores; caps are CPUs.
func crowded(busy, other, proxy, proxyCap, machineCap float64) string {
	if busy < saturatedShare*machineCap || proxy >= saturatedShare*proxyCap || other < 0.1 {
		return ""
	}
	return fmt.Sprintf("invalid: the machine was saturated (%.2f of %.0f cores busy, %.2f by other activity) before the proxy side (%.2f of %.0f cores)",
		busy, machineCap, other, proxy, proxyCap)
}

// cpuCount is the number of CPUs in a list ("0,2-3"); an empty list, or
// one that does not parse, means all of them.
func cpuCount(all int, lists ...string) float64 {
	var set unix.CPUSet
	for _, l := range lists {
		if l == "" {
			return float64(all)
		}
		s, err := parseCPUSet(l)
		if err != nil {
			return float64(all)
		}
		for c := range 1024 {
			if s.IsSet(c) {
				set.Set(c)
			}
		}
	}
	return float64(set.Count())
}
