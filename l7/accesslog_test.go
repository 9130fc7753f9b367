package l7

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/logs"
)

// hostileStrings are access log values a client or member chooses.
var hostileStrings = []string{"", "plain", `quote " backslash \ slash /`, "\x00\x01\x1f\x7f", "\r\n\tline",
	"<script>&amp;</script>", "ü€😀", "\xff\xfe", "ab\xc3", "\xe2\x80\xa8 \xe2\x80\xa9", "\u2028\u2029",
	"\xed\xa0\x80 surrogate", "%00%0d%0a", `{"time":"x"}`, "…" + string(rune(0x10FFFF))}

// TestAccessLineMatchesSlogJSON: a line encoded directly is the line
// slog's JSON handler writes for the same fields, and decodes with
// encoding/json to the same values, hostile strings included.
func TestAccessLineMatchesSlogJSON(t *testing.T) {
	rnd := rand.New(rand.NewPCG(21, 2))
	floats := []float64{0, 0.001, 1.5, 12345.678, 1e-7, 3e21, 1e20, -2.5, math.NaN(), math.Inf(1), math.Inf(-1)}
	addrs := []netip.AddrPort{netip.MustParseAddrPort("198.18.0.1:443"), netip.MustParseAddrPort("[2001:db8::1]:8443"),
		netip.MustParseAddrPort("[fe80::1%eth\"0]:1"), {}}
	for i := range 3000 {
		s := func() string {
			if rnd.IntN(3) == 0 {
				return hostileStrings[rnd.IntN(len(hostileStrings))]
			}
			b := make([]byte, rnd.IntN(16))
			for j := range b {
				b[j] = byte(rnd.IntN(256))
			}
			return string(b)
		}
		str, f, a := s(), floats[rnd.IntN(len(floats))], addrs[rnd.IntN(len(addrs))]
		n := rnd.Int64() - rnd.Int64()
		emit := func(af accessFields) {
			af.str("path", str)
			af.addr("client", a)
			af.int("status", n)
			af.uint("conn", uint64(n))
			af.float("duration_ms", f)
			af.bool("pinned", n%2 == 0)
		}
		now := time.Date(2026, 12, 3, 18, 4, 5, rnd.IntN(1e9), time.UTC)
		got, want := accessLine(t, true, now, emit), accessLine(t, false, now, emit)
		if got != want {
			t.Fatalf("line %d for %q, %v, %v:\ngot  %s\nwant %s", i, str, f, a, got, want)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(got), &v); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, got)
		}
		if v["path"] != string([]rune(str)) || v["msg"] != "request" {
			t.Fatalf("line %d decodes to path %q, want %q", i, v["path"], string([]rune(str)))
		}
	}
}

// accessLine is the line writeAccessLine writes through a handler that
// takes JSON lines (direct) or through slog's JSON handler.
func accessLine(t *testing.T, direct bool, now time.Time, emit func(accessFields)) string {
	var b bytes.Buffer
	var h slog.Handler = slog.NewJSONHandler(&b, nil)
	if direct {
		h = logs.NewJSONLines(&b)
		if _, ok := h.(jsonLineWriter); !ok {
			t.Fatal("logs.JSONLines does not take encoded lines")
		}
	}
	writeAccessLine(context.Background(), slog.New(h), now, emit)
	return b.String()
}

// TestTCPAddrPortPrintsAsString: the VIP written from netip prints as
// net.TCPAddr.String() does, or is left to it.
func TestTCPAddrPortPrintsAsString(t *testing.T) {
	for _, a := range []*net.TCPAddr{{IP: net.IPv4(198, 18, 0, 1), Port: 443}, {IP: net.ParseIP("198.18.0.1").To4(), Port: 80},
		{IP: net.ParseIP("2001:db8::1"), Port: 8443}, {IP: net.ParseIP("2001:db8:0:0:1:0:0:1"), Port: 1},
		{IP: net.ParseIP("::ffff:198.18.0.2"), Port: 2}, {IP: net.ParseIP("::"), Port: 0}, {IP: net.ParseIP("fe80::1"), Port: 3, Zone: "eth0"},
		{IP: nil, Port: 4}, {IP: net.IP{1, 2, 3}, Port: 5}} {
		if ap, ok := tcpAddrPort(a); ok && ap.String() != a.String() {
			t.Errorf("%v prints as %q, want %q", a, ap, a)
		} else if !ok && a.Zone == "" && len(a.IP) != 0 && len(a.IP) != 3 {
			t.Errorf("%v left to String()", a)
		}
	}
}
