package peerlink

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
)

// A datagram:
//
//	magic "EPL1" | epoch u64 | seq u64 | sent ns u64 | node len u8 | node |
//	messages (kind u16 | body len u16 | body)... | HMAC-SHA256 of all before
//
// big-endian throughout.
const (
	magic       = "EPL1"
	headerFixed = 4 + 8 + 8 + 8 + 1
	maxNode     = 64
	headerMax   = headerFixed + maxNode
	msgHeader   = 4
	macLen      = sha256.Size
)

var errMalformed = errors.New("malformed datagram")

// header is a datagram's header.
type header struct {
	epoch, seq, sent uint64
	node             string
}

// appendHeader starts a datagram.
func appendHeader(b []byte, h header) []byte {
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint64(b, h.epoch)
	b = binary.BigEndian.AppendUint64(b, h.seq)
	b = binary.BigEndian.AppendUint64(b, h.sent)
	b = append(b, byte(len(h.node)))
	return append(b, h.node...)
}

// appendMsg adds one message to a datagram.
func appendMsg(b []byte, k Kind, body []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(k))
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

// seal appends the MAC; mac is reused (reset here).
func seal(b []byte, mac hash.Hash) []byte {
	mac.Reset()
	mac.Write(b)
	return mac.Sum(b)
}

// verify checks a datagram's MAC: ok false means a wrong MAC, short a
// datagram too short to carry one.
func verify(b []byte, mac hash.Hash, sum []byte) (ok, short bool) {
	if len(b) < headerFixed+macLen {
		return false, true
	}
	n := len(b) - macLen
	mac.Reset()
	mac.Write(b[:n])
	return hmac.Equal(mac.Sum(sum[:0]), b[n:]), false
}

// parse reads an authenticated datagram (MAC already checked): its
// header and its messages, every length checked (eachMsg walks them).
func parse(b []byte) (header, []byte, error) {
	var h header
	b = b[:len(b)-macLen]
	if len(b) < headerFixed || string(b[:4]) != magic {
		return h, nil, errMalformed
	}
	h.epoch = binary.BigEndian.Uint64(b[4:])
	h.seq = binary.BigEndian.Uint64(b[12:])
	h.sent = binary.BigEndian.Uint64(b[20:])
	nl := int(b[28])
	if nl == 0 || nl > maxNode || len(b) < headerFixed+nl {
		return h, nil, errMalformed
	}
	h.node = string(b[headerFixed : headerFixed+nl])
	msgs := b[headerFixed+nl:]
	for r := msgs; len(r) > 0; {
		if len(r) < msgHeader {
			return h, nil, errMalformed
		}
		n := int(binary.BigEndian.Uint16(r[2:]))
		if len(r) < msgHeader+n {
			return h, nil, errMalformed
		}
		r = r[msgHeader+n:]
	}
	return h, msgs, nil
}

// eachMsg calls fn for each message of a parsed datagram; it returns the
// number of messages.
func eachMsg(msgs []byte, fn func(Kind, []byte)) int {
	i := 0
	for r := msgs; len(r) > 0; i++ {
		n := int(binary.BigEndian.Uint16(r[2:]))
		fn(Kind(binary.BigEndian.Uint16(r)), r[msgHeader:msgHeader+n])
		r = r[msgHeader+n:]
	}
	return i
}

func newMAC(key []byte) hash.Hash { return hmac.New(sha256.New, key) }
