package f5

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
)

// profileOut is a resolved profile.
type profileOut struct {
	path  string
	typ   string  // fastl4, client-ssl, server-ssl, http, tcp, udp, one-connect, ...
	obj   *object // nil for a built-in profile not in the input
	chain []*object

	fl4 config.FastL4 // fastl4

	// client-ssl / server-ssl
	certs      []certKey
	serverName string
	sniDefault bool
	options    []string
	ciphers    string
	caFile     string
	peerCert   string
}

type certKey struct{ cert, key, chain string }

// builtinProfileType maps the names of BIG-IP's built-in profiles in
// /Common to their types.
func builtinProfileType(name string) string {
	switch {
	case name == "fastL4" || name == "fastl4" || strings.HasPrefix(name, "fastL4-") || name == "apm-forwarding-fastL4" || name == "full-acceleration" || name == "security-fastL4":
		return "fastl4"
	case strings.HasPrefix(name, "clientssl") || name == "wom-default-clientssl" || name == "splitsession-default-clientssl":
		return "client-ssl"
	case strings.HasPrefix(name, "serverssl") || name == "wom-default-serverssl" || name == "apm-default-serverssl" || name == "crypto-server-default-serverssl" || name == "pcoip-default-serverssl":
		return "server-ssl"
	case name == "tcp" || strings.HasPrefix(name, "tcp-") || strings.HasPrefix(name, "f5-tcp-") || name == "mptcp-mobile-optimized" || name == "wom-tcp-lan-optimized" || name == "wom-tcp-wan-optimized" || name == "apm-forwarding-client-tcp" || name == "apm-forwarding-server-tcp":
		return "tcp"
	case name == "udp" || strings.HasPrefix(name, "udp_") || strings.HasPrefix(name, "udp-"):
		return "udp"
	case name == "http" || name == "http-explicit" || name == "http-transparent" || strings.HasPrefix(name, "http-") && !strings.HasPrefix(name, "http-compression"):
		return "http"
	case name == "oneconnect":
		return "one-connect"
	case name == "fasthttp":
		return "fasthttp"
	case name == "http2":
		return "http2"
	case name == "websecurity":
		return "web-security"
	case strings.Contains(name, "compression"):
		return "http-compression"
	case strings.Contains(name, "acceleration") || strings.HasPrefix(name, "webacceleration") || strings.HasPrefix(name, "optimized-caching"):
		return "web-acceleration"
	case name == "stream":
		return "stream"
	}
	return ""
}

// profile resolves a profile reference, once.
func (t *tr) profile(ref string) *profileOut {
	if p, ok := t.profiles[ref]; ok {
		return p
	}
	p := &profileOut{path: ref}
	t.profiles[ref] = p
	o := t.ix.getPrefix("ltm profile ", ref)
	if o == nil {
		o = t.ix.getPrefix("apm profile ", ref)
	}
	if o != nil {
		p.obj = o
		p.typ = strings.TrimPrefix(strings.TrimPrefix(o.kind, "ltm profile "), "apm profile ")
		if strings.HasPrefix(o.kind, "apm ") {
			p.typ = "APM " + p.typ
		}
		p.chain = t.chain(o, "ltm profile "+p.typ)
	} else if folderOf(ref) == "/Common" {
		p.typ = builtinProfileType(baseName(ref))
	}
	switch p.typ {
	case "fastl4":
		t.resolveFastL4(p)
	case "client-ssl", "server-ssl":
		t.resolveSSL(p)
	}
	return p
}

// chain returns the ancestors of o through defaults-from, root first,
// ending with o. Ancestors missing from the input end the chain (built-in
// profiles and monitors whose defaults are known).
func (t *tr) chain(o *object, kind string) []*object {
	out := []*object{o}
	seen := map[*object]bool{o: true}
	cur := o
	for {
		df, ok := cur.st.Attr("defaults-from")
		if !ok || df == "none" {
			break
		}
		ref := fullPath(cur.folder(), df)
		parent := t.ix.get(kind, ref)
		if parent == nil && !isBuiltin(kind, ref) {
			t.rep.add(Changed, cur.st.Get("defaults-from"), cur.label(), "defaults-from %s is not in the input: the BIG-IP defaults are assumed for what it would set", ref)
		}
		if parent == nil || seen[parent] {
			break
		}
		seen[parent] = true
		out = append([]*object{parent}, out...)
		cur = parent
	}
	return out
}

