package l7

import (
	"crypto/rand"
	"crypto/tls"
	"sync"
	"sync/atomic"
	"time"
)

// aeadSuites are the TLS 1.2 cipher suites offered by default: ECDHE key
// exchange and AEAD encryption only (TLS 1.3 suites are all AEAD and not
// configurable).
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// legacySuites are added when TLS 1.0/1.1 is allowed: those versions
// have no AEAD suite.
var legacySuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
}

// cipherSuites returns the TLS 1.2 (and older) suites for a minimum
// version.
func cipherSuites(minVersion uint16) []uint16 {
	if minVersion < tls.VersionTLS12 {
		return append(append([]uint16(nil), aeadSuites...), legacySuites...)
	}
	return aeadSuites
}

// cipherNames are the names of the cipher suites crypto/tls knows, made
// once: tls.CipherSuiteName builds the whole list on every call.
var cipherNames = func() map[uint16]string {
	m := map[uint16]string{}
	for _, list := range [][]*tls.CipherSuite{tls.CipherSuites(), tls.InsecureCipherSuites()} {
		for _, c := range list {
			m[c.ID] = c.Name
		}
	}
	return m
}()

// cipherName is tls.CipherSuiteName without its allocations.
func cipherName(id uint16) string {
	if n, ok := cipherNames[id]; ok {
		return n
	}
	return tls.CipherSuiteName(id)
}

// ticketKeys are one virtual's session-ticket keys: the current one
// encrypts new tickets, the previous one still decrypts for one more
// period. They belong to the proxy, keyed by virtual name, so a reload
// keeps them.
type ticketKeys struct {
	mu      sync.Mutex
	current [32]byte
	prev    [32]byte
	hasPrev bool
	// since (unix nanoseconds: when current became current) and gen
	// (incremented on every rotation) change under mu and are read
	// without it by fresh, on every handshake.
	since atomic.Int64
	gen   atomic.Uint64
}

func newTicketKeys(now time.Time) *ticketKeys {
	k := &ticketKeys{}
	k.since.Store(now.UnixNano())
	k.gen.Store(1)
	rand.Read(k.current[:])
	return k
}

// fresh reports, without locking or allocating, whether gen is still
// the generation in force at now: no rotation happened or is due.
func (k *ticketKeys) fresh(now time.Time, period time.Duration, gen uint64) bool {
	return k.gen.Load() == gen && (period <= 0 || now.UnixNano()-k.since.Load() < int64(period))
}

// at returns the keys in force at now (rotating them when a period has
// passed) and their generation.
func (k *ticketKeys) at(now time.Time, period time.Duration) ([][32]byte, uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	since := time.Unix(0, k.since.Load())
	if period > 0 && now.Sub(since) >= period {
		n := now.Sub(since) / period
		k.prev, k.hasPrev = k.current, n == 1
		rand.Read(k.current[:])
		k.since.Store(since.Add(n * period).UnixNano())
		k.gen.Add(1)
	}
	if k.hasPrev {
		return [][32]byte{k.current, k.prev}, k.gen.Load()
	}
	return [][32]byte{k.current}, k.gen.Load()
}

// syncTickets installs the virtual's ticket keys in force now on its TLS
// configurations, when they changed. It runs on every handshake: while
// the installed keys are in force it only reads two atomics.
func (vh *vhost) syncTickets() {
	now := vh.p.now()
	if vh.tickets.fresh(now, vh.ticketPeriod, vh.ticketGen.Load()) {
		return
	}
	keys, gen := vh.tickets.at(now, vh.ticketPeriod)
	vh.ticketMu.Lock()
	defer vh.ticketMu.Unlock()
	if vh.ticketGen.Load() >= gen {
		return // these keys, or newer ones a concurrent handshake got
	}
	vh.tlsH1.SetSessionTicketKeys(keys)
	vh.tlsH2.SetSessionTicketKeys(keys)
	vh.ticketGen.Store(gen)
}

// ticketKeysFor returns the ticket keys of the named virtual, made on
// first use.
func (p *Proxy) ticketKeysFor(virtual string) *ticketKeys {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := p.tickets[virtual]
	if k == nil {
		k = newTicketKeys(p.now())
		p.tickets[virtual] = k
	}
	return k
}
