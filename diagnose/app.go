package diagnose

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/internal/ntlm"
)

// Application: through the proxy's public listener, as an Internet client
// would: autodiscover links on the external names (an internal name means
// the request reached the Internal Web Site), the certificate
// provisioning service asking for NTLM/Negotiate, the NTLM handshake
// surviving the proxy (and the Extended Protection symptom), management
// paths closed, X-Ms-diagnostics decoded.
var Application = Check{
	Name: "application",
	Doc:  "autodiscover links, CertProv authentication, NTLM through the proxy, denied management paths, X-Ms-diagnostics",
	Run:  checkApplication,
}

// Paths of the Skype / Lync external web services.
const (
	autodiscoverPath = "/autodiscover/autodiscoverservice.svc/root"
	certProvPath     = "/CertProv/CertProvisioningService.svc"
)

// ErrConnectionClosed: the peer closed the connection in the middle of a
// handshake that needs it.
var ErrConnectionClosed = errors.New("connection closed")

// httpConn is one client connection to a virtual, for requests written
// by hand (exact paths, connection-bound authentication).
type httpConn struct {
	conn   net.Conn
	br     *bufio.Reader
	host   string
	leaf   *x509.Certificate // the proxy's certificate (https)
	closed bool
}

func (e *Env) openHTTP(ctx context.Context, v *config.Virtual, host string) (*httpConn, error) {
	if e.ClientDial == nil {
		if err := e.localVIP(v); err != nil {
			return nil, err
		}
	}
	conn, err := e.clientDial(ctx, "tcp", e.dialAddr(v))
	if err != nil {
		return nil, err
	}
	hc := &httpConn{conn: conn, host: host}
	if clientTLS(v) {
		sni := host
		if _, err := netip.ParseAddr(host); err == nil {
			sni = ""
		}
		tc := tls.Client(conn, &tls.Config{
			ServerName:         sni,
			InsecureSkipVerify: true, //nolint:gosec // certificates are judged by their own check
			MinVersion:         tls.VersionTLS12,
			NextProtos:         []string{"http/1.1"},
		})
		hctx, cancel := context.WithTimeout(ctx, e.timeout())
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS handshake with %s (SNI %q): %w", e.dialAddr(v), sni, err)
		}
		hc.conn = tc
		hc.leaf = tc.ConnectionState().PeerCertificates[0]
	}
	hc.br = bufio.NewReader(hc.conn)
	return hc, nil
}

func (h *httpConn) Close() { h.conn.Close() }

