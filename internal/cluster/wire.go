package cluster

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
)

// Conn is a TCP connection through a VIP, as the client sends it.
type Conn struct {
	Client, VIP netip.AddrPort
}

// Message kinds on the link.
const (
	kindOwn  = 0x2001 // the sender owns these connections
	kindGone = 0x2002 // the sender's connections that ended
	kindAsk  = 0x2003 // send me every connection you own
	kindDone = 0x2004 // the answer to kindAsk is complete
)

// A body: the sender's MAC on the external segment (6 bytes), then the
// connections, each: family (4 or 6), client address, client port, VIP
// address, VIP port (ports big-endian).

var errBody = errors.New("malformed body")

func entryLen(family byte) int {
	if family == 6 {
		return 1 + 2*(16+2)
	}
	return 1 + 2*(4+2)
}

func appendConn(b []byte, c Conn) []byte {
	fam := byte(4)
	if c.Client.Addr().Is6() {
		fam = 6
	}
	b = append(b, fam)
	for _, ap := range []netip.AddrPort{c.Client, c.VIP} {
		if fam == 4 {
			a := ap.Addr().As4()
			b = append(b, a[:]...)
		} else {
			a := ap.Addr().As16()
			b = append(b, a[:]...)
		}
		b = binary.BigEndian.AppendUint16(b, ap.Port())
	}
	return b
}

// parseBody reads a body: the sender's MAC and its connections.
func parseBody(b []byte) (net.HardwareAddr, []Conn, error) {
	if len(b) < 6 {
		return nil, nil, errBody
	}
	mac := net.HardwareAddr(append([]byte(nil), b[:6]...))
	var out []Conn
	for b = b[6:]; len(b) > 0; {
		if (b[0] != 4 && b[0] != 6) || len(b) < entryLen(b[0]) {
			return nil, nil, errBody
		}
		n := 4
		if b[0] == 6 {
			n = 16
		}
		p := b[1:]
		var c Conn
		c.Client = netip.AddrPortFrom(addrOf(p[:n]), binary.BigEndian.Uint16(p[n:]))
		p = p[n+2:]
		c.VIP = netip.AddrPortFrom(addrOf(p[:n]), binary.BigEndian.Uint16(p[n:]))
		out = append(out, c)
		b = b[entryLen(b[0]):]
	}
	return mac, out, nil
}

func addrOf(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a
}

// bodies packs the connections into bodies of at most max bytes, each
// starting with mac.
func bodies(mac net.HardwareAddr, conns []Conn, max int) [][]byte {
	var out [][]byte
	b := append([]byte(nil), mac...)
	for _, c := range conns {
		if len(b)+entryLen(6) > max {
			out = append(out, b)
			b = append([]byte(nil), mac...)
		}
		b = appendConn(b, c)
	}
	return append(out, b)
}
