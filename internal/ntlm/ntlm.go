// Package ntlm builds and reads the NTLM messages of MS-NLMP: NEGOTIATE,
// CHALLENGE (with its AV pairs) and AUTHENTICATE with an NTLMv2 response,
// optionally carrying the TLS channel binding (MsvAvChannelBindings) that
// Windows clients send. It holds both sides: the client walking the
// handshake (diagnose, tests, the demo) and the server issuing challenges
// and verifying responses (the fake front end).
//
// NTLM is defined with MD4 and MD5; neither protects anything here beyond
// what the protocol itself offers.
package ntlm

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
	"strings"
	"time"
	"unicode/utf16"

	//lint:ignore SA1019 NTOWFv1 is defined with MD4
	"golang.org/x/crypto/md4"
)

// Errors of the NTLM exchange.
var (
	ErrMessage  = errors.New("malformed NTLM message")
	ErrResponse = errors.New("NTLM response does not verify")
)

// Message types (MessageType field).
const (
	TypeNegotiate    = 1
	TypeChallenge    = 2
	TypeAuthenticate = 3
)

// Negotiate flags (MS-NLMP 2.2.2.5).
const (
	FlagUnicode           = 0x00000001
	FlagRequestTarget     = 0x00000004
	FlagNTLM              = 0x00000200
	FlagAlwaysSign        = 0x00008000
	FlagTargetTypeDomain  = 0x00010000
	FlagExtendedSessionSe = 0x00080000
	FlagTargetInfo        = 0x00800000
	FlagVersion           = 0x02000000
	Flag128               = 0x20000000
	Flag56                = 0x80000000

	// ClientFlags are the flags a client offers in NEGOTIATE.
	ClientFlags = FlagUnicode | FlagRequestTarget | FlagNTLM | FlagAlwaysSign |
		FlagExtendedSessionSe | Flag128 | Flag56
	// ServerFlags are the flags of the CHALLENGE this package builds.
	ServerFlags = ClientFlags | FlagTargetTypeDomain | FlagTargetInfo | FlagVersion
)

// AV pair identifiers (MS-NLMP 2.2.2.1).
const (
	AvEOL             = 0
	AvNbComputerName  = 1
	AvNbDomainName    = 2
	AvTimestamp       = 7
	AvChannelBindings = 10
)

var signature = []byte("NTLMSSP\x00")

// MessageType returns the type of a decoded NTLM message, or 0 when msg
// is not one.
func MessageType(msg []byte) uint32 {
	if len(msg) < 12 || !bytes.Equal(msg[:8], signature) {
		return 0
	}
	return binary.LittleEndian.Uint32(msg[8:12])
}

// NegotiateMessage returns a NEGOTIATE_MESSAGE offering ClientFlags.
func NegotiateMessage() []byte {
	m := make([]byte, 32)
	copy(m, signature)
	binary.LittleEndian.PutUint32(m[8:], TypeNegotiate)
	binary.LittleEndian.PutUint32(m[12:], ClientFlags)
	return m
}

// ChallengeMessage returns a CHALLENGE_MESSAGE for the server challenge,
// naming the domain and the computer in its target information, with
// now as MsvAvTimestamp.
func ChallengeMessage(serverChallenge [8]byte, domain, computer string, now time.Time) []byte {
	target := utf16le(domain)
	var info []byte
	info = appendAV(info, AvNbDomainName, utf16le(domain))
	info = appendAV(info, AvNbComputerName, utf16le(computer))
	info = appendAV(info, AvTimestamp, binary.LittleEndian.AppendUint64(nil, FileTime(now)))
	info = appendAV(info, AvEOL, nil)
	const hdr = 56
	m := make([]byte, hdr, hdr+len(target)+len(info))
	copy(m, signature)
	binary.LittleEndian.PutUint32(m[8:], TypeChallenge)
	putSecurityBuffer(m[12:], len(target), hdr)
	binary.LittleEndian.PutUint32(m[20:], ServerFlags)
	copy(m[24:32], serverChallenge[:])
	putSecurityBuffer(m[40:], len(info), hdr+len(target))
	copy(m[48:], []byte{10, 0, 0x63, 0x45, 0, 0, 0, 15}) // version 10.0.17763, NTLM revision 15
	m = append(m, target...)
	return append(m, info...)
}

// Challenge is a parsed CHALLENGE_MESSAGE.
type Challenge struct {
	Flags           uint32
	ServerChallenge [8]byte
	// TargetInfo is the AV pair list the client echoes in its response.
	TargetInfo []byte
}

