package diagnose

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestWriteTextAndJSON(t *testing.T) {
	fs := []Finding{
		{Check: "listeners", Subject: "VIP 198.18.0.10", Verdict: Pass, Evidence: "on ext0"},
		{Check: "routes", Subject: "member fe01.corp.example.com", Verdict: Fail,
			Evidence: "198.19.1.11 via 198.18.0.1 dev ext0\nsecond line", Fix: "add a static route"},
		{Check: "certificates", Subject: "certificate public.pem", Verdict: Warn, Evidence: "expires in 9 days", Fix: "renew it"},
	}
	var b bytes.Buffer
	if err := WriteText(&b, fs, false); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"PASS  listeners", "on ext0",
		"FAIL  routes", "      198.19.1.11 via 198.18.0.1 dev ext0\n      second line\n      fix: add a static route\n",
		"WARN  certificates", "fix: renew it",
		"1 passed, 1 warnings, 1 failed: FAIL",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}

	b.Reset()
	if err := WriteJSON(&b, fs); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Verdict  Verdict
		Fail     int
		Findings []Finding
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("%v:\n%s", err, b.String())
	}
	if doc.Verdict != Fail || doc.Fail != 1 || len(doc.Findings) != 3 || doc.Findings[1].Fix != "add a static route" {
		t.Errorf("JSON round trip: %+v", doc)
	}
	if !strings.Contains(b.String(), `"verdict": "WARN"`) {
		t.Errorf("verdicts are not written as words:\n%s", b.String())
	}
}

func TestSelect(t *testing.T) {
	cs, err := Select("routes, certificates")
	if err != nil || len(cs) != 2 || cs[0].Name != "routes" || cs[1].Name != "certificates" {
		t.Fatalf("Select: %v %v", cs, err)
	}
	if cs, _ := Select("all"); len(cs) != len(All()) {
		t.Error("all does not select every check")
	}
	if _, err := Select("route"); !errors.Is(err, ErrUnknownCheck) || !strings.Contains(err.Error(), "routes") {
		t.Errorf("unknown check: %v", err)
	}
	if _, err := Run(context.Background(), &Env{}); !errors.Is(err, ErrNoConfig) {
		t.Errorf("Run without a configuration: %v", err)
	}
}

// A failure that explains others is one finding with its effects under
// it, in text and JSON, and the summary names it as the cause; what
// passes stays where it is, and a cause of a cause is the root.
func TestFindingsNestUnderTheirCause(t *testing.T) {
	route := Finding{Check: "routes", Subject: "member fe01.corp.example.com", Verdict: Fail, Evidence: "reached through ext0",
		explains: []string{"member 198.19.1.11"}}
	probe := Finding{Check: "ports", Subject: "member fe01.corp.example.com:4443", Verdict: Fail, Evidence: "no answer",
		explains: []string{"member 198.19.1.11:4443"}, needs: []string{"member 198.19.1.11"}}
	cert := Finding{Check: "certificates", Subject: "member fe01.corp.example.com:4443 for sfb-web-l4", Verdict: Fail, Evidence: "no TLS",
		needs: []string{"member 198.19.1.11:4443"}}
	dns := Finding{Check: "names", Subject: "meet.example.com DNS", Verdict: Fail, Evidence: "does not resolve"}
	ok := Finding{Check: "ports", Subject: "member fe02.corp.example.com:4443", Verdict: Pass, needs: []string{"member 198.19.1.11"}}
	fs := nest([]Finding{probe, ok, route, dns, cert})
	if len(fs) != 3 || fs[0].Subject != ok.Subject || fs[1].Subject != route.Subject || fs[2].Subject != dns.Subject {
		t.Fatalf("top level: %+v", fs)
	}
	if e := fs[1].Effects; len(e) != 2 || e[0].Subject != probe.Subject || e[1].Subject != cert.Subject {
		t.Errorf("effects of the route: %+v", e)
	}
	if _, _, fail := Count(fs); fail != 2 {
		t.Errorf("%d failures counted, want 2 causes", fail)
	}
	var b bytes.Buffer
	if err := WriteText(&b, fs, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"which explains:\n        FAIL  ports  member fe01.corp.example.com:4443: no answer\n",
		"causes, to fix first: member fe01.corp.example.com (2 finding(s) follow from it); meet.example.com DNS\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := WriteJSON(&b, fs); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Fail     int
		Findings []Finding
	}
	if err := json.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Fail != 2 || len(doc.Findings) != 3 || len(doc.Findings[1].Effects) != 2 {
		t.Errorf("JSON: %d failed, %d findings, %d effects", doc.Fail, len(doc.Findings), len(doc.Findings[1].Effects))
	}
}