// isBuiltin tells whether ref names a profile or monitor the BIG-IP ships.
func isBuiltin(kind, ref string) bool {
	if folderOf(ref) != "/Common" {
		return false
	}
	name := baseName(ref)
	if strings.HasPrefix(kind, "ltm monitor ") {
		_, ok := builtinMonitor(name)
		return ok || name == strings.TrimPrefix(kind, "ltm monitor ")
	}
	if strings.HasPrefix(kind, "ltm profile ") {
		typ := strings.TrimPrefix(kind, "ltm profile ")
		return builtinProfileType(name) == typ || name == typ
	}
	return true
}

// fastl4Defaults are ltm profile fastl4 values edgeproxy needs no
// equivalent for (BIG-IP defaults, or settings of the packet path that
// the XDP data path does as a matter of course).
var fastl4Defaults = map[string]string{
	"client-timeout": "30", "explicit-flow-migration": "disabled",
	"ip-df-mode": "pmtu", "ip-tos-to-client": "pass-through", "ip-tos-to-server": "pass-through",
	"ip-ttl-mode": "decrement", "ip-ttl-v4": "255", "ip-ttl-v6": "64",
	"keep-alive-interval": "disabled", "late-binding": "disabled",
	"link-qos-to-client": "pass-through", "link-qos-to-server": "pass-through",
	"priority-to-client": "pass-through", "priority-to-server": "pass-through",
	"reassemble-fragments": "disabled", "receive-window-size": "0",
	"rtt-from-client": "disabled", "rtt-from-server": "disabled",
	"server-sack": "disabled", "server-timestamp": "disabled",
	"software-syn-cookie": "disabled", "syn-cookie-enable": "enabled", "syn-cookie-mss": "0",
	"syn-cookie-whitelist": "disabled", "syn-cookie-allowlist": "disabled",
	"tcp-generate-isn": "disabled", "tcp-strip-sack": "disabled",
	"tcp-time-wait-timeout": "0", "tcp-timestamp-mode": "preserve",
	"tcp-wscale-mode": "preserve", "timeout-recovery": "disconnect",
	"idle-timeout": "300", "tcp-handshake-timeout": "5", "tcp-close-timeout": "5",
	"reset-on-timeout": "enabled", "loose-initialization": "disabled",
	"loose-close": "disabled", "mss-override": "0",
}

func defaultFastL4() config.FastL4 {
	on := true
	return config.FastL4{
		IdleTimeout:      secs(300),
		HandshakeTimeout: secs(5),
		CloseTimeout:     secs(5),
		ResetOnTimeout:   &on,
	}
}

// resolveFastL4 applies the chain of a fastl4 profile over F5's defaults.
func (t *tr) resolveFastL4(p *profileOut) {
	p.fl4 = defaultFastL4()
	for _, o := range p.chain {
		st := o.st
		handled := map[string]bool{}
		for _, c := range st.Block {
			k, v := c.Key(), c.Value()
			switch k {
			case "idle-timeout":
				handled[k] = true
				if d, ok := t.timeout(o, c, v, 86400); ok {
					p.fl4.IdleTimeout = d
				}
			case "tcp-handshake-timeout":
				handled[k] = true
				if d, ok := t.timeout(o, c, v, 86400); ok {
					p.fl4.HandshakeTimeout = d
				}
			case "tcp-close-timeout":
				handled[k] = true
				if d, ok := t.timeout(o, c, v, 86400); ok {
					p.fl4.CloseTimeout = d
				}
			case "reset-on-timeout":
				handled[k] = true
				b := v == "enabled"
				p.fl4.ResetOnTimeout = &b
			case "loose-initialization":
				handled[k] = true
				p.fl4.LooseInit = v == "enabled"
			case "loose-close":
				handled[k] = true
				p.fl4.LooseClose = v == "enabled"
			case "mss-override":
				handled[k] = true
				n, err := strconv.ParseUint(v, 10, 16)
				if err != nil {
					t.rep.add(Unsupported, c, o.label(), "mss-override %q is not a number, ignored", v)
					continue
				}
				p.fl4.MSSOverride = uint16(n)
			}
		}
		o.used = true
		t.leftovers(o, st, handled, fastl4Defaults, "pva-", "hardware-", "tcp-pva-", "other-pva-")
	}
}

