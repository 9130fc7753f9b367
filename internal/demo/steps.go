package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/certgen"
	"github.com/edgeproxy/edgeproxy/internal/fakefe"
)

// The demo's steps, in order.
const (
	StepReady       = "proxy ready"
	StepFastTLS     = "fastl4 443 -> 4443 in XDP"
	StepFastHTTP    = "fastl4 80 -> 8080 in XDP"
	StepSNI         = "L7 https with SNI"
	StepNoSNI       = "L7 https without SNI"
	StepHTTP        = "L7 http 80 -> 8080"
	StepNTLM        = "NTLM handshake through L7"
	StepNTLMOther   = "other connection without credentials"
	StepLongPoll    = "long poll through L7"
	StepDenied      = "management paths denied"
	StepInternal    = "why 4443: the internal site"
	StepDown        = "member failure"
	StepUp          = "member recovery"
	StepXDPCounters = "XDP counters"
)

// StepNames lists the steps in the order the report shows them.
func StepNames() []string {
	return []string{StepReady, StepFastTLS, StepFastHTTP, StepSNI, StepNoSNI, StepHTTP, StepNTLM,
		StepNTLMOther, StepLongPoll, StepDenied, StepInternal, StepDown, StepUp, StepXDPCounters}
}

// ErrStep marks a step's unexpected outcome.
var ErrStep = errors.New("unexpected")

func unexpected(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrStep, fmt.Sprintf(format, args...))
}

func (s *session) steps() []step {
	ia := s.lab.IntAddr4
	return []step{
		{StepReady, fmt.Sprintf("/healthz answers, both members up, %s added to ext0, XDP attached, the host forwards nothing itself (ip_forward 0)", FastVIP), s.stepReady},
		{StepFastTLS, fmt.Sprintf("HTTPS to %s:443 reaches a member's External Web Site on 4443, the member sees the SNAT address %s, TLS passes through (the member's own certificate)", FastVIP, ia), s.stepFastTLS},
		{StepFastHTTP, fmt.Sprintf("HTTP to %s:80 reaches a member on 8080, seen from %s", FastVIP, ia), s.stepFastHTTP},
		{StepSNI, "SNI webext.example.com: the public SAN certificate with its intermediate (a client trusting only the root verifies it); autodiscover answers external links", s.stepSNI},
		{StepNoSNI, "no SNI (Lync mobile): the default certificate, which covers every published name; the request is routed by Host", s.stepNoSNI},
		{StepHTTP, fmt.Sprintf("http://lyncdiscover.example.com via %s:80 reaches a member on 8080 (mobile autodiscover over HTTP)", s.lab.VIP4), s.stepHTTP},
		{StepNTLM, "negotiate, challenge and authenticate on one client connection: 200, and the connection stays authenticated (pinned to its own upstream connection)", s.stepNTLM},
		{StepNTLMOther, "while the first user is authenticated, a second connection without credentials gets 401 and is anonymous", s.stepNTLMOther},
		{StepLongPoll, "a request the member holds for 2s (a UCWA long poll) is answered through the proxy", s.stepLongPoll},
		{StepDenied, "/cscp, /OcsPowerShell, /RgsConfig and their case answer 403 at the proxy, their %2f and .. variants 400 (not in canonical form); the members' management hit counters stay 0", s.stepDenied},
		{StepInternal, "a member's 443 is its internal site, answering internal links; 4443 answers external ones: the proxy must use 4443", s.stepInternal},
		{StepDown, "fe01 stops: the monitor marks it down within seconds; new fastl4 connections and L7 requests all reach fe02", s.stepDown},
		{StepUp, "fe01 restarts: marked up again; traffic spreads over both members again", s.stepUp},
		{StepXDPCounters, "/metrics shows the XDP program forwarding packets", s.stepXDPCounters},
	}
}

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func (s *session) tlsFile(name string) string { return filepath.Join(s.dir, "tls", name) }

