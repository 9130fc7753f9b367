package diagnose

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"

	"github.com/edgeproxy/edgeproxy/admin"
)

// daemonInfo is edgeproxy's daemon as its admin endpoint shows it.
type daemonInfo struct {
	PID     int    // 0: not found
	Version string // from /status
	Why     string // why it was not found
}

// daemon finds edgeproxy's daemon by its admin endpoint: the process
// holding the socket that listens on admin.listen, once that endpoint
// answers GET /status as edgeproxy's does. The process name plays no part.
func (e *Env) daemon() daemonInfo {
	e.mu.Lock()
	if e.daemonOK {
		d := e.daemonInfo
		e.mu.Unlock()
		return d
	}
	e.mu.Unlock()
	d := e.findDaemon()
	e.mu.Lock()
	e.daemonInfo, e.daemonOK = d, true
	e.mu.Unlock()
	return d
}

func (e *Env) findDaemon() daemonInfo {
	l := e.Config.Admin.Listen
	if l == "" {
		return daemonInfo{Why: "admin.listen is off, so edgeproxy's processes cannot be told from others"}
	}
	ap, err := netip.ParseAddrPort(l)
	if err != nil {
		return daemonInfo{Why: fmt.Sprintf("admin.listen %q is not an address:port", l)}
	}
	st, err := e.fetchStatus(ap)
	if err != nil {
		return daemonInfo{Why: fmt.Sprintf("the admin endpoint %s does not answer /status (%v): is edgeproxy running?", l, err)}
	}
	socks, err := e.listeningSockets()
	if err != nil {
		return daemonInfo{Why: err.Error()}
	}
	for _, s := range socks {
		if !s.accepts(ap) {
			continue
		}
		if o, ok := e.owner(s.Inode); ok {
			return daemonInfo{PID: o.PID, Version: st.Version}
		}
	}
	return daemonInfo{Why: fmt.Sprintf("the owner of the admin endpoint %s is not visible (run as root)", l)}
}

// fetchStatus gets /status from the admin endpoint at ap, dialed from the
// proxy host (a wildcard address through loopback).
func (e *Env) fetchStatus(ap netip.AddrPort) (*admin.Status, error) {
	if ap.Addr().IsUnspecified() {
		lo := netip.IPv6Loopback()
		if ap.Addr().Is4() {
			lo = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
		ap = netip.AddrPortFrom(lo, ap.Port())
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, admin.StatusURL(ap.String()), nil)
	if err != nil {
		return nil, fmt.Errorf("build status request: %w", err)
	}
	tr := &http.Transport{Proxy: nil, DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return e.dial(ctx, network, addr) }}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /status: %s", resp.Status)
	}
	var st admin.Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("decode /status: %w", err)
	}
	if st.Started.IsZero() {
		return nil, fmt.Errorf("GET /status: not edgeproxy's status (no start time)")
	}
	return &st, nil
}