// timeout reads integer | immediate | indefinite seconds.
func (t *tr) timeout(o *object, c *Stmt, v string, max int) (config.Duration, bool) {
	switch v {
	case "indefinite":
		t.rep.add(Changed, c, o.label(), "%s indefinite: edgeproxy needs a limit; %ds used", c.Key(), max)
		return secs(max), true
	case "immediate":
		t.rep.add(Changed, c, o.label(), "%s immediate: 1s used", c.Key())
		return secs(1), true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.rep.add(Unsupported, c, o.label(), "%s %q is not a number of seconds, default kept", c.Key(), v)
		return 0, false
	}
	if n == 0 {
		t.rep.add(Changed, c, o.label(), "%s 0 (no timeout): %ds used", c.Key(), max)
		return secs(max), true
	}
	return secs(n), true
}

// sslHandled are the client-ssl / server-ssl attributes the translation
// reads or that need no equivalent.
var sslHandled = map[string]bool{
	"cert-key-chain": true, "cert": true, "key": true, "chain": true,
	"server-name": true, "sni-default": true, "options": true, "ciphers": true,
	"ca-file": true, "peer-cert-mode": true, "inherit-certkeychain": true,
	"inherit-ca-certkeychain": true, "passphrase": true, "mode": true,
	"cache-size": true, "cache-timeout": true, "renegotiation": true,
	"renegotiate-period": true, "renegotiate-size": true, "renegotiate-max-record-delay": true,
	"secure-renegotiation": true, "handshake-timeout": true, "alert-timeout": true,
	"strict-resume": true, "session-ticket": true, "unclean-shutdown": true,
	"sni-require": true, "allow-non-ssl": true, "generic-alert": true,
	"max-renegotiations-per-minute": true, "max-active-handshakes": true,
	"max-aggressive-mode-renegotiation": true, "session-mirroring": true,
	"session-ticket-timeout": true, "sni-default-cert": true, "authenticate": true,
	"authenticate-depth": true, "crl-file": true, "client-cert-ca": true,
	"retain-certificate": true, "proxy-ssl": true, "proxy-ssl-passthrough": true,
	"c3d-drop-unknown-ext": true, "bypass-on-handshake-alert": true, "bypass-on-client-cert-fail": true,
	"cipher-group": true, "expire-cert-response-control": true, "untrusted-cert-response-control": true,
	"ssl-forward-proxy": true, "ssl-forward-proxy-bypass": true, "ssl-sign-hash": true,
	"destination-ip-blacklist": true, "destination-ip-whitelist": true, "hostname-blacklist": true,
	"hostname-whitelist": true, "source-ip-blacklist": true, "source-ip-whitelist": true,
	"notify-cert-status-to-virtual-server": true, "ocsp-stapling": true, "proxy-ca-cert": true,
	"proxy-ca-key": true, "proxy-ca-passphrase": true, "cert-extension-includes": true,
	"cert-lifespan": true, "cert-lookup-by-ipaddr-port": true, "allow-expired-crl": true,
	"allow-dynamic-record-sizing": true, "max-aggressive-mode": true, "data-0rtt": true,
	"max-early-data": true, "log-publisher": true, "ssl-c3d": true, "ssl-sign-hash-any": true,
	"sni-require-fqdn": true, "ssl-forward-proxy-verified-handshake": true,
	"tmos-version": true, "cert-key-chain-inherit": true,
}

