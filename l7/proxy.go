package l7

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// defaultDrain is a virtual's drain timeout when its spec gives none.
const defaultDrain = 30 * time.Second

// Options configure a Proxy.
type Options struct {
	// Logger receives the proxy's own log (reloads, denied paths,
	// upstream failures). Default: discard.
	Logger *slog.Logger
	// AccessLog receives one line per request (use a JSON handler).
	// Default: discard.
	AccessLog *slog.Logger
	// Registry receives the metrics. Default: not registered.
	Registry prometheus.Registerer
	// ListenConfig opens a listening socket. Default: net.ListenConfig
	// with TCP keepalive (tests pass one that listens in a namespace).
	ListenConfig func(network, addr string) (net.Listener, error)
	// FreeBind binds listeners with IP_FREEBIND (when ListenConfig is
	// nil): an HA standby listens on VIPs it does not hold yet.
	FreeBind bool
	// Dial connects to a member. Default: net.Dialer with TCP
	// keepalive; the dial timeout is in ctx.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnConn, when set, is told of each client connection accepted
	// (open) and closed: its client and local (VIP) tuples. It must not
	// block.
	OnConn func(open bool, client, local netip.AddrPort)
}

// Proxy runs the https and http virtuals of a Spec.
type Proxy struct {
	opts    Options
	log     *slog.Logger
	access  *slog.Logger
	metrics *metrics
	connID  atomic.Uint64
	tickets map[string]*ticketKeys // by virtual name, across reloads
	skew    atomic.Int64           // added to the clock (tests)
	maxPins atomic.Int64           // pinned upstream connections per member
	conns   memberConns            // open connections per member, for CloseMember

	acme     *acmeManager
	staplers map[[32]byte]*stapler // OCSP, by certificate chain, in service
	pending  map[[32]byte]*stapler // those of the configuration being built (applyMu)
	open     atomic.Int64          // client connections of every listener
	maxOpen  int64                 // what the descriptor limit allows

	applyMu   sync.Mutex
	mu        sync.Mutex
	listeners map[netip.AddrPort]*listener
	members   map[memberKey]*memberState
	reported  map[memberKey]bool // last SetMemberUp verdict per member, known or not yet
	gen       []*vhost
	closed    bool
}

// New returns a Proxy that serves nothing until Apply.
func New(opts Options) *Proxy {
	discard := slog.New(slog.DiscardHandler)
	p := &Proxy{opts: opts, log: opts.Logger, access: opts.AccessLog,
		listeners: map[netip.AddrPort]*listener{}, members: map[memberKey]*memberState{},
		reported: map[memberKey]bool{}}
	if p.log == nil {
		p.log = discard
	}
	if p.access == nil {
		p.access = discard
	}
	p.tickets = map[string]*ticketKeys{}
	p.acme = newACMEManager(p)
	p.maxPins.Store(maxPinsPerMember)
	p.maxOpen = int64(fdConnBudget())
	p.metrics = newMetrics(p)
	if opts.Registry != nil {
		for _, c := range p.metrics.collectors() {
			if err := opts.Registry.Register(c); err != nil {
				p.log.Error("register l7 metrics", "error", err)
			}
		}
	}
	return p
}

// now is the proxy's clock: TLS tickets and their keys follow it.
func (p *Proxy) now() time.Time {
	return time.Now().Add(time.Duration(p.skew.Load()))
}

// vhosts returns the virtuals in service.
func (p *Proxy) vhosts() []*vhost {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.gen)
}

