package l7

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// DefaultACMEStateDir keeps ACME accounts and certificates when the spec
// names no directory.
const DefaultACMEStateDir = "/var/lib/edgeproxy/acme"

// ErrACME is returned for an ACME certificate that cannot be set up.
var ErrACME = errors.New("acme certificate")

// acmeTLSProto is the ALPN protocol of the tls-alpn-01 challenge.
const acmeTLSProto = "acme-tls/1"

// ACMELoaded is the outcome of a certificate a standby loaded from the
// state directory it shares with the active node, which ordered it.
const ACMELoaded = "loaded"

// standbyReload is how often a standby re-reads the shared state
// directory when no check interval is set.
const standbyReload = time.Minute

// acmeManager obtains and renews the proxy's ACME certificates through
// certmagic: one cache (and its renewal loop) for the proxy, one
// certmagic configuration per distinct ACME certificate. Certificates
// live in the state directory, so a restart or a reload reuses them; a
// failed renewal leaves the certificate in service until it expires.
type acmeManager struct {
	p      *Proxy
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	cache   *certmagic.Cache
	opts    ACMEOptions          // those in use, fixed by the first ACME certificate
	next    ACMEOptions          // those of the spec being applied
	configs map[string]*acmeCert // by acmeKey
	inUse   map[string]bool      // acmeKeys of the spec being applied
	stopped bool
	// With a shared state directory, certificates are managed only while
	// active; managing ends (its orders are cancelled) on demotion.
	active       bool
	manageCtx    context.Context
	manageCancel context.CancelFunc
}

// acmeCert is one ACME certificate, managed once for every virtual that
// serves it.
type acmeCert struct {
	spec    ACME
	cache   *certmagic.Cache
	cfg     *certmagic.Config
	issuer  *certmagic.ACMEIssuer
	managed bool

	mu      sync.Mutex
	outcome string // "": none yet; "obtained", "renewed", "failed", ACMELoaded
	at      time.Time
	lastErr string
	stored  map[string]*tls.Certificate // by name: loaded from the state directory while standby
	pems    map[string][]byte           // by name: the certificate PEM loaded
}

func newACMEManager(p *Proxy) *acmeManager {
	ctx, cancel := context.WithCancel(context.Background())
	m := &acmeManager{p: p, ctx: ctx, cancel: cancel, configs: map[string]*acmeCert{}}
	m.manageCtx, m.manageCancel = context.WithCancel(ctx)
	return m
}

func acmeKey(a *ACME) string {
	return strings.Join([]string{strings.Join(a.Names, ","), a.CA, a.CARoot, a.Email, a.Challenge, a.KeyType}, "|")
}

// start makes the cache and the state directory on first use.
func (m *acmeManager) start(opts ACMEOptions) error {
	if m.cache != nil {
		return nil
	}
	if opts.StateDir == "" {
		opts.StateDir = DefaultACMEStateDir
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return fmt.Errorf("create ACME state directory: %w (create %s, writable by the daemon)", err, opts.StateDir)
	}
	if err := os.Chmod(opts.StateDir, 0o700); err != nil {
		return fmt.Errorf("restrict ACME state directory %s to its owner: %w", opts.StateDir, err)
	}
	m.opts = opts
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   m.configForCert,
		RenewCheckInterval: opts.CheckInterval,
		Logger:             acmeLogger(m.p.log),
	})
	if opts.Shared {
		go m.reloadStandby()
	}
	return nil
}

// setOptions keeps the options of the spec being applied.
func (m *acmeManager) setOptions(o ACMEOptions) {
	m.mu.Lock()
	m.next, m.inUse = o, map[string]bool{}
	m.mu.Unlock()
}

// configForCert is the cache's GetConfigForCert: the configuration that
// manages a certificate found in the cache.
func (m *acmeManager) configForCert(c certmagic.Certificate) (*certmagic.Config, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, ac := range m.configs {
		if slices.Equal(ac.spec.Names, c.Names) || (len(c.Names) > 0 && slices.Contains(ac.spec.Names, c.Names[0])) {
			return ac.cfg, nil
		}
	}
	return nil, fmt.Errorf("no ACME certificate configured for %v", c.Names)
}

