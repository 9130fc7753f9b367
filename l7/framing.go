package l7

import (
	"bufio"
	"net"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// refusedMethods are never forwarded, whatever their case: TRACE and
// TRACK echo the request (cookies, Authorization) back, DEBUG starts
// ASP.NET remote debugging on IIS, CONNECT would make the proxy a tunnel.
var refusedMethods = []string{"CONNECT", "TRACE", "TRACK", "DEBUG"}

// skypeMethods are the methods a front end's External Web Site serves:
// GET and HEAD (Autodiscover, address book, meeting content, dial-in
// page), POST (web tickets, mobility, UCWA, conferencing), PUT and DELETE
// (UCWA resources), OPTIONS (CORS preflight of UCWA and Skype Web SDK
// clients). Not PATCH (UCWA updates with PUT), not WebDAV or RPC_IN_DATA
// (Exchange, not Lync).
var skypeMethods = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"}

// genericAllow is the Allow header of a refusal on a generic site.
const genericAllow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

// siteMethods returns the methods a site forwards; nil: any method but
// the refused ones.
func siteMethods(cs *Site) []string {
	if cs.Skype {
		return skypeMethods
	}
	return nil
}

// siteUpgrades returns the Upgrade tokens a site forwards, lower-case.
func siteUpgrades(cs *Site) []string {
	var out []string
	for _, u := range cs.Upgrade {
		out = append(out, strings.ToLower(u))
	}
	return out
}

// checkRequestLine answers what must not be forwarded whatever the
// site: a method that is not a token or a target with a space (400;
// HTTP/2's :method and :path can carry them, and the member would read
// a request line of more than three parts), the refused methods (405),
// and the asterisk form, which only OPTIONS may use and which the proxy
// answers itself, as net/http would, so that every request on a
// connection reaches the handler and pairs with the framing guard's
// count of request heads.
func (vh *vhost) checkRequestLine(x *exchange) cause {
	if !httpguts.ValidHeaderFieldName(x.r.Method) {
		return x.refuse(http.StatusBadRequest, causeMethod, false)
	}
	if strings.IndexByte(x.r.RequestURI, ' ') >= 0 {
		return x.refuse(http.StatusBadRequest, causeBadPath, false)
	}
	for _, m := range refusedMethods {
		if strings.EqualFold(x.r.Method, m) {
			x.rw.Header().Set("Allow", genericAllow)
			return x.refuse(http.StatusMethodNotAllowed, causeMethod, false)
		}
	}
	if x.r.RequestURI != "*" {
		return causeNone
	}
	if x.r.Method != http.MethodOptions {
		return x.refuse(http.StatusBadRequest, causeAsterisk, true)
	}
	x.rw.Header().Set("Allow", genericAllow)
	x.rw.Header().Set("Content-Length", "0")
	x.rw.WriteHeader(http.StatusOK)
	return causeAsterisk
}

// checkSiteMethod answers 405 for a method the site does not forward.
// Methods match case-insensitively and go upstream in upper case (IIS
// reads "get" as GET).
func checkSiteMethod(_ *vhost, x *exchange) cause {
	methods := x.s.methods
	if methods == nil {
		return causeNone
	}
	for _, m := range methods {
		if strings.EqualFold(x.r.Method, m) {
			x.r.Method = m
			return causeNone
		}
	}
	x.rw.Header().Set("Allow", strings.Join(methods, ", "))
	return x.refuse(http.StatusMethodNotAllowed, causeMethod, false)
}

// filterUpgrade removes an Upgrade the site does not allow, so that the
// member never switches protocols and the framing guard keeps following
// the connection. An allowed Upgrade is forwarded, and the guard stops
// only when the response is hijacked: net/http's reverse proxy does that
// only after the member answered 101 with the requested protocol.
func (s *site) filterUpgrade(r *http.Request, rw *respWriter, cs *connState) {
	vals := r.Header.Values("Upgrade")
	if len(vals) == 0 {
		return
	}
	if len(vals) == 1 && slices.Contains(s.upgrade, strings.ToLower(strings.TrimSpace(vals[0]))) {
		if cs != nil && cs.guard != nil {
			rw.onHijack = cs.guard.stop
		}
		return
	}
	r.Header.Del("Upgrade")
	var keep []string
	for _, v := range r.Header.Values("Connection") {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !strings.EqualFold(tok, "upgrade") {
				keep = append(keep, tok)
			}
		}
	}
	r.Header.Del("Connection")
	if len(keep) > 0 {
		r.Header.Set("Connection", strings.Join(keep, ", "))
	}
}

// Hijack hands the client connection over (a protocol switch the member
// accepted) and runs onHijack.
func (w *respWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := w.ctl.Hijack()
	if err == nil && w.onHijack != nil {
		w.onHijack()
	}
	return c, brw, err
}

// forwardingHeaders are the request headers IIS, ASP.NET and URL Rewrite
// read as forwarding or rewrite information, lower-case with "-" (IIS
// reads "_" as "-": X_Forwarded_For arrives as HTTP_X_FORWARDED_FOR).
// Every name starting with "x-forwarded-" counts too.
var forwardingHeaders = []string{
	"forwarded", "x-real-ip", "true-client-ip", "x-client-ip", "x-cluster-client-ip",
	"x-original-url", "x-rewrite-url", "x-original-host", "front-end-https",
	"x-http-method-override", "x-http-method", "x-method-override",
}

func isForwardingHeader(name string) bool {
	const prefix = "x-forwarded-"
	if len(name) >= len(prefix) && sameHeaderName(name[:len(prefix)], prefix) {
		return true
	}
	return slices.ContainsFunc(forwardingHeaders, func(f string) bool { return sameHeaderName(name, f) })
}

// sameHeaderName reports whether a header name is want (lower-case, with
// "-") as IIS reads it: ASCII letters in any case, "_" for "-". It
// compares in place: this runs on every header of every request.
func sameHeaderName(name, want string) bool {
	if len(name) != len(want) {
		return false
	}
	for i := range len(name) {
		c := name[i]
		switch {
		case c == '_':
			c = '-'
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		if c != want[i] {
			return false
		}
	}
	return true
}

// dropForwarding removes the forwarding and rewrite headers of a request
// to a member: all of them from an untrusted client, only the spellings
// with "_" from a trusted proxy (whose X-Forwarded-* and Forwarded the
// rewrite keeps).
func dropForwarding(h http.Header, trusted bool) {
	for k := range h {
		if isForwardingHeader(k) && (!trusted || strings.Contains(k, "_")) {
			delete(h, k)
		}
	}
}

// memberIdentity are the response headers that name the member's
// software, removed on skype sites.
var memberIdentity = []string{"Server", "X-Powered-By", "X-Aspnet-Version", "X-Aspnetmvc-Version"}

func hideMember(h http.Header) {
	for _, k := range memberIdentity {
		h.Del(k)
	}
}
