package l4

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// lineLog collects the connection log's JSON lines.
type lineLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// records parses the lines written so far.
func (l *lineLog) records(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("connection log line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// flowLogEnv is a lab with the fast path running, its connection log
// written to the returned lines at rate lines a second, and a byte sink
// on the IPv4 members behind sinklog (log: true) and sink (no log).
func flowLogEnv(t *testing.T, rate int) (*e2eEnv, *lineLog) {
	lines := &lineLog{}
	short := func(v *Virtual) { v.CloseTimeout = time.Second }
	e := newEnv(t, func(lab *testnet.Lab) *Spec {
		s := testSpec(lab,
			fastl4("sinklog", "198.18.0.10:5001", "fe4", 5001, short, logged),
			fastl4("sink", "198.18.0.10:5002", "fe4", 5001, short))
		s.LogRate = rate
		return s
	}, func(o *Options) {
		o.MaxFlows = 1 << 14
		o.GCInterval = 100 * time.Millisecond
		o.FlowLog = slog.New(slog.NewJSONHandler(lines, nil))
	})
	x := &e2eEnv{env: e, whoErrs: make(chan error, 16)}
	for _, m := range e.lab.Members4 {
		x.serveSink(t, m)
	}
	x.start()
	return x, lines
}

// sinkConn sends n bytes to the sink behind vip, half-closes and reads
// the sink's count back: the client's address and the count.
func (x *e2eEnv) sinkConn(ctx context.Context, vip netip.AddrPort, n int) (netip.AddrPort, uint64, error) {
	c, err := x.lab.Client.DialContext(ctx, "tcp", vip.String())
	if err != nil {
		return netip.AddrPort{}, 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	if _, err := c.Write(make([]byte, n)); err != nil {
		return local, 0, err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return local, 0, err
	}
	var count uint64
	if err := binary.Read(c, binary.BigEndian, &count); err != nil {
		return local, 0, err
	}
	_, _ = io.Copy(io.Discard, c)
	return local, count, nil
}

// TestPrivilegedFlowLogConnection sends one TCP connection through a
// fastl4 virtual with log and one through a virtual without: the log
// holds exactly one open and one close line, both of the first, with its
// client, VIP, SNAT address and member, and a close with what the
// client sent and received, a duration and why it ended.
func TestPrivilegedFlowLogConnection(t *testing.T) {
	testnet.RequireRoot(t)
	x, lines := flowLogEnv(t, 1000)
	x.resolve()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const sent = 100000
	if _, _, err := x.sinkConn(ctx, ap(vip4, 5002), sent); err != nil {
		t.Fatalf("connection through sink: %v", err)
	}
	client, got, err := x.sinkConn(ctx, ap(vip4, 5001), sent)
	if err != nil || got != sent {
		t.Fatalf("connection through sinklog: sink counted %d of %d bytes: %v", got, sent, err)
	}
	eventually(t, 15*time.Second, "open and close lines", func() bool { return len(lines.records(t)) >= 2 })
	time.Sleep(300 * time.Millisecond) // three GC passes: nothing more comes
	recs := lines.records(t)
	if len(recs) != 2 || recs[0]["msg"] != "open" || recs[1]["msg"] != "close" {
		t.Fatalf("connection log: %d lines, want open then close:\n%v", len(recs), recs)
	}
	for _, r := range recs {
		member, _ := netip.ParseAddrPort(fmt.Sprint(r["upstream"]))
		if r["virtual"] != "sinklog" || r["proto"] != "tcp" || r["client"] != client.String() ||
			r["vip"] != ap(vip4, 5001).String() || !strings.HasPrefix(fmt.Sprint(r["snat"]), x.lab.IntAddr4.String()+":") ||
			!x.isMember(member, 5001) {
			t.Errorf("%s line: %v; want virtual sinklog, client %s, vip %s, snat %s, a member on 5001", r["msg"], r, client, ap(vip4, 5001), x.lab.IntAddr4)
		}
	}
	cl := recs[1]
	num := func(k string) float64 { f, _ := cl[k].(float64); return f }
	// Frames are counted whole: each carries at most 14 + 20 + 60 bytes
	// of headers besides its payload.
	in, out, pin, pout := num("bytes_in"), num("bytes_out"), num("packets_in"), num("packets_out")
	if in < sent || in > sent+pin*94 || out < 8 || out > 8+pout*94 || pin < 3 || pout < 3 {
		t.Errorf("close: %v bytes in %v packets from the client, %v bytes in %v packets from the member; the client sent %d bytes and received 8",
			in, pin, out, pout, sent)
	}
	if num("duration_ms") <= 0 || cl["termination"] != EndFIN {
		t.Errorf("close: duration %v ms, termination %v; want a duration and %q", cl["duration_ms"], cl["termination"], EndFIN)
	}
	t0, err0 := time.Parse(time.RFC3339Nano, fmt.Sprint(recs[0]["time"]))
	t1, err1 := time.Parse(time.RFC3339Nano, fmt.Sprint(cl["time"]))
	if err0 != nil || err1 != nil || !t0.Before(t1) {
		t.Errorf("times: open %v, close %v (%v %v): want the open first", recs[0]["time"], cl["time"], err0, err1)
	}

	// A connection flows kill removes ends as killed.
	c, err := x.lab.Client.DialContext(ctx, "tcp", ap(vip4, 5001).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.TCPAddr).AddrPort().Port()
	eventually(t, 5*time.Second, "open line", func() bool { return len(lines.records(t)) >= 3 })
	if _, err := x.fp.KillFlows(FlowFilter{Virtual: "sinklog", ClientPort: port}); err != nil {
		t.Fatal(err)
	}
	recs = lines.records(t)
	if len(recs) != 4 || recs[3]["msg"] != "close" || recs[3]["termination"] != EndKilled || !strings.HasSuffix(fmt.Sprint(recs[3]["client"]), fmt.Sprintf(":%d", port)) {
		t.Errorf("after flows kill: %v; want a close line of client port %d, termination %q", recs[2:], port, EndKilled)
	}
}

// TestPrivilegedFlowLogRateLimit opens many short connections through a
// virtual with log under a rate of one line a second: the log holds no
// more lines than the rate allows, and every open and close not written
// is counted in edgeproxy_fastl4_log_dropped_total{reason="rate"}.
func TestPrivilegedFlowLogRateLimit(t *testing.T) {
	testnet.RequireRoot(t)
	x, lines := flowLogEnv(t, 1)
	x.resolve()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	const conns = 1000
	for i := range conns {
		if _, _, err := x.sinkConn(ctx, ap(vip4, 5001), 0); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
	dropped := func() int {
		return int(testutil.ToFloat64(filterMetric(x.fp.Collector(), "edgeproxy_fastl4_log_dropped_total", "rate")))
	}
	eventually(t, 30*time.Second, "every open and close written or counted", func() bool {
		return len(lines.records(t))+dropped() >= 2*conns
	})
	written := len(lines.records(t))
	bound := 2 + int(time.Since(start).Seconds())
	if written > bound || written+dropped() != 2*conns {
		t.Errorf("%d lines written, %d counted as dropped, for %d connections: want at most %d lines (1 a second) and the rest counted",
			written, dropped(), conns, bound)
	}
	opens := slices.IndexFunc(lines.records(t), func(r map[string]any) bool { return r["msg"] == "open" })
	if opens != 0 {
		t.Errorf("first line is not an open: %v", lines.records(t))
	}
}

// filterMetric is the collector's metric name with the label value
// reason, alone.
func filterMetric(c prometheus.Collector, name, reason string) prometheus.Collector {
	return prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		all := make(chan prometheus.Metric, 1024)
		go func() { c.Collect(all); close(all) }()
		for m := range all {
			var d dto.Metric
			if !strings.Contains(m.Desc().String(), `"`+name+`"`) || m.Write(&d) != nil {
				continue
			}
			for _, l := range d.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					ch <- m
				}
			}
		}
	})
}