func (s *session) stepReady(ctx context.Context, r *Result) error {
	var states []string
	for _, n := range memberNames {
		m, err := s.waitMember(ctx, n, "up")
		if err != nil {
			return err
		}
		states = append(states, fmt.Sprintf("%s %s", shortName(n), m.State))
	}
	st, err := s.status(ctx)
	if err != nil {
		return err
	}
	out, err := s.lab.Proxy.Command(ctx, "ip", "-o", "-4", "addr", "show", "dev", "ext0").Output()
	if err != nil {
		return fmt.Errorf("list ext0 addresses: %w", err)
	}
	hasVIP := strings.Contains(string(out), " "+FastVIP.String()+"/")
	fwd, err := s.lab.Proxy.Command(ctx, "sysctl", "-n", "net.ipv4.ip_forward").Output()
	if err != nil {
		return fmt.Errorf("read net.ipv4.ip_forward: %w", err)
	}
	xdp := "none"
	if st.FastPath != nil && len(st.FastPath.Interfaces) > 0 {
		xdp = strings.Join(st.FastPath.Interfaces, ", ")
	}
	r.Got = fmt.Sprintf("/healthz 200; members %s; %s on ext0: %v; XDP on %s; net.ipv4.ip_forward=%s",
		strings.Join(states, ", "), FastVIP, hasVIP, xdp, strings.TrimSpace(string(fwd)))
	r.Try = "ip netns exec " + s.lab.Proxy.Name + " " + s.opts.Executable + " status"
	switch {
	case !hasVIP:
		return unexpected("%s missing from ext0", FastVIP)
	case xdp == "none":
		return unexpected("no XDP program attached")
	case strings.TrimSpace(string(fwd)) != "0":
		return unexpected("IP forwarding is on")
	}
	return nil
}

func (s *session) stepFastTLS(ctx context.Context, r *Result) error {
	h, err := s.get(ctx, s.lab.Client, ap(FastVIP, 443), "https://webext.example.com/", s.internalTLS("webext.example.com"), nil)
	if err != nil {
		return err
	}
	r.Got = h.where()
	if h.tls != nil {
		r.Got += "; " + certLine(h.tls.PeerCertificates) + ": the member's own, TLS passed through"
	}
	r.Try = fmt.Sprintf("ip netns exec %s curl -i --resolve webext.example.com:443:%s --cacert %s https://webext.example.com/",
		s.lab.Client.Name, FastVIP, s.tlsFile(certgen.InternalCAFile))
	return s.expectMember(h, strconv.Itoa(portExternalTLS))
}

// expectMember checks that a member's external site on port answered
// 200 and saw the proxy's internal address.
func (s *session) expectMember(h *hit, port string) error {
	switch {
	case h.status != http.StatusOK:
		return unexpected("status %d", h.status)
	case h.port != port || h.site != "external":
		return unexpected("answered on port %q (%s site), not the External Web Site's %s", h.port, h.site, port)
	case h.peerIP() != s.lab.IntAddr4.String():
		return unexpected("the member saw %s, not the proxy's internal address %s", h.peerIP(), s.lab.IntAddr4)
	}
	return nil
}

func (s *session) stepFastHTTP(ctx context.Context, r *Result) error {
	h, typed, err := s.curl(ctx, "--resolve", "webext.example.com:80:"+FastVIP.String(), "http://webext.example.com/")
	r.Try = typed
	if err != nil {
		return err
	}
	r.Got = h.where()
	return s.expectMember(h, strconv.Itoa(portExternalHTTP))
}

func (s *session) stepSNI(ctx context.Context, r *Result) error {
	vip := s.lab.VIP4
	h, typed, err := s.curl(ctx, "--resolve", "webext.example.com:443:"+vip.String(),
		"--cacert", s.tlsFile(certgen.PublicRootFile),
		"https://webext.example.com/Autodiscover/AutodiscoverService.svc/root")
	r.Try = typed
	if err != nil {
		return fmt.Errorf("%w (curl trusts only the public root: the proxy must send the intermediate)", err)
	}
	loc, hosts, lerr := linkHosts(h.body)
	r.Got = fmt.Sprintf("%s; autodiscover %s, links on %s", h.where(), loc, strings.Join(hosts, ", "))
	// The chain as served, seen by a Go client with the same trust.
	g, err := s.get(ctx, s.lab.Client, ap(vip, 443), "https://webext.example.com/", s.publicTLS("webext.example.com"), nil)
	if err != nil {
		return err
	}
	r.Got += "\n" + certLine(g.tls.PeerCertificates) + ", verified to " + s.certs.PublicRoot.Cert.Subject.CommonName
	switch {
	case lerr != nil:
		return lerr
	case h.status != http.StatusOK:
		return unexpected("status %d", h.status)
	case loc != "External" || !slices.Equal(hosts, []string{"webext.example.com"}):
		return unexpected("links are not the external web services name")
	case len(g.tls.PeerCertificates) < 2:
		return unexpected("no intermediate sent")
	case g.tls.PeerCertificates[0].VerifyHostname("webext.example.com") != nil:
		return unexpected("certificate does not cover webext.example.com")
	}
	return nil
}