// cert returns the managed certificate for a, made on first use. listen
// is the address the challenges are answered on.
func (m *acmeManager) cert(a *ACME, listen string) (*acmeCert, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.start(m.next); err != nil {
		return nil, err
	}
	m.inUse[acmeKey(a)] = true
	if ac := m.configs[acmeKey(a)]; ac != nil {
		return ac, nil
	}
	ac, err := m.newCert(a, listen)
	if err != nil {
		return nil, err
	}
	m.configs[acmeKey(a)] = ac
	return ac, nil
}

func (m *acmeManager) newCert(a *ACME, listen string) (*acmeCert, error) {
	if len(a.Names) == 0 {
		return nil, fmt.Errorf("%w: no names (list the names to order under acme.names)", ErrACME)
	}
	kt := certmagic.P256
	switch a.KeyType {
	case "", KeyECDSAP256:
	case KeyRSA2048:
		kt = certmagic.RSA2048
	default:
		return nil, fmt.Errorf("%w: key_type %q (use %s or %s)", ErrACME, a.KeyType, KeyECDSAP256, KeyRSA2048)
	}
	switch a.Challenge {
	case "", ChallengeHTTP01, ChallengeTLSALPN01:
	default:
		return nil, fmt.Errorf("%w: challenge %q (use %s or %s)", ErrACME, a.Challenge, ChallengeHTTP01, ChallengeTLSALPN01)
	}
	var roots *x509.CertPool
	if a.CARoot != "" {
		pem, err := os.ReadFile(a.CARoot)
		if err != nil {
			return nil, fmt.Errorf("read ACME CA root: %w (put the PEM certificate that verifies the CA's directory there)", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: ca_root %s holds no PEM certificate", ErrACME, a.CARoot)
		}
	}
	ac := &acmeCert{spec: *a, cache: m.cache, stored: map[string]*tls.Certificate{}, pems: map[string][]byte{}}
	ac.spec.Names = slices.Clone(a.Names)
	ac.cfg = certmagic.New(m.cache, certmagic.Config{
		Storage:   &certmagic.FileStorage{Path: m.opts.StateDir},
		KeySource: certmagic.StandardKeyGenerator{KeyType: kt},
		OnEvent:   ac.onEvent(m.p),
		Logger:    acmeLogger(m.p.log),
	})
	ac.issuer = certmagic.NewACMEIssuer(ac.cfg, certmagic.ACMEIssuer{
		CA: a.CA, Email: a.Email, Agreed: true, TrustedRoots: roots,
		DisableHTTPChallenge:    a.Challenge == ChallengeTLSALPN01,
		DisableTLSALPNChallenge: a.Challenge != ChallengeTLSALPN01,
		// The virtuals hold the challenge ports on this address: the
		// issuer finds them taken and relies on the handlers below.
		ListenHost: listen,
		Logger:     acmeLogger(m.p.log),
	})
	ac.cfg.Issuers = []certmagic.Issuer{ac.issuer}
	return ac, nil
}

// onEvent records and logs the outcome of each order and renewal. The
// event data name files, never keys; only the error is logged.
func (ac *acmeCert) onEvent(p *Proxy) func(context.Context, string, map[string]any) error {
	return func(_ context.Context, event string, data map[string]any) error {
		renewal, _ := data["renewal"].(bool)
		ac.mu.Lock()
		defer ac.mu.Unlock()
		switch event {
		case "cert_obtained":
			ac.outcome, ac.at, ac.lastErr = "obtained", time.Now(), ""
			if renewal {
				ac.outcome = "renewed"
			}
			p.log.Info("ACME certificate "+ac.outcome, "names", ac.spec.Names, "ca", ac.spec.CA)
		case "cert_failed":
			ac.outcome, ac.at = "failed", time.Now()
			ac.lastErr = fmt.Sprint(data["error"])
			p.log.Warn("ACME order failed: the certificate in service, if any, stays until it expires; retrying with backoff",
				"names", ac.spec.Names, "ca", ac.spec.CA, "renewal", renewal, "err", ac.lastErr)
		}
		return nil
	}
}

// manage starts ordering or loading every certificate not yet managed,
// and stops renewing those the applied spec no longer has (their files
// stay in the state directory). It runs once the listeners are open, so
// challenges can be answered. A standby of a pair sharing the state
// directory only loads what the active node stored.
func (m *acmeManager) manage() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, ac := range m.configs {
		if !m.inUse[k] {
			m.cache.RemoveManaged(ac.subjects())
			delete(m.configs, k)
			continue
		}
		if m.opts.Shared && !m.active {
			ac.loadStored(m.ctx, m.p)
			continue
		}
		if ac.managed {
			continue
		}
		if err := ac.cfg.ManageAsync(m.manageCtx, ac.spec.Names); err != nil {
			m.p.log.Warn("manage ACME certificate: it is retried at the next reload", "names", ac.spec.Names, "err", err)
			continue
		}
		ac.managed = true
	}
}