// Apply starts serving spec's virtuals. Everything is built
// and checked first (certificates, CAs, names, listening sockets); on any
// error nothing changes and the previous configuration keeps serving.
// Listeners on addresses that stay keep their sockets and connections and
// swap sites and certificates atomically; new addresses are opened before
// removed ones are closed (those drain for their drain_timeout).
func (p *Proxy) Apply(spec *Spec) error {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return ErrClosed
	}

	states := map[memberKey]*memberState{}
	p.pending = map[[32]byte]*stapler{}
	gen, err := p.build(spec, states)
	if err != nil {
		p.pending = nil
		return err
	}

	ls, err := p.openListeners(gen)
	if err != nil {
		p.pending = nil
		return err
	}
	prev := p.commit(gen, states, ls.next)
	p.swapStaplers()
	for l, vh := range ls.reuse {
		l.update(vh)
	}
	for _, l := range ls.opened {
		l.start()
	}
	p.acme.manage()
	for addr, l := range ls.old {
		if ls.next[addr] == l {
			continue
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), l.vh.Load().drain)
			defer cancel()
			l.close(ctx)
		}()
	}
	// Idle pooled connections of the previous generation go now; busy
	// ones finish their requests.
	for _, vh := range prev {
		for _, s := range vh.sites {
			s.closeIdle()
		}
	}
	p.warnUncovered(gen)
	p.log.Info("l7 configuration applied", "virtuals", len(gen), "listeners", len(ls.next))
	return nil
}

// listenerSet is what a new generation does with the listeners.
type listenerSet struct {
	old    map[netip.AddrPort]*listener // in service before
	next   map[netip.AddrPort]*listener // in service after
	reuse  map[*listener]*vhost         // kept, with their new virtual
	opened []*listener                  // new, not yet serving
}

// openListeners keeps the listeners whose address and mode stay, closes
// those whose mode changes (the socket is needed again) and opens the
// new ones; on error it closes what it opened.
func (p *Proxy) openListeners(gen []*vhost) (*listenerSet, error) {
	p.mu.Lock()
	ls := &listenerSet{old: p.listeners, next: map[netip.AddrPort]*listener{}, reuse: map[*listener]*vhost{}}
	p.mu.Unlock()
	var replace []*listener
	for _, vh := range gen {
		if l := ls.old[vh.listen]; l != nil {
			if l.mode == vh.mode {
				ls.reuse[l] = vh
				ls.next[vh.listen] = l
				continue
			}
			replace = append(replace, l)
		}
	}
	for _, l := range replace {
		ctx, cancel := context.WithTimeout(context.Background(), l.vh.Load().drain)
		l.close(ctx)
		cancel()
		delete(ls.old, l.addr)
	}
	for _, vh := range gen {
		if ls.next[vh.listen] != nil {
			continue
		}
		l, err := p.newListener(vh)
		if err != nil {
			for _, o := range ls.opened {
				o.close(context.Background())
			}
			return nil, fmt.Errorf("listen on %s for virtual %s: %w", vh.listen, vh.name, err)
		}
		ls.opened = append(ls.opened, l)
		ls.next[vh.listen] = l
	}
	return ls, nil
}

// commit puts gen in service with its member states and listeners, and
// returns the generation it replaces.
func (p *Proxy) commit(gen []*vhost, states map[memberKey]*memberState, next map[netip.AddrPort]*listener) []*vhost {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.members = states
	for k := range p.reported {
		if states[k] == nil {
			delete(p.reported, k)
		}
	}
	prev := p.gen
	p.gen = gen
	for name := range p.tickets {
		if !slices.ContainsFunc(gen, func(vh *vhost) bool { return vh.name == name }) {
			delete(p.tickets, name)
		}
	}
	p.listeners = next
	p.metrics.zero(gen)
	return prev
}

// warnUncovered warns of published names the default certificate does
// not cover: clients without SNI get the default certificate.
func (p *Proxy) warnUncovered(gen []*vhost) {
	for _, vh := range gen {
		for _, s := range vh.sites {
			if s.redirect {
				continue
			}
			for _, h := range s.hosts {
				if vh.certs != nil && !strings.HasPrefix(h, "*.") && !vh.certs.defaultCovers(h) {
					p.log.Warn("the default certificate does not cover a published name: clients without SNI will fail",
						"virtual", vh.name, "host", h, "cert", vh.certs.entries[0].path)
				}
			}
		}
	}
}

