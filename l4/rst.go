package l4

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// resetter sends TCP resets through raw sockets of the fast path's network
// namespace; the host's routing and neighbour tables deliver them.
type resetter struct {
	fd4, fd6 int
}

func newResetter() (*resetter, error) {
	r := &resetter{fd4: -1, fd6: -1}
	var err error
	// IPPROTO_RAW implies that the IP header is ours to write.
	if r.fd4, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
		return nil, fmt.Errorf("open raw socket for resets: %w", err)
	}
	if r.fd6, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
		// IPv6 may be disabled on the host: IPv4 resets still work.
		r.fd6 = -1
	}
	return r, nil
}

func (r *resetter) Close() {
	if r.fd4 >= 0 {
		unix.Close(r.fd4)
	}
	if r.fd6 >= 0 {
		unix.Close(r.fd6)
	}
}

// send sends RST+ACK from src to dst with the given sequence and
// acknowledgement numbers.
func (r *resetter) send(src, dst netip.AddrPort, seq, ack uint32) error {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4
	tcp[13] = 0x14 // RST, ACK
	binary.BigEndian.PutUint16(tcp[16:], tcpChecksum(src.Addr(), dst.Addr(), tcp))

	if src.Addr().Is4() {
		pkt := make([]byte, 20+len(tcp))
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		binary.BigEndian.PutUint16(pkt[6:], 0x4000) // DF
		pkt[8] = 64
		pkt[9] = unix.IPPROTO_TCP
		s4, d4 := src.Addr().As4(), dst.Addr().As4()
		copy(pkt[12:], s4[:])
		copy(pkt[16:], d4[:])
		binary.BigEndian.PutUint16(pkt[10:], ^foldSum(sum16(pkt[:20])))
		copy(pkt[20:], tcp)
		if err := unix.Sendto(r.fd4, pkt, 0, &unix.SockaddrInet4{Addr: d4}); err != nil {
			return fmt.Errorf("send reset to %s: %w", dst, err)
		}
		return nil
	}
	if r.fd6 < 0 {
		return fmt.Errorf("send reset to %s: no IPv6 raw socket", dst)
	}
	pkt := make([]byte, 40+len(tcp))
	pkt[0] = 0x60
	binary.BigEndian.PutUint16(pkt[4:], uint16(len(tcp)))
	pkt[6] = unix.IPPROTO_TCP
	pkt[7] = 64
	s16, d16 := src.Addr().As16(), dst.Addr().As16()
	copy(pkt[8:], s16[:])
	copy(pkt[24:], d16[:])
	copy(pkt[40:], tcp)
	if err := unix.Sendto(r.fd6, pkt, 0, &unix.SockaddrInet6{Addr: d16}); err != nil {
		return fmt.Errorf("send reset to %s: %w", dst, err)
	}
	return nil
}

// tcpChecksum is the TCP checksum over the pseudo header and seg.
func tcpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var s uint64
	s += sum16(src.AsSlice())
	s += sum16(dst.AsSlice())
	s += uint64(unix.IPPROTO_TCP) + uint64(len(seg))
	s += sum16(seg)
	return ^foldSum(s)
}

func sum16(b []byte) uint64 {
	var s uint64
	for i := 0; i+1 < len(b); i += 2 {
		s += uint64(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint64(b[len(b)-1]) << 8
	}
	return s
}

func foldSum(s uint64) uint16 {
	for s > 0xffff {
		s = (s & 0xffff) + (s >> 16)
	}
	return uint16(s)
}
