package diagnose

import (
	"encoding/hex"
	"testing"
)

func TestMD4Vectors(t *testing.T) {
	// RFC 1320, appendix A.5.
	for in, want := range map[string]string{
		"":               "31d6cfe0d16ae931b73c59d7e0c089c0",
		"abc":            "a448017aaf21d8525fc10ae87aa6729d",
		"message digest": "d9130a8164549fe818874806e1c7014b",
		"12345678901234567890123456789012345678901234567890123456789012345678901234567890": "e33b4ddc9c38f2199c3e7b164fcc0536",
	} {
		if got := hex.EncodeToString(md4Sum([]byte(in))); got != want {
			t.Errorf("MD4(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestNTLMv2Vectors(t *testing.T) {
	// MS-NLMP 4.2.2.1.2 and 4.2.4.1.1: User "User", domain "Domain",
	// password "Password".
	if got := hex.EncodeToString(ntowfv1("Password")); got != "a4f49c406510bdcab6824ee7c30fd852" {
		t.Errorf("NTOWFv1 = %s", got)
	}
	key := ntowfv2("Password", "User", "Domain")
	if got := hex.EncodeToString(key); got != "0c868a403bfd7a93a3001ef22ef02e3f" {
		t.Errorf("NTOWFv2 = %s", got)
	}
	// MS-NLMP 4.2.4.2.2: NTProofStr with server challenge 0123456789abcdef,
	// client challenge aa*8, time 0 and the challenge's AV pairs
	// (NbDomainName "Domain", NbComputerName "Server").
	var info []byte
	info = appendAV(info, 2, utf16le("Domain"))
	info = appendAV(info, 1, utf16le("Server"))
	info = appendAV(info, avEOL, nil)
	server := [8]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}
	client := [8]byte{0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa}
	resp := ntlmv2Response(key, server, client, 0, info)
	if got := hex.EncodeToString(resp[:16]); got != "68cd0ab851e51c96aabc927bebef6a1c" {
		t.Errorf("NTProofStr = %s", got)
	}
}