func (s *session) stepNoSNI(ctx context.Context, r *Result) error {
	vip := s.lab.VIP4
	args := []string{"s_client", "-connect", ap(vip, 443).String(), "-noservername", "-showcerts",
		"-CAfile", s.tlsFile(certgen.PublicRootFile)}
	r.Try = "ip netns exec " + s.lab.Client.Name + " openssl " + strings.Join(args, " ") + " </dev/null"
	cmd := s.lab.Client.Command(ctx, "openssl", args...)
	cmd.Stdin = bytes.NewReader(nil)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("openssl s_client: %v: %s", err, lastLines(out, 3))
	}
	chain := pemCerts(out)
	if len(chain) == 0 {
		return unexpected("openssl saw no certificate: %s", lastLines(out, 3))
	}
	verify := "no verify result"
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Verify return code: "); ok {
			verify = "verify " + v
		}
	}
	var covered, missing []string
	for _, n := range certgen.SkypeNames {
		if chain[0].VerifyHostname(n) == nil {
			covered = append(covered, shortName(n))
		} else {
			missing = append(missing, n)
		}
	}
	r.Got = fmt.Sprintf("openssl: %s, %s; covers %s", certLine(chain), verify, strings.Join(covered, ", "))
	h, err := s.get(ctx, s.lab.Client, ap(vip, 443), "https://lyncdiscover.example.com/Autodiscover/AutodiscoverService.svc/root", s.noSNITLS("lyncdiscover.example.com"), nil)
	if err != nil {
		return err
	}
	loc, hosts, lerr := linkHosts(h.body)
	r.Got += fmt.Sprintf("\nGo client without SNI, Host lyncdiscover.example.com: %s; autodiscover %s, links on %s", h.where(), loc, strings.Join(hosts, ", "))
	switch {
	case len(missing) > 0:
		return unexpected("default certificate lacks %s", strings.Join(missing, ", "))
	case !strings.HasPrefix(verify, "verify 0 "):
		return unexpected("chain does not verify to the public root: %s", verify)
	case lerr != nil:
		return lerr
	case h.status != http.StatusOK:
		return unexpected("status %d", h.status)
	}
	return nil
}

func (s *session) stepHTTP(ctx context.Context, r *Result) error {
	h, err := s.get(ctx, s.lab.Client, ap(s.lab.VIP4, 80), "http://lyncdiscover.example.com/Autodiscover/AutodiscoverService.svc/root", nil, nil)
	if err != nil {
		return err
	}
	r.Got = h.where()
	if loc, hosts, err := linkHosts(h.body); err == nil {
		r.Got += fmt.Sprintf("; autodiscover %s, links on %s", loc, strings.Join(hosts, ", "))
	}
	r.Try = fmt.Sprintf("ip netns exec %s curl -i --resolve lyncdiscover.example.com:80:%s http://lyncdiscover.example.com/Autodiscover/AutodiscoverService.svc/root",
		s.lab.Client.Name, s.lab.VIP4)
	return s.expectMember(h, strconv.Itoa(portExternalHTTP))
}

// protectedPath requires Windows authentication on the members.
const protectedPath = "/WebTicket/WebTicketService.svc"

