package l4

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// The program's cost per packet in BPF_PROG_TEST_RUN, against the line
// rate budget of 10 GbE with 64-byte frames: 67 ns per packet on one
// core.
//
//	sudo go test ./l4 -run '^$' -bench Program -benchtime 2000000x

func init() {
	// A/B comparisons of builds: EDGEPROXY_BENCH_OBJECT=/path/to/fastl4.o
	if p := os.Getenv("EDGEPROXY_BENCH_OBJECT"); p != "" {
		loadSpec = func() (*ebpf.CollectionSpec, error) { return ebpf.LoadCollectionSpec(p) }
	}
}

// benchMaxFlows is max_flows for the program's benchmarks, and the size
// BenchmarkNewFlowFloor's tables are made for.
const benchMaxFlows = 1 << 16

func benchEnv(b *testing.B) *env {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	e := newEnv(b, func(lab *testnet.Lab) *Spec {
		return testSpec(lab,
			fastl4("web", "198.18.0.10:443", "fe4", 4443),
			fastl4("web6", "[2001:db8:1::10]:443", "fe6", 4443),
			fastl4("weblog", "198.18.0.10:9443", "fe4", 4443, logged),
			fastl4("weblog6", "[2001:db8:1::10]:9443", "fe6", 4443, logged))
	}, func(o *Options) { o.MaxFlows = benchMaxFlows; o.Logger = slog.New(slog.DiscardHandler) })
	e.resolve()
	return e
}

// benchChunk bounds the runs of one call: the program changes the frame
// in place (a forwarded run lowers its TTL by one), so each call starts
// from a fresh copy, with a TTL of 255 still above 1 at its end.
const benchChunk = 250

// repeat runs the program n times on in, arriving on ext0, inside the
// kernel, and reports the kernel's average time per run.
func (e *env) repeat(b *testing.B, in []byte, n int) (uint32, time.Duration) {
	var ret uint32
	var d time.Duration
	md := xdpMD{DataEnd: uint32(len(in)), IngressIfindex: uint32(e.ifindex(testnet.ExtIf))}
	e.do(func() { ret, d = testRuns(b, e.fp.objs.EdgeproxyFastl4.FD(), in, md, n) })
	return ret, d
}

// testRuns runs the program fd n times on in with the context md,
// benchChunk runs per call, and returns the last verdict and the kernel's
// average time per run.
func testRuns(b *testing.B, fd int, in []byte, md xdpMD, n int) (uint32, time.Duration) {
	var ret uint32
	var total time.Duration
	for done := 0; done < n; {
		k := min(n-done, benchChunk)
		r, d, err := testRun(fd, in, md, uint32(k))
		if err != nil {
			b.Fatal(err)
		}
		ret = r
		total += d * time.Duration(k)
		done += k
	}
	return ret, total / time.Duration(max(n, 1))
}

// testRun is BPF_PROG_TEST_RUN with a context and a repeat count: the
// return value and the kernel's average time per run. (The ebpf package
// measures time only without a context.)
func testRun(fd int, in []byte, md xdpMD, repeat uint32) (uint32, time.Duration, error) {
	var attr struct {
		progFD, retval, dataSizeIn, dataSizeOut uint32
		dataIn, dataOut                         uint64
		repeat, duration                        uint32
		ctxSizeIn, ctxSizeOut                   uint32
		ctxIn, ctxOut                           uint64
		flags, cpu, batchSize                   uint32
		_                                       uint32
	}
	attr.progFD = uint32(fd)
	attr.dataSizeIn = uint32(len(in))
	attr.dataIn = uint64(uintptr(unsafe.Pointer(&in[0])))
	attr.repeat = repeat
	attr.ctxSizeIn = uint32(unsafe.Sizeof(md))
	attr.ctxIn = uint64(uintptr(unsafe.Pointer(&md)))
	for {
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_TEST_RUN, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		runtime.KeepAlive(in)
		runtime.KeepAlive(&md)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, 0, fmt.Errorf("run program: %w", errno)
		}
		return attr.retval, time.Duration(attr.duration), nil
	}
}

// benchFrame is f as it arrives on ext0, with a TTL of 255.
func (e *env) benchFrame(f frame) []byte {
	f.ttl = 255
	return e.toNIC(f.bytes(), testnet.ExtIf)
}

