package l4

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// TestPrivilegedPathMTUDiscovery sends 4 MiB from the client to a member
// whose side of the proxy has an MTU of 1400, while the member, on a 1500
// link, offers the client an MSS for 1500: the client's full-sized
// segments (DF, or IPv6) get frag-needed / packet too big from the
// program, the client lowers its path MTU to 1400, and the transfer
// completes.
func TestPrivilegedPathMTUDiscovery(t *testing.T) {
	x := newE2E(t)
	cfg := testSpec(x.lab, append(e2eVirtuals, fastl4("sink6", "[2001:db8:1::10]:5001", "fe6", 5001))...)
	x.do(func() {
		if err := x.fp.Apply(cfg); err != nil {
			t.Fatal(err)
		}
	})
	x.setMTU(testnet.IntIf, 1400)
	for _, tc := range []struct{ virtual, vip string }{
		{"sink", "198.18.0.10:5001"},
		{"sink6", "[2001:db8:1::10]:5001"},
	} {
		t.Run(tc.virtual, func(t *testing.T) {
			tooBig := x.delta(tc.virtual, bpf.FastL4ReasonREASON_TX_TOO_BIG)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := x.lab.Client.DialContext(ctx, "tcp", tc.vip)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			const size = 4 << 20
			if _, err := c.Write(bytes.Repeat([]byte("pmtu"), size/4)); err != nil {
				t.Fatalf("send: %v", err)
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			var got uint64
			if err := binary.Read(c, binary.BigEndian, &got); err != nil {
				t.Fatalf("read the count: %v", err)
			}
			if got != size {
				t.Errorf("member received %d bytes, want %d", got, size)
			}
			if tooBig() == 0 {
				t.Error("no frag-needed sent: the transfer did not need path MTU discovery")
			}
			host, _, _ := net.SplitHostPort(tc.vip)
			route := x.lab.Client.Run(t, "ip", "route", "get", host)
			if !strings.Contains(route, "mtu 1400") {
				t.Errorf("the client's path MTU to the VIP is not 1400:\n%s", route)
			}
		})
	}
}