func (s *session) stepNTLM(ctx context.Context, r *Result) error {
	r.Try = fmt.Sprintf("ip netns exec %s curl -i --ntlm -u '%s:%s' --resolve webext.example.com:443:%s --cacert %s https://webext.example.com%s",
		s.lab.Client.Name, demoUser, demoPassword, s.lab.VIP4, s.tlsFile(certgen.PublicRootFile), protectedPath)
	a, err := s.dialRaw(ctx, ap(s.lab.VIP4, 443), "webext.example.com", s.publicTLS("webext.example.com"))
	if err != nil {
		return err
	}
	s.ntlmConn = a
	h1, err := a.do(ctx, protectedPath, nil)
	if err != nil {
		return err
	}
	cl := &fakefe.NTLMClient{User: demoUser, Password: demoPassword, Domain: demoDomain, Workstation: "LAPTOP1"}
	h2, err := a.do(ctx, protectedPath, http.Header{"Authorization": {cl.NegotiateHeader()}})
	if err != nil {
		return err
	}
	auth, err := cl.AuthenticateHeader(h2.header.Values("WWW-Authenticate"))
	if err != nil {
		r.Got = fmt.Sprintf("%d, then negotiate → %d without a challenge", h1.status, h2.status)
		return err
	}
	h3, err := a.do(ctx, protectedPath, http.Header{"Authorization": {auth}})
	if err != nil {
		return err
	}
	h4, err := a.do(ctx, "/whoami", nil)
	if err != nil {
		return err
	}
	conns := []string{h2.header.Get("X-Fake-Conn"), h3.header.Get("X-Fake-Conn"), h4.header.Get("X-Fake-Conn")}
	r.Got = fmt.Sprintf("%d offering %s → negotiate → %d challenge → authenticate → %d %q\nthen /whoami on the same connection: %q from %s; upstream connection #%s throughout",
		h1.status, strings.Join(h1.header.Values("WWW-Authenticate"), ", "), h2.status, h3.status,
		strings.TrimSpace(string(h3.body)), strings.TrimSpace(string(h4.body)), h4.member, strings.Join(slices.Compact(slices.Clone(conns)), ", #"))
	switch {
	case h1.status != http.StatusUnauthorized || h2.status != http.StatusUnauthorized:
		return unexpected("no NTLM challenge")
	case h3.status != http.StatusOK:
		return unexpected("authenticate answered %d", h3.status)
	case strings.TrimSpace(string(h4.body)) != demoUser:
		return unexpected("the connection did not stay authenticated")
	case len(slices.Compact(conns)) != 1 || h2.member != h3.member || h3.member != h4.member:
		return unexpected("the exchange was spread over several upstream connections")
	}
	return nil
}

func (s *session) stepNTLMOther(ctx context.Context, r *Result) error {
	a := s.ntlmConn
	if a == nil {
		return unexpected("the NTLM step did not leave an authenticated connection")
	}
	defer func() {
		a.close()
		s.ntlmConn = nil
	}()
	b, err := s.dialRaw(ctx, ap(s.lab.VIP4, 443), "webext.example.com", s.publicTLS("webext.example.com"))
	if err != nil {
		return err
	}
	defer b.close()
	hb1, err := b.do(ctx, protectedPath, nil)
	if err != nil {
		return err
	}
	hb2, err := b.do(ctx, "/whoami", nil)
	if err != nil {
		return err
	}
	ha, err := a.do(ctx, "/whoami", nil)
	if err != nil {
		return err
	}
	who := strings.TrimSpace(string(hb2.body))
	r.Got = fmt.Sprintf("second connection: %s %d, /whoami %q; first connection still %q",
		protectedPath, hb1.status, who, strings.TrimSpace(string(ha.body)))
	switch {
	case hb1.status != http.StatusUnauthorized:
		return unexpected("the second connection got %d without credentials", hb1.status)
	case who != "anonymous":
		return unexpected("the second connection is authenticated as %q: it was handed the first user's upstream connection", who)
	case strings.TrimSpace(string(ha.body)) != demoUser:
		return unexpected("the first connection lost its authentication")
	}
	return nil
}

func (s *session) stepLongPoll(ctx context.Context, r *Result) error {
	t0 := time.Now()
	h, err := s.get(ctx, s.lab.Client, ap(s.lab.VIP4, 443), "https://webext.example.com/longpoll?wait=2s", s.publicTLS("webext.example.com"), nil)
	if err != nil {
		return err
	}
	r.Got = fmt.Sprintf("%s after %s: %s", h.where(), time.Since(t0).Round(100*time.Millisecond), strings.TrimSpace(string(h.body)))
	if h.status != http.StatusOK || !strings.Contains(string(h.body), `"2s"`) {
		return unexpected("the long poll was not answered by the member")
	}
	return nil
}

