package f5

import (
	"regexp"
	"slices"
	"strings"

	"github.com/edgeproxy/edgeproxy/config"
)

// ruleEffect is what an iRule does when edgeproxy has it as a setting.
type ruleEffect struct {
	redirect bool     // answers every request with a redirect to https
	deny     []string // refuses requests under these path prefixes
}

var (
	// ruleComment is a Tcl comment line.
	ruleComment = regexp.MustCompile(`(?m)^\s*#.*$`)
	// ruleRedirect sends the client to https://, keeping host and URI.
	ruleRedirect = regexp.MustCompile(`(?i)HTTP::redirect\s+"?https://\[(?:HTTP::host|getfield\s+\[HTTP::host\]\s+"?:"?\s+1)\]\[HTTP::uri\]|HTTP::respond\s+30[1278]\s+(?:-version\s+\S+\s+)?(?:noserver\s+)?Location\s+"?https://\[(?:HTTP::host|getfield\s+\[HTTP::host\]\s+"?:"?\s+1)\]\[HTTP::uri\]`)
	// ruleRefuse refuses a request.
	ruleRefuse = regexp.MustCompile(`(?i)\b(?:reject|drop|discard)\b|HTTP::respond\s+40[0-9]\b|TCP::close`)
	// ruleByPath conditions on the request's path.
	ruleByPath = regexp.MustCompile(`(?i)HTTP::(?:path|uri)`)
	// ruleForwards chooses where a request goes: more than a filter.
	ruleForwards = regexp.MustCompile(`(?i)(?:^|[\s\[{;])(?:pool|node|snat|virtual|HTTP::header\s+(?:insert|replace|remove)|HTTP::uri\s+"?/|HTTP::payload)\b`)
	// rulePath is a path literal, quoted or in a switch arm.
	rulePath = regexp.MustCompile(`"(/[^"\s\[\]$]*)"|(?:^|\s)(/[A-Za-z][\w./-]*\*?)`)
	// ruleClass names a data group matched against the request.
	ruleClass = regexp.MustCompile(`(?i)(?:class\s+match\s+(?:-\w+\s+)*(?:\[[^\n]*?\]|\S+)|matchclass\s+(?:\[[^\n]*?\]|\S+))\s+(?:starts_with|equals|contains|ends_with)\s+\$?(?:::)?([\w./-]+)`)
)

// ruleEffect reads an iRule: a redirect to https, or a filter refusing
// path prefixes. ok is false when the rule does something else (or more).
func (t *tr) ruleEffect(r *object) (eff ruleEffect, ok bool) {
	text := ruleComment.ReplaceAllString(r.st.Raw, "")
	if ruleForwards.MatchString(text) {
		return ruleEffect{}, false
	}
	if ruleRedirect.MatchString(text) && !ruleByPath.MatchString(ruleRedirect.ReplaceAllString(text, "")) {
		return ruleEffect{redirect: true}, true
	}
	if !ruleRefuse.MatchString(text) || !ruleByPath.MatchString(text) || strings.Contains(strings.ToLower(text), "http::redirect") {
		return ruleEffect{}, false
	}
	var paths []string
	for _, m := range rulePath.FindAllStringSubmatch(text, -1) {
		paths = append(paths, m[1]+m[2])
	}
	for _, m := range ruleClass.FindAllStringSubmatch(text, -1) {
		dg := t.ix.get("ltm data-group internal", fullPath(r.folder(), m[1]))
		if dg == nil {
			return ruleEffect{}, false // the paths are elsewhere
		}
		dg.used = true
		for _, rec := range dg.st.Items("records") {
			paths = append(paths, rec.Key())
		}
	}
	for _, p := range paths {
		p = strings.TrimRight(strings.TrimSuffix(p, "*"), "/")
		if p == "" || strings.ContainsAny(p, "*?[]\\") {
			return ruleEffect{}, false
		}
		if !slices.ContainsFunc(eff.deny, func(d string) bool { return strings.EqualFold(d, p) }) {
			eff.deny = append(eff.deny, p)
		}
	}
	return eff, len(eff.deny) > 0
}

// skypeDeny splits denied paths into those the skype profile denies and
// the others.
func skypeDeny(paths []string) (skype bool, rest []string) {
	managed := config.SkypeDeniedPaths()
	for _, p := range paths {
		if slices.ContainsFunc(managed, func(m string) bool { return strings.EqualFold(m, p) }) {
			skype = true
			continue
		}
		rest = append(rest, p)
	}
	return skype, rest
}

// msWSManCookie reports whether a persistence profile pins clients with
// the MS-WSMAN cookie (Lync 2010 coexistence), which sites call affinity
// ms-wsman.
func msWSManCookie(p *object) bool {
	if p == nil || p.kind != "ltm persistence cookie" {
		return false
	}
	name, _ := p.st.Attr("cookie-name")
	return strings.EqualFold(name, "MS-WSMAN")
}

// skypeWords mark names of Skype for Business / Lync deployments.
var skypeWords = regexp.MustCompile(`(?i)skype|lync|sfb|s4b|ucwa|webext|lyncdiscover`)

// skypeLooking tells why a virtual looks like the publication of Skype
// for Business front ends ("" when it does not): its iRule or
// persistence, the members' port 4443 (the External Web Site's; 8080 is
// too common to tell), or the names.
func (t *tr) skypeLooking(v *vsInfo) string {
	switch {
	case v.skypeRule != "":
		return "iRule " + v.skypeRule + " refuses the management paths"
	case v.affinity == config.AffinityMSWSMan:
		return "MS-WSMAN cookie persistence"
	case v.pool != nil && v.port == 4443:
		return "members' port 4443, the front end's External Web Site"
	case skypeWords.MatchString(baseName(v.o.path)):
		return "the virtual's name " + baseName(v.o.path)
	case v.pool != nil && skypeWords.MatchString(baseName(v.pool.path)):
		return "the pool's name " + baseName(v.pool.path)
	}
	for _, p := range v.clientSS {
		if skypeWords.MatchString(p.serverName) {
			return "the server name " + p.serverName
		}
	}
	return ""
}

// internalSitePort reports a Skype-looking virtual whose members' port is
// the front end's Internal Web Site, saying what to fix.
func (t *tr) internalSitePort(v *vsInfo, why string) {
	ext := map[uint16]uint16{443: 4443, 80: 8080}[v.port]
	if ext == 0 || v.pool == nil {
		return
	}
	t.rep.add(Fix, v.o.st, v.o.label(), "members' port %d on a Skype for Business virtual (%s): %d is the front end's Internal Web Site, for internal clients, with the management applications (/cscp, /OcsPowerShell); the reverse proxy must reach the External Web Site: set port: %d in the output (and the BIG-IP pool %s to :%d)",
		v.port, why, v.port, ext, v.pool.path, ext)
}
