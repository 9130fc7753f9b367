package config

import (
	"slices"
	"strings"
	"time"
)

func (v *validator) l7(vs *Virtual, base string) {
	for _, k := range []string{"pool", "port", "snat", "protocol", "idle_timeout", "handshake_timeout", "close_timeout", "reset_on_timeout", "loose_init", "loose_close", "mss_override", "log", "mirror"} {
		if v.c.Pos.Has(base + "." + k) {
			hint := ""
			if k == "pool" || k == "port" {
				hint = "; put pool and port under sites"
			}
			v.errorf(base+"."+k, "%s applies only to fastl4 virtuals, not mode %s%s", k, vs.Mode, hint)
		}
	}
	if vs.Mode == ModeHTTPS {
		if len(vs.Certificates) == 0 {
			v.errorf(base, "https virtual %s needs certificates: [{cert: <leaf and chain PEM>, key: <key PEM>}]", vs.Name)
		}
		v.tlsOptions(vs, base+".tls")
	} else {
		if v.c.Pos.Has(base + ".certificates") {
			v.errorf(base+".certificates", "an http virtual serves no TLS: use mode https to terminate TLS with these certificates")
		}
		if v.c.Pos.Has(base + ".tls") {
			v.errorf(base+".tls", "an http virtual serves no TLS: use mode https")
		}
	}
	for i, p := range vs.TrustedProxies {
		if p.IsValid() && p.Masked() != p {
			v.errorf(joinIndex(base+".trusted_proxies", i), "%s has host bits set: did you mean %s?", p, p.Masked())
		}
	}
	if vs.DrainTimeout.D() > 10*time.Minute {
		v.errorf(base+".drain_timeout", "drain_timeout %s is out of range: at most 10m", vs.DrainTimeout)
	}
	v.connLimits(vs, base+".limits")

	if len(vs.Sites) == 0 {
		v.errorf(base, "%s virtual %s needs sites: [{hosts: [...], pool: <pool>, port: <member port>}]", vs.Mode, vs.Name)
	}
	hostSite := map[string]int{}
	for i, s := range vs.Sites {
		path := joinIndex(base+".sites", i)
		if s == nil {
			v.errorf(path, "an empty site: give it hosts and pool")
			continue
		}
		v.site(vs, s, path)
		for j, h := range s.Hosts {
			h = strings.ToLower(strings.TrimSuffix(h, "."))
			s.Hosts[j] = h
			if k, dup := hostSite[h]; dup {
				v.errorf(joinIndex(path+".hosts", j), "host %s is already served by sites[%d]%s: a host name belongs to one site", h, k, v.line(joinIndex(base+".sites", k)))
			}
			hostSite[h] = i
		}
	}
	if vs.Mode == ModeHTTPS {
		v.certificates(vs, base)
	}
}

func (v *validator) tlsOptions(vs *Virtual, path string) {
	t := &vs.TLS
	versions := []string{"1.0", "1.1", "1.2", "1.3"}
	if !choice(v, path+".min_version", "TLS version", t.MinVersion, false, versions...) {
		return
	}
	if (t.MinVersion == "1.0" || t.MinVersion == "1.1") && !t.AllowLegacy {
		v.errorf(path+".min_version", "TLS %s is deprecated and insecure: use 1.2 (the default), or set allow_legacy: true if old clients must connect", t.MinVersion)
	}
	if h := t.HSTS.D(); h != 0 && h < time.Hour {
		v.warnf(path+".hsts", "HSTS max-age %s is very short: browsers typically expect days to a year", h)
	}
	if h := t.HandshakeTimeout.D(); h < time.Second || h > time.Minute {
		v.errorf(path+".handshake_timeout", "handshake_timeout %s is out of range: 1s to 1m (default %s)", t.HandshakeTimeout, DefaultTLSHandshakeTimeout)
	} else {
		for i, s := range vs.Sites {
			if s != nil && s.HeaderTimeout != 0 && s.HeaderTimeout.D() <= h {
				v.warnf(path+".handshake_timeout", "handshake_timeout %s is not below sites[%d]'s header_timeout %s: a client that never completes its handshake holds its connection longer than a slow request; keep it shorter (default %s)", t.HandshakeTimeout, i, s.HeaderTimeout, DefaultTLSHandshakeTimeout)
				break
			}
		}
	}
	if r := t.TicketRotation.D(); r < time.Minute || r > 72*time.Hour {
		v.errorf(path+".ticket_rotation", "ticket_rotation %s is out of range: 1m to 72h (default %s); a ticket stays valid for two periods", t.TicketRotation, DefaultTicketRotation)
	}
}