// deniedProbes are the management paths tried from outside and the
// proxy's answer: 403 denied, 400 not in canonical form.
var deniedProbes = []struct {
	https bool
	uri   string
	want  int
}{
	{true, "/cscp", http.StatusForbidden},
	{true, "/CSCP/default.aspx", http.StatusForbidden},
	{true, "/%2fcscp", http.StatusBadRequest},
	{true, "/%2Fcscp/", http.StatusBadRequest},
	{true, "/abc/..%2fCscp", http.StatusBadRequest},
	{true, "/OcsPowerShell", http.StatusForbidden},
	{true, "/RgsConfig/", http.StatusForbidden},
	{false, "/cscp", http.StatusForbidden},
}

func (s *session) managementHits() (total int64, per []string) {
	for _, m := range s.members {
		n := m.fe.ManagementHits()
		total += n
		per = append(per, fmt.Sprintf("%s %d", m.short, n))
	}
	return total, per
}

func (s *session) stepDenied(ctx context.Context, r *Result) error {
	var seen []string
	var bad []string
	for _, p := range deniedProbes {
		target, tc := ap(s.lab.VIP4, 443), s.publicTLS("webext.example.com")
		if !p.https {
			target, tc = ap(s.lab.VIP4, 80), nil
		}
		c, err := s.dialRaw(ctx, target, "webext.example.com", tc)
		if err != nil {
			return err
		}
		h, err := c.do(ctx, p.uri, http.Header{"Connection": {"close"}})
		c.close()
		if err != nil {
			return err
		}
		label := p.uri
		if !p.https {
			label = "port 80 " + p.uri
		}
		seen = append(seen, fmt.Sprintf("%s %d", label, h.status))
		if h.status != p.want || h.member != "" {
			bad = append(bad, fmt.Sprintf("%s answered %d by %q", label, h.status, h.member))
		}
	}
	total, per := s.managementHits()
	r.Got = strings.Join(seen, ", ") + "\nmanagement hits on the members: " + strings.Join(per, ", ")
	r.Try = fmt.Sprintf("ip netns exec %s curl -i --path-as-is --resolve webext.example.com:443:%s --cacert %s 'https://webext.example.com/%%2fcscp'",
		s.lab.Client.Name, s.lab.VIP4, s.tlsFile(certgen.PublicRootFile))
	switch {
	case len(bad) > 0:
		return unexpected("%s", strings.Join(bad, "; "))
	case total != 0:
		return unexpected("a management path reached a member")
	}
	return nil
}

func (s *session) stepInternal(ctx context.Context, r *Result) error {
	m := s.members[0]
	path := "/Autodiscover/AutodiscoverService.svc/root"
	var parts []string
	results := map[int]string{}
	for _, port := range []uint16{portInternalTLS, portExternalTLS} {
		h, err := s.get(ctx, s.lab.Proxy, ap(m.addr, port), "https://webext.example.com"+path, s.internalTLS("webext.example.com"), nil)
		if err != nil {
			return err
		}
		loc, hosts, err := linkHosts(h.body)
		if err != nil {
			return fmt.Errorf("%s :%d: %w", m.short, port, err)
		}
		results[int(port)] = loc + " " + strings.Join(hosts, ",")
		parts = append(parts, fmt.Sprintf("%s :%d (%s site): %s, links on %s", m.short, port, h.site, loc, strings.Join(hosts, ", ")))
	}
	r.Got = strings.Join(parts, "\n")
	r.Try = fmt.Sprintf("ip netns exec %s curl -s --resolve webext.example.com:443:%s --cacert %s https://webext.example.com%s",
		s.lab.Proxy.Name, m.addr, s.tlsFile(certgen.InternalCAFile), path)
	switch {
	case results[portInternalTLS] != "Internal "+m.name:
		return unexpected("the internal site did not answer internal links")
	case results[portExternalTLS] != "External webext.example.com":
		return unexpected("the External Web Site did not answer external links")
	}
	return nil
}