// resolveSSL reads certificates, server name and TLS options through the
// defaults-from chain (the leaf wins).
func (t *tr) resolveSSL(p *profileOut) {
	if p.obj == nil {
		if p.typ == "client-ssl" {
			p.certs = []certKey{{cert: "/Common/default.crt", key: "/Common/default.key"}}
		}
		p.ciphers = "DEFAULT"
		return
	}
	if p.typ == "client-ssl" {
		p.certs = []certKey{{cert: "/Common/default.crt", key: "/Common/default.key"}}
	}
	p.ciphers = "DEFAULT"
	for _, o := range p.chain {
		st := o.st
		o.used = true
		if ckc := st.Get("cert-key-chain"); ckc != nil && ckc.HasBlock && len(ckc.Block) > 0 {
			p.certs = nil
			for _, e := range ckc.Block {
				var ck certKey
				ck.cert, _ = e.Attr("cert")
				ck.key, _ = e.Attr("key")
				ck.chain, _ = e.Attr("chain")
				if ck.cert != "" && ck.cert != "none" {
					ck.cert = fullPath(o.folder(), ck.cert)
					ck.key = fullPath(o.folder(), ck.key)
					if ck.chain != "" && ck.chain != "none" {
						ck.chain = fullPath(o.folder(), ck.chain)
					} else {
						ck.chain = ""
					}
					p.certs = append(p.certs, ck)
				}
			}
		} else if c, ok := st.Attr("cert"); ok && c != "none" {
			ck := certKey{cert: fullPath(o.folder(), c)}
			if k, ok := st.Attr("key"); ok && k != "none" {
				ck.key = fullPath(o.folder(), k)
			}
			if ch, ok := st.Attr("chain"); ok && ch != "none" {
				ck.chain = fullPath(o.folder(), ch)
			}
			p.certs = []certKey{ck}
		}
		if s, ok := st.Attr("server-name"); ok {
			p.serverName = s
			if s == "none" {
				p.serverName = ""
			}
		}
		if s, ok := st.Attr("sni-default"); ok {
			p.sniDefault = s == "true"
		}
		if st.Has("options") {
			p.options = nil
			for _, it := range st.Items("options") {
				p.options = append(p.options, it.Key())
			}
			if c := st.Get("options"); c != nil && !c.HasBlock {
				p.options = append(p.options, c.Words[1:]...)
			}
		}
		if s, ok := st.Attr("ciphers"); ok {
			p.ciphers = s
		}
		if s, ok := st.Attr("ca-file"); ok {
			p.caFile = s
			if s != "none" {
				p.caFile = fullPath(o.folder(), s)
			} else {
				p.caFile = ""
			}
		}
		if s, ok := st.Attr("peer-cert-mode"); ok {
			p.peerCert = s
		}
		t.leftovers(o, st, sslHandled, nil)
	}
}

// pemName turns a BIG-IP certificate object name into a file name in the
// certificate directory: /Common/public.crt → <dir>/public.pem.
func (t *tr) pemName(obj, ext string) string {
	b := baseName(obj)
	for _, e := range []string{".crt", ".cer", ".pem", ".key"} {
		b = strings.TrimSuffix(b, e)
	}
	if f := folderOf(obj); f != "/Common" {
		b = strings.ReplaceAll(strings.TrimPrefix(f, "/"), "/", "_") + "_" + b
	}
	return path.Join(t.opt.CertDir, b+ext)
}

// certFile marks a sys file ssl-cert/ssl-key object as used and returns
// it, nil when it is not in the input.
func (t *tr) certFile(kind, ref string) *Stmt {
	if o := t.ix.get(kind, ref); o != nil {
		o.used = true
		return o.st
	}
	return nil
}

