package diagnose

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/l7"
)

// ACME: the path an ACME order takes, for each ACME certificate of an
// https virtual: the CA's directory answers from the proxy host (trusting
// ca_root), each name resolves to the virtual's address through the
// resolver, and for http-01 port 80 of that address, as clients reach it,
// answers with edgeproxy's challenge handler.
var ACME = Check{
	Name: "acme",
	Doc:  "ACME certificates: CA directory reachable, names resolving to the VIP, port 80 reaching the http-01 challenge handler",
	Run:  checkACME,
}

// acmeProbePath is the challenge token a probe asks for: no order waits
// for it, so edgeproxy's handler answers 404 with l7.ACMEUnknownToken.
const acmeProbePath = "/.well-known/acme-challenge/edgeproxy-diagnose-probe"

func checkACME(ctx context.Context, e *Env) []Finding {
	var f findings
	dirs := map[string]bool{}
	for _, v := range e.Config.Virtuals {
		if v.Mode != config.ModeHTTPS {
			continue
		}
		for _, c := range v.Certificates {
			a := c.ACME
			if a == nil {
				continue
			}
			if k := a.CA + "|" + a.CARoot; !dirs[k] {
				dirs[k] = true
				f = append(f, e.acmeDirectory(ctx, a))
			}
			if e.Resolver != "" {
				for _, n := range a.Names {
					fd := e.resolveName(ctx, strings.ToLower(n), []netip.Addr{v.Listen.Addr().Unmap()})
					fd.Subject, fd.needs = "acme "+fd.Subject, []string{"dns " + strings.ToLower(n)}
					if fd.Verdict != Pass {
						fd.Evidence += "\nthe CA validates the name at the address it resolves to: the order fails"
					}
					f = append(f, fd)
				}
			}
			if a.Challenge != config.ChallengeTLSALPN01 && len(a.Names) > 0 {
				f = append(f, e.acmeHTTP01(ctx, v, a.Names[0]))
			}
		}
	}
	return f
}

// acmeDirectory fetches the CA's directory from the proxy host.
func (e *Env) acmeDirectory(ctx context.Context, a *config.ACMECert) Finding {
	subj := "acme CA " + a.CA
	fd := Finding{Subject: subj, Verdict: Fail}
	roots, rootsName := (*x509.CertPool)(nil), "the system's trusted roots"
	if a.CARoot != "" {
		pem, err := os.ReadFile(a.CARoot)
		if err != nil {
			fd.Evidence, fd.Fix = fmt.Sprintf("read ca_root: %v", err), "point acme.ca_root at the PEM root of the CA's own TLS certificate"
			return fd
		}
		roots, rootsName = x509.NewCertPool(), "ca_root "+a.CARoot
		roots.AppendCertsFromPEM(pem)
	}
	host := a.CA
	if u, err := url.Parse(a.CA); err == nil {
		host = u.Host
	}
	c := &http.Client{Timeout: e.timeout(), Transport: &http.Transport{
		DialContext: e.dial, TLSClientConfig: &tls.Config{RootCAs: roots}, Proxy: nil}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.CA, nil)
	if err != nil {
		fd.Evidence, fd.Fix = fmt.Sprintf("ca %q: %v", a.CA, err), "write the CA's https directory URL under acme.ca"
		return fd
	}
	resp, err := c.Do(req)
	if err != nil {
		var uerr x509.UnknownAuthorityError
		if errors.As(err, &uerr) {
			fd.Evidence = fmt.Sprintf("the CA's TLS certificate does not verify against %s: %v", rootsName, unwrapOp(err))
			fd.Fix = "set acme.ca_root to the PEM root that issued the CA's TLS certificate (a private CA: step-ca, Pebble)"
			return fd
		}
		fd.Evidence = fmt.Sprintf("GET %s from the proxy host: %v: no order or renewal can be placed (certificates in service expire)", a.CA, unwrapOp(err))
		fd.Fix = fmt.Sprintf("let the proxy host reach %s over HTTPS (egress firewall, proxy), check the CA is up, or correct acme.ca", host)
		return fd
	}
	defer resp.Body.Close()
	var dir struct {
		NewOrder string `json:"newOrder"`
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &dir) != nil || dir.NewOrder == "" {
		fd.Evidence = fmt.Sprintf("GET %s: %s, not an ACME directory (no newOrder)", a.CA, resp.Status)
		fd.Fix = "write the CA's ACME directory URL under acme.ca (Let's Encrypt: https://acme-v02.api.letsencrypt.org/directory)"
		return fd
	}
	fd.Verdict, fd.Evidence = Pass, fmt.Sprintf("%s answers an ACME directory (TLS verified against %s)", a.CA, rootsName)
	return fd
}

// acmeHTTP01 asks port 80 of the virtual's address, as clients reach it,
// for a challenge token of name no order waits for: edgeproxy's handler
// answers 404 with l7.ACMEUnknownToken; anything else is not it.
func (e *Env) acmeHTTP01(ctx context.Context, v *config.Virtual, name string) Finding {
	addr := netip.AddrPortFrom(v.Listen.Addr(), 80).String()
	from := "the proxy host"
	if e.ClientDial != nil {
		from = "the client side"
	}
	subj := "acme http-01 " + addr
	fd := Finding{Subject: subj, Verdict: Fail}
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return e.clientDial(ctx, network, addr)
	}
	c := &http.Client{Timeout: e.timeout(), Transport: &http.Transport{DialContext: dial, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+name+acmeProbePath, nil)
	resp, err := c.Do(req)
	if err != nil {
		fd.Evidence = fmt.Sprintf("GET http://%s%s from %s through %s: %v: the CA cannot validate http-01", name, acmeProbePath, from, addr, unwrapOp(err))
		fd.Fix = fmt.Sprintf("publish TCP port 80 of %s to the Internet (firewall, NAT in front) to edgeproxy's http virtual, or use challenge: tls-alpn-01", v.Listen.Addr())
		return fd
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusNotFound || string(body) != l7.ACMEUnknownToken {
		fd.Evidence = fmt.Sprintf("GET http://%s%s from %s: %s %q, not edgeproxy's challenge handler: something else answers port 80", name, acmeProbePath, from, resp.Status, firstLine(strings.TrimSpace(string(body))))
		fd.Fix = fmt.Sprintf("send TCP port 80 of %s to edgeproxy's http virtual (not another host or service), and keep %s under the ACME names", v.Listen.Addr(), name)
		return fd
	}
	fd.Verdict, fd.Evidence = Pass, fmt.Sprintf("port 80 of %s reaches edgeproxy's http-01 challenge handler from %s", v.Listen.Addr(), from)
	return fd
}