// ParseChallenge reads a CHALLENGE_MESSAGE.
func ParseChallenge(msg []byte) (*Challenge, error) {
	if len(msg) < 32 || MessageType(msg) != TypeChallenge {
		return nil, fmt.Errorf("parse challenge: %w", ErrMessage)
	}
	c := &Challenge{Flags: binary.LittleEndian.Uint32(msg[20:])}
	copy(c.ServerChallenge[:], msg[24:32])
	if len(msg) >= 48 {
		info, err := securityBuffer(msg, 40)
		if err != nil {
			return nil, fmt.Errorf("parse challenge target info: %w", err)
		}
		c.TargetInfo = info
	}
	return c, nil
}

// Credentials are the account an AUTHENTICATE_MESSAGE answers for.
type Credentials struct {
	Domain, User, Password string
	// Workstation is the client's computer name (may be empty).
	Workstation string
}

// AuthenticateMessage builds the AUTHENTICATE_MESSAGE answering ch with an
// NTLMv2 response for the credentials. When channelBindings is set (the
// 16 bytes of ChannelBindingHash), it is added to the echoed target
// information as MsvAvChannelBindings. The response's time is the
// server's MsvAvTimestamp when the challenge has one (and the LMv2
// response is then empty, as MS-NLMP 3.1.5.1.2 requires), else now.
func AuthenticateMessage(ch *Challenge, cr Credentials, channelBindings []byte, now time.Time) ([]byte, error) {
	var ts uint64
	serverTS := false
	var info []byte
	if err := walkAV(ch.TargetInfo, func(id uint16, v []byte) {
		if id == AvTimestamp && len(v) == 8 {
			ts = binary.LittleEndian.Uint64(v)
			serverTS = true
		}
		if id != AvChannelBindings {
			info = appendAV(info, id, v)
		}
	}); err != nil {
		return nil, fmt.Errorf("build authenticate: %w", err)
	}
	if !serverTS {
		ts = FileTime(now)
	}
	if len(channelBindings) == md5.Size {
		info = appendAV(info, AvChannelBindings, channelBindings)
	}
	info = appendAV(info, AvEOL, nil)

	var client [8]byte
	if _, err := rand.Read(client[:]); err != nil {
		return nil, fmt.Errorf("build authenticate: %w", err)
	}
	key := NTOWFv2(cr.Password, cr.User, cr.Domain)
	nt := ntlmv2Response(key, ch.ServerChallenge, client, ts, info)
	lm := make([]byte, 24)
	if !serverTS {
		lm = append(hmacMD5(key, ch.ServerChallenge[:], client[:]), client[:]...)
	}
	flags := ch.Flags & (ClientFlags | FlagTargetInfo)
	payload := [][]byte{lm, nt, utf16le(cr.Domain), utf16le(cr.User), utf16le(cr.Workstation), nil}
	const hdr = 64
	m := make([]byte, hdr)
	copy(m, signature)
	binary.LittleEndian.PutUint32(m[8:], TypeAuthenticate)
	off := hdr
	for i, p := range payload {
		putSecurityBuffer(m[12+8*i:], len(p), off)
		off += len(p)
	}
	binary.LittleEndian.PutUint32(m[60:], flags)
	for _, p := range payload {
		m = append(m, p...)
	}
	return m, nil
}

// Authenticate is a parsed AUTHENTICATE_MESSAGE.
type Authenticate struct {
	Flags                     uint32
	Domain, User, Workstation string
	LMResponse, NTResponse    []byte
}

// ParseAuthenticate reads an AUTHENTICATE_MESSAGE.
func ParseAuthenticate(msg []byte) (*Authenticate, error) {
	if MessageType(msg) != TypeAuthenticate || len(msg) < 64 {
		return nil, fmt.Errorf("parse authenticate: %w", ErrMessage)
	}
	a := &Authenticate{Flags: binary.LittleEndian.Uint32(msg[60:])}
	str := func(b []byte) string {
		if a.Flags&FlagUnicode != 0 {
			return fromUTF16le(b)
		}
		return string(b)
	}
	for _, f := range []struct {
		off int
		dst func([]byte)
	}{
		{12, func(b []byte) { a.LMResponse = b }},
		{20, func(b []byte) { a.NTResponse = b }},
		{28, func(b []byte) { a.Domain = str(b) }},
		{36, func(b []byte) { a.User = str(b) }},
		{44, func(b []byte) { a.Workstation = str(b) }},
	} {
		b, err := securityBuffer(msg, f.off)
		if err != nil {
			return nil, fmt.Errorf("parse authenticate: %w", err)
		}
		f.dst(b)
	}
	return a, nil
}

