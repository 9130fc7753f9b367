package lab

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// TestServeDNS resolves through the responder with Go's own resolver:
// known names get their addresses of the asked family, unknown ones
// NXDOMAIN, and names match whatever their case.
func TestServeDNS(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	v4, v6 := netip.MustParseAddr("198.19.1.11"), netip.MustParseAddr("2001:db8:3::11")
	go ServeDNS(pc, DNSTable{"fe01.corp.example.com": {v4, v6}, "only4.corp.example.com": {v4}})
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	got, err := r.LookupNetIP(ctx, "ip", "FE01.corp.example.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []netip.Addr{v4, v6} {
		if !slices.Contains(got, want) {
			t.Errorf("fe01: %v, want %v among them", got, want)
		}
	}
	if got, err := r.LookupNetIP(ctx, "ip6", "only4.corp.example.com"); err == nil && len(got) > 0 {
		t.Errorf("only4 over AAAA: %v, want no address", got)
	}
	_, err = r.LookupNetIP(ctx, "ip4", "nothere.corp.example.com")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("nothere: %v, want not found", err)
	}
}