// build makes the vhosts of spec's virtuals.
func (p *Proxy) build(spec *Spec, states map[memberKey]*memberState) ([]*vhost, error) {
	var gen []*vhost
	seen := map[netip.AddrPort]string{}
	p.acme.setOptions(spec.ACME)
	for _, v := range spec.Virtuals {
		if v == nil {
			continue
		}
		if v.Mode != ModeHTTPS && v.Mode != ModeHTTP {
			return nil, fmt.Errorf("virtual %s: mode %q: %w (use https or http)", v.Name, v.Mode, ErrBadValue)
		}
		if !v.Listen.IsValid() {
			return nil, fmt.Errorf("virtual %s: listen: %w (write address:port, e.g. 203.0.113.10:443)", v.Name, ErrBadValue)
		}
		if other, dup := seen[v.Listen]; dup {
			return nil, fmt.Errorf("virtual %s: listen %s: %w (%s)", v.Name, v.Listen, ErrDuplicateListen, other)
		}
		seen[v.Listen] = v.Name
		vh, err := p.buildVirtual(v, states)
		if err != nil {
			return nil, fmt.Errorf("virtual %s: %w", v.Name, err)
		}
		gen = append(gen, vh)
	}
	return gen, nil
}

func (p *Proxy) buildVirtual(v *Virtual, states map[memberKey]*memberState) (*vhost, error) {
	vh := &vhost{p: p, name: v.Name, mode: v.Mode, https: v.Mode == ModeHTTPS, listen: v.Listen,
		drain: v.DrainTimeout, limits: connLimitsOf(v.Limits),
		handshakeTimeout: v.TLS.HandshakeTimeout,
		hosts:            hostTable{exact: map[string]*site{}, wild: map[string]*site{}}}
	if vh.drain <= 0 {
		vh.drain = defaultDrain
	}
	for _, pr := range v.TrustedProxies {
		bits := pr.Bits()
		if pr.Addr().Is4In6() {
			bits -= 96
		}
		vh.trustedP = append(vh.trustedP, netip.PrefixFrom(pr.Addr().Unmap(), max(bits, 0)).Masked())
	}
	if vh.https {
		if err := p.buildTLS(vh, v); err != nil {
			return nil, err
		}
	}
	if len(v.Sites) == 0 {
		return nil, fmt.Errorf("sites: %w: none (add sites: [{hosts: [...], pool: ..., port: ...}])", ErrBadValue)
	}
	first := true
	for i, cs := range v.Sites {
		if cs == nil {
			continue
		}
		s, err := p.buildSite(vh, cs, states)
		if err != nil {
			return nil, fmt.Errorf("sites[%d]: %w", i, err)
		}
		vh.sites = append(vh.sites, s)
		for _, h := range s.hosts {
			table := vh.hosts.exact
			key := h
			if parent, ok := strings.CutPrefix(h, "*."); ok {
				table, key = vh.hosts.wild, parent
			}
			if table[key] != nil {
				return nil, fmt.Errorf("sites[%d]: host %s: %w (keep each host in one site)", i, h, ErrDuplicateHost)
			}
			table[key] = s
		}
		sp := serverParams{headerTimeout: s.limits.headerTimeout, maxHeader: s.limits.maxHeader, idle: s.limits.idle}
		if first {
			vh.params, first = sp, false
		} else {
			vh.params.headerTimeout = min(vh.params.headerTimeout, sp.headerTimeout)
			vh.params.maxHeader = max(vh.params.maxHeader, sp.maxHeader)
			vh.params.idle = max(vh.params.idle, sp.idle)
		}
	}
	return vh, nil
}

