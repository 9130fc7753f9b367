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