// do sends one GET and reads the response with up to 256 KiB of body.
func (h *httpConn) do(ctx context.Context, timeout time.Duration, path string, hdr http.Header) (*http.Response, []byte, error) {
	if h.closed {
		return nil, nil, ErrConnectionClosed
	}
	dl := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = h.conn.SetDeadline(dl)
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: edgeproxy-diagnose\r\nAccept: */*\r\n", path, h.host)
	for k, vs := range hdr {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(h.conn, b.String()); err != nil {
		return nil, nil, fmt.Errorf("send GET %s: %w", path, err)
	}
	resp, err := http.ReadResponse(h.br, &http.Request{Method: http.MethodGet})
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, fmt.Errorf("read response to GET %s: %w", path, ErrConnectionClosed)
		}
		return nil, nil, fmt.Errorf("read response to GET %s: %w", path, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<10))
	resp.Body.Close()
	if err != nil {
		return resp, body, fmt.Errorf("read body of GET %s: %w", path, err)
	}
	if resp.Close {
		h.closed = true
	}
	return resp, body, nil
}

// get opens a connection, sends one GET and closes.
func (e *Env) get(ctx context.Context, v *config.Virtual, host, path string, hdr http.Header) (*http.Response, []byte, error) {
	hc, err := e.openHTTP(ctx, v, host)
	if err != nil {
		return nil, nil, err
	}
	defer hc.Close()
	return hc.do(ctx, e.timeout(), path, hdr)
}

// appRun collects the findings of one site and the X-Ms-diagnostics seen.
type appRun struct {
	findings
	diags map[string][]string // header value -> where
}

func (a *appRun) saw(resp *http.Response, where string) {
	if resp == nil {
		return
	}
	for _, v := range resp.Header.Values("X-Ms-diagnostics") {
		if a.diags == nil {
			a.diags = map[string][]string{}
		}
		a.diags[v] = append(a.diags[v], where)
	}
}

func checkApplication(ctx context.Context, e *Env) []Finding {
	var out []Finding
	c := e.Config
	skype := skypePools(c)
	names := appNames{published: map[string]bool{}, internal: map[string]bool{}}
	for _, v := range c.Virtuals {
		hosts := publishedHosts(v)
		if v.Mode == config.ModeFastL4 && e.ClientDial != nil {
			hosts, _ = e.fastl4Names(ctx, v)
		}
		for _, h := range hosts {
			names.published[h] = true
		}
	}
	for h := range c.Network.Hosts {
		names.internal[strings.TrimSuffix(strings.ToLower(h), ".")] = true
	}
	for _, p := range c.Pools {
		if p == nil {
			continue
		}
		for _, m := range p.Members {
			names.internal[strings.ToLower(m.Address)] = true
		}
	}
	for _, v := range c.Virtuals {
		sites := v.Sites
		if v.Mode == config.ModeFastL4 {
			if e.ClientDial == nil {
				out = append(out, Finding{Check: "", Subject: "virtual " + v.Name, Verdict: Warn,
					Evidence: "the application behind a fastl4 virtual is not checked from the proxy host: XDP translates only packets arriving on the external NIC",
					Fix:      "run the application check as a client: edgeproxy diagnose -checks application -client-netns NAME, or from a host outside"})
				continue
			}
			hosts, _ := e.fastl4Names(ctx, v)
			sites = []*config.Site{fastl4Site(v, hosts, skype)}
		} else if v.Mode != config.ModeHTTPS && v.Mode != config.ModeHTTP {
			continue
		}
		needs := e.targetNeeds(ctx, v)
		for _, s := range sites {
			if len(s.Hosts) == 0 {
				continue
			}
			a := &appRun{}
			isSkype := s.Profile == config.ProfileSkype || skype[s.Pool]
			switch {
			case s.Redirect != "":
				e.appRedirect(ctx, a, v, s)
			case isSkype:
				if !e.appAutodiscover(ctx, a, v, s, names) {
					// The listener does not answer: one finding is enough.
					out = append(out, a.withNeeds(needs)...)
					continue
				}
				if clientTLS(v) {
					e.appCertProv(ctx, a, v, s)
				}
			}
			if s.Redirect == "" {
				e.appDenied(ctx, a, v, s, isSkype)
			}
			out = append(out, a.withNeeds(needs)...)
			out = append(out, a.diagFindings(appLabel(v, siteHost(s)))...)
		}
	}
	return out
}

// appNames tells published names from internal ones in links.
type appNames struct {
	published map[string]bool
	internal  map[string]bool // network.hosts and member names
}

// internalName reports whether a host in a link is not for outside
// clients: a backend name, or (when names are published) any other.
func (n appNames) internalName(h string) bool {
	if n.published[h] {
		return false
	}
	return n.internal[h] || len(n.published) > 0
}

// fastl4Site is the site a fastl4 virtual publishes: the names clients
// use (fastl4Names), else its address.
func fastl4Site(v *config.Virtual, hosts []string, skype map[string]bool) *config.Site {
	s := &config.Site{Pool: v.Pool, Port: v.Port, Hosts: slices.Clone(hosts)}
	if skype[v.Pool] {
		s.Profile = config.ProfileSkype
	}
	if len(s.Hosts) == 0 {
		s.Hosts = []string{v.Listen.Addr().String()}
	}
	return s
}

// appLabel names what a client asks: scheme and host.
func appLabel(v *config.Virtual, host string) string {
	if clientTLS(v) {
		return v.Name + " https://" + host
	}
	return v.Name + " http://" + host
}

// clientTLS reports whether clients speak TLS to the virtual.
func clientTLS(v *config.Virtual) bool {
	if v.Mode == config.ModeFastL4 {
		return v.Listen.Port() != 80 && v.Port != 8080 && v.Port != 80
	}
	return v.Mode == config.ModeHTTPS
}

// appRedirect: a site that redirects to https answers 3xx to https.
func (e *Env) appRedirect(ctx context.Context, a *appRun, v *config.Virtual, s *config.Site) {
	host := siteHost(s)
	subj := appLabel(v, host) + " redirect"
	resp, _, err := e.get(ctx, v, host, "/", nil)
	if err != nil {
		a.add(Fail, subj, fmt.Sprintf("GET http://%s/ through %s: %v", host, e.dialAddr(v), unwrapOp(err)), "see the listeners check")
		return
	}
	a.saw(resp, "GET /")
	loc := resp.Header.Get("Location")
	if resp.StatusCode >= 300 && resp.StatusCode < 400 && strings.HasPrefix(strings.ToLower(loc), "https://") {
		a.pass(subj, "GET / → %d %s", resp.StatusCode, loc)
		return
	}
	a.add(Fail, subj, fmt.Sprintf("GET / → %d %s, not a redirect to https", resp.StatusCode, loc), "check the site's redirect setting and restart edgeproxy")
}

// appAutodiscover reports whether the listener answered at all.
func (e *Env) appAutodiscover(ctx context.Context, a *appRun, v *config.Virtual, s *config.Site, names appNames) bool {
	host := siteHost(s)
	subj := appLabel(v, host) + " autodiscover"
	scheme := "http"
	if clientTLS(v) {
		scheme = "https"
	}
	resp, body, err := e.get(ctx, v, host, autodiscoverPath, http.Header{"Accept": {"application/json"}})
	if err != nil {
		a.add(Fail, subj, fmt.Sprintf("GET %s://%s%s through %s: %v", scheme, host, autodiscoverPath, e.dialAddr(v), unwrapOp(err)),
			"see the listeners check")
		return false
	}
	a.saw(resp, "autodiscover")
	line := fmt.Sprintf("GET %s → %d", autodiscoverPath, resp.StatusCode)
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusForbidden:
		a.add(Fail, subj, line+": the proxy (or a filter in front of the members) denies autodiscover", "publish /* except the management paths")
		return true
	case resp.StatusCode == http.StatusNotFound:
		a.add(Fail, subj, line+": the member answering is not a Skype/Lync External Web Site", "check the site's pool and port (ports check)")
		return true
	case resp.StatusCode >= 500:
		a.add(Fail, subj, line+": the proxy could not get an answer from the pool (member down, port closed or its certificate rejected)",
			"see the ports and certificates checks and edgeproxy's log")
		return true
	default:
		a.add(Warn, subj, line+": autodiscover's root answers 200 to anonymous clients", "")
		return true
	}
	var internal, external []string
	for _, m := range linkRe.FindAllString(string(body), -1) {
		u, err := url.Parse(m)
		if err != nil || u.Hostname() == "" {
			continue
		}
		hn := strings.ToLower(u.Hostname())
		if !names.internalName(hn) {
			if !slices.Contains(external, hn) {
				external = append(external, hn)
			}
		} else if !slices.Contains(internal, hn) {
			internal = append(internal, hn)
		}
	}
	switch {
	case len(internal) > 0:
		a.add(Fail, subj, fmt.Sprintf("%s with links to %s, not a published name: the request reached the members' Internal Web Site (or the topology's external web services FQDN is not published)",
			line, strings.Join(internal, ", ")),
			"send the site to the External Web Site's port (4443/8080, see the ports check), and publish the external web services FQDN of the topology")
	case len(external) == 0:
		a.add(Warn, subj, line+" without links", "check the member's autodiscover service")
	default:
		a.pass(subj, "%s, links on %s", line, strings.Join(external, ", "))
	}
	return true
}

var linkRe = regexp.MustCompile(`https?://[^"'<>\s\\]+`)

// appCertProv: the certificate provisioning service asks for Windows
// authentication, and an NTLM handshake survives the proxy.
func (e *Env) appCertProv(ctx context.Context, a *appRun, v *config.Virtual, s *config.Site) {
	host := siteHost(s)
	subj := appLabel(v, host) + " CertProv"
	resp, _, err := e.get(ctx, v, host, certProvPath, nil)
	if err != nil {
		a.add(Fail, subj, fmt.Sprintf("GET %s: %v", certProvPath, unwrapOp(err)), "see the listeners check")
		return
	}
	a.saw(resp, "CertProv")
	schemes := authSchemes(resp.Header)
	line := fmt.Sprintf("GET %s → %d", certProvPath, resp.StatusCode)
	if len(schemes) > 0 {
		line += ", WWW-Authenticate: " + strings.Join(schemes, ", ")
	}
	hasNTLM := hasScheme(schemes, "NTLM")
	hasNeg := hasScheme(schemes, "Negotiate")
	switch {
	case resp.StatusCode >= 500:
		a.add(Fail, subj, line+": the proxy could not get an answer from the pool (member down, port closed or its certificate rejected)",
			"see the ports and certificates checks and edgeproxy's log")
		return
	case resp.StatusCode != http.StatusUnauthorized:
		a.add(Fail, subj, line+": the certificate provisioning service must challenge with 401 (clients get their sign-in certificate there)",
			"publish the path unchanged to the External Web Site; no pre-authentication at the proxy")
		return
	case !hasNTLM && !hasNeg:
		a.add(Fail, subj, line+": no NTLM or Negotiate offered, so external clients cannot authenticate to get a web ticket",
			"let the WWW-Authenticate headers through unchanged; enable Windows authentication on the External Web Site")
		return
	}
	if !hasNTLM {
		a.pass(subj, "%s (Negotiate only: NTLM handshake not tried)", line)
		return
	}
	a.pass(subj, "%s", line)
	e.appNTLM(ctx, a, v, host)
}

// appNTLM walks the NTLM handshake on one connection.
func (e *Env) appNTLM(ctx context.Context, a *appRun, v *config.Virtual, host string) {
	subj := appLabel(v, host) + " NTLM"
	hc, err := e.openHTTP(ctx, v, host)
	if err != nil {
		a.add(Fail, subj, err.Error(), "see the listeners check")
		return
	}
	defer hc.Close()
	neg := http.Header{"Authorization": {"NTLM " + base64.StdEncoding.EncodeToString(ntlm.NegotiateMessage())}}
	resp, _, err := hc.do(ctx, e.timeout(), certProvPath, neg)
	if err != nil {
		a.add(Fail, subj, fmt.Sprintf("NTLM negotiate: %v", err), "see edgeproxy's log")
		return
	}
	a.saw(resp, "NTLM negotiate")
	var chal *ntlm.Challenge
	for _, h := range resp.Header.Values("WWW-Authenticate") {
		if tok, ok := strings.CutPrefix(h, "NTLM "); ok {
			if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(tok)); err == nil {
				chal, _ = ntlm.ParseChallenge(raw)
			}
		}
	}
	if resp.StatusCode != http.StatusUnauthorized || chal == nil {
		a.add(Fail, subj, fmt.Sprintf("NTLM negotiate → %d without an NTLM challenge: the Authorization header does not reach the member", resp.StatusCode),
			"forward Authorization and WWW-Authenticate unchanged (no pre-authentication)")
		return
	}
	if hc.closed {
		a.add(Fail, subj, "the connection is closed after the NTLM challenge: NTLM authenticates the TCP connection, so the handshake cannot complete",
			"keep the client's connection and its pinned upstream connection open through the handshake")
		return
	}
	if e.Credentials == nil {
		a.pass(subj, "NTLM challenge received on a kept-alive connection (give a test account to complete the handshake and detect IIS Extended Protection)")
		return
	}
	var cbt []byte
	if hc.leaf != nil {
		cbt = ntlm.ChannelBindingHash(hc.leaf)
	}
	cr := ntlm.Credentials{Domain: e.Credentials.Domain, User: e.Credentials.User, Password: e.Credentials.Password, Workstation: "EDGEPROXY"}
	auth, err := ntlm.AuthenticateMessage(chal, cr, cbt, e.now())
	if err != nil {
		a.add(Fail, subj, err.Error(), "")
		return
	}
	resp, _, err = hc.do(ctx, e.timeout(), certProvPath, http.Header{"Authorization": {"NTLM " + base64.StdEncoding.EncodeToString(auth)}})
	if err != nil {
		a.add(Fail, subj, fmt.Sprintf("NTLM authenticate: %v: the upstream connection was not kept for the handshake", err),
			"pin the client connection to its upstream connection once it carries NTLM")
		return
	}
	a.saw(resp, "NTLM authenticate")
	switch {
	case resp.StatusCode == http.StatusUnauthorized && v.Mode == config.ModeHTTPS:
		a.add(Fail, subj, fmt.Sprintf("the NTLM challenge/response completed through the proxy as %s\\%s but the final answer is still 401: "+
			"either the test account's password is wrong, or IIS Extended Protection (channel binding) is on for the External Web Site; "+
			"channel binding ties NTLM to the TLS certificate the client saw, which is the proxy's, so it cannot work through a TLS-terminating proxy",
			e.Credentials.Domain, e.Credentials.User),
			"check the account; in IIS, set Extended Protection of Windows Authentication on the External Web Site to Off, or publish it through a fastl4 virtual")
	case resp.StatusCode == http.StatusUnauthorized:
		a.add(Fail, subj, "the NTLM handshake completed but the final answer is still 401: the test account is refused", "check the account")
	case resp.StatusCode < 400:
		a.pass(subj, "NTLM handshake completed through the proxy as %s\\%s: %d", e.Credentials.Domain, e.Credentials.User, resp.StatusCode)
	default:
		a.add(Fail, subj, fmt.Sprintf("NTLM authenticate → %d", resp.StatusCode), "read the member's IIS log")
	}
}

// deniedVariants are spellings of a denied path that must be refused as
// well: case, trailing slash, dot segments, percent-encoding.
func deniedVariants(p string) []string {
	out := []string{p, strings.ToUpper(p), p + "/", "/." + p, "/edgeproxy-diagnose/.." + p}
	if len(p) > 1 {
		out = append(out, fmt.Sprintf("/%%%02X%s", p[1], p[2:]))
	}
	return out
}

// appDenied: the paths a site denies answer 403 from outside (400 for a
// spelling not in canonical form, which edgeproxy refuses before
// routing); a Skype pool's management paths that the site does not deny
// (no skype profile, or fastl4 pass-through) must at least not be served
// (403, 400 or 404).
func (e *Env) appDenied(ctx context.Context, a *appRun, v *config.Virtual, s *config.Site, skype bool) {
	type target struct {
		path   string
		strict bool // denied by the configuration: 403 expected
	}
	var paths []target
	has := func(p string) bool {
		return slices.ContainsFunc(paths, func(x target) bool { return strings.EqualFold(x.path, p) })
	}
	if v.Mode != config.ModeFastL4 {
		for _, p := range s.DeniedPaths() {
			paths = append(paths, target{p, true})
		}
	}
	if skype {
		for _, p := range config.SkypeDeniedPaths() {
			if !has(p) {
				paths = append(paths, target{p, false})
			}
		}
	}
	if len(paths) == 0 {
		return
	}
	host := siteHost(s)
	subj := appLabel(v, host) + " denied paths"
	byStatus := map[string][]string{} // what went wrong -> paths
	var order, names, errs []string
	tried, notDenied := 0, 0
	for _, p := range paths {
		names = append(names, p.path)
		for _, q := range deniedVariants(p.path) {
			resp, _, err := e.get(ctx, v, host, q, nil)
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %v", q, unwrapOp(err)))
				continue
			}
			tried++
			a.saw(resp, "GET "+q)
			var k string
			switch {
			case resp.StatusCode == http.StatusForbidden, resp.StatusCode == http.StatusBadRequest:
			case resp.StatusCode == http.StatusNotFound && !p.strict:
				notDenied++ // not part of the External Web Site
			case resp.StatusCode == http.StatusNotFound:
				k = "404 (forwarded to a member instead of denied)"
			default:
				k = strconv.Itoa(resp.StatusCode)
			}
			if k != "" {
				if byStatus[k] == nil {
					order = append(order, k)
				}
				byStatus[k] = append(byStatus[k], q)
			}
		}
	}
	list := strings.Join(names, ", ")
	switch {
	case len(order) > 0:
		var parts []string
		for _, k := range order {
			parts = append(parts, fmt.Sprintf("→ %s: GET %s", k, strings.Join(byStatus[k], ", ")))
		}
		fix := "deny them at the proxy (the skype profile does) and restart edgeproxy; they are not part of the External Web Site"
		if v.Mode == config.ModeFastL4 {
			fix = "a fastl4 virtual cannot filter paths: publish the site in https mode with the skype profile, and make sure the pool's External Web Site (4443) is the one answering"
		}
		a.add(Fail, subj, "management paths are reachable from outside:\n"+strings.Join(parts, "\n"), fix)
	case tried == 0:
		a.add(Fail, subj, "no answer: "+strings.Join(errs, "; "), "see the listeners check")
	case v.Mode == config.ModeFastL4:
		a.pass(subj, "%d requests to %s (and variants) → 403/400/404: not served by the External Web Site (fastl4 passes paths through)", tried, list)
	case notDenied > 0:
		a.pass(subj, "%d requests to %s (and variants) → 403/400/404: the site does not deny them (no skype profile) but the External Web Site does not serve them", tried, list)
	default:
		a.pass(subj, "%d requests to %s (and variants) → 403 (400 for the spellings not in canonical form)", tried, list)
	}
}

// withNeeds returns the findings, each depending on needs.
func (a *appRun) withNeeds(needs []string) []Finding {
	for i := range a.findings {
		a.findings[i].needs = needs
	}
	return a.findings
}

// diagFindings decodes the X-Ms-diagnostics headers seen.
func (a *appRun) diagFindings(host string) []Finding {
	var out []Finding
	for _, v := range slices.Sorted(maps.Keys(a.diags)) {
		d, err := ParseMsDiagnostics(v)
		fd := Finding{Subject: host + " X-Ms-diagnostics", Verdict: Warn}
		if err != nil {
			fd.Evidence = fmt.Sprintf("%s (in %s): %v", v, strings.Join(a.diags[v], ", "), err)
		} else {
			fd.Evidence = fmt.Sprintf("%s (in %s)\nraw: %s", d, strings.Join(a.diags[v], ", "), v)
			fd.Fix = msDiagHints[d.Code]
		}
		out = append(out, fd)
	}
	return out
}

// authSchemes lists the schemes offered in WWW-Authenticate headers.
func authSchemes(h http.Header) []string {
	var out []string
	for _, v := range h.Values("WWW-Authenticate") {
		for _, part := range strings.Split(v, ",") {
			part = strings.TrimSpace(part)
			if part == "" || strings.Contains(strings.Fields(part)[0], "=") {
				continue // a parameter of the previous scheme
			}
			s := strings.Fields(part)[0]
			if !slices.ContainsFunc(out, func(x string) bool { return strings.EqualFold(x, s) }) {
				out = append(out, s)
			}
		}
	}
	return out
}

func hasScheme(schemes []string, s string) bool {
	return slices.ContainsFunc(schemes, func(x string) bool { return strings.EqualFold(x, s) })
}

// siteHost picks the name to ask a site with: lyncdiscover's if
// published (autodiscover's home), else the first.
func siteHost(s *config.Site) string {
	for _, h := range s.Hosts {
		if strings.HasPrefix(strings.ToLower(h), "lyncdiscover.") {
			return h
		}
	}
	return s.Hosts[0]
}
