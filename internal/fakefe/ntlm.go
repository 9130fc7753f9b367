package fakefe

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"time"
	"unicode/utf16"
)

// NTLM message framing (MS-NLMP). The front end speaks enough of it for
// real clients (curl --ntlm) and for NTLMClient: negotiate (type 1),
// challenge (type 2) and authenticate (type 3) with NTLMv2 responses.

var ntlmSignature = []byte("NTLMSSP\x00")

// Errors of the NTLM exchange.
var (
	ErrNTLMMessage  = errors.New("malformed NTLM message")
	ErrNTLMResponse = errors.New("NTLM response does not verify")
	ErrNTLMUser     = errors.New("unknown user")
)

const (
	flagUnicode           = 0x00000001
	flagRequestTarget     = 0x00000004
	flagNTLM              = 0x00000200
	flagAlwaysSign        = 0x00008000
	flagTargetTypeDomain  = 0x00010000
	flagExtendedSessionSe = 0x00080000
	flagTargetInfo        = 0x00800000
	flagVersion           = 0x02000000
	flag128               = 0x20000000
	flag56                = 0x80000000

	challengeFlags = flagUnicode | flagRequestTarget | flagNTLM | flagAlwaysSign | flagTargetTypeDomain |
		flagExtendedSessionSe | flagTargetInfo | flagVersion | flag128 | flag56
)

// ntlmType returns the message type of a decoded NTLM message, or 0.
func ntlmType(msg []byte) uint32 {
	if len(msg) < 12 || string(msg[:8]) != string(ntlmSignature) {
		return 0
	}
	return binary.LittleEndian.Uint32(msg[8:12])
}

func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func fromUTF16le(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}

// challengeMessage builds a type 2 message for the server challenge.
func challengeMessage(challenge [8]byte, domain, computer string) []byte {
	target := utf16le(domain)
	var info []byte
	av := func(id uint16, v []byte) {
		info = binary.LittleEndian.AppendUint16(info, id)
		info = binary.LittleEndian.AppendUint16(info, uint16(len(v)))
		info = append(info, v...)
	}
	av(2, utf16le(domain))   // MsvAvNbDomainName
	av(1, utf16le(computer)) // MsvAvNbComputerName
	ts := make([]byte, 8)
	binary.LittleEndian.PutUint64(ts, uint64(time.Now().UnixNano()/100+116444736000000000))
	av(7, ts)  // MsvAvTimestamp
	av(0, nil) // MsvAvEOL
	const hdr = 56
	m := make([]byte, hdr, hdr+len(target)+len(info))
	copy(m, ntlmSignature)
	binary.LittleEndian.PutUint32(m[8:], 2)
	binary.LittleEndian.PutUint16(m[12:], uint16(len(target)))
	binary.LittleEndian.PutUint16(m[14:], uint16(len(target)))
	binary.LittleEndian.PutUint32(m[16:], hdr)
	binary.LittleEndian.PutUint32(m[20:], challengeFlags)
	copy(m[24:32], challenge[:])
	binary.LittleEndian.PutUint16(m[40:], uint16(len(info)))
	binary.LittleEndian.PutUint16(m[42:], uint16(len(info)))
	binary.LittleEndian.PutUint32(m[44:], uint32(hdr+len(target)))
	copy(m[48:], []byte{10, 0, 0x63, 0x45, 0, 0, 0, 15}) // version 10.0.17763, NTLM revision 15
	m = append(m, target...)
	return append(m, info...)
}

// securityBuffer reads the (length, offset) field at off of msg.
func securityBuffer(msg []byte, off int) ([]byte, error) {
	if len(msg) < off+8 {
		return nil, ErrNTLMMessage
	}
	l := int(binary.LittleEndian.Uint16(msg[off:]))
	o := int(binary.LittleEndian.Uint32(msg[off+4:]))
	if o < 0 || l < 0 || o+l > len(msg) {
		return nil, ErrNTLMMessage
	}
	return msg[o : o+l], nil
}

// authenticate is a parsed type 3 message.
type authenticate struct {
	user, domain, workstation string
	nt                        []byte
}

