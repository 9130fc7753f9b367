package l4

import (
	"encoding/binary"
	"log/slog"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// BenchmarkScrapeFlows is the cost of one scrape of the fast path's
// collector with 100 000 connections (200 000 halves) in the flow table:
//
//	sudo go test ./l4 -run '^$' -bench ScrapeFlows -benchtime 20x
func BenchmarkScrapeFlows(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	const flows = 100_000
	e := newEnv(b, func(lab *testnet.Lab) *Spec {
		return testSpec(lab, fastl4("web", "198.18.0.10:443", "fe4", 4443))
	}, func(o *Options) { o.MaxFlows = 1 << 17; o.Logger = slog.New(slog.DiscardHandler) })
	keys := make([]bpf.FastL4FlowKey4, 0, 2*flows)
	vals := make([]bpf.FastL4FlowVal, 0, 2*flows)
	for i := range flows {
		var c, s bpf.FastL4FlowKey
		c.Family, c.Proto, s.Family, s.Proto = 4, unix.IPPROTO_TCP, 4, unix.IPPROTO_TCP
		c.Saddr.W[0] = binary.LittleEndian.Uint32([]byte{203, byte(i >> 16), byte(i >> 8), byte(i)})
		c.Daddr.W[0] = binary.LittleEndian.Uint32([]byte{198, 18, 0, 10})
		c.Sport, c.Dport = uint16(i), 443
		s.Saddr.W[0] = binary.LittleEndian.Uint32([]byte{198, 19, 0, byte(10 + i%2)})
		s.Daddr.W[0] = binary.LittleEndian.Uint32([]byte{198, 19, 1, byte(i / 20000)})
		s.Sport, s.Dport = 4443, uint16(40000+i%20000) // five SNAT addresses
		keys = append(keys, key4(&c), key4(&s))
		vc, vs := bpf.FastL4FlowVal{Vid: 1, Dir: dirClient}, bpf.FastL4FlowVal{Vid: 1, Dir: dirServer}
		setKeys(&vc, c, s)
		setKeys(&vs, s, c)
		vals = append(vals, vc, vs)
	}
	if _, err := e.fp.objs.Flows4Tcp.BatchUpdate(keys, vals, nil); err != nil {
		b.Fatalf("fill the flow table: %v", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(e.fp.Collector())
	b.ResetTimer()
	for b.Loop() {
		fams, err := reg.Gather()
		if err != nil || len(fams) == 0 {
			b.Fatalf("gather: %v", err)
		}
	}
	b.StopTimer()
	c, err := e.fp.countLive()
	if err != nil || c.byVirtual[1] != flows {
		b.Fatalf("counted %d connections of %d (%v)", c.byVirtual[1], flows, err)
	}
}
