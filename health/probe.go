package health

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"
)

// Defaults applied to a monitor's zero fields.
const (
	DefaultInterval = 5 * time.Second
	DefaultTimeout  = 2 * time.Second
	DefaultRise     = 2
	DefaultFall     = 3
	DefaultPath     = "/"
)

// DefaultExpect is the status code list of an http/https monitor without
// expect.
var DefaultExpect = []int{http.StatusOK}

// maxBody is how much of a monitor response body is read before the
// connection is closed.
const maxBody = 64 << 10

// Errors returned for bad monitor settings and failed checks.
var (
	ErrMonitorType   = errors.New("unknown monitor type")
	ErrMonitorPort   = errors.New("monitor port missing")
	ErrMonitorCA     = errors.New("no certificate found in monitor CA file")
	ErrStatus        = errors.New("unexpected status")
	ErrDuplicate     = errors.New("member listed twice")
	ErrInvalidAddr   = errors.New("member address invalid")
	ErrAlreadyActive = errors.New("checker already running")
)

// DialFunc opens a connection; net.Dialer.DialContext has this signature.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// monitor is a Monitor with its defaults applied and its CA loaded.
type monitor struct {
	cfg      Monitor
	interval time.Duration
	timeout  time.Duration
	rise     int
	fall     int
	expect   []int
	path     string
	roots    *x509.CertPool // nil: certificate not verified
}

// none reports whether the pool has no monitor: its members are up
// without being checked.
func (m *monitor) none() bool { return m.cfg.Type == "" }

// String names the check, e.g. "https:4443/hosting/discovery".
func (m *monitor) String() string {
	if m.none() {
		return "none"
	}
	s := string(m.cfg.Type) + ":" + strconv.Itoa(int(m.cfg.Port))
	if m.cfg.Type == MonitorHTTP || m.cfg.Type == MonitorHTTPS {
		s += m.path
	}
	return s
}

// newMonitor validates mc, applies its defaults and loads its CA.
func newMonitor(pool string, mc Monitor) (*monitor, error) {
	m := &monitor{
		cfg:      mc,
		interval: mc.Interval,
		timeout:  mc.Timeout,
		rise:     mc.Rise,
		fall:     mc.Fall,
		expect:   mc.Expect,
		path:     mc.Path,
	}
	if m.interval <= 0 {
		m.interval = DefaultInterval
	}
	if m.timeout <= 0 {
		m.timeout = DefaultTimeout
	}
	if m.rise <= 0 {
		m.rise = DefaultRise
	}
	if m.fall <= 0 {
		m.fall = DefaultFall
	}
	if len(m.expect) == 0 {
		m.expect = DefaultExpect
	}
	if m.path == "" {
		m.path = DefaultPath
	}
	switch mc.Type {
	case "":
		return m, nil
	case MonitorTCP, MonitorTLS, MonitorHTTP, MonitorHTTPS:
	default:
		return nil, fmt.Errorf("check pool %q: %w %q: use tcp, tls, https or http", pool, ErrMonitorType, mc.Type)
	}
	if mc.Port == 0 {
		return nil, fmt.Errorf("check pool %q: %w: set monitor.port to the member's service port (4443 for a Skype front end)", pool, ErrMonitorPort)
	}
	if mc.CA != "" && (mc.Type == MonitorTLS || mc.Type == MonitorHTTPS) {
		roots, err := loadCA(mc.CA)
		if err != nil {
			return nil, fmt.Errorf("check pool %q: %w", pool, err)
		}
		m.roots = roots
	}
	return m, nil
}

func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read monitor CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("load monitor CA %s: %w: give a PEM file with the internal CA certificate", path, ErrMonitorCA)
	}
	return pool, nil
}

// serverName is the TLS server name and HTTP Host a check sends.
func (m *monitor) serverName(t Target) string {
	if m.cfg.Host != "" {
		return m.cfg.Host
	}
	return t.Member
}

func (m *monitor) tlsConfig(t Target) *tls.Config {
	c := &tls.Config{
		ServerName: m.serverName(t),
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
	}
	if m.roots != nil {
		c.RootCAs = m.roots
	} else {
		// No CA configured: the monitor checks that the member speaks
		// TLS, not who it is.
		c.InsecureSkipVerify = true
	}
	return c
}

// check runs one check against t and returns nil when t is alive.
func (m *monitor) check(ctx context.Context, dial DialFunc, t Target) error {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	addr := netip.AddrPortFrom(t.Addr, m.cfg.Port).String()
	switch m.cfg.Type {
	case MonitorTCP:
		conn, err := dial(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("connect to %s: %w", addr, err)
		}
		return conn.Close()
	case MonitorTLS:
		conn, err := dial(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("connect to %s: %w", addr, err)
		}
		defer conn.Close()
		tc := m.tlsConfig(t)
		tconn := tls.Client(conn, tc)
		if err := tconn.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("tls handshake with %s (server name %q): %w", addr, tc.ServerName, err)
		}
		return nil
	case MonitorHTTP, MonitorHTTPS:
		return m.checkHTTP(ctx, dial, t, addr)
	}
	return nil
}

func (m *monitor) checkHTTP(ctx context.Context, dial DialFunc, t Target, addr string) error {
	scheme := "http"
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dial(ctx, network, addr)
		},
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: maxBody,
		Proxy:                  nil,
	}
	if m.cfg.Type == MonitorHTTPS {
		scheme = "https"
		tr.TLSClientConfig = m.tlsConfig(t)
	}
	defer tr.CloseIdleConnections()
	host := m.serverName(t)
	url := scheme + "://" + addr + m.path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("build monitor request %s: %w", url, err)
	}
	req.Host = host
	req.Header.Set("User-Agent", "edgeproxy-monitor")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("GET %s (Host %s): %w", url, host, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if slices.Contains(m.expect, resp.StatusCode) {
		return nil
	}
	if resp.StatusCode == http.StatusUnauthorized {
		if m.cfg.AuthAlive {
			return nil
		}
		return fmt.Errorf("GET %s (Host %s): %w %s, want %v (set auth_alive: true when the member asks for authentication)",
			url, host, ErrStatus, resp.Status, m.expect)
	}
	return fmt.Errorf("GET %s (Host %s): %w %s, want %v", url, host, ErrStatus, resp.Status, m.expect)
}

// Probe runs one check of monitor mc against t and returns nil when the
// member is alive, or the reason it is not. dial nil uses a plain
// net.Dialer. A monitor without a type always succeeds.
func Probe(ctx context.Context, dial DialFunc, t Target, mc Monitor) error {
	m, err := newMonitor(t.Pool, mc)
	if err != nil {
		return err
	}
	if !t.Addr.IsValid() {
		return fmt.Errorf("check member %q of pool %q: %w", t.Member, t.Pool, ErrInvalidAddr)
	}
	if dial == nil {
		dial = defaultDial
	}
	return m.check(ctx, dial, t)
}

func defaultDial(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}
