package l7

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ocsp"
)

// OCSP stapling: a certificate that names an OCSP responder gets the
// responder's answer stapled to its handshakes. The answer is fetched in
// the background and refreshed halfway through its validity; a handshake
// never waits for it, and one that is no longer valid is not served.
const (
	ocspFetchTimeout = 10 * time.Second
	ocspMaxResponse  = 64 << 10
	ocspMinRefresh   = time.Minute
	ocspMaxRefresh   = 12 * time.Hour
	ocspNoNextUpdate = time.Hour // refresh period of answers without nextUpdate
	ocspMaxRetry     = 15 * time.Minute
)

// stapler keeps one certificate's OCSP response.
type stapler struct {
	leaf   *x509.Certificate
	issuer *x509.Certificate
	url    string
	path   string // the certificate file, for logs
	base   *tls.Certificate
	log    *slog.Logger
	now    func() time.Time

	stapled atomic.Pointer[tls.Certificate] // base with OCSPStaple; nil while none
	expires atomic.Int64                    // unix nanos of the staple's nextUpdate; 0 none

	once   sync.Once
	cancel context.CancelFunc
	done   chan struct{}
}

// staplerKey names a certificate across reloads: its chain as loaded.
func staplerKey(c *tls.Certificate) [32]byte {
	h := sha256.New()
	for _, der := range c.Certificate {
		h.Write(der)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// newStapler returns a stapler for the entry's certificate, or nil when
// it names no responder. An issuer missing from the chain is an error.
func newStapler(e *certEntry, log *slog.Logger, now func() time.Time) (*stapler, error) {
	if len(e.leaf.OCSPServer) == 0 {
		return nil, nil
	}
	if len(e.cert.Certificate) < 2 {
		return nil, fmt.Errorf("staple OCSP for %s: the file has no issuer certificate after the leaf (append the chain)", e.path)
	}
	issuer, err := x509.ParseCertificate(e.cert.Certificate[1])
	if err != nil {
		return nil, fmt.Errorf("staple OCSP for %s: parse issuer: %w", e.path, err)
	}
	return &stapler{leaf: e.leaf, issuer: issuer, url: e.leaf.OCSPServer[0], path: e.path,
		base: e.cert, log: log, now: now, done: make(chan struct{})}, nil
}

// certificate returns the certificate with its staple while the staple
// is valid.
func (s *stapler) certificate() *tls.Certificate {
	if c := s.stapled.Load(); c != nil {
		if exp := s.expires.Load(); exp == 0 || s.now().UnixNano() < exp {
			return c
		}
	}
	return s.base
}

// start runs the refresh loop in the background (once).
func (s *stapler) start() {
	s.once.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel = cancel
		go s.run(ctx)
	})
}

// stop ends the refresh loop.
func (s *stapler) stop() {
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
}

