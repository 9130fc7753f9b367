package plan

import (
	"crypto/tls"
	"fmt"

	"github.com/edgeproxy/edgeproxy/config"
	"github.com/edgeproxy/edgeproxy/l7"
)

// compileL7 builds the spec of the https and http virtuals.
func compileL7(cfg *config.Config, members map[string][]Member) (*l7.Spec, error) {
	spec := &l7.Spec{ACME: l7.ACMEOptions{StateDir: cfg.ACME.StateDir, CheckInterval: cfg.ACME.CheckInterval.D(),
		Shared: cfg.HA != nil}}
	if spec.ACME.StateDir == "" {
		spec.ACME.StateDir = l7.DefaultACMEStateDir
	}
	for _, v := range cfg.Virtuals {
		if v == nil || !v.IsL7() {
			continue
		}
		vs, err := l7Virtual(cfg, v, members)
		if err != nil {
			return nil, fmt.Errorf("virtual %s: %w", v.Name, err)
		}
		spec.Virtuals = append(spec.Virtuals, vs)
	}
	return spec, nil
}

func l7Virtual(cfg *config.Config, v *config.Virtual, members map[string][]Member) (*l7.Virtual, error) {
	t := v.TLS.Effective()
	minV, err := tlsVersion(t)
	if err != nil {
		return nil, err
	}
	lim := v.ConnLimits.Effective()
	drain := v.DrainTimeout
	if drain <= 0 {
		drain = config.DefaultDrainTimeout
	}
	out := &l7.Virtual{
		Name: v.Name, Mode: l7.Mode(v.Mode), Listen: v.Listen,
		TLS: l7.TLS{MinVersion: minV, HSTS: t.HSTS.D(), HandshakeTimeout: t.HandshakeTimeout.D(),
			TicketRotation: t.TicketRotation.D(), NoSessionTickets: !t.TicketsOn()},
		TrustedProxies: v.TrustedProxies,
		DrainTimeout:   drain.D(),
		Limits: l7.ConnLimits{MaxConns: lim.MaxConns, MaxConnsPerSource: lim.MaxConnsPerSource,
			MaxHandshakesPerSource: lim.MaxHandshakesPerSource},
	}
	for _, c := range v.Certificates {
		lc := l7.Certificate{Cert: c.Cert, Key: c.Key}
		if a := c.ACME; a != nil {
			lc.ACME = &l7.ACME{Names: a.Names, CA: a.CA, CARoot: a.CARoot, Email: a.Email,
				Challenge: a.Challenge, KeyType: a.KeyType}
			if lc.ACME.Challenge == "" {
				lc.ACME.Challenge = l7.ChallengeHTTP01
			}
			if lc.ACME.KeyType == "" {
				lc.ACME.KeyType = l7.KeyECDSAP256
			}
		}
		out.Certificates = append(out.Certificates, lc)
	}
	for i, cs := range v.Sites {
		if cs == nil {
			continue
		}
		s, err := l7Site(cfg, cs, members)
		if err != nil {
			return nil, fmt.Errorf("sites[%d]: %w", i, err)
		}
		out.Sites = append(out.Sites, s)
	}
	return out, nil
}

func tlsVersion(o config.TLSOptions) (uint16, error) {
	switch o.MinVersion {
	case "", "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	case "1.0", "1.1":
		if !o.AllowLegacy {
			return 0, fmt.Errorf("tls.min_version %s: %w: TLS 1.0/1.1 need tls.allow_legacy: true", o.MinVersion, ErrBadValue)
		}
		if o.MinVersion == "1.0" {
			return tls.VersionTLS10, nil
		}
		return tls.VersionTLS11, nil
	}
	return 0, fmt.Errorf("tls.min_version %q: %w (use 1.2 or 1.3)", o.MinVersion, ErrBadValue)
}

// l7Site builds a site with its profile's settings and its pool's
// members.
func l7Site(cfg *config.Config, cs *config.Site, members map[string][]Member) (*l7.Site, error) {
	l := cs.Effective()
	s := &l7.Site{
		Hosts: cs.Hosts, Skype: cs.Profile == config.ProfileSkype, Deny: cs.DeniedPaths(),
		Upgrade: cs.Upgrade, WindowsAuth: cs.UsesWindowsAuth(), StrictPaths: cs.UsesStrictPaths(),
		Limits: l7.Limits{HeaderTimeout: l.HeaderTimeout.D(), MaxHeaderBytes: l.MaxHeaderBytes,
			MaxBodyBytes: l.MaxBodyBytes, ResponseTimeout: l.ResponseTimeout.D(), IdleTimeout: l.IdleTimeout.D(),
			StallTimeout: l.StallTimeout.D(), DialTimeout: l.DialTimeout.D(), PoolIdleTimeout: l.PoolIdleTimeout.D()},
	}
	switch cs.Redirect {
	case "":
	case config.RedirectHTTPS:
		s.Redirect = true
		return s, nil
	default:
		return nil, fmt.Errorf("redirect %q: %w (use https, or leave it out)", cs.Redirect, ErrBadValue)
	}
	switch cs.Profile {
	case config.ProfileNone, config.ProfileSkype:
	default:
		return nil, fmt.Errorf("profile %q: %w (use skype, or leave it out)", cs.Profile, ErrBadValue)
	}
	switch cs.Affinity {
	case "":
	case config.AffinityMSWSMan:
		s.Affinity = true
	default:
		return nil, fmt.Errorf("affinity %q: %w (use ms-wsman, or leave it out)", cs.Affinity, ErrBadValue)
	}
	pool := cfg.Pools[cs.Pool]
	if pool == nil {
		return nil, fmt.Errorf("pool %q: %w (define it under pools:)", cs.Pool, ErrUnknownPool)
	}
	lb := cs.LB
	if lb == "" {
		lb = pool.LB
	}
	switch lb {
	case "", config.LBRoundRobin:
	case config.LBLeastConn:
		s.LeastConn = true
	default:
		return nil, fmt.Errorf("lb %q: %w (use round_robin or least_conn)", lb, ErrBadValue)
	}
	s.Pool, s.Port = cs.Pool, cs.Port
	if bt := cs.BackendTLS; bt != nil {
		s.BackendTLS = &l7.BackendTLS{CA: bt.CA, ServerName: bt.ServerName, InsecureSkipVerify: bt.InsecureSkipVerify}
	}
	for _, m := range members[cs.Pool] {
		s.Members = append(s.Members, l7.Member{Name: m.Name, Addr: m.Addr, Disabled: m.Disabled})
	}
	return s, nil
}