// BenchmarkProgramEstablished measures the established path over working
// sets of flows, each packet of a run hitting a different flow than the
// packet before: flows that are not in the CPU's caches cost what the
// table's layout makes them cost (bpf/README.md, "Compact flows"). The
// flows form a cycle in a random order: each rewrites a packet into the
// next one's (its peer is the next flow's key reversed), so each run
// takes the full established path (flow lookup, checks, tracking, rewrite
// with checksums, cached next hop, counters, redirect) on a packet that
// is the next flow's. Every flow is a client half arriving on ext0; the
// next hop towards the members is made ext0's own MAC, so a rewritten
// frame is addressed as the next one must be. Each call of
// BPF_PROG_TEST_RUN starts at the flow where the last one stopped, and
// every run is checked as forwarded. ratio is each working set's time over
// one flow's, in the same run.
func BenchmarkProgramEstablished(b *testing.B) {
	e := benchEnvFlows(b, 1<<20)
	for _, fam := range []string{"ipv4", "ipv6"} {
		var one float64
		for _, n := range []int{1, 1 << 10, 1 << 16, 1 << 20} {
			b.Run(fmt.Sprintf("%s/%d", fam, n), func(b *testing.B) {
				c := e.benchCycle(b, fam, n)
				defer c.clear(b)
				check := e.allForwarded()
				c.run(b, n) // every flow resolves its next hop once
				check(b, n)
				check = e.allForwarded()
				b.ResetTimer()
				d := c.run(b, b.N)
				b.StopTimer()
				reportPacket(b, d, n, &one)
				b.ReportMetric(0, "ns/op")
				check(b, b.N)
			})
		}
	}
}

// allForwarded returns a check that at least n runs were forwarded
// (fwd_client of the web virtual) since, and none of its packets took any
// other verdict (nor any packet an entry reused meanwhile): a call the
// kernel interrupts is run again (testRun), so a few runs may count twice.
func (e *env) allForwarded() func(b *testing.B, n int) {
	vid := e.fp.virtuals["web"].id
	verdicts := func() (fwd, other uint64) {
		c, err := e.fp.readCounters()
		if err != nil {
			e.t.Fatal(err)
		}
		other = c[bpf.FastL4ReasonREASON_DROP_FLOW_REUSED].Packets
		for r, s := range c[vid*reasonMax : (vid+1)*reasonMax] {
			switch reason := bpf.FastL4Reason(r); {
			case reason == bpf.FastL4ReasonREASON_FWD_CLIENT:
				fwd += s.Packets
			case !isEvent(reason):
				other += s.Packets
			}
		}
		return fwd, other
	}
	fwd0, other0 := verdicts()
	return func(b *testing.B, n int) {
		fwd, other := verdicts()
		if fwd-fwd0 < uint64(n) || other != other0 {
			b.Fatalf("%d runs: %d forwarded, %d with another verdict", n, fwd-fwd0, other-other0)
		}
	}
}

// benchEnvFlows is benchEnv with room for flows connections, its internal
// next hop answering with ext0's MAC (see BenchmarkProgramEstablished).
func benchEnvFlows(b *testing.B, flows int) *env {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	e := newEnv(b, func(lab *testnet.Lab) *Spec {
		return testSpec(lab,
			fastl4("web", "198.18.0.10:443", "fe4", 4443),
			fastl4("web6", "[2001:db8:1::10]:443", "fe6", 4443))
	}, func(o *Options) { o.MaxFlows = flows; o.Logger = slog.New(slog.DiscardHandler) })
	e.resolve()
	ext := linkMAC(b, e.lab.Proxy, testnet.ExtIf).String()
	for _, a := range []netip.Addr{e.lab.RouterAddr4, e.lab.RouterAddr6} {
		e.lab.Proxy.Run(b, "ip", "neigh", "replace", a.String(), "lladdr", ext, "dev", testnet.IntIf, "nud", "permanent")
	}
	return e
}

// cycle is a working set of flows for BenchmarkProgramEstablished.
type cycle struct {
	e     *env
	keys  []bpf.FastL4FlowKey // in the order of the cycle
	start int                 // the flow the next call starts at
}

// benchCycle fills the flow table with n pairs of family fam: client
// halves forming a cycle in a random order, inserted in another, each
// with its other half (which the cycle never sends to), as in a real
// table.
func (e *env) benchCycle(b *testing.B, fam string, n int) *cycle {
	member := ap(e.lab.Members4[0], 4443)
	if fam == "ipv6" {
		member = ap(e.lab.Members6[0], 4443)
	}
	keys, order := benchKeys(fam, n, member)
	now := monoNow()
	vid := uint8(e.fp.virtuals["web"].id)
	c := &cycle{e: e, keys: keys}
	for at, j := range order {
		v := bpf.FastL4FlowVal{CreatedNs: now, LastNs: now, Vid: vid, Dir: dirClient, Seen: seenAny | seenACK}
		setKeys(&v, keys[j], c.peer(j))
		if err := e.fp.flows.Update(keys[j], &v, ebpf.UpdateNoExist); err != nil {
			b.Fatalf("fill the flow table (%d flows): %v", at, err)
		}
		v.Dir = dirServer
		setKeys(&v, c.peer(j), keys[j])
		if err := e.fp.flows.Update(c.peer(j), &v, ebpf.UpdateNoExist); err != nil {
			b.Fatalf("fill the flow table (%d flows): %v", at, err)
		}
	}
	return c
}

