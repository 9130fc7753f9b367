package l4

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// Frames for the program, built by hand with valid checksums, and a
// parser that checks every checksum by recomputing it from scratch.

const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58

	flagFIN = 0x01
	flagSYN = 0x02
	flagRST = 0x04
	flagPSH = 0x08
	flagACK = 0x10
)

var (
	macClient = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	macProxy  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
)

// ext6 is an IPv6 extension header: its type and body (the body excludes
// the next-header and length bytes; it is padded to 8-byte units).
type ext6 struct {
	typ  uint8
	body []byte
}

type frame struct {
	src, dst   netip.AddrPort
	proto      uint8
	flags      uint8 // TCP
	seq, ack   uint32
	tcpOpts    []byte
	payload    []byte
	ipOpts     []byte // IPv4 options (multiple of 4)
	exts       []ext6
	fragOff    uint16 // in 8-byte units
	fragMore   bool
	fragHeader bool // IPv6: add a fragment header
	noUDPCsum  bool
	partial    bool  // TCP/UDP checksum left partial (the folded pseudo-header sum), as by a sender offloading it
	ttl        uint8 // TTL / hop limit, 0: 64
	df         bool  // IPv4: don't fragment
	vlan       uint16
	etherType  uint16 // override (ARP etc.)
	rawL4      []byte // the L4 bytes as given (ICMP)
	window     uint16 // TCP window, 0: 65535
}

func (f frame) bytes() []byte {
	var l4 []byte
	switch {
	case f.rawL4 != nil:
		l4 = append([]byte(nil), f.rawL4...)
	case f.proto == protoTCP:
		hl := 20 + len(f.tcpOpts)
		l4 = make([]byte, hl, hl+len(f.payload))
		binary.BigEndian.PutUint16(l4[0:], f.src.Port())
		binary.BigEndian.PutUint16(l4[2:], f.dst.Port())
		binary.BigEndian.PutUint32(l4[4:], f.seq)
		binary.BigEndian.PutUint32(l4[8:], f.ack)
		l4[12] = byte(hl/4) << 4
		l4[13] = f.flags
		win := f.window
		if win == 0 {
			win = 65535
		}
		binary.BigEndian.PutUint16(l4[14:], win)
		copy(l4[20:], f.tcpOpts)
		l4 = append(l4, f.payload...)
	case f.proto == protoUDP:
		l4 = make([]byte, 8, 8+len(f.payload))
		binary.BigEndian.PutUint16(l4[0:], f.src.Port())
		binary.BigEndian.PutUint16(l4[2:], f.dst.Port())
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(f.payload)))
		l4 = append(l4, f.payload...)
	}
	if f.rawL4 == nil && f.fragOff == 0 && f.partial {
		at := map[uint8]int{protoTCP: 16, protoUDP: 6}[f.proto]
		binary.BigEndian.PutUint16(l4[at:], foldSum(pseudo(f.src.Addr(), f.dst.Addr(), f.proto, len(l4))))
	} else if f.rawL4 == nil && f.fragOff == 0 {
		switch f.proto {
		case protoTCP:
			binary.BigEndian.PutUint16(l4[16:], ^foldSum(pseudo(f.src.Addr(), f.dst.Addr(), f.proto, len(l4))+sum16(l4)))
		case protoUDP:
			if !f.noUDPCsum {
				c := ^foldSum(pseudo(f.src.Addr(), f.dst.Addr(), f.proto, len(l4)) + sum16(l4))
				if c == 0 {
					c = 0xffff
				}
				binary.BigEndian.PutUint16(l4[6:], c)
			}
		}
	}
	var ip []byte
	if f.src.Addr().Is4() {
		hl := 20 + len(f.ipOpts)
		ip = make([]byte, hl, hl+len(l4))
		ip[0] = 0x40 | byte(hl/4)
		binary.BigEndian.PutUint16(ip[2:], uint16(hl+len(l4)))
		binary.BigEndian.PutUint16(ip[4:], 0x1234)
		fo := f.fragOff
		if f.fragMore {
			fo |= 0x2000
		}
		if f.df {
			fo |= 0x4000
		}
		binary.BigEndian.PutUint16(ip[6:], fo)
		ip[8] = f.hops()
		ip[9] = f.proto
		s, d := f.src.Addr().As4(), f.dst.Addr().As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		copy(ip[20:], f.ipOpts)
		binary.BigEndian.PutUint16(ip[10:], ^foldSum(sum16(ip)))
		ip = append(ip, l4...)
	} else {
		var ext []byte
		next := f.proto
		exts := f.exts
		if f.fragHeader {
			fh := make([]byte, 6)
			fo := f.fragOff << 3
			if f.fragMore {
				fo |= 1
			}
			binary.BigEndian.PutUint16(fh[0:], fo)
			binary.BigEndian.PutUint32(fh[2:], 0x1234)
			exts = append(append([]ext6(nil), exts...), ext6{typ: 44, body: fh})
		}
		// Chain from the last header backwards.
		for i := len(exts) - 1; i >= 0; i-- {
			e := exts[i]
			body := e.body
			h := []byte{next, 0}
			if e.typ == 51 { // AH: length in 4-byte units minus 2
				n := (len(body) + 2 + 7) / 8 * 8
				body = append(body, make([]byte, n-2-len(body))...)
				h[1] = byte(n/4 - 2)
			} else if e.typ != 44 {
				n := (len(body) + 2 + 7) / 8 * 8
				body = append(body, make([]byte, n-2-len(body))...)
				h[1] = byte(n/8 - 1)
			}
			ext = append(append(h, body...), ext...)
			next = e.typ
		}
		ip = make([]byte, 40, 40+len(ext)+len(l4))
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(ext)+len(l4)))
		ip[6] = next
		ip[7] = f.hops()
		s, d := f.src.Addr().As16(), f.dst.Addr().As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		ip = append(append(ip, ext...), l4...)
	}
	eth := make([]byte, 14, 18+len(ip))
	copy(eth[0:], macProxy)
	copy(eth[6:], macClient)
	et := uint16(0x0800)
	if f.src.Addr().Is6() {
		et = 0x86dd
	}
	if f.etherType != 0 {
		et = f.etherType
	}
	if f.vlan != 0 {
		binary.BigEndian.PutUint16(eth[12:], 0x8100)
		eth = binary.BigEndian.AppendUint16(eth, f.vlan)
		eth = binary.BigEndian.AppendUint16(eth, et)
	} else {
		binary.BigEndian.PutUint16(eth[12:], et)
	}
	out := append(eth, ip...)
	for len(out) < 60 { // Ethernet minimum: padding past the IP datagram
		out = append(out, 0)
	}
	return out
}

