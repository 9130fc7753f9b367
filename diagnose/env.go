package diagnose

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/vishvananda/netlink"
)

// DialFunc connects like net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// DialFromFunc connects from a given local address.
type DialFromFunc func(ctx context.Context, network string, src netip.Addr, addr string) (net.Conn, error)

// Credentials are a test account for the full NTLM handshake through the
// proxy. Without them the application check stops at the challenge.
type Credentials struct {
	Domain, User, Password string
}

// Env is what the checks look at: the configuration and the proxy host.
// Only Config is required. To diagnose a host that is a network namespace
// (tests, the demo), set NS to a function that runs fn inside it: Dial,
// DialFrom, Netlink and the /proc/net reads then default to running there.
type Env struct {
	Config *config.Config

	// NS runs fn in the proxy host's network namespace on a locked OS
	// thread (e.g. lab's NS.Do). Nil: the current namespace.
	NS func(fn func() error) error
	// Dial connects from the proxy host. Default: net.Dialer inside NS.
	Dial DialFunc
	// DialFrom connects from a local address of the proxy host (the
	// internal NIC's). Default: net.Dialer with LocalAddr inside NS.
	DialFrom DialFromFunc
	// ClientDial connects as an Internet client would (from another host
	// or namespace). When set, the application check goes through it,
	// and also through fastl4 virtuals, which the proxy host cannot reach
	// itself (XDP sees only packets arriving on the external NIC).
	ClientDial DialFunc
	// Netlink is a handle in the proxy host's namespace. Default: one
	// opened inside NS for the run and closed after it.
	Netlink *netlink.Handle

	// Resolver is a DNS server (host:port) that answers for the published
	// names as Internet clients see them. Empty: names are not resolved.
	Resolver string
	// Roots verify the public certificates. Nil: the system's roots.
	Roots *x509.CertPool
	// RootsName names Roots in messages ("system roots" when nil).
	RootsName string
	// Now is the clock for expiry checks. Default time.Now.
	Now func() time.Time
	// Timeout bounds each connection, handshake and request (default 3s).
	Timeout time.Duration
	// ProcDir is where process information is read to name the owners of
	// sockets (default /proc).
	ProcDir string
	// IsProxy tells edgeproxy's own processes from others. Default: the
	// process holding the admin endpoint's socket (admin.listen), once
	// that endpoint answers GET /status.
	IsProxy func(pid int, comm string) bool
	// Names are the names clients use to reach the fastl4 virtuals.
	// Default: the names of the sites publishing the same pool, else the
	// DNS names of the certificate the front ends present.
	Names []string
	// Credentials, when set, drive the NTLM handshake to the end.
	Credentials *Credentials
	// ExpiryWarning is how close to expiry a certificate is flagged
	// (default 30 days).
	ExpiryWarning time.Duration

	mu       sync.Mutex
	local    map[netip.Addr]bool
	nl       *netlink.Handle
	nlErr    error
	ownedNL  bool
	owners   map[uint64]owner
	ownersOK bool

	daemonInfo daemonInfo
	daemonOK   bool
	poolNames  map[string][]string // pool -> names of its front ends' certificate
}

func (e *Env) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ownedNL && e.nl != nil {
		e.nl.Close()
	}
	e.nl, e.nlErr, e.ownedNL = nil, nil, false
	e.owners, e.ownersOK = nil, false
	e.daemonInfo, e.daemonOK = daemonInfo{}, false
	e.poolNames = nil
	e.local = nil
}

// ErrNotLocal: a virtual's address is not on the proxy host, so dialing
// it from there would reach some other host.
var ErrNotLocal = errors.New("not an address of this host: not dialed (see the listeners check)")

// localVIP returns an error unless the virtual's address is an address of
// the proxy host (or a wildcard).
func (e *Env) localVIP(v *config.Virtual) error {
	a := v.Listen.Addr().Unmap()
	if a.IsUnspecified() || a.IsLoopback() {
		return nil
	}
	e.mu.Lock()
	if e.local == nil {
		e.local = map[netip.Addr]bool{}
		e.mu.Unlock()
		h, err := e.netlink()
		if err != nil {
			return nil // cannot tell: let the dial decide
		}
		as, err := h.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return nil
		}
		e.mu.Lock()
		for _, x := range as {
			if p, ok := prefixOf(x.IPNet); ok {
				e.local[p.Addr()] = true
			}
		}
	}
	ok := e.local[a]
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("%s: %w", a, ErrNotLocal)
	}
	return nil
}