// spread sends up to n requests, each on a new connection, through the
// fastl4 virtual (l4) or the https virtual, and counts the members that
// answered. With untilAll it stops once every member has answered.
func (s *session) spread(ctx context.Context, l4 bool, n int, untilAll bool) (map[string]int, int, error) {
	target, tc := ap(s.lab.VIP4, 443), s.publicTLS("webext.example.com")
	if l4 {
		target, tc = ap(FastVIP, 443), s.internalTLS("webext.example.com")
	}
	counts := map[string]int{}
	for i := range n {
		h, err := s.get(ctx, s.lab.Client, target, "https://webext.example.com/", tc, nil)
		if err != nil {
			return counts, i, err
		}
		if h.status != http.StatusOK {
			return counts, i + 1, unexpected("status %d from %q", h.status, h.member)
		}
		counts[h.member]++
		if untilAll && len(counts) == len(s.members) {
			return counts, i + 1, nil
		}
	}
	return counts, n, nil
}

func countLine(counts map[string]int, sent int) string {
	var names []string
	for n := range counts {
		names = append(names, n)
	}
	slices.Sort(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, counts[n]))
	}
	return fmt.Sprintf("%s of %d", strings.Join(parts, ", "), sent)
}

// dataPlaneSettle is the time given to the data planes to apply a
// member's change after /status shows it.
const dataPlaneSettle = 500 * time.Millisecond

func (s *session) stepDown(ctx context.Context, r *Result) error {
	m, other := s.members[0], s.members[1]
	t0 := time.Now()
	m.stop()
	st, err := s.waitMember(ctx, m.name, "down")
	if err != nil {
		return err
	}
	took := time.Since(t0).Round(100 * time.Millisecond)
	// /status shows the monitor's verdict as soon as it is taken; the
	// XDP tables and the L7 balancer receive it right after.
	select {
	case <-time.After(dataPlaneSettle):
	case <-ctx.Done():
		return ctx.Err()
	}
	reason := st.LastError
	if reason == "" {
		reason = st.Reason
	}
	r.Got = fmt.Sprintf("%s marked down after %s (%s)", m.short, took, reason)
	const n = 8
	l4, sent4, err := s.spread(ctx, true, n, false)
	if err != nil {
		return err
	}
	l7, sent7, err := s.spread(ctx, false, n, false)
	if err != nil {
		return err
	}
	r.Got += fmt.Sprintf("\nfastl4: %s new connections; L7: %s requests", countLine(l4, sent4), countLine(l7, sent7))
	if l4[other.short] != n || l7[other.short] != n {
		return unexpected("traffic still reached %s", m.short)
	}
	return nil
}

func (s *session) stepUp(ctx context.Context, r *Result) error {
	m := s.members[0]
	t0 := time.Now()
	if err := m.start(); err != nil {
		return err
	}
	if _, err := s.waitMember(ctx, m.name, "up"); err != nil {
		return err
	}
	took := time.Since(t0).Round(100 * time.Millisecond)
	r.Got = fmt.Sprintf("%s marked up after %s", m.short, took)
	l4, sent4, err := s.spread(ctx, true, 32, true)
	if err != nil {
		return err
	}
	l7, sent7, err := s.spread(ctx, false, 8, true)
	if err != nil {
		return err
	}
	r.Got += fmt.Sprintf("\nfastl4: %s new connections; L7: %s requests", countLine(l4, sent4), countLine(l7, sent7))
	if len(l4) != len(s.members) || len(l7) != len(s.members) {
		return unexpected("traffic did not reach both members")
	}
	return nil
}

func (s *session) stepXDPCounters(ctx context.Context, r *Result) error {
	text, err := s.adminGet(ctx, "/metrics")
	if err != nil {
		return err
	}
	samples := parseMetrics(text)
	fwd, lines := forwarded(samples)
	r.Try = "ip netns exec " + s.lab.Proxy.Name + " curl -s http://" + adminAddr + "/metrics | grep ^edgeproxy_xdp"
	if len(lines) == 0 {
		r.Got = "no XDP packet counters in /metrics"
		return unexpected("the fast path exports no forwarding counters")
	}
	r.Got = strings.Join(lines, "\n")
	if st, err := s.status(ctx); err == nil && st.FastPath != nil {
		r.Got += fmt.Sprintf("\nflows in the table now: %d of %d", st.FastPath.Flows, st.FastPath.MaxFlows)
	}
	if fwd == 0 {
		return unexpected("no packet forwarded in XDP")
	}
	return nil
}

// shortName is the first label of a host name: fe01 of fe01.corp.example.com.
func shortName(n string) string {
	s, _, _ := strings.Cut(n, ".")
	return s
}

// lastLines returns the last n lines of out, on one line.
func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
