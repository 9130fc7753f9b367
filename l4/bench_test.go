package l4

import (
	"fmt"
	"log/slog"
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
	}, func(o *Options) { o.MaxFlows = 1 << 16; o.Logger = slog.New(slog.DiscardHandler) })
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
	var total time.Duration
	ifindex := e.ifindex(testnet.ExtIf)
	e.do(func() {
		for done := 0; done < n; {
			k := min(n-done, benchChunk)
			r, d, err := testRun(e.fp.objs.EdgeproxyFastl4.FD(), in, xdpMD{DataEnd: uint32(len(in)), IngressIfindex: uint32(ifindex)}, uint32(k))
			if err != nil {
				b.Fatal(err)
			}
			ret = r
			total += d * time.Duration(k)
			done += k
		}
	})
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

// BenchmarkProgramEstablished measures an established flow. The table
// holds two entries that rewrite a packet into the other one (member to
// client, client to member): each run takes the full established path
// (flow lookup, tracking, rewrite with checksums, cached next hop,
// redirect), alternating directions. The flows of a virtual with log
// (ipv4-log, ipv6-log) take the same path.
func BenchmarkProgramEstablished(b *testing.B) {
	e := benchEnv(b)
	for _, tc := range []struct {
		name, virtual  string
		client, member netip.AddrPort
	}{
		{"ipv4", "web", ap(client4, 40000), ap(e.lab.Members4[0], 4443)},
		{"ipv4-log", "weblog", ap(client4, 40000), ap(e.lab.Members4[0], 4443)},
		{"ipv6", "web6", ap(client6, 40000), ap(e.lab.Members6[0], 4443)},
		{"ipv6-log", "weblog6", ap(client6, 40000), ap(e.lab.Members6[0], 4443)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			toClient := flowKey(tc.member, tc.client, protoTCP)
			toMember := flowKey(tc.client, tc.member, protoTCP)
			now := monoNow()
			vid := e.fp.virtuals[tc.virtual].id
			// Every run arrives on ext0, addressed to the MAC the run
			// before set: the next hop's towards the destination.
			ext := uint32(e.ifindex(testnet.ExtIf))
			routerMAC := linkMAC(b, e.lab.Backend, testnet.BackendIf)
			clientMAC := linkMAC(b, e.lab.Client, testnet.ClientIf)
			for _, k := range []bpf.FastL4FlowKey{toClient, toMember} {
				v := bpf.FastL4FlowVal{Self: k, Peer: k, CreatedNs: now, LastNs: now, Vid: uint32(vid), Seen: seenAny | seenACK, InIfindex: ext, InMac: [6]byte(clientMAC)}
				if k == toMember {
					v.Dir = dirServer
					v.InMac = [6]byte(routerMAC)
				}
				if err := e.fp.flows.Update(k, &v, ebpf.UpdateAny); err != nil {
					b.Fatal(err)
				}
			}
			in := frame{src: tc.member, dst: tc.client, proto: protoTCP, flags: flagACK, seq: 1, ack: 1, ttl: 255}.bytes()
			copy(in, clientMAC)
			if ret, _ := e.repeat(b, in, 2); ret != xdpRedirect {
				b.Fatalf("verdict %d, want redirect", ret)
			}
			fwd := e.delta(tc.virtual, bpf.FastL4ReasonREASON_FWD_CLIENT)
			b.ResetTimer()
			_, d := e.repeat(b, in, b.N)
			b.StopTimer()
			b.ReportMetric(float64(d.Nanoseconds()), "ns/packet")
			b.ReportMetric(0, "ns/op")
			if fwd() == 0 {
				b.Fatal("the runs did not take the established path")
			}
		})
	}
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