// connLimits checks a virtual's connection caps.
func (v *validator) connLimits(vs *Virtual, path string) {
	l := vs.ConnLimits
	for _, f := range []struct {
		key string
		n   int
	}{{"max_conns", l.MaxConns}, {"max_conns_per_source", l.MaxConnsPerSource}, {"max_handshakes_per_source", l.MaxHandshakesPerSource}} {
		if f.n < 0 {
			v.errorf(path+"."+f.key, "%s %d is negative: give a positive number, or leave it out for the default", f.key, f.n)
		}
	}
	if l.MaxConns > 0 && l.MaxConnsPerSource > l.MaxConns {
		v.errorf(path+".max_conns_per_source", "max_conns_per_source %d is above max_conns %d: one source could take every connection; lower it below max_conns", l.MaxConnsPerSource, l.MaxConns)
	}
	if l.MaxHandshakesPerSource > l.MaxConnsPerSource && l.MaxConnsPerSource > 0 {
		v.errorf(path+".max_handshakes_per_source", "max_handshakes_per_source %d is above max_conns_per_source %d: a handshake is a connection too; lower it", l.MaxHandshakesPerSource, l.MaxConnsPerSource)
	}
}

func (v *validator) site(vs *Virtual, s *Site, path string) {
	if len(s.Hosts) == 0 {
		v.errorf(path, "the site needs hosts: [webext.example.com, ...], the names clients use")
	}
	for j, h := range s.Hosts {
		if !validHostname(h, true) {
			v.errorf(joinIndex(path+".hosts", j), "%q is not a host name (a wildcard is allowed only as the first label, *.example.com)", h)
		}
	}
	v.strictPaths(s, path)
	if v.c.Pos.Has(path+".redirect") || s.Redirect != "" {
		if !choice(v, path+".redirect", "redirect", s.Redirect, false, RedirectHTTPS) {
			return
		}
		if vs.Mode == ModeHTTPS {
			v.errorf(path+".redirect", "an https site cannot redirect to https (a loop): redirect on the http virtual instead")
		}
		for _, k := range []string{"pool", "port", "backend_tls"} {
			if v.c.Pos.Has(path + "." + k) {
				v.errorf(path+"."+k, "a redirecting site does not forward: remove %s, or remove redirect to forward to the pool", k)
			}
		}
		v.redirectTargets(s, path)
		return
	}
	if s.Pool == "" {
		v.errorf(path, "the site needs pool: <pool name> (or redirect: https)")
	}
	v.knownPool(path+".pool", s.Pool)
	if s.Profile == "" && s.Pool != "" && v.poolHasSkypeSite(s.Pool) {
		// The same front ends published without the profile would expose
		// their management applications: deny them here too.
		for _, p := range skypeDenied {
			if !slices.Contains(s.Deny, p) {
				s.Deny = append(s.Deny, p)
			}
		}
		v.warnf(path, "pool %s is published with profile skype elsewhere; its management paths (%s) are denied on this site too: set profile: skype here to say so", s.Pool, strings.Join(skypeDenied, ", "))
	}
	if s.Port == 0 {
		if v.c.Pos.Has(path + ".port") {
			v.errorf(path+".port", "port 0: name the members' port, e.g. 4443")
		} else {
			v.errorf(path, "the site needs port: the members' port, e.g. 4443 (HTTPS) or 8080 (HTTP) for a front end's external web site")
		}
	}
	choice(v, path+".profile", "profile", s.Profile, true, ProfileSkype)
	choice(v, path+".affinity", "affinity", s.Affinity, true, AffinityMSWSMan)
	choice(v, path+".lb", "lb", s.LB, true, LBRoundRobin, LBLeastConn)
	for i, d := range s.Deny {
		if !strings.HasPrefix(d, "/") {
			v.errorf(joinIndex(path+".deny", i), "denied path %q must start with /", d)
		} else if why := nonCanonicalPath(d); why != "" {
			v.errorf(joinIndex(path+".deny", i), "denied path %q is not a plain path (%s): write it as its segments, e.g. /Internal/Admin", d, why)
		}
	}
	v.upgrade(s, path)
	if s.Profile == ProfileSkype {
		v.internalSitePort(path+".port", s.Port)
	}
	v.backendTLS(s, path)
	v.siteLimits(s, path)
}

// backendTLS checks how a site reaches its members: verified TLS, or
// plain HTTP to a port that expects it.
func (v *validator) backendTLS(s *Site, path string) {
	if bt := s.BackendTLS; bt != nil {
		if bt.InsecureSkipVerify {
			if bt.CA != "" {
				v.errorf(path+".backend_tls.insecure_skip_verify", "insecure_skip_verify with a ca: choose one (keep ca to verify the members)")
			} else {
				v.warnf(path+".backend_tls.insecure_skip_verify", "members' certificates are not verified: anyone on the internal path can impersonate them; set ca to the internal CA instead")
			}
		}
		if bt.CA != "" {
			v.caFile(path+".backend_tls.ca", bt.CA)
		}
		if bt.ServerName != "" && !validHostname(bt.ServerName, false) {
			v.errorf(path+".backend_tls.server_name", "%q is not a host name", bt.ServerName)
		}
		if s.Port == 80 || s.Port == 8080 {
			v.warnf(path+".backend_tls", "TLS to port %d, usually plain HTTP: check the port (4443 is the front end's HTTPS port)", s.Port)
		}
	} else if s.Port == 443 || s.Port == 4443 {
		v.warnf(path+".port", "plain HTTP to port %d, which expects TLS: add backend_tls: {ca: <internal CA PEM>}", s.Port)
	}
}

