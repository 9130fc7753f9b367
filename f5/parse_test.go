package f5

import (
	"errors"
	"strings"
	"testing"
)

func TestParseGrammar(t *testing.T) {
	src := `#TMSH-VERSION: 15.1.0
# a comment line
ltm virtual /Common/app.app/vs_443 {
    description "quoted \"words\" with \\ backslash and { braces }"
    destination /Common/app.app/203.0.113.20:443   # trailing comment
    profiles {
        /Common/fastL4 { }
        /Common/tcp {
            context clientside
        }
    }
    vlans { /Common/external /Common/internal }
    vlans-enabled
    source-address-translation { pool /Common/sp type snat }
}

ltm profile fastl4 /Common/fl4 {
    idle-timeout 600
}
sys global-settings { }
ltm rule /Common/r {
when HTTP_REQUEST {
    if { [HTTP::host] eq "a" } { HTTP::respond 200 content "\}" }
}
}
`
	f, err := Parse("t.conf", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Objects) != 4 {
		t.Fatalf("objects: got %d, want 4", len(f.Objects))
	}
	vs := f.Objects[0]
	if got := vs.Header(); got != "ltm virtual /Common/app.app/vs_443" {
		t.Errorf("header: %q", got)
	}
	if vs.Line != 3 || vs.Col != 1 {
		t.Errorf("position: %d:%d, want 3:1", vs.Line, vs.Col)
	}
	if d, _ := vs.Attr("description"); d != `quoted "words" with \ backslash and { braces }` {
		t.Errorf("description: %q", d)
	}
	if d, _ := vs.Attr("destination"); d != "/Common/app.app/203.0.113.20:443" {
		t.Errorf("destination: %q", d)
	}
	var profiles []string
	for _, it := range vs.Items("profiles") {
		profiles = append(profiles, it.Key())
	}
	if strings.Join(profiles, ",") != "/Common/fastL4,/Common/tcp" {
		t.Errorf("profiles: %v", profiles)
	}
	if c, _ := vs.Items("profiles")[1].Attr("context"); c != "clientside" {
		t.Errorf("tcp context: %q", c)
	}
	if !vs.Items("profiles")[0].HasBlock || len(vs.Items("profiles")[0].Block) != 0 {
		t.Errorf("fastL4 { } should be an empty block")
	}
	var vlans []string
	for _, it := range vs.Items("vlans") {
		vlans = append(vlans, it.Key())
	}
	if strings.Join(vlans, ",") != "/Common/external,/Common/internal" {
		t.Errorf("vlans: %v", vlans)
	}
	if !vs.Has("vlans-enabled") {
		t.Error("bare word vlans-enabled not found")
	}
	sat := vs.Get("source-address-translation")
	if ty, _ := sat.Attr("type"); ty != "snat" {
		t.Errorf("one-line block: type %q", ty)
	}
	if p, _ := sat.Attr("pool"); p != "/Common/sp" {
		t.Errorf("one-line block: pool %q", p)
	}
	if h := f.Objects[2].Header(); h != "sys global-settings" || !f.Objects[2].HasBlock {
		t.Errorf("empty object: %q", h)
	}
	rule := f.Objects[3]
	if !rule.IsRaw || !strings.Contains(rule.Raw, `HTTP::respond 200 content "\}"`) {
		t.Errorf("iRule body not kept verbatim: %q", rule.Raw)
	}
	if rule.Line != 21 {
		t.Errorf("rule line %d, want 21", rule.Line)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, src, want string
	}{
		{"unclosed block", "ltm pool /Common/p {\n    members {\n        /Common/n:80 { address 10.0.0.1 }\n}\n", "t.conf:1:20: unbalanced '{'"},
		{"extra brace", "ltm node /Common/n {\n    address 10.0.0.1\n}\n}\n", "t.conf:4:1: unbalanced '}'"},
		{"unterminated quote", "ltm node /Common/n {\n    address 10.0.0.1\n    description \"no end\n}\n", "t.conf:3:17: unterminated quoted string"},
		{"garbage line", "ltm node /Common/n {\n    address 10.0.0.1\n}\nthis is not tmsh\nltm node /Common/m {\n}\n", "t.conf:4:1: cannot read \"this is not tmsh\""},
		{"brace without header", "ltm node /Common/n { }\n{ address 10.0.0.1 }\n", "t.conf:2:1: '{' without an object header"},
		{"block without name", "ltm pool /Common/p {\n    { address 10.0.0.1 }\n}\n", "t.conf:2:5: '{' without a name"},
		{"unclosed iRule", "ltm rule /Common/r {\nwhen HTTP_REQUEST {\n  HTTP::redirect \"https://x\"\n}\n", "t.conf:1:20: unbalanced '{': the script block"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("t.conf", []byte(c.src))
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrSyntax) {
				t.Errorf("error does not match ErrSyntax: %v", err)
			}
			if !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("error:\n got %q\nwant prefix %q", err, c.want)
			}
		})
	}
}

func TestParseNothing(t *testing.T) {
	_, err := Parse("empty.conf", []byte("# only a comment\n\n"))
	if !errors.Is(err, ErrNothing) {
		t.Fatalf("got %v, want ErrNothing", err)
	}
}

func TestSplitHostPort(t *testing.T) {
	cases := []struct{ in, host, port string }{
		{"203.0.113.20:443", "203.0.113.20", "443"},
		{"203.0.113.20%2:https", "203.0.113.20%2", "https"},
		{"fe01.corp.example.com:4443", "fe01.corp.example.com", "4443"},
		{"2001:db8::10.443", "2001:db8::10", "443"},
		{"any6.any", "any6", "any"},
	}
	for _, c := range cases {
		h, p, err := splitHostPort(c.in)
		if err != nil || h != c.host || p != c.port {
			t.Errorf("splitHostPort(%q) = %q, %q, %v", c.in, h, p, err)
		}
	}
	for in, want := range map[string]uint16{"https": 443, "pharos": 4443, "webcache": 8080, "8443": 8443, "any": 0} {
		if got, err := parsePort(in); err != nil || got != want {
			t.Errorf("parsePort(%q) = %d, %v", in, got, err)
		}
	}
	if _, err := parsePort("no-such-service"); err == nil {
		t.Error("parsePort accepted an unknown service name")
	}
}