// peer is the other half of the cycle's flow j: the next flow's key
// reversed.
func (c *cycle) peer(j int) bpf.FastL4FlowKey {
	next := c.keys[(j+1)%len(c.keys)]
	p := next
	p.Saddr, p.Daddr, p.Sport, p.Dport = next.Daddr, next.Saddr, next.Dport, next.Sport
	return p
}

// benchKeys are n client halves of family fam towards member, in the
// order of a cycle (a random one), and the order to insert them in
// (another, not the clients' addresses').
func benchKeys(fam string, n int, member netip.AddrPort) (keys []bpf.FastL4FlowKey, order []int) {
	rng := rand.New(rand.NewPCG(16, uint64(n)))
	keys = make([]bpf.FastL4FlowKey, n)
	for j, i := range rng.Perm(n) {
		var c netip.Addr
		if fam == "ipv4" {
			c = netip.AddrFrom4([4]byte{100, 64 + byte(i>>22), byte(i >> 14), byte(i >> 6)})
		} else {
			c = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 9, 13: byte(i >> 22), 14: byte(i >> 14), 15: byte(i >> 6)})
		}
		keys[j] = flowKey(ap(c, uint16(1024+i&63)), member, protoTCP)
	}
	return keys, rng.Perm(n)
}

// run sends n packets around the cycle, benchChunk per call, and returns
// the kernel's average time per packet.
func (c *cycle) run(b *testing.B, n int) time.Duration {
	return chainRun(n, len(c.keys), &c.start, func(at, k int) time.Duration {
		key := c.keys[at]
		in := c.e.benchFrame(frame{src: addrPort(key.Saddr, key.Sport, key.Family), dst: addrPort(key.Daddr, key.Dport, key.Family), proto: protoTCP, flags: flagACK, seq: 1, ack: 1})
		ret, d := c.e.repeat(b, in, k)
		if ret != xdpRedirect {
			b.Fatalf("verdict %d, want redirect", ret)
		}
		return d
	})
}

// chainRun sends n packets around a cycle of size entries, benchChunk per
// call of run(at, k), which runs k packets from the cycle's entry at and
// returns the kernel's average time per packet; *start is the entry the
// next call starts at. It returns the average time per packet.
func chainRun(n, size int, start *int, run func(at, k int) time.Duration) time.Duration {
	var total time.Duration
	for done := 0; done < n; {
		k := min(n-done, benchChunk)
		total += run(*start, k) * time.Duration(k)
		done += k
		*start = (*start + k) % size
	}
	return total / time.Duration(max(n, 1))
}

// clear deletes the cycle's flows, both halves, so that they do not
// fill the next working set's table.
func (c *cycle) clear(b *testing.B) {
	peers := make([]bpf.FastL4FlowKey, len(c.keys))
	for j, k := range c.keys {
		if err := c.e.fp.flows.Delete(k); err != nil {
			b.Fatalf("clear the flow table: %v", err)
		}
		peers[j] = c.peer(j)
	}
	c.e.fp.flows.deleteKeys(peers)
}

// BenchmarkProgramNewFlow measures the first packet of a flow: Maglev,
// SNAT allocation, insertion of the pair, next hop lookup. Every run needs
// a new tuple, so each is its own BPF_PROG_TEST_RUN call and the time
// includes the test harness's per-call timer overhead (see
// BenchmarkProgramPassSingle).
func BenchmarkProgramNewFlow(b *testing.B) {
	e := benchEnv(b)
	var total time.Duration
	newFlows := e.delta("web", bpf.FastL4ReasonREASON_FWD_NEW)
	b.ResetTimer()
	for i := range b.N {
		if i%10000 == 0 && i > 0 {
			b.StopTimer()
			e.clearFlows(b)
			b.StartTimer()
		}
		c := netip.AddrFrom4([4]byte{198, 18, byte(1 + i/20000%200), byte(1 + i/100%250)})
		in := e.benchFrame(frame{src: ap(c, uint16(40000+i%20000)), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN, seq: 1})
		_, d := e.repeat(b, in, 1)
		total += d
	}
	b.StopTimer()
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/packet")
	b.ReportMetric(0, "ns/op")
	if int(newFlows()) != b.N {
		b.Fatalf("%d new flows for %d runs", newFlows(), b.N)
	}
}

