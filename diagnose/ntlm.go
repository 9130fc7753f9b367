package diagnose

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5" //nolint:gosec // NTLM is defined with MD5
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math/bits"
	"strings"
	"time"
	"unicode/utf16"
)

// NTLM (MS-NLMP) client messages, enough to walk the handshake through
// the proxy with a test account: NEGOTIATE, CHALLENGE parsing and an
// NTLMv2 AUTHENTICATE carrying the TLS channel binding of the certificate
// the client saw, as Windows clients send it.

// Errors of the NTLM handshake.
var (
	ErrNTLMMessage = errors.New("malformed NTLM message")
)

const (
	ntlmNegotiateUnicode    = 0x00000001
	ntlmRequestTarget       = 0x00000004
	ntlmNegotiateNTLM       = 0x00000200
	ntlmAlwaysSign          = 0x00008000
	ntlmExtendedSessionSec  = 0x00080000
	ntlmNegotiateTargetInfo = 0x00800000
	ntlmNegotiate128        = 0x20000000
	ntlmNegotiate56         = 0x80000000

	ntlmClientFlags = ntlmNegotiateUnicode | ntlmRequestTarget | ntlmNegotiateNTLM | ntlmAlwaysSign |
		ntlmExtendedSessionSec | ntlmNegotiate128 | ntlmNegotiate56

	avEOL             = 0
	avTimestamp       = 7
	avChannelBindings = 10
)

var ntlmSignature = []byte("NTLMSSP\x00")

// ntlmNegotiate returns the NEGOTIATE_MESSAGE.
func ntlmNegotiate() []byte {
	m := make([]byte, 32)
	copy(m, ntlmSignature)
	binary.LittleEndian.PutUint32(m[8:], 1)
	binary.LittleEndian.PutUint32(m[12:], ntlmClientFlags)
	return m
}

// ntlmChallenge is a parsed CHALLENGE_MESSAGE.
type ntlmChallenge struct {
	Flags      uint32
	Challenge  [8]byte
	TargetInfo []byte
}

func parseNTLMChallenge(m []byte) (*ntlmChallenge, error) {
	if len(m) < 32 || !bytes.Equal(m[:8], ntlmSignature) || binary.LittleEndian.Uint32(m[8:]) != 2 {
		return nil, fmt.Errorf("parse challenge: %w", ErrNTLMMessage)
	}
	c := &ntlmChallenge{Flags: binary.LittleEndian.Uint32(m[20:])}
	copy(c.Challenge[:], m[24:32])
	if len(m) >= 48 {
		l := int(binary.LittleEndian.Uint16(m[40:]))
		off := int(binary.LittleEndian.Uint32(m[44:]))
		if off+l > len(m) || off < 0 {
			return nil, fmt.Errorf("parse challenge target info: %w", ErrNTLMMessage)
		}
		c.TargetInfo = m[off : off+l]
	}
	return c, nil
}

// avPairs walks MS-NLMP AV_PAIRs.
func avPairs(b []byte, fn func(id uint16, v []byte)) error {
	for len(b) >= 4 {
		id := binary.LittleEndian.Uint16(b)
		l := int(binary.LittleEndian.Uint16(b[2:]))
		if 4+l > len(b) {
			return fmt.Errorf("parse AV pairs: %w", ErrNTLMMessage)
		}
		if id == avEOL {
			return nil
		}
		fn(id, b[4:4+l])
		b = b[4+l:]
	}
	return nil
}

func appendAV(b []byte, id uint16, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, id)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

func utf16le(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, r := range u {
		binary.LittleEndian.PutUint16(b[2*i:], r)
	}
	return b
}

// ntowfv1 is MD4(UTF-16LE(password)).
func ntowfv1(password string) []byte {
	return md4Sum(utf16le(password))
}

// ntowfv2 is HMAC-MD5(NTOWFv1, UTF-16LE(upper(user) + domain)).
func ntowfv2(password, user, domain string) []byte {
	m := hmac.New(md5.New, ntowfv1(password))
	m.Write(utf16le(strings.ToUpper(user) + domain))
	return m.Sum(nil)
}