// certificates lists the certificates of an https virtual, the SNI
// default first, and its TLS options.
func (t *tr) certificates(v *vsInfo) ([]config.Certificate, config.TLSOptions) {
	var out []config.Certificate
	var tlsOpt config.TLSOptions
	lbl := v.o.label()
	profiles := append([]*profileOut(nil), v.clientSS...)
	// SNI default first.
	for i, p := range profiles {
		if p.sniDefault && i > 0 {
			profiles[0], profiles[i] = profiles[i], profiles[0]
			break
		}
	}
	legacy, only13 := false, true
	for _, p := range profiles {
		for _, ck := range p.certs {
			if baseName(ck.cert) == "default.crt" {
				t.rep.add(Supply, v.o.st, lbl, "client-ssl profile %s uses the BIG-IP's self-signed default.crt: supply the real certificate as %s", p.path, t.pemName(ck.cert, ".pem"))
			}
			c := config.Certificate{Cert: t.pemName(ck.cert, ".pem"), Key: t.pemName(ck.key, ".key")}
			out = append(out, c)
			t.addFile(c.Cert)
			t.addFile(c.Key)
			what := "certificate " + ck.cert
			if s := t.certFile("sys file ssl-cert", ck.cert); s != nil {
				what += fmt.Sprintf(" (%s)", pos(s))
			}
			if ck.chain != "" {
				what += " with chain " + ck.chain
				t.certFile("sys file ssl-cert", ck.chain)
			}
			t.certFile("sys file ssl-key", ck.key)
			t.rep.add(Supply, v.o.st, lbl, "%s: export it as PEM (leaf then chain) to %s and key %s to %s", what, c.Cert, ck.key, c.Key)
		}
		if !hasWord(p.options, "no-tlsv1") || !hasWord(p.options, "no-tlsv1.1") {
			legacy = true
		}
		if !hasWord(p.options, "no-tlsv1.2") {
			only13 = false
		}
		if p.ciphers != "" && p.ciphers != "DEFAULT" && p.ciphers != "none" {
			t.rep.add(Changed, v.o.st, lbl, "client-ssl %s ciphers %q not carried over: edgeproxy offers Go's TLS 1.2+ cipher suites", p.path, p.ciphers)
		}
		if p.peerCert == "require" || p.peerCert == "request" {
			t.rep.add(Unsupported, v.o.st, lbl, "client-ssl %s peer-cert-mode %s: client certificates are not supported", p.path, p.peerCert)
		}
	}
	if legacy {
		t.rep.add(Changed, v.o.st, lbl, "the client-ssl profile allowed TLS 1.0/1.1: edgeproxy accepts TLS 1.2 and later (tls.min_version with allow_legacy re-enables them)")
	}
	if only13 {
		tlsOpt.MinVersion = "1.3"
	}
	return out, tlsOpt
}

// backendTLS re-encrypts to the members when the virtual has a server-ssl
// profile.
func (t *tr) backendTLS(v *vsInfo) *config.BackendTLS {
	p := v.serverSS
	b := &config.BackendTLS{}
	lbl := v.o.label()
	if p.caFile != "" && p.caFile != "/Common/ca-bundle.crt" {
		b.CA = t.pemName(p.caFile, ".pem")
		t.addFile(b.CA)
		t.certFile("sys file ssl-cert", p.caFile)
		t.rep.add(Supply, v.o.st, lbl, "server-ssl %s ca-file %s: export it as PEM to %s", p.path, p.caFile, b.CA)
	} else {
		b.CA = path.Join(t.opt.CertDir, "internal-ca.pem")
		t.addFile(b.CA)
		t.rep.add(Supply, v.o.st, lbl, "server-ssl %s does not verify the members (BIG-IP default); edgeproxy does: put the CA that signed the members' certificates in %s", p.path, b.CA)
	}
	if len(p.certs) > 0 {
		t.rep.add(Unsupported, v.o.st, lbl, "server-ssl %s presents a client certificate to the members: not supported", p.path)
	}
	return b
}

// httpDefaults are ltm profile http values that need no equivalent.
var httpDefaults = map[string]string{
	"proxy-type": "reverse", "insert-xforwarded-for": "enabled",
	"accept-xff": "disabled", "basic-auth-realm": "none", "encrypt-cookies": "none",
	"fallback-host": "none", "fallback-status-codes": "none", "header-erase": "none",
	"header-insert": "none", "lws-separator": "none", "lws-width": "80",
	"oneconnect-transformations": "enabled", "redirect-rewrite": "none",
	"request-chunking": "preserve", "response-chunking": "selective",
	"server-agent-name": "BigIP", "via-request": "preserve", "via-response": "preserve",
	"xff-alternative-names": "none", "oneconnect-status-reuse": "200 206",
	"request-chunking-mode": "preserve", "response-chunking-mode": "selective",
	"enforcement": "", "sflow": "", "hsts": "", "known-methods": "",
	"explicit-proxy": "", "proxy-connect-enabled": "false", "allow-ws-header-name": "disabled",
}

// httpSettings reports the http profile settings that have no
// equivalent, once per profile.
func (t *tr) httpSettings(p *profileOut) {
	for _, o := range p.chain {
		if o.used {
			continue
		}
		o.used = true
		t.leftovers(o, o.st, nil, httpDefaults)
	}
}

func hasWord(list []string, w string) bool {
	for _, x := range list {
		if x == w {
			return true
		}
	}
	return false
}