func (e *Env) timeout() time.Duration {
	if e.Timeout > 0 {
		return e.Timeout
	}
	return 3 * time.Second
}

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Env) expiryWarning() time.Duration {
	if e.ExpiryWarning > 0 {
		return e.ExpiryWarning
	}
	return 30 * 24 * time.Hour
}

func (e *Env) rootsName() string {
	if e.RootsName != "" {
		return e.RootsName
	}
	if e.Roots == nil {
		return "the system's trusted roots"
	}
	return "the given CA bundle"
}

// inNS runs fn in the proxy host's namespace.
func (e *Env) inNS(fn func() error) error {
	if e.NS == nil {
		return fn()
	}
	return e.NS(fn)
}

func (e *Env) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout())
	defer cancel()
	if e.Dial != nil {
		return e.Dial(ctx, network, addr)
	}
	var c net.Conn
	err := e.inNS(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// clientDial connects as a client for the application check.
func (e *Env) clientDial(ctx context.Context, network, addr string) (net.Conn, error) {
	if e.ClientDial == nil {
		return e.dial(ctx, network, addr)
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout())
	defer cancel()
	return e.ClientDial(ctx, network, addr)
}

func (e *Env) dialFrom(ctx context.Context, network string, src netip.Addr, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout())
	defer cancel()
	if !src.IsValid() {
		return e.dial(ctx, network, addr)
	}
	if e.DialFrom != nil {
		return e.DialFrom(ctx, network, src, addr)
	}
	var c net.Conn
	err := e.inNS(func() (err error) {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))}
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// netlink returns the handle in the proxy host's namespace.
func (e *Env) netlink() (*netlink.Handle, error) {
	if e.Netlink != nil {
		return e.Netlink, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.nl == nil && e.nlErr == nil {
		e.nlErr = e.inNS(func() (err error) {
			e.nl, err = netlink.NewHandle()
			return err
		})
		if e.nlErr != nil {
			e.nlErr = fmt.Errorf("open netlink: %w", e.nlErr)
		}
		e.ownedNL = e.nl != nil
	}
	return e.nl, e.nlErr
}

// readNetFile reads a file under /proc/thread-self/net or
// /proc/sys/net as the proxy host's namespace shows it.
func (e *Env) readNetFile(path string) ([]byte, error) {
	var b []byte
	err := e.inNS(func() (err error) {
		b, err = os.ReadFile(path)
		return err
	})
	return b, err
}

// sysctl reads a network sysctl such as "net/ipv4/ip_forward".
func (e *Env) sysctl(name string) (string, error) {
	b, err := e.readNetFile(filepath.Join("/proc/sys", name))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func (e *Env) procDir() string {
	if e.ProcDir != "" {
		return e.ProcDir
	}
	return "/proc"
}

func (e *Env) isProxy(pid int, comm string) bool {
	if e.IsProxy != nil {
		return e.IsProxy(pid, comm)
	}
	d := e.daemon()
	return d.PID != 0 && pid == d.PID
}

// resolver returns a resolver that asks server (host:port) by dialing
// from the proxy host.
func (e *Env) resolver(server string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return e.dial(ctx, network, server)
		},
	}
}

// internalAddr returns the address the proxy uses on the internal NIC for
// the family of dst: the configured one, else the first one found on the
// interface.
func (e *Env) internalAddr(dst netip.Addr) netip.Addr {
	for _, p := range e.Config.Network.Internal.Addresses {
		if p.Addr().Is4() == dst.Is4() {
			return p.Addr()
		}
	}
	if a := e.linkAddrs(e.Config.Network.Internal.Interface); len(a) > 0 {
		for _, p := range a {
			if p.Addr().Is4() == dst.Is4() && !p.Addr().IsLinkLocalUnicast() {
				return p.Addr()
			}
		}
	}
	return netip.Addr{}
}

// linkAddrs lists the addresses on an interface (nil when unknown).
func (e *Env) linkAddrs(name string) []netip.Prefix {
	if name == "" {
		return nil
	}
	h, err := e.netlink()
	if err != nil {
		return nil
	}
	lk, err := h.LinkByName(name)
	if err != nil {
		return nil
	}
	as, err := h.AddrList(lk, netlink.FAMILY_ALL)
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, a := range as {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, p)
		}
	}
	return out
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func addrOf(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
