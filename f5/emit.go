package f5

import (
	"bytes"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgeproxy/edgeproxy/config"
)

// YAML renders the translated configuration with its keys in the order of
// the documentation and comments that name the BIG-IP objects each part
// came from.
func (r *Result) YAML() ([]byte, error) {
	head := fmt.Sprintf("edgeproxy configuration imported from %s by `edgeproxy import f5`.\n", r.Report.File)
	head += fmt.Sprintf("Review the import report: %d not carried over, %d changed, %d to supply.",
		r.Report.Count(Unsupported), r.Report.Count(Changed), r.Report.Count(Supply))
	if n := r.Report.Count(Fix); n > 0 {
		head = strings.Replace(head, "Review the import report: ", fmt.Sprintf("Review the import report: %d to fix, ", n), 1)
	}
	if len(r.Files) > 0 {
		head += "\nCertificate files to supply (PEM):"
		for _, f := range r.Files {
			head += "\n  " + f
		}
	}
	return Marshal(r.Config, r.comments, head)
}

// Marshal renders cfg as YAML. comments maps key paths ("virtuals.0",
// "pools.NAME", "network.external") to comments; head goes on top.
func Marshal(cfg *config.Config, comments map[string]string, head string) ([]byte, error) {
	e := emitter{comments: comments}
	doc := e.config(cfg)
	doc.HeadComment = head
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode yaml: %w", err)
	}
	return buf.Bytes(), nil
}

type emitter struct{ comments map[string]string }

func mapping() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode} }

func str(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

func num(n int) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(n)}
}

func boolean(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(b)}
}

func dur(d config.Duration) *yaml.Node {
	t := time.Duration(d)
	if t%time.Second == 0 {
		return str(fmt.Sprintf("%ds", t/time.Second))
	}
	return str(t.String())
}

func flowSeq(items ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle, Content: items}
}

// put appends key: value to a mapping and returns the key node.
func put(m *yaml.Node, key string, v *yaml.Node) *yaml.Node {
	k := str(key)
	m.Content = append(m.Content, k, v)
	return k
}

func (e *emitter) comment(k *yaml.Node, path string) {
	if c, ok := e.comments[path]; ok {
		k.HeadComment = c
	}
}

func (e *emitter) config(c *config.Config) *yaml.Node {
	root := mapping()
	if c.Admin.Listen != "" {
		adm := mapping()
		put(adm, "listen", str(c.Admin.Listen))
		put(root, "admin", adm)
	}
	put(root, "network", e.network(&c.Network))

	names := make([]string, 0, len(c.Pools))
	for n := range c.Pools {
		names = append(names, n)
	}
	sort.Strings(names)
	pools := mapping()
	for _, n := range names {
		k := put(pools, n, e.pool(c.Pools[n]))
		e.comment(k, "pools."+n)
	}
	put(root, "pools", pools)

	vs := &yaml.Node{Kind: yaml.SequenceNode}
	for i, v := range c.Virtuals {
		n := e.virtual(v)
		if c, ok := e.comments[fmt.Sprintf("virtuals.%d", i)]; ok {
			n.HeadComment = c
		}
		vs.Content = append(vs.Content, n)
	}
	put(root, "virtuals", vs)
	return root
}

func (e *emitter) network(n *config.Network) *yaml.Node {
	m := mapping()
	k := put(m, "external", e.nic(&n.External))
	e.comment(k, "network.external")
	k = put(m, "internal", e.nic(&n.Internal))
	e.comment(k, "network.internal")
	if len(n.Hosts) > 0 {
		names := make([]string, 0, len(n.Hosts))
		for h := range n.Hosts {
			names = append(names, h)
		}
		sort.Strings(names)
		hosts := mapping()
		for _, h := range names {
			put(hosts, h, str(n.Hosts[h].String()))
		}
		k := put(m, "hosts", hosts)
		k.HeadComment = "pool member names (BIG-IP nodes), resolved without DNS"
	}
	if n.Resolver != "" {
		put(m, "resolver", str(n.Resolver))
	}
	return m
}

func (e *emitter) nic(n *config.NIC) *yaml.Node {
	m := mapping()
	put(m, "interface", str(n.Interface))
	if len(n.Addresses) > 0 {
		put(m, "addresses", prefixes(n.Addresses))
	}
	if n.Gateway.IsValid() {
		put(m, "gateway", str(n.Gateway.String()))
	}
	if n.Gateway6.IsValid() {
		put(m, "gateway6", str(n.Gateway6.String()))
	}
	if len(n.Routes) > 0 {
		rs := &yaml.Node{Kind: yaml.SequenceNode}
		for _, r := range n.Routes {
			rm := mapping()
			rm.Style = yaml.FlowStyle
			put(rm, "to", str(r.To.String()))
			put(rm, "via", str(r.Via.String()))
			rs.Content = append(rs.Content, rm)
		}
		put(m, "routes", rs)
	}
	if n.XDPMode != "" {
		put(m, "xdp_mode", str(string(n.XDPMode)))
	}
	return m
}

func prefixes(ps []netip.Prefix) *yaml.Node {
	s := flowSeq()
	for _, p := range ps {
		s.Content = append(s.Content, str(p.String()))
	}
	return s
}