func (ac *acmeCert) subjects() []certmagic.SubjectIssuer {
	var subjects []certmagic.SubjectIssuer
	for _, n := range ac.spec.Names {
		subjects = append(subjects, certmagic.SubjectIssuer{Subject: n, IssuerKey: ac.issuer.IssuerKey()})
	}
	return subjects
}

// setActive says whether this node of a pair sharing the state directory
// is the active one, which alone orders and renews. A demoted node
// cancels its orders, stops renewing and serves what it loads from the
// state directory; a promoted one serves the stored certificates at once
// and manages them from then on.
func (m *acmeManager) setActive(active bool) {
	m.mu.Lock()
	if m.active == active {
		m.mu.Unlock()
		return
	}
	m.active = active
	if !active {
		m.manageCancel()
		m.manageCtx, m.manageCancel = context.WithCancel(m.ctx)
		for _, ac := range m.configs {
			ac.loadStored(m.ctx, m.p) // served while no longer managed
			if ac.managed {
				m.cache.RemoveManaged(ac.subjects())
				ac.managed = false
			}
		}
	}
	m.mu.Unlock()
	m.manage()
}

// SetACMEActive tells the proxy whether this node of an HA pair is the
// active one: with a shared state directory (ACMEOptions.Shared) only the
// active node orders and renews ACME certificates; until told, none does.
func (p *Proxy) SetACMEActive(active bool) { p.acme.setActive(active) }

// reloadStandby re-reads the shared state directory while standby, so
// that the certificates the active node renews are served on takeover.
func (m *acmeManager) reloadStandby() {
	every := m.opts.CheckInterval
	if every <= 0 {
		every = standbyReload
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		if !m.active {
			for _, ac := range m.configs {
				ac.loadStored(m.ctx, m.p)
			}
		}
		m.mu.Unlock()
	}
}

// loadStored loads each name's certificate from the state directory,
// where the active node stored it, when it changed since the last load.
// A name not ordered yet is skipped; one that does not load (half
// written) keeps the certificate loaded before and is retried.
func (ac *acmeCert) loadStored(ctx context.Context, p *Proxy) {
	key := ac.issuer.IssuerKey()
	for _, n := range ac.spec.Names {
		certPEM, err := ac.cfg.Storage.Load(ctx, certmagic.StorageKeys.SiteCert(key, n))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		ac.mu.Lock()
		same := bytes.Equal(certPEM, ac.pems[n])
		ac.mu.Unlock()
		if err == nil && same {
			continue
		}
		var keyPEM []byte
		if err == nil {
			keyPEM, err = ac.cfg.Storage.Load(ctx, certmagic.StorageKeys.SitePrivateKey(key, n))
		}
		var kp tls.Certificate
		if err == nil {
			kp, err = tls.X509KeyPair(certPEM, keyPEM)
		}
		if err == nil && kp.Leaf == nil { // GODEBUG=x509keypairleaf=0
			kp.Leaf, err = x509.ParseCertificate(kp.Certificate[0])
		}
		if err != nil {
			p.log.Warn("load ACME certificate from the shared state directory: the one loaded before stays; retried at the next check",
				"name", n, "err", err)
			continue
		}
		ac.mu.Lock()
		ac.stored[n], ac.pems[n] = &kp, certPEM
		ac.outcome, ac.at, ac.lastErr = ACMELoaded, time.Now(), ""
		ac.mu.Unlock()
		p.log.Info("ACME certificate loaded from the shared state directory", "name", n, "not_after", kp.Leaf.NotAfter)
	}
}

// stop ends ordering and renewals.
func (m *acmeManager) stop() {
	m.cancel()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cache != nil && !m.stopped {
		m.cache.Stop()
	}
	m.stopped = true
}

