package l4

import (
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/config"
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
	e := newEnv(b, func(lab *testnet.Lab) *config.Config {
		return testConfig(b, lab, "",
			`name: web, mode: fastl4, listen: "198.18.0.10:443", pool: fe4, port: 4443`,
			`name: web6, mode: fastl4, listen: "[2001:db8:1::10]:443", pool: fe6, port: 4443`)
	}, func(o *Options) { o.MaxFlows = 1 << 16; o.Logger = slog.New(slog.DiscardHandler) })
	e.resolve()
	return e
}

// repeat runs the program n times on in inside the kernel and reports the
// kernel's average time per run.
func (e *env) repeat(b *testing.B, in []byte, n int) (uint32, time.Duration) {
	var ret uint32
	var d time.Duration
	e.do(func() {
		var err error
		ret, d, err = e.fp.objs.EdgeproxyFastl4.Benchmark(in, n, nil)
		if err != nil {
			b.Fatal(err)
		}
	})
	return ret, d
}

// BenchmarkProgramEstablished measures an established flow. The table
// holds two entries that rewrite a packet into the other one (member to
// client, client to member): each run takes the full established path
// (flow lookup, tracking, rewrite with checksums, cached next hop,
// redirect), alternating directions.
func BenchmarkProgramEstablished(b *testing.B) {
	e := benchEnv(b)
	for _, tc := range []struct {
		name           string
		client, member netip.AddrPort
	}{
		{"ipv4", ap(client4, 40000), ap(e.lab.Members4[0], 4443)},
		{"ipv6", ap(client6, 40000), ap(e.lab.Members6[0], 4443)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			toClient := flowKey(tc.member, tc.client, protoTCP)
			toMember := flowKey(tc.client, tc.member, protoTCP)
			now := monoNow()
			vid := e.fp.virtuals["web"].id
			for _, k := range []bpf.FastL4FlowKey{toClient, toMember} {
				v := bpf.FastL4FlowVal{Self: k, Peer: k, CreatedNs: now, LastNs: now, Vid: uint32(vid), Seen: seenAny | seenACK}
				if k == toMember {
					v.Dir = dirServer
				}
				if err := e.fp.flows.Update(k, &v, ebpf.UpdateAny); err != nil {
					b.Fatal(err)
				}
			}
			in := frame{src: tc.member, dst: tc.client, proto: protoTCP, flags: flagACK, seq: 1, ack: 1}.bytes()
			if ret, _ := e.repeat(b, in, 2); ret != xdpRedirect {
				b.Fatalf("verdict %d, want redirect", ret)
			}
			fwd := e.delta("web", bpf.FastL4ReasonREASON_FWD_CLIENT)
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
		in := frame{src: ap(c, uint16(40000+i%20000)), dst: ap(vip4, 443), proto: protoTCP, flags: flagSYN, seq: 1}.bytes()
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
	in := frame{src: ap(client4, 50000), dst: ap(e.lab.ExtAddr4, 22), proto: protoTCP, flags: flagACK}.bytes()
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
	in := frame{src: ap(client4, 50000), dst: ap(e.lab.ExtAddr4, 22), proto: protoTCP, flags: flagACK}.bytes()
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