// BenchmarkProgramPromote measures the packet that establishes a
// connection (the client's ACK of the member's SYN-ACK): the half-open
// pair moves into the flow tables and, for a virtual with log, the open
// event goes into the ring (drained by a reader, as the control plane
// does). The SYN and SYN-ACK before it are not timed.
func BenchmarkProgramPromote(b *testing.B) {
	e := benchEnv(b)
	rd, err := ringbuf.NewReader(e.fp.objs.FlowEvents)
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	var events atomic.Int64
	go func() {
		for {
			if _, err := rd.Read(); err != nil {
				return
			}
			events.Add(1)
		}
	}()
	for _, tc := range []struct{ name, virtual string }{{"log-off", "web"}, {"log-on", "weblog"}} {
		b.Run(tc.name, func(b *testing.B) {
			vip := e.fp.virtuals[tc.virtual].key
			port := ntohs(vip.Port)
			promoted := e.delta(tc.virtual, bpf.FastL4ReasonREASON_EVENT_PROMOTED)
			e.clearFlows(b)
			var total time.Duration
			b.ResetTimer()
			for i := range b.N {
				if i%10000 == 0 && i > 0 {
					e.clearFlows(b)
				}
				c := ap(netip.AddrFrom4([4]byte{198, 18, byte(1 + i/20000%200), byte(1 + i/100%250)}), uint16(40000+i%20000))
				_, out := e.runOn(e.benchFrame(frame{src: c, dst: ap(vip4, port), proto: protoTCP, flags: flagSYN, seq: 1}), testnet.ExtIf)
				p, err := parseFrame(out)
				if err != nil {
					b.Fatal(err)
				}
				synack := frame{src: p.dst, dst: p.src, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 2, ttl: 255}.bytes()
				e.runOn(e.toNIC(synack, testnet.IntIf), testnet.IntIf)
				_, d := e.repeat(b, e.benchFrame(frame{src: c, dst: ap(vip4, port), proto: protoTCP, flags: flagACK, seq: 2, ack: 901}), 1)
				total += d
			}
			b.StopTimer()
			b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/packet")
			b.ReportMetric(0, "ns/op")
			if int(promoted()) != b.N {
				b.Fatalf("%d flows promoted for %d runs", promoted(), b.N)
			}
		})
	}
	b.Logf("%d open events read", events.Load())
}

func (e *env) clearFlows(b *testing.B) {
	var keys, half []bpf.FastL4FlowKey
	if err := e.fp.flows.each(func(k bpf.FastL4FlowKey, v *bpf.FastL4FlowVal) {
		if v.HalfOpen != 0 {
			half = append(half, k)
		} else {
			keys = append(keys, k)
		}
	}); err != nil {
		b.Fatal(err)
	}
	e.fp.flows.deleteKeys(keys)
	e.fp.flows.deleteHalfOpen(half)
}

// BenchmarkProgramPass measures a packet that is not for a fastl4
// virtual (host traffic, L7 listeners): parse, flow and service lookups,
// XDP_PASS.
func BenchmarkProgramPass(b *testing.B) {
	e := benchEnv(b)
	in := e.benchFrame(frame{src: ap(client4, 50000), dst: ap(e.lab.ExtAddr4, 22), proto: protoTCP, flags: flagACK})
	b.ResetTimer()
	_, d := e.repeat(b, in, b.N)
	b.StopTimer()
	b.ReportMetric(float64(d.Nanoseconds()), "ns/packet")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkProgramPassSingle is the pass path one call at a time, the
// baseline of BenchmarkProgramNewFlow's per-call overhead.
func BenchmarkProgramPassSingle(b *testing.B) {
	e := benchEnv(b)
	in := e.benchFrame(frame{src: ap(client4, 50000), dst: ap(e.lab.ExtAddr4, 22), proto: protoTCP, flags: flagACK})
	var total time.Duration
	b.ResetTimer()
	for range b.N {
		_, d := e.repeat(b, in, 1)
		total += d
	}
	b.StopTimer()
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/packet")
	b.ReportMetric(0, "ns/op")
}

// reportPacket reports a working set's time per packet of n entries and,
// once the one-entry figure of the same run is known (one), the ratio to
// it (BenchmarkProgramEstablished, BenchmarkLookupFloor).
func reportPacket(b *testing.B, d time.Duration, n int, one *float64) {
	ns := float64(d.Nanoseconds())
	if n == 1 {
		*one = ns
	}
	b.ReportMetric(ns, "ns/packet")
	if *one > 0 {
		b.ReportMetric(ns / *one, "ratio")
	}
}