func parseAuthenticate(msg []byte) (*authenticate, error) {
	if ntlmType(msg) != 3 || len(msg) < 64 {
		return nil, ErrNTLMMessage
	}
	flags := binary.LittleEndian.Uint32(msg[60:])
	str := func(b []byte) string {
		if flags&flagUnicode != 0 {
			return fromUTF16le(b)
		}
		return string(b)
	}
	var a authenticate
	var err error
	fields := []struct {
		off int
		dst func([]byte)
	}{
		{20, func(b []byte) { a.nt = b }},
		{28, func(b []byte) { a.domain = str(b) }},
		{36, func(b []byte) { a.user = str(b) }},
		{44, func(b []byte) { a.workstation = str(b) }},
	}
	for _, f := range fields {
		b, e := securityBuffer(msg, f.off)
		if e != nil {
			err = e
			break
		}
		f.dst(b)
	}
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// ntowfv2 is NTOWFv2(password, user, domain) of MS-NLMP 3.3.2.
func ntowfv2(password, user, domain string) []byte {
	h := hmac.New(md5.New, md4Sum(utf16le(password)))
	h.Write(utf16le(strings.ToUpper(user) + domain))
	return h.Sum(nil)
}

// verifyV2 checks an NTLMv2 response against the server challenge.
func verifyV2(a *authenticate, password string, challenge [8]byte) error {
	if len(a.nt) <= 16 {
		return ErrNTLMResponse
	}
	key := ntowfv2(password, a.user, a.domain)
	h := hmac.New(md5.New, key)
	h.Write(challenge[:])
	h.Write(a.nt[16:])
	if !hmac.Equal(h.Sum(nil), a.nt[:16]) {
		return ErrNTLMResponse
	}
	return nil
}

// NTLMClient runs the client side of the exchange, for tests and the
// diagnose command: NegotiateHeader, then AuthenticateHeader with the
// server's challenge, on one connection.
type NTLMClient struct {
	User, Password, Domain, Workstation string
	// Scheme is "NTLM" (default) or "Negotiate".
	Scheme string
}

func (c *NTLMClient) scheme() string {
	if c.Scheme == "" {
		return "NTLM"
	}
	return c.Scheme
}

// NegotiateHeader returns the Authorization value of the first message.
func (c *NTLMClient) NegotiateHeader() string {
	m := make([]byte, 32)
	copy(m, ntlmSignature)
	binary.LittleEndian.PutUint32(m[8:], 1)
	binary.LittleEndian.PutUint32(m[12:], flagUnicode|flagRequestTarget|flagNTLM|flagAlwaysSign|flagExtendedSessionSe|flag128|flag56)
	return c.scheme() + " " + base64.StdEncoding.EncodeToString(m)
}

// AuthenticateHeader answers the challenge found in the WWW-Authenticate
// values of a 401 with the Authorization value of the third message.
func (c *NTLMClient) AuthenticateHeader(wwwAuthenticate []string) (string, error) {
	var chal []byte
	for _, v := range wwwAuthenticate {
		s, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
		if !ok || !strings.EqualFold(s, c.scheme()) {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(tok))
		if err == nil && ntlmType(b) == 2 {
			chal = b
			break
		}
	}
	if chal == nil {
		return "", fmt.Errorf("find %s challenge in %q: %w", c.scheme(), wwwAuthenticate, ErrNTLMMessage)
	}
	if len(chal) < 48 {
		return "", ErrNTLMMessage
	}
	var sc [8]byte
	copy(sc[:], chal[24:32])
	info, err := securityBuffer(chal, 40)
	if err != nil {
		return "", err
	}
	var cc [8]byte
	rand.Read(cc[:])
	blob := []byte{1, 1, 0, 0, 0, 0, 0, 0}
	blob = binary.LittleEndian.AppendUint64(blob, uint64(time.Now().UnixNano()/100+116444736000000000))
	blob = append(blob, cc[:]...)
	blob = append(blob, 0, 0, 0, 0)
	blob = append(blob, info...)
	blob = append(blob, 0, 0, 0, 0)
	h := hmac.New(md5.New, ntowfv2(c.Password, c.User, c.Domain))
	h.Write(sc[:])
	h.Write(blob)
	nt := append(h.Sum(nil), blob...)
	lm := make([]byte, 24)

	payload := [][]byte{lm, nt, utf16le(c.Domain), utf16le(c.User), utf16le(c.Workstation), nil}
	const hdr = 64
	m := make([]byte, hdr)
	copy(m, ntlmSignature)
	binary.LittleEndian.PutUint32(m[8:], 3)
	off := hdr
	for i, p := range payload {
		f := 12 + 8*i
		binary.LittleEndian.PutUint16(m[f:], uint16(len(p)))
		binary.LittleEndian.PutUint16(m[f+2:], uint16(len(p)))
		binary.LittleEndian.PutUint32(m[f+4:], uint32(off))
		off += len(p)
	}
	binary.LittleEndian.PutUint32(m[60:], flagUnicode|flagNTLM|flagAlwaysSign|flagExtendedSessionSe|flag128|flag56)
	for _, p := range payload {
		m = append(m, p...)
	}
	return c.scheme() + " " + base64.StdEncoding.EncodeToString(m), nil
}

// md4Sum is MD4 (RFC 1320), which NTLM's password hash needs and the
// standard library does not carry.
func md4Sum(msg []byte) []byte {
	a, b, c, d := uint32(0x67452301), uint32(0xefcdab89), uint32(0x98badcfe), uint32(0x10325476)
	n := len(msg)
	buf := append([]byte(nil), msg...)
	buf = append(buf, 0x80)
	for len(buf)%64 != 56 {
		buf = append(buf, 0)
	}
	buf = binary.LittleEndian.AppendUint64(buf, uint64(n)*8)
	f := func(x, y, z uint32) uint32 { return x&y | ^x&z }
	g := func(x, y, z uint32) uint32 { return x&y | x&z | y&z }
	h := func(x, y, z uint32) uint32 { return x ^ y ^ z }
	var x [16]uint32
	for blk := 0; blk < len(buf); blk += 64 {
		for i := range x {
			x[i] = binary.LittleEndian.Uint32(buf[blk+4*i:])
		}
		aa, bb, cc, dd := a, b, c, d
		r1 := [4]int{3, 7, 11, 19}
		for i := range 16 {
			k := i
			t := a + f(b, c, d) + x[k]
			a, b, c, d = d, bits.RotateLeft32(t, r1[i%4]), b, c
		}
		r2 := [4]int{3, 5, 9, 13}
		for i := range 16 {
			k := (i%4)*4 + i/4
			t := a + g(b, c, d) + x[k] + 0x5a827999
			a, b, c, d = d, bits.RotateLeft32(t, r2[i%4]), b, c
		}
		r3 := [4]int{3, 9, 11, 15}
		order := [16]int{0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15}
		for i := range 16 {
			t := a + h(b, c, d) + x[order[i]] + 0x6ed9eba1
			a, b, c, d = d, bits.RotateLeft32(t, r3[i%4]), b, c
		}
		a, b, c, d = a+aa, b+bb, c+cc, d+dd
	}
	out := make([]byte, 16)
	binary.LittleEndian.PutUint32(out[0:], a)
	binary.LittleEndian.PutUint32(out[4:], b)
	binary.LittleEndian.PutUint32(out[8:], c)
	binary.LittleEndian.PutUint32(out[12:], d)
	return out
}