// buildTLS loads an https virtual's certificates and makes its TLS
// configurations and ticket keys.
func (p *Proxy) buildTLS(vh *vhost, v *Virtual) error {
	certs, err := loadCertStore(v.Certificates, func(a *ACME) (*acmeCert, error) {
		return p.acme.cert(a, v.Listen.Addr().String())
	})
	if err != nil {
		return err
	}
	vh.certs = certs
	p.attachStaplers(certs)
	minV := v.TLS.MinVersion
	if minV == 0 {
		minV = tls.VersionTLS12
	}
	mk := func(protos ...string) *tls.Config {
		return &tls.Config{
			MinVersion:             minV,
			CipherSuites:           cipherSuites(minV),
			GetCertificate:         certs.getCertificate,
			NextProtos:             protos,
			Time:                   p.now,
			SessionTicketsDisabled: v.TLS.NoSessionTickets,
			// Full-size records (up to 16 KiB), as nginx and HAProxy
			// send them: crypto/tls's dynamic sizing writes the first
			// 128 KiB of every connection in 1.2 KiB records, each its
			// own system call and packet.
			DynamicRecordSizingDisabled: true,
		}
	}
	if certs.alpn != nil {
		// tls-alpn-01 validations offer acme-tls/1 alone.
		vh.tlsH2, vh.tlsH1 = mk("h2", "http/1.1", acmeTLSProto), mk("http/1.1", acmeTLSProto)
	} else {
		vh.tlsH2, vh.tlsH1 = mk("h2", "http/1.1"), mk("http/1.1")
	}
	vh.hsts = hstsValue(v.TLS.HSTS)
	vh.tickets, vh.ticketPeriod = p.ticketKeysFor(v.Name), v.TLS.TicketRotation
	vh.syncTickets()
	return nil
}

func (p *Proxy) buildSite(vh *vhost, cs *Site, states map[memberKey]*memberState) (*site, error) {
	if len(cs.Hosts) == 0 {
		return nil, fmt.Errorf("hosts: %w: empty (list the names this site answers for)", ErrBadValue)
	}
	s := &site{vh: vh, windowsAuth: cs.WindowsAuth, limits: limitsOf(cs.Limits), strictPaths: cs.StrictPaths || cs.Redirect || len(cs.Deny) > 0}
	for _, h := range cs.Hosts {
		h = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), "."))
		if h == "" {
			return nil, fmt.Errorf("hosts: %w: empty name", ErrBadValue)
		}
		s.hosts = append(s.hosts, h)
	}
	s.name = s.hosts[0]
	s.methods, s.upgrade, s.hideMember = siteMethods(cs), siteUpgrades(cs), cs.Skype
	if cs.Redirect {
		s.redirect = true
		return s, nil
	}
	s.affinity, s.leastConn = cs.Affinity, cs.LeastConn
	if cs.Port == 0 {
		return nil, fmt.Errorf("port: %w: missing (the members' port, e.g. 4443)", ErrBadValue)
	}
	s.poolName, s.port = cs.Pool, cs.Port
	s.upHosts = map[string]string{}
	for _, h := range s.hosts {
		if !strings.HasPrefix(h, "*.") {
			s.upHosts[h] = net.JoinHostPort(hostOnly(h), strconv.Itoa(int(s.port)))
		}
	}
	s.scheme = "http"
	if bt := cs.BackendTLS; bt != nil {
		c, err := backendTLS(bt)
		if err != nil {
			return nil, err
		}
		s.scheme, s.tls = "https", c
	}
	for _, d := range cs.Deny {
		s.deny = append(s.deny, newDenyRule(d))
	}
	// A pinned upstream is the site's own: another site of the virtual
	// with the same pool and port has other upstream settings.
	s.pinKey = s.name + "|" + s.scheme + "|" + s.poolName + "|" + strconv.Itoa(int(s.port))
	for _, m := range cs.Members {
		if !m.Addr.IsValid() {
			return nil, fmt.Errorf("pool %s: member %s: %w: no address", cs.Pool, m.Name, ErrUnresolved)
		}
		st := p.memberState(states, memberKey{Pool: cs.Pool, Addr: m.Addr.Unmap()}, m)
		sm := &siteMember{m: st, cookie: affinityValue(cs.Pool, st.key.Addr)}
		d := s.dialer(st)
		sm.addr = d.addr
		sm.rt = newTransport(d, false)
		s.members = append(s.members, sm)
	}
	s.buffers = &bufferPool{}
	s.proxy = &httputil.ReverseProxy{
		Rewrite:        s.rewrite,
		Transport:      s,
		ModifyResponse: s.modifyResponse,
		ErrorHandler:   s.errorHandler,
		BufferPool:     s.buffers,
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// backendTLS makes the TLS configuration a site re-encrypts with.
func backendTLS(bt *BackendTLS) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: bt.ServerName,
		InsecureSkipVerify: bt.InsecureSkipVerify, NextProtos: []string{"http/1.1"},
		ClientSessionCache:          tls.NewLRUClientSessionCache(256),
		DynamicRecordSizingDisabled: true} // as the client side (buildTLS)
	if bt.CA == "" {
		return c, nil
	}
	pem, err := os.ReadFile(bt.CA)
	if err != nil {
		return nil, fmt.Errorf("backend_tls.ca: read CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("backend_tls.ca %s: %w: no PEM certificate in it", bt.CA, ErrBadValue)
	}
	c.RootCAs = pool
	return c, nil
}

