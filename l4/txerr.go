package l4

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/metric"
)

// Frames the egress devmap or driver refused after the program redirected
// them (bpf/txerr.h): counted by two tracing programs per tx_ports slot,
// reported per interface.

var descTxErrors = prometheus.NewDesc(metric.Name("xdp_tx_errors_total"),
	"Frames the XDP fast path redirected (and counted as forwarded) that the egress interface then refused: down, ring full, or not taking XDP frames.",
	[]string{"interface"}, nil)

// netnsCookie is the cookie of the calling thread's network namespace.
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open socket for the network namespace cookie: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("read network namespace cookie: %w (SO_NETNS_COOKIE needs Linux 5.14)", err)
	}
	return c, nil
}

// setNetnsCookie tells the tracing programs of spec which namespace's
// NICs are the fast path's: the caller's.
func setNetnsCookie(spec *ebpf.CollectionSpec) error {
	c, err := netnsCookie()
	if err != nil {
		return err
	}
	if err := spec.Variables[bpf.FastL4VarNetnsCookie].Set(c); err != nil {
		return fmt.Errorf("set network namespace cookie: %w", err)
	}
	return nil
}

// attachTxErrors attaches the programs counting refused frames. Their
// links are not pinned: they count while the control plane runs.
func (f *FastPath) attachTxErrors() error {
	for _, p := range []*ebpf.Program{f.objs.EdgeproxyTxRefused, f.objs.EdgeproxyRedirectRefused} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return fmt.Errorf("attach %s: %w (needs a kernel with BTF, /sys/kernel/btf/vmlinux)", p, err)
		}
		f.tracing = append(f.tracing, l)
	}
	return nil
}

// collectTxErrors reports the refused frames of each egress slot in use.
func (f *FastPath) collectTxErrors(ch chan<- prometheus.Metric) {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return
	}
	per := make([]uint64, cpus)
	for slot, name := range map[uint32]string{1: f.opts.ExtIf, 2: f.opts.IntIf} {
		if name == "" || f.objs.TxErrors.Lookup(slot, per) != nil {
			continue
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		ch <- prometheus.MustNewConstMetric(descTxErrors, prometheus.CounterValue, float64(n), name)
	}
}