// siteLimits checks a site's timeouts and sizes.
func (v *validator) siteLimits(s *Site, path string) {
	l := s.Limits
	for _, t := range []struct {
		key string
		d   Duration
	}{{"header_timeout", l.HeaderTimeout}, {"response_timeout", l.ResponseTimeout}, {"idle_timeout", l.IdleTimeout}, {"stall_timeout", l.StallTimeout}, {"dial_timeout", l.DialTimeout}, {"pool_idle_timeout", l.PoolIdleTimeout}} {
		if t.d.D() < 100*time.Millisecond {
			v.errorf(path+"."+t.key, "%s %s is too short: at least 100ms", t.key, t.d)
		}
	}
	if l.MaxHeaderBytes < 4096 {
		v.errorf(path+".max_header_bytes", "max_header_bytes %d is too small: at least 4096 (Kerberos tokens need 64 KiB)", l.MaxHeaderBytes)
	}
	if l.MaxBodyBytes < 0 {
		v.errorf(path+".max_body_bytes", "max_body_bytes %d is negative", l.MaxBodyBytes)
	}
	if s.Profile == ProfileSkype && l.ResponseTimeout.D() < 960*time.Second {
		v.warnf(path+".response_timeout", "response_timeout %s is shorter than the 960s Skype push notifications and UCWA long polls need: mobile clients will be disconnected", l.ResponseTimeout)
	}
	if pit := l.PoolIdleTimeout.D(); pit >= 120*time.Second {
		v.warnf(path+".pool_idle_timeout", "pool_idle_timeout %s is not shorter than IIS's 120s connection timeout: requests may hit connections the member is closing", pit)
	}
}

// upgrade checks the protocols a site lets clients switch to.
func (v *validator) upgrade(s *Site, path string) {
	for i, u := range s.Upgrade {
		if !strings.EqualFold(u, UpgradeWebSocket) {
			v.errorf(joinIndex(path+".upgrade", i), "unknown upgrade protocol %q: only %q can be allowed (or leave upgrade out to remove Upgrade headers)", u, UpgradeWebSocket)
		}
	}
}

// redirectTargets warns when an http site redirects names that no https
// virtual serves.
func (v *validator) redirectTargets(s *Site, path string) {
	served := map[string]bool{}
	for _, o := range v.c.Virtuals {
		if o == nil || o.Mode != ModeHTTPS {
			continue
		}
		for _, os := range o.Sites {
			if os == nil {
				continue
			}
			for _, h := range os.Hosts {
				served[strings.ToLower(h)] = true
			}
		}
	}
	for j, h := range s.Hosts {
		if !served[strings.ToLower(h)] {
			v.warnf(joinIndex(path+".hosts", j), "redirects %s to https, but no https virtual serves %s", h, h)
		}
	}
}

// strictPaths refuses strict_paths: false where the site's profile, deny
// list or redirect implies it.
func (v *validator) strictPaths(s *Site, path string) {
	if !v.c.Pos.Has(path+".strict_paths") || s.StrictPaths {
		return
	}
	why := ""
	switch {
	case s.Profile == ProfileSkype:
		why = "profile skype implies it"
	case len(s.Deny) > 0:
		why = "denied paths can only be matched on canonical targets"
	case s.Redirect != "":
		why = "a redirect never echoes a target that is not canonical"
	default:
		return
	}
	v.errorf(path+".strict_paths", "strict_paths: false cannot be set on this site (%s): remove the key", why)
}

// nonCanonicalPath says why a configured path is not a plain sequence of
// segments (the form a denied prefix is matched in), or "".
func nonCanonicalPath(p string) string {
	segs := strings.Split(p[1:], "/")
	for i, seg := range segs {
		switch {
		case seg == "" && i < len(segs)-1:
			return "an empty segment"
		case seg == "." || seg == "..":
			return "a dot segment"
		case strings.ContainsAny(seg, `\%;:?#`):
			return `one of \ % ; : ? #`
		case strings.HasSuffix(seg, ".") || strings.HasSuffix(seg, " "):
			return "a segment ending in a dot or space"
		}
		for _, c := range seg {
			if c < 0x20 || c == 0x7f {
				return "a control character"
			}
		}
	}
	return ""
}
