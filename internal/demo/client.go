package demo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/internal/lab"
)

// hit is one response as a client saw it.
type hit struct {
	status int
	member string // which member answered (X-Demo-Member)
	port   string // on which member port
	peer   string // the source address the member saw
	site   string // external | internal
	header http.Header
	body   []byte
	tls    *tls.ConnectionState
}

func newHit(resp *http.Response, body []byte) *hit {
	return &hit{
		status: resp.StatusCode,
		member: resp.Header.Get(hdrMember),
		port:   resp.Header.Get(hdrPort),
		peer:   resp.Header.Get(hdrPeer),
		site:   resp.Header.Get(hdrSite),
		header: resp.Header,
		body:   body,
		tls:    resp.TLS,
	}
}

// peerIP is the address part of the peer the member saw.
func (h *hit) peerIP() string {
	host, _, err := net.SplitHostPort(h.peer)
	if err != nil {
		return h.peer
	}
	return host
}

// where says who answered: "200 from fe01 :4443, member saw 198.19.0.2:40001".
func (h *hit) where() string {
	if h.member == "" {
		return fmt.Sprintf("%d (no member header: answered by the proxy)", h.status)
	}
	return fmt.Sprintf("%d from %s :%s, member saw %s", h.status, h.member, h.port, h.peer)
}

// get sends one GET on a new connection from ns to target (TLS when tc
// is set). The URL's host is the Host header; tc.ServerName is the SNI.
func (s *session) get(ctx context.Context, ns *lab.NS, target netip.AddrPort, rawURL string, tc *tls.Config, hdr http.Header) (*hit, error) {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return ns.DialContext(ctx, "tcp", target.String())
	}
	tr := &http.Transport{
		DialContext:           dial,
		DisableKeepAlives:     true,
		ResponseHeaderTimeout: 15 * time.Second,
	}
	if tc != nil {
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			c := tls.Client(raw, tc)
			if err := c.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, fmt.Errorf("TLS handshake with %s: %w", target, err)
			}
			return c, nil
		}
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s via %s: %w", rawURL, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s via %s: %w", rawURL, target, err)
	}
	return newHit(resp, body), nil
}

// publicTLS is what an Internet client trusts: the public root only, so
// the proxy must send the intermediate.
func (s *session) publicTLS(sni string) *tls.Config {
	return &tls.Config{ServerName: sni, RootCAs: s.publicRoots, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
}

// internalTLS trusts the internal CA (the members' certificates).
func (s *session) internalTLS(sni string) *tls.Config {
	return &tls.Config{ServerName: sni, RootCAs: s.internalRoots, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
}

// noSNITLS sends no server name, like Lync mobile clients, and checks
// the certificate served for name against the public root.
func (s *session) noSNITLS(name string) *tls.Config {
	roots := s.publicRoots
	return &tls.Config{
		InsecureSkipVerify: true, // verified below, for name, without SNI
		MinVersion:         tls.VersionTLS12,
		NextProtos:         []string{"http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no certificate served")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter})
			return err
		},
	}
}

// rawConn is one client connection on which requests are written
// byte for byte (paths are sent exactly as given).
type rawConn struct {
	c    net.Conn
	br   *bufio.Reader
	host string
}

func (s *session) dialRaw(ctx context.Context, target netip.AddrPort, host string, tc *tls.Config) (*rawConn, error) {
	c, err := s.lab.Client.DialContext(ctx, "tcp", target.String())
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", target, err)
	}
	if tc != nil {
		tcn := tls.Client(c, tc)
		if err := tcn.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", target, err)
		}
		c = tcn
	}
	return &rawConn{c: c, br: bufio.NewReader(c), host: host}, nil
}