// Verify checks the NTLMv2 response against the password and the server
// challenge the connection was given.
func (a *Authenticate) Verify(password string, serverChallenge [8]byte) error {
	if len(a.NTResponse) <= md5.Size {
		return ErrResponse
	}
	key := NTOWFv2(password, a.User, a.Domain)
	if !hmac.Equal(hmacMD5(key, serverChallenge[:], a.NTResponse[md5.Size:]), a.NTResponse[:md5.Size]) {
		return ErrResponse
	}
	return nil
}

// ChannelBindings returns the MsvAvChannelBindings value of the NTLMv2
// response, or nil when the client sent none.
func (a *Authenticate) ChannelBindings() []byte {
	// NTProofStr (16), then the blob: version (2), reserved (6), time (8),
	// client challenge (8), reserved (4), AV pairs.
	const avStart = md5.Size + 28
	if len(a.NTResponse) < avStart {
		return nil
	}
	var cbt []byte
	_ = walkAV(a.NTResponse[avStart:], func(id uint16, v []byte) {
		if id == AvChannelBindings {
			cbt = v
		}
	})
	return cbt
}

// NTOWFv1 is MD4(UTF-16LE(password)).
func NTOWFv1(password string) []byte {
	h := md4.New()
	h.Write(utf16le(password))
	return h.Sum(nil)
}

// NTOWFv2 is HMAC-MD5(NTOWFv1(password), UTF-16LE(upper(user) + domain)).
func NTOWFv2(password, user, domain string) []byte {
	return hmacMD5(NTOWFv1(password), utf16le(strings.ToUpper(user)+domain))
}

// ChannelBindingHash returns MD5(gss_channel_bindings_struct) with the
// tls-server-end-point binding of cert (RFC 5929): the value Windows
// clients put in MsvAvChannelBindings for the certificate they saw.
func ChannelBindingHash(cert *x509.Certificate) []byte {
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

// FileTime converts t to a Windows FILETIME (100 ns since 1601).
func FileTime(t time.Time) uint64 {
	return uint64(t.UnixNano()/100) + 116444736000000000
}

// ntlmv2Response computes NTProofStr || temp for a server challenge, a
// client challenge, a timestamp (FILETIME) and the target info to echo.
func ntlmv2Response(key []byte, server, client [8]byte, ts uint64, targetInfo []byte) []byte {
	temp := []byte{1, 1, 0, 0, 0, 0, 0, 0}
	temp = binary.LittleEndian.AppendUint64(temp, ts)
	temp = append(temp, client[:]...)
	temp = append(temp, 0, 0, 0, 0)
	temp = append(temp, targetInfo...)
	temp = append(temp, 0, 0, 0, 0)
	return append(hmacMD5(key, server[:], temp), temp...)
}

func hmacMD5(key []byte, parts ...[]byte) []byte {
	m := hmac.New(md5.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// walkAV calls fn for each AV_PAIR of b up to MsvAvEOL.
func walkAV(b []byte, fn func(id uint16, v []byte)) error {
	for len(b) >= 4 {
		id := binary.LittleEndian.Uint16(b)
		l := int(binary.LittleEndian.Uint16(b[2:]))
		if 4+l > len(b) {
			return fmt.Errorf("parse AV pairs: %w", ErrMessage)
		}
		if id == AvEOL {
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

// putSecurityBuffer writes a (length, maximum length, offset) field.
func putSecurityBuffer(b []byte, l, off int) {
	binary.LittleEndian.PutUint16(b, uint16(l))
	binary.LittleEndian.PutUint16(b[2:], uint16(l))
	binary.LittleEndian.PutUint32(b[4:], uint32(off))
}

// securityBuffer reads the field at off of msg and returns what it points at.
func securityBuffer(msg []byte, off int) ([]byte, error) {
	if len(msg) < off+8 {
		return nil, ErrMessage
	}
	l := int(binary.LittleEndian.Uint16(msg[off:]))
	o := int(binary.LittleEndian.Uint32(msg[off+4:]))
	if o+l > len(msg) {
		return nil, ErrMessage
	}
	return msg[o : o+l], nil
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
