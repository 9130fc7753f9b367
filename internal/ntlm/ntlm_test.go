package ntlm

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/big"
	"testing"
	"time"
)

func TestNTLMv2Vectors(t *testing.T) {
	// MS-NLMP 4.2.2.1.2 and 4.2.4.1.1: User "User", domain "Domain",
	// password "Password".
	if got := hex.EncodeToString(NTOWFv1("Password")); got != "a4f49c406510bdcab6824ee7c30fd852" {
		t.Errorf("NTOWFv1 = %s", got)
	}
	key := NTOWFv2("Password", "User", "Domain")
	if got := hex.EncodeToString(key); got != "0c868a403bfd7a93a3001ef22ef02e3f" {
		t.Errorf("NTOWFv2 = %s", got)
	}
	// MS-NLMP 4.2.4.2.2: NTProofStr with server challenge 0123456789abcdef,
	// client challenge aa*8, time 0 and the challenge's AV pairs
	// (NbDomainName "Domain", NbComputerName "Server").
	var info []byte
	info = appendAV(info, AvNbDomainName, utf16le("Domain"))
	info = appendAV(info, AvNbComputerName, utf16le("Server"))
	info = appendAV(info, AvEOL, nil)
	server := [8]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}
	client := [8]byte{0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa}
	resp := ntlmv2Response(key, server, client, 0, info)
	if got := hex.EncodeToString(resp[:16]); got != "68cd0ab851e51c96aabc927bebef6a1c" {
		t.Errorf("NTProofStr = %s", got)
	}
	// The server side accepts that response for the password only.
	a := &Authenticate{User: "User", Domain: "Domain", NTResponse: resp}
	if err := a.Verify("Password", server); err != nil {
		t.Errorf("verify the MS-NLMP response: %v", err)
	}
	if err := a.Verify("password", server); !errors.Is(err, ErrResponse) {
		t.Errorf("verify with another password: %v, want %v", err, ErrResponse)
	}
}