func hmacMD5(key []byte, parts ...[]byte) []byte {
	m := hmac.New(md5.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// ntlmv2Response computes NTProofStr || temp for a server challenge, a
// client challenge, a timestamp (FILETIME) and the target info to echo.
func ntlmv2Response(key []byte, server [8]byte, client [8]byte, ts uint64, targetInfo []byte) []byte {
	temp := []byte{1, 1, 0, 0, 0, 0, 0, 0}
	temp = binary.LittleEndian.AppendUint64(temp, ts)
	temp = append(temp, client[:]...)
	temp = append(temp, 0, 0, 0, 0)
	temp = append(temp, targetInfo...)
	temp = append(temp, 0, 0, 0, 0)
	proof := hmacMD5(key, server[:], temp)
	return append(proof, temp...)
}

// channelBindingHash returns MD5(gss_channel_bindings_struct) with the
// tls-server-end-point binding of cert (RFC 5929), the value Windows
// clients put in MsvAvChannelBindings.
func channelBindingHash(cert *x509.Certificate) []byte {
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.SHA384WithRSA, x509.ECDSAWithSHA384, x509.SHA384WithRSAPSS:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.ECDSAWithSHA512, x509.SHA512WithRSAPSS:
		h = sha512.New()
	default: // MD5 and SHA-1 are replaced by SHA-256
		h = sha256.New()
	}
	h.Write(cert.Raw)
	app := append([]byte("tls-server-end-point:"), h.Sum(nil)...)
	s := make([]byte, 16) // initiator and acceptor: type 0, empty address
	s = binary.LittleEndian.AppendUint32(s, uint32(len(app)))
	s = append(s, app...)
	sum := md5.Sum(s) //nolint:gosec // defined by the protocol
	return sum[:]
}

// fileTime converts t to a Windows FILETIME.
func fileTime(t time.Time) uint64 {
	return uint64(t.UnixNano()/100) + 116444736000000000
}

// ntlmAuthenticate builds the AUTHENTICATE_MESSAGE answering ch for the
// credentials; cbt (16 bytes) is added as MsvAvChannelBindings when set.
func ntlmAuthenticate(ch *ntlmChallenge, cr Credentials, cbt []byte, now time.Time) ([]byte, error) {
	var ts uint64
	serverTS := false
	var info []byte
	if err := avPairs(ch.TargetInfo, func(id uint16, v []byte) {
		if id == avTimestamp && len(v) == 8 {
			ts = binary.LittleEndian.Uint64(v)
			serverTS = true
		}
		if id != avChannelBindings {
			info = appendAV(info, id, v)
		}
	}); err != nil {
		return nil, err
	}
	if !serverTS {
		ts = fileTime(now)
	}
	if len(cbt) == 16 {
		info = appendAV(info, avChannelBindings, cbt)
	}
	info = appendAV(info, avEOL, nil)

	var client [8]byte
	if _, err := rand.Read(client[:]); err != nil {
		return nil, fmt.Errorf("build NTLM response: %w", err)
	}
	key := ntowfv2(cr.Password, cr.User, cr.Domain)
	nt := ntlmv2Response(key, ch.Challenge, client, ts, info)
	lm := make([]byte, 24)
	if !serverTS {
		lm = append(hmacMD5(key, ch.Challenge[:], client[:]), client[:]...)
	}
	flags := ch.Flags & (ntlmClientFlags | ntlmNegotiateTargetInfo)
	payload := [][]byte{lm, nt, utf16le(cr.Domain), utf16le(cr.User), utf16le("EDGEPROXY"), nil}
	m := make([]byte, 64)
	copy(m, ntlmSignature)
	binary.LittleEndian.PutUint32(m[8:], 3)
	off := 64
	for i, p := range payload {
		hdr := 12 + 8*i
		binary.LittleEndian.PutUint16(m[hdr:], uint16(len(p)))
		binary.LittleEndian.PutUint16(m[hdr+2:], uint16(len(p)))
		binary.LittleEndian.PutUint32(m[hdr+4:], uint32(off))
		off += len(p)
	}
	binary.LittleEndian.PutUint32(m[60:], flags)
	for _, p := range payload {
		m = append(m, p...)
	}
	return m, nil
}

// md4Sum is MD4 (RFC 1320), which NTLM's password hash is defined with.
func md4Sum(msg []byte) []byte {
	a, b, c, d := uint32(0x67452301), uint32(0xefcdab89), uint32(0x98badcfe), uint32(0x10325476)
	n := len(msg)
	padded := append(bytes.Clone(msg), 0x80)
	for len(padded)%64 != 56 {
		padded = append(padded, 0)
	}
	padded = binary.LittleEndian.AppendUint64(padded, uint64(n)*8)

	f := func(x, y, z uint32) uint32 { return x&y | ^x&z }
	g := func(x, y, z uint32) uint32 { return x&y | x&z | y&z }
	h := func(x, y, z uint32) uint32 { return x ^ y ^ z }
	var x [16]uint32
	for blk := 0; blk < len(padded); blk += 64 {
		for i := range x {
			x[i] = binary.LittleEndian.Uint32(padded[blk+4*i:])
		}
		aa, bb, cc, dd := a, b, c, d
		// Round 1.
		for _, i := range []int{0, 4, 8, 12} {
			a = bits.RotateLeft32(a+f(b, c, d)+x[i], 3)
			d = bits.RotateLeft32(d+f(a, b, c)+x[i+1], 7)
			c = bits.RotateLeft32(c+f(d, a, b)+x[i+2], 11)
			b = bits.RotateLeft32(b+f(c, d, a)+x[i+3], 19)
		}
		// Round 2.
		for _, i := range []int{0, 1, 2, 3} {
			a = bits.RotateLeft32(a+g(b, c, d)+x[i]+0x5a827999, 3)
			d = bits.RotateLeft32(d+g(a, b, c)+x[i+4]+0x5a827999, 5)
			c = bits.RotateLeft32(c+g(d, a, b)+x[i+8]+0x5a827999, 9)
			b = bits.RotateLeft32(b+g(c, d, a)+x[i+12]+0x5a827999, 13)
		}
		// Round 3.
		for _, i := range []int{0, 2, 1, 3} {
			a = bits.RotateLeft32(a+h(b, c, d)+x[i]+0x6ed9eba1, 3)
			d = bits.RotateLeft32(d+h(a, b, c)+x[i+8]+0x6ed9eba1, 9)
			c = bits.RotateLeft32(c+h(d, a, b)+x[i+4]+0x6ed9eba1, 11)
			b = bits.RotateLeft32(b+h(c, d, a)+x[i+12]+0x6ed9eba1, 15)
		}
		a, b, c, d = a+aa, b+bb, c+cc, d+dd
	}
	out := make([]byte, 16)
	binary.LittleEndian.PutUint32(out, a)
	binary.LittleEndian.PutUint32(out[4:], b)
	binary.LittleEndian.PutUint32(out[8:], c)
	binary.LittleEndian.PutUint32(out[12:], d)
	return out
}