func (f frame) hops() uint8 {
	if f.ttl == 0 {
		return 64
	}
	return f.ttl
}

func pseudo(src, dst netip.Addr, proto uint8, n int) uint64 {
	return sum16(src.AsSlice()) + sum16(dst.AsSlice()) + uint64(proto) + uint64(n)
}

// parsed is what a frame carries, after every checksum was verified.
type parsed struct {
	dstMAC, srcMAC net.HardwareAddr
	src, dst       netip.AddrPort
	proto          uint8
	flags          uint8
	seq, ack       uint32
	ttl            uint8
	tcpOpts        []byte
	payload        []byte
	udpCsum        uint16
	l4             []byte
	ipLen          int
}

// parseFrame parses an untagged IPv4/IPv6 TCP/UDP/ICMP frame and checks
// the IPv4 header checksum and the L4 checksum by full recomputation.
func parseFrame(b []byte) (parsed, error) {
	var p parsed
	if len(b) < 14 {
		return p, fmt.Errorf("short frame")
	}
	p.dstMAC, p.srcMAC = net.HardwareAddr(b[0:6]), net.HardwareAddr(b[6:12])
	et := binary.BigEndian.Uint16(b[12:])
	ipb := b[14:]
	var l4 []byte
	var src, dst netip.Addr
	switch et {
	case 0x0800:
		hl := int(ipb[0]&0xf) * 4
		tot := int(binary.BigEndian.Uint16(ipb[2:]))
		if foldSum(sum16(ipb[:hl])) != 0xffff {
			return p, fmt.Errorf("bad IPv4 header checksum %#04x", binary.BigEndian.Uint16(ipb[10:]))
		}
		p.proto, p.ttl = ipb[9], ipb[8]
		src, dst = netip.AddrFrom4([4]byte(ipb[12:16])), netip.AddrFrom4([4]byte(ipb[16:20]))
		l4 = ipb[hl:tot]
		p.ipLen = tot
	case 0x86dd:
		plen := int(binary.BigEndian.Uint16(ipb[4:]))
		p.proto, p.ttl = ipb[6], ipb[7]
		src, dst = netip.AddrFrom16([16]byte(ipb[8:24])), netip.AddrFrom16([16]byte(ipb[24:40]))
		l4 = ipb[40 : 40+plen]
		p.ipLen = 40 + plen
		for p.proto == 0 || p.proto == 43 || p.proto == 60 || p.proto == 44 || p.proto == 51 {
			n := (int(l4[1]) + 1) * 8
			if p.proto == 44 {
				n = 8
			} else if p.proto == 51 {
				n = (int(l4[1]) + 2) * 4
			}
			p.proto = l4[0]
			l4 = l4[n:]
		}
	default:
		return p, fmt.Errorf("ethertype %#04x", et)
	}
	p.l4 = l4
	switch p.proto {
	case protoTCP:
		if foldSum(pseudo(src, dst, p.proto, len(l4))+sum16(l4)) != 0xffff {
			return p, fmt.Errorf("bad TCP checksum %#04x", binary.BigEndian.Uint16(l4[16:]))
		}
		p.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
		p.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
		p.seq, p.ack = binary.BigEndian.Uint32(l4[4:]), binary.BigEndian.Uint32(l4[8:])
		p.flags = l4[13]
		hl := int(l4[12]>>4) * 4
		p.tcpOpts = l4[20:hl]
		p.payload = l4[hl:]
	case protoUDP:
		p.udpCsum = binary.BigEndian.Uint16(l4[6:])
		if p.udpCsum != 0 && foldSum(pseudo(src, dst, p.proto, len(l4))+sum16(l4)) != 0xffff {
			return p, fmt.Errorf("bad UDP checksum %#04x", p.udpCsum)
		}
		p.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
		p.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
		p.payload = l4[8:]
	case protoICMP:
		if foldSum(sum16(l4)) != 0xffff {
			return p, fmt.Errorf("bad ICMP checksum")
		}
		p.src, p.dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
	case protoICMPv6:
		if foldSum(pseudo(src, dst, p.proto, len(l4))+sum16(l4)) != 0xffff {
			return p, fmt.Errorf("bad ICMPv6 checksum")
		}
		p.src, p.dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
	}
	return p, nil
}
