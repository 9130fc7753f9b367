package lab

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"
)

// DNSTable is what a lab DNS responder answers: lower-case names without
// the trailing dot, and their addresses.
type DNSTable map[string][]netip.Addr

// ServeDNS answers the A and AAAA queries reaching pc from table until pc
// is closed; names not in the table get NXDOMAIN. It serves the lab's
// stand-ins for the Internet's and the DMZ's resolvers.
func ServeDNS(pc net.PacketConn, table DNSTable) {
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp, err := dnsAnswer(buf[:n], table); err == nil {
			_, _ = pc.WriteTo(resp, from)
		}
	}
}

// ServeDNSTCP answers the queries of the connections ln accepts, as
// ServeDNS does, until ln is closed (RFC 7766: each message preceded by
// its length).
func ServeDNSTCP(ln net.Listener, table DNSTable) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			for {
				var n [2]byte
				if _, err := io.ReadFull(c, n[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(n[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				resp, err := dnsAnswer(q, table)
				if err != nil {
					return
				}
				if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(resp))), resp...)); err != nil {
					return
				}
			}
		}()
	}
}

var errBadQuery = errors.New("bad DNS query")

// dnsAnswer builds the response to one query (RFC 1035 wire format).
func dnsAnswer(q []byte, table DNSTable) ([]byte, error) {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil, errBadQuery
	}
	name, qEnd, err := dnsQuestion(q)
	if err != nil {
		return nil, err
	}
	qtype := binary.BigEndian.Uint16(q[qEnd-4:])
	addrs, known := table[name]
	var answers [][]byte
	for _, a := range addrs {
		if (qtype == 1 && a.Is4()) || (qtype == 28 && a.Is6()) {
			rr := []byte{0xc0, 12} // pointer to the question's name
			rr = binary.BigEndian.AppendUint16(rr, qtype)
			rr = binary.BigEndian.AppendUint16(rr, 1)
			rr = binary.BigEndian.AppendUint32(rr, 60)
			rr = binary.BigEndian.AppendUint16(rr, uint16(a.BitLen()/8))
			rr = append(rr, a.AsSlice()...)
			answers = append(answers, rr)
		}
	}
	resp := make([]byte, 12, 512)
	copy(resp, q[:2])
	flags := uint16(0x8180) // response, RD, RA
	if !known {
		flags |= 3 // NXDOMAIN
	}
	binary.BigEndian.PutUint16(resp[2:], flags)
	binary.BigEndian.PutUint16(resp[4:], 1)
	binary.BigEndian.PutUint16(resp[6:], uint16(len(answers)))
	resp = append(resp, q[12:qEnd]...)
	for _, a := range answers {
		resp = append(resp, a...)
	}
	return resp, nil
}

// dnsQuestion returns the question's name (lower case, no trailing dot)
// and the offset just past its type and class.
func dnsQuestion(q []byte) (string, int, error) {
	i := 12
	var labels []string
	for {
		if i >= len(q) {
			return "", 0, errBadQuery
		}
		l := int(q[i])
		i++
		if l == 0 {
			break
		}
		if i+l > len(q) {
			return "", 0, errBadQuery
		}
		labels = append(labels, string(q[i:i+l]))
		i += l
	}
	if i+4 > len(q) {
		return "", 0, errBadQuery
	}
	return strings.ToLower(strings.Join(labels, ".")), i + 4, nil
}