func (s *stapler) run(ctx context.Context) {
	defer close(s.done)
	var (
		delay    time.Duration
		failures int
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		next, err := s.refresh(ctx)
		if err == nil {
			failures, delay = 0, next
			continue
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		delay = min(ocspMinRefresh<<min(failures-1, 4), ocspMaxRetry)
		s.log.Warn("ocsp staple not refreshed", "cert", s.path, "responder", s.url, "error", err,
			"retry_in", delay, "stapled", s.stapled.Load() != nil)
	}
}

// refresh fetches and installs a response; it returns when to refresh
// next.
func (s *stapler) refresh(ctx context.Context) (time.Duration, error) {
	der, err := s.fetch(ctx)
	if err != nil {
		return 0, err
	}
	res, err := s.parse(der)
	if err != nil {
		return 0, err
	}
	now := s.now()
	if !res.NextUpdate.IsZero() && !now.Before(res.NextUpdate) {
		return 0, fmt.Errorf("ocsp response expired at %s", res.NextUpdate.Format(time.RFC3339))
	}
	switch res.Status {
	case ocsp.Good:
	case ocsp.Revoked:
		s.stapled.Store(nil)
		s.log.Error("certificate revoked: its OCSP response is not stapled; replace the certificate",
			"cert", s.path, "revoked_at", res.RevokedAt)
		return ocspMaxRefresh, nil
	default:
		s.stapled.Store(nil)
		return 0, fmt.Errorf("ocsp status unknown for serial %s", s.leaf.SerialNumber)
	}
	c := *s.base
	c.OCSPStaple = der
	var next time.Duration
	if res.NextUpdate.IsZero() {
		s.expires.Store(0)
		next = ocspNoNextUpdate
	} else {
		s.expires.Store(res.NextUpdate.UnixNano())
		next = res.ThisUpdate.Add(res.NextUpdate.Sub(res.ThisUpdate) / 2).Sub(now)
	}
	s.stapled.Store(&c)
	s.log.Info("ocsp staple refreshed", "cert", s.path, "next_update", res.NextUpdate)
	return min(max(next, ocspMinRefresh), ocspMaxRefresh), nil
}

// parse checks a response: for the leaf, signed by its issuer or by a
// responder the issuer certified. Responders that sign with the issuer's
// key and embed the issuer itself (openssl ocsp does) are accepted too.
func (s *stapler) parse(der []byte) (*ocsp.Response, error) {
	res, err := ocsp.ParseResponseForCert(der, s.leaf, s.issuer)
	if err == nil {
		return res, nil
	}
	if r, err2 := ocsp.ParseResponseForCert(der, s.leaf, nil); err2 == nil && r.Certificate != nil && r.Certificate.Equal(s.issuer) {
		return r, nil
	}
	return nil, fmt.Errorf("parse ocsp response: %w", err)
}

func (s *stapler) fetch(ctx context.Context) ([]byte, error) {
	req, err := ocsp.CreateRequest(s.leaf, s.issuer, &ocsp.RequestOptions{Hash: crypto.SHA1})
	if err != nil {
		return nil, fmt.Errorf("create ocsp request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, ocspFetchTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(req))
	if err != nil {
		return nil, fmt.Errorf("ocsp responder %s: %w", s.url, err)
	}
	hr.Header.Set("Content-Type", "application/ocsp-request")
	hr.Header.Set("Accept", "application/ocsp-response")
	res, err := ocspClient.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("fetch ocsp response: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch ocsp response: %s answered %s", s.url, res.Status)
	}
	der, err := io.ReadAll(io.LimitReader(res.Body, ocspMaxResponse+1))
	if err != nil {
		return nil, fmt.Errorf("read ocsp response: %w", err)
	}
	if len(der) > ocspMaxResponse {
		return nil, errors.New("ocsp response larger than 64 KiB")
	}
	return der, nil
}

// ocspClient fetches OCSP responses: no environment proxy, no redirects
// to elsewhere than http(s).
var ocspClient = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// attachStaplers gives the store's certificates that name a responder a
// stapler: the one in service for the same chain, else a new one that
// Apply starts once the configuration is in service.
func (p *Proxy) attachStaplers(cs *certStore) {
	for _, e := range cs.entries {
		if e.src != nil {
			continue // certmagic staples its own
		}
		key := staplerKey(e.cert)
		st := p.pending[key]
		if st == nil {
			p.mu.Lock()
			st = p.staplers[key]
			p.mu.Unlock()
		}
		if st == nil {
			var err error
			st, err = newStapler(e, p.log, p.now)
			if err != nil {
				p.log.Warn("certificate not stapled", "error", err)
			}
			if st == nil {
				continue
			}
		}
		p.pending[key] = st
		e.stapler = st
	}
}

// swapStaplers puts the staplers of the configuration now in service to
// work and stops those no longer used. Called with applyMu held.
func (p *Proxy) swapStaplers() {
	p.mu.Lock()
	old := p.staplers
	p.staplers = p.pending
	p.mu.Unlock()
	for _, st := range p.pending {
		st.start()
	}
	for k, st := range old {
		if p.pending[k] != st {
			st.stop()
		}
	}
	p.pending = nil
}