// TestHandshake runs both sides: the client answers the server's
// challenge, and the server reads back who it is and verifies it.
func TestHandshake(t *testing.T) {
	if MessageType(NegotiateMessage()) != TypeNegotiate {
		t.Fatal("NEGOTIATE_MESSAGE has the wrong type")
	}
	sc := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	chMsg := ChallengeMessage(sc, "CONTOSO", "FE01", now)
	if MessageType(chMsg) != TypeChallenge {
		t.Fatal("CHALLENGE_MESSAGE has the wrong type")
	}
	ch, err := ParseChallenge(chMsg)
	if err != nil {
		t.Fatal(err)
	}
	if ch.ServerChallenge != sc || ch.Flags != ServerFlags {
		t.Fatalf("parsed challenge %x flags %#x, want %x %#x", ch.ServerChallenge, ch.Flags, sc, uint32(ServerFlags))
	}
	av := map[uint16][]byte{}
	if err := walkAV(ch.TargetInfo, func(id uint16, v []byte) { av[id] = v }); err != nil {
		t.Fatal(err)
	}
	if fromUTF16le(av[AvNbDomainName]) != "CONTOSO" || fromUTF16le(av[AvNbComputerName]) != "FE01" ||
		binary.LittleEndian.Uint64(av[AvTimestamp]) != FileTime(now) {
		t.Fatalf("target info %x: want the domain, the computer and the time", ch.TargetInfo)
	}

	cbt := ChannelBindingHash(testCert(t))
	cr := Credentials{Domain: "CONTOSO", User: "alice", Password: "Winter2026!", Workstation: "LAPTOP1"}
	for _, c := range []struct {
		name string
		cbt  []byte
	}{{"without channel binding", nil}, {"with channel binding", cbt}} {
		t.Run(c.name, func(t *testing.T) {
			msg, err := AuthenticateMessage(ch, cr, c.cbt, now.Add(time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			a, err := ParseAuthenticate(msg)
			if err != nil {
				t.Fatal(err)
			}
			if a.Domain != "CONTOSO" || a.User != "alice" || a.Workstation != "LAPTOP1" {
				t.Errorf("parsed %s\\%s at %s, want CONTOSO\\alice at LAPTOP1", a.Domain, a.User, a.Workstation)
			}
			// The server sent a timestamp: the LMv2 response is empty.
			if !bytes.Equal(a.LMResponse, make([]byte, 24)) {
				t.Errorf("LM response %x, want 24 zero bytes", a.LMResponse)
			}
			if !bytes.Equal(a.ChannelBindings(), c.cbt) {
				t.Errorf("channel bindings %x, want %x", a.ChannelBindings(), c.cbt)
			}
			if err := a.Verify(cr.Password, sc); err != nil {
				t.Errorf("verify: %v", err)
			}
			if err := a.Verify("Summer2026!", sc); !errors.Is(err, ErrResponse) {
				t.Errorf("verify with a wrong password: %v, want %v", err, ErrResponse)
			}
			if err := a.Verify(cr.Password, [8]byte{}); !errors.Is(err, ErrResponse) {
				t.Errorf("verify against another challenge: %v, want %v", err, ErrResponse)
			}
		})
	}
}

// TestClientTimeWithoutServerTimestamp: without MsvAvTimestamp the client
// uses its own clock and sends an LMv2 response.
func TestClientTimeWithoutServerTimestamp(t *testing.T) {
	var info []byte
	info = appendAV(info, AvNbDomainName, utf16le("CONTOSO"))
	info = appendAV(info, AvEOL, nil)
	ch := &Challenge{Flags: ServerFlags, ServerChallenge: [8]byte{9, 9, 9, 9, 9, 9, 9, 9}, TargetInfo: info}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	msg, err := AuthenticateMessage(ch, Credentials{Domain: "CONTOSO", User: "bob", Password: "pw"}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	a, err := ParseAuthenticate(msg)
	if err != nil {
		t.Fatal(err)
	}
	if ts := binary.LittleEndian.Uint64(a.NTResponse[16+8:]); ts != FileTime(now) {
		t.Errorf("response time %d, want the client's %d", ts, FileTime(now))
	}
	if bytes.Equal(a.LMResponse, make([]byte, 24)) {
		t.Error("LMv2 response empty, want one without a server timestamp")
	}
	if err := a.Verify("pw", ch.ServerChallenge); err != nil {
		t.Errorf("verify: %v", err)
	}
}

func TestMalformed(t *testing.T) {
	ch := ChallengeMessage([8]byte{}, "D", "C", time.Now())
	badInfo := bytes.Clone(ch)
	binary.LittleEndian.PutUint32(badInfo[44:], uint32(len(ch))) // target info past the end
	auth, err := AuthenticateMessage(&Challenge{}, Credentials{User: "u"}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	badUser := bytes.Clone(auth)
	binary.LittleEndian.PutUint16(badUser[36:], 200) // user name longer than the message
	for name, f := range map[string]func() error{
		"challenge: empty":             func() error { _, err := ParseChallenge(nil); return err },
		"challenge: a negotiate":       func() error { _, err := ParseChallenge(NegotiateMessage()); return err },
		"challenge: info out of range": func() error { _, err := ParseChallenge(badInfo); return err },
		"authenticate: a challenge":    func() error { _, err := ParseAuthenticate(ch); return err },
		"authenticate: short":          func() error { _, err := ParseAuthenticate(auth[:40]); return err },
		"authenticate: user out of range": func() error {
			_, err := ParseAuthenticate(badUser)
			return err
		},
		"authenticate: truncated AV pairs": func() error {
			_, err := AuthenticateMessage(&Challenge{TargetInfo: []byte{2, 0, 9, 0, 'x'}}, Credentials{}, nil, time.Now())
			return err
		},
	} {
		if err := f(); !errors.Is(err, ErrMessage) {
			t.Errorf("%s: %v, want %v", name, err, ErrMessage)
		}
	}
	if MessageType([]byte("NTLMSSP")) != 0 || MessageType([]byte("HTTP/1.1 200 OK\r\n")) != 0 {
		t.Error("MessageType of a non-NTLM message is not 0")
	}
}

func TestChannelBindingHash(t *testing.T) {
	cert := testCert(t)
	a, b := ChannelBindingHash(cert), ChannelBindingHash(testCert(t))
	if len(a) != 16 || bytes.Equal(a, b) {
		t.Fatalf("bindings %x and %x: want 16 bytes, different for different certificates", a, b)
	}
	if !bytes.Equal(a, ChannelBindingHash(cert)) {
		t.Fatal("binding of one certificate changes")
	}
}

func testCert(t *testing.T) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "webext.example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