// memberState returns the state of member key for the configuration
// being built: shared by the sites that use it, carried over from the
// running configuration, or new with the last health verdict reported.
func (p *Proxy) memberState(states map[memberKey]*memberState, key memberKey, m Member) *memberState {
	st := states[key]
	if st != nil {
		return st
	}
	p.mu.Lock()
	st = p.members[key]
	if st == nil {
		st = &memberState{key: key, name: m.Name}
		if up, ok := p.reported[key]; ok {
			st.down.Store(!up)
		}
	}
	p.mu.Unlock()
	st.disabled.Store(m.Disabled)
	if !m.Disabled {
		st.cut.Store(false)
	}
	states[key] = st
	return st
}

// SetMemberUp records the health monitor's verdict on a member. Members
// count as up until a monitor says otherwise; a down member gets no new
// requests (pinned connections already on it stay until they close).
func (p *Proxy) SetMemberUp(pool string, addr netip.Addr, up bool) {
	key := memberKey{Pool: pool, Addr: addr.Unmap()}
	p.mu.Lock()
	m := p.members[key]
	p.reported[key] = up
	p.mu.Unlock()
	if m == nil {
		return
	}
	if m.down.Swap(!up) == up {
		p.log.Info("member health changed", "pool", pool, "member", addr.String(), "up", up)
	}
	if up {
		m.failedTill.Store(0)
	}
}

// Shutdown stops accepting connections and waits for requests in flight
// until ctx ends, then closes what is left.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.applyMu.Lock()
	defer p.applyMu.Unlock()
	p.mu.Lock()
	p.closed = true
	ls := p.listeners
	p.listeners = map[netip.AddrPort]*listener{}
	gen := p.gen
	p.mu.Unlock()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.close(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("drain %s: %w", l.addr, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, vh := range gen {
		for _, s := range vh.sites {
			s.closeIdle()
		}
	}
	p.acme.stop()
	p.mu.Lock()
	staplers := p.staplers
	p.staplers = nil
	p.mu.Unlock()
	for _, st := range staplers {
		st.stop()
	}
	return errors.Join(errs...)
}

// Addrs returns the addresses the proxy listens on (useful with port 0).
func (p *Proxy) Addrs() map[string]net.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]net.Addr{}
	for _, l := range p.listeners {
		out[l.vh.Load().name] = l.ln.Addr()
	}
	return out
}

var _ http.RoundTripper = (*site)(nil)