// do sends "GET uri" with the extra header lines and reads the response.
func (rc *rawConn) do(ctx context.Context, uri string, hdr http.Header) (*hit, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = rc.c.SetDeadline(dl)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: edgeproxy-demo\r\n", uri, rc.host)
	for k, vs := range hdr {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(rc.c, b.String()); err != nil {
		return nil, fmt.Errorf("send GET %s: %w", uri, err)
	}
	resp, err := http.ReadResponse(rc.br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return nil, fmt.Errorf("read response to GET %s: %w", uri, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("read response to GET %s: %w", uri, err)
	}
	h := newHit(resp, body)
	if tc, ok := rc.c.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		h.tls = &cs
	}
	return h, nil
}

func (rc *rawConn) close() { rc.c.Close() }

// curl runs curl in the client namespace with -i and parses its output;
// it returns the command as a user would type it.
func (s *session) curl(ctx context.Context, args ...string) (*hit, string, error) {
	typed := "ip netns exec " + s.lab.Client.Name + " curl -i " + strings.Join(args, " ")
	full := append([]string{"-sS", "-i", "--http1.1", "--max-time", "10"}, args...)
	cmd := s.lab.Client.Command(ctx, "curl", full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, typed, fmt.Errorf("curl: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(out)), nil)
	if err != nil {
		return nil, typed, fmt.Errorf("parse curl output: %w", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return newHit(resp, body), typed, nil
}

// autodiscover is the part of an autodiscover answer the demo checks.
type autodiscover struct {
	AccessLocation string `json:"AccessLocation"`
	Links          map[string]struct {
		Href string `json:"href"`
	} `json:"_links"`
}

// linkHosts returns the answer's access location and the hosts its
// links point at.
func linkHosts(body []byte) (string, []string, error) {
	var a autodiscover
	if err := json.Unmarshal(body, &a); err != nil {
		return "", nil, fmt.Errorf("decode autodiscover answer: %w", err)
	}
	var hosts []string
	for _, l := range a.Links {
		u, err := url.Parse(l.Href)
		if err != nil {
			return "", nil, fmt.Errorf("decode autodiscover link %q: %w", l.Href, err)
		}
		if !slices.Contains(hosts, u.Host) {
			hosts = append(hosts, u.Host)
		}
	}
	slices.Sort(hosts)
	if len(hosts) == 0 {
		return a.AccessLocation, nil, errors.New("autodiscover answer has no links")
	}
	return a.AccessLocation, hosts, nil
}

// certLine describes the certificate chain a server sent.
func certLine(chain []*x509.Certificate) string {
	if len(chain) == 0 {
		return "no certificate"
	}
	leaf := chain[0]
	s := fmt.Sprintf("certificate CN=%s issued by %s", leaf.Subject.CommonName, leaf.Issuer.CommonName)
	switch len(chain) {
	case 1:
		s += ", sent alone"
	default:
		var rest []string
		for _, c := range chain[1:] {
			rest = append(rest, c.Subject.CommonName)
		}
		s += fmt.Sprintf(", sent with %s", strings.Join(rest, ", "))
	}
	return s
}

// pemCerts returns the certificates in PEM text (openssl -showcerts).
func pemCerts(text []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, text = pem.Decode(text)
		if b == nil {
			return out
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// status reads /status from the daemon's admin endpoint.
func (s *session) status(ctx context.Context) (*admin.Status, error) {
	body, err := s.adminGet(ctx, "/status")
	if err != nil {
		return nil, err
	}
	var st admin.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("decode /status: %w", err)
	}
	return &st, nil
}

func (s *session) adminGet(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+adminAddr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.admin.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s from the admin endpoint: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return body, nil
}

// memberState returns the health of the named member of the demo pool.
func memberState(st *admin.Status, name string) *admin.Member {
	for i := range st.Members {
		if st.Members[i].Pool == poolName && st.Members[i].Member == name {
			return &st.Members[i]
		}
	}
	return nil
}

// waitMember polls /status until the member reaches state.
func (s *session) waitMember(ctx context.Context, name, state string) (*admin.Member, error) {
	var last string
	for {
		st, err := s.status(ctx)
		if err == nil {
			if m := memberState(st, name); m != nil {
				if m.State == state {
					return m, nil
				}
				last = m.State
			} else {
				last = "missing from /status"
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s not %s (last: %s): %w", name, state, last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