// ACMEUnknownToken is the body of the 404 that answers an http-01
// challenge request, for a name ordered over http-01, whose token no
// order is waiting for: a probe (edgeproxy diagnose) tells by it that
// port 80 reaches the challenge handler.
const ACMEUnknownToken = "edgeproxy: no pending ACME http-01 challenge for this token\n"

// serveHTTPChallenge answers an http-01 challenge request on a port-80
// virtual; it reports whether it did. A request for a name ordered over
// http-01 is answered here even when no order waits for its token (404,
// ACMEUnknownToken), never passed to a site.
func (m *acmeManager) serveHTTPChallenge(w http.ResponseWriter, r *http.Request) bool {
	if !certmagic.LooksLikeHTTPChallenge(r) {
		return false
	}
	host := hostOnly(r.Host)
	m.mu.Lock()
	var issuers []*certmagic.ACMEIssuer
	ours := false
	for _, ac := range m.configs {
		if ac.spec.Challenge != ChallengeTLSALPN01 {
			issuers = append(issuers, ac.issuer)
			ours = ours || slices.Contains(ac.spec.Names, host)
		}
	}
	m.mu.Unlock()
	for _, is := range issuers {
		if is.HandleHTTPChallenge(w, r) {
			return true
		}
	}
	if !ours {
		return false
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusNotFound)
	_, _ = io.WriteString(w, ACMEUnknownToken)
	return true
}

// certificate is the certSource of an ACME entry: the newest
// certificate in the cache for the hello's name (each name has its own),
// the first name's without SNI, or nil while none has been obtained.
func (ac *acmeCert) certificate(hello *tls.ClientHelloInfo) *tls.Certificate {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	if name == "" || !slices.Contains(ac.spec.Names, name) {
		name = ac.spec.Names[0]
	}
	var best *tls.Certificate
	for _, c := range ac.cache.AllMatchingCertificates(name) {
		if c.Leaf == nil || !slices.Contains(c.Names, name) {
			continue
		}
		if best == nil || c.Leaf.NotAfter.After(best.Leaf.NotAfter) {
			best = &c.Certificate
		}
	}
	ac.mu.Lock()
	st := ac.stored[name]
	ac.mu.Unlock()
	if st != nil && (best == nil || st.Leaf.NotAfter.After(best.Leaf.NotAfter)) {
		best = st
	}
	return best
}

// leaf returns the leaf in service for name, or nil.
func (ac *acmeCert) leaf(name string) *x509.Certificate {
	if c := ac.certificate(&tls.ClientHelloInfo{ServerName: name}); c != nil {
		return c.Leaf
	}
	return nil
}

// ACMEStatus is the state of one ACME certificate.
type ACMEStatus struct {
	Names       []string  `json:"names"`
	CA          string    `json:"ca"`
	Challenge   string    `json:"challenge"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	Serial      string    `json:"serial,omitempty"`
	LastOutcome string    `json:"last_outcome,omitempty"`
	LastAt      time.Time `json:"last_at,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
}

// status returns the certificate's state; never its key.
func (ac *acmeCert) status() ACMEStatus {
	ac.mu.Lock()
	st := ACMEStatus{Names: ac.spec.Names, CA: ac.spec.CA, Challenge: ac.spec.Challenge,
		LastOutcome: ac.outcome, LastAt: ac.at, LastError: ac.lastErr}
	ac.mu.Unlock()
	if st.Challenge == "" {
		st.Challenge = ChallengeHTTP01
	}
	if l := ac.leaf(ac.spec.Names[0]); l != nil {
		st.NotAfter, st.Serial = l.NotAfter, l.SerialNumber.Text(16)
	}
	return st
}

// ACMEStatus returns the state of every ACME certificate in service.
func (p *Proxy) ACMEStatus() []ACMEStatus {
	m := p.acme
	m.mu.Lock()
	certs := make([]*acmeCert, 0, len(m.configs))
	for _, ac := range m.configs {
		certs = append(certs, ac)
	}
	m.mu.Unlock()
	out := make([]ACMEStatus, 0, len(certs))
	for _, ac := range certs {
		out = append(out, ac.status())
	}
	slices.SortFunc(out, func(a, b ACMEStatus) int { return strings.Compare(a.Names[0], b.Names[0]) })
	return out
}