func (e *emitter) pool(p *config.Pool) *yaml.Node {
	m := mapping()
	members := flowSeq()
	for _, mb := range p.Members {
		if !mb.Disabled && mb.Weight == 0 {
			members.Content = append(members.Content, str(mb.Address))
			continue
		}
		mm := mapping()
		mm.Style = yaml.FlowStyle
		put(mm, "address", str(mb.Address))
		if mb.Disabled {
			put(mm, "disabled", boolean(true))
		}
		if mb.Weight != 0 {
			put(mm, "weight", num(mb.Weight))
		}
		members.Content = append(members.Content, mm)
	}
	put(m, "members", members)
	put(m, "monitor", monitor(&p.Monitor))
	if p.LB != "" {
		put(m, "lb", str(string(p.LB)))
	}
	if p.Kind != "" {
		put(m, "kind", str(p.Kind))
	}
	return m
}

func monitor(mo *config.Monitor) *yaml.Node {
	m := mapping()
	m.Style = yaml.FlowStyle
	put(m, "type", str(string(mo.Type)))
	if mo.Port != 0 {
		put(m, "port", num(int(mo.Port)))
	}
	if mo.Path != "" {
		put(m, "path", str(mo.Path))
	}
	if mo.Host != "" {
		put(m, "host", str(mo.Host))
	}
	if len(mo.Expect) > 0 {
		ex := flowSeq()
		for _, c := range mo.Expect {
			ex.Content = append(ex.Content, num(c))
		}
		put(m, "expect", ex)
	}
	if mo.AuthAlive {
		put(m, "auth_alive", boolean(true))
	}
	if mo.Interval != 0 {
		put(m, "interval", dur(mo.Interval))
	}
	if mo.Timeout != 0 {
		put(m, "timeout", dur(mo.Timeout))
	}
	if mo.Rise != 0 {
		put(m, "rise", num(mo.Rise))
	}
	if mo.Fall != 0 {
		put(m, "fall", num(mo.Fall))
	}
	if mo.CA != "" {
		put(m, "ca", str(mo.CA))
	}
	return m
}

func (e *emitter) virtual(v *config.Virtual) *yaml.Node {
	m := mapping()
	put(m, "name", str(v.Name))
	put(m, "mode", str(string(v.Mode)))
	put(m, "listen", str(v.Listen.String()))
	if v.Mode == config.ModeFastL4 {
		if v.Proto != "" {
			put(m, "protocol", str(string(v.Proto)))
		}
		put(m, "pool", str(v.Pool))
		put(m, "port", num(int(v.Port)))
		switch {
		case v.SNAT.Automap:
			put(m, "snat", str(config.SNATAutomap))
		case len(v.SNAT.Addresses) > 0:
			s := flowSeq()
			for _, a := range v.SNAT.Addresses {
				s.Content = append(s.Content, str(a.String()))
			}
			put(m, "snat", s)
		}
		f := v.FastL4
		def := defaultFastL4()
		put(m, "idle_timeout", dur(f.IdleTimeout))
		if f.HandshakeTimeout != def.HandshakeTimeout && f.HandshakeTimeout != 0 {
			put(m, "handshake_timeout", dur(f.HandshakeTimeout))
		}
		if f.CloseTimeout != def.CloseTimeout && f.CloseTimeout != 0 {
			put(m, "close_timeout", dur(f.CloseTimeout))
		}
		if f.ResetOnTimeout != nil && !*f.ResetOnTimeout {
			put(m, "reset_on_timeout", boolean(false))
		}
		if f.LooseInit {
			put(m, "loose_init", boolean(true))
		}
		if f.LooseClose {
			put(m, "loose_close", boolean(true))
		}
		if f.MSSOverride != 0 {
			put(m, "mss_override", num(int(f.MSSOverride)))
		}
		return m
	}
	if len(v.Certificates) > 0 {
		cs := &yaml.Node{Kind: yaml.SequenceNode}
		for _, c := range v.Certificates {
			cm := mapping()
			cm.Style = yaml.FlowStyle
			put(cm, "cert", str(c.Cert))
			put(cm, "key", str(c.Key))
			cs.Content = append(cs.Content, cm)
		}
		put(m, "certificates", cs)
	}
	if v.TLS.MinVersion != "" || v.TLS.AllowLegacy {
		tm := mapping()
		if v.TLS.MinVersion != "" {
			put(tm, "min_version", str(v.TLS.MinVersion))
		}
		if v.TLS.AllowLegacy {
			put(tm, "allow_legacy", boolean(true))
		}
		put(m, "tls", tm)
	}
	sites := &yaml.Node{Kind: yaml.SequenceNode}
	for _, s := range v.Sites {
		sites.Content = append(sites.Content, site(s))
	}
	put(m, "sites", sites)
	return m
}

func site(s *config.Site) *yaml.Node {
	sm := mapping()
	hs := flowSeq()
	for _, h := range s.Hosts {
		hs.Content = append(hs.Content, str(h))
	}
	put(sm, "hosts", hs)
	if s.Redirect != "" {
		put(sm, "redirect", str(s.Redirect))
	}
	if s.Pool != "" {
		put(sm, "pool", str(s.Pool))
		put(sm, "port", num(int(s.Port)))
	}
	if s.BackendTLS != nil {
		bm := mapping()
		bm.Style = yaml.FlowStyle
		if s.BackendTLS.CA != "" {
			put(bm, "ca", str(s.BackendTLS.CA))
		}
		if s.BackendTLS.ServerName != "" {
			put(bm, "server_name", str(s.BackendTLS.ServerName))
		}
		put(sm, "backend_tls", bm)
	}
	if s.Profile != "" {
		put(sm, "profile", str(s.Profile))
	}
	if len(s.Deny) > 0 {
		ds := flowSeq()
		for _, d := range s.Deny {
			ds.Content = append(ds.Content, str(d))
		}
		put(sm, "deny", ds)
	}
	if s.Affinity != "" {
		put(sm, "affinity", str(s.Affinity))
	}
	return sm
}
