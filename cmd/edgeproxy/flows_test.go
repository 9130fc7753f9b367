package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/l4"
)

func TestFlowsOutput(t *testing.T) {
	flows := []l4.Flow{{
		Virtual: "sfb-web-l4", Proto: "tcp",
		Client: netip.MustParseAddrPort("192.0.2.7:51000"), VIP: netip.MustParseAddrPort("203.0.113.20:443"),
		Member: netip.MustParseAddrPort("10.10.0.11:4443"), SNAT: netip.MustParseAddrPort("10.20.0.10:51000"),
		State: l4.StateEstablished, Age: 75 * time.Second, Idle: 1500 * time.Millisecond,
	}}
	var b bytes.Buffer
	if err := writeFlowsText(&b, flows); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"VIRTUAL", "sfb-web-l4", "192.0.2.7:51000", "203.0.113.20:443", "10.10.0.11:4443", "10.20.0.10:51000", "established", "1m15s", "1 flows"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output lacks %q:\n%s", want, out)
		}
	}
	b.Reset()
	if err := writeFlowsJSON(&b, flows); err != nil {
		t.Fatal(err)
	}
	var got []flowJSON
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Member != "10.10.0.11:4443" || got[0].Age != 75 {
		t.Errorf("JSON output: %+v", got)
	}
}

func TestFlowsWithoutPinnedState(t *testing.T) {
	err := runFlows(t.Context(), []string{"-pin-path", filepath.Join(t.TempDir(), "none")})
	if !errors.Is(err, l4.ErrNotPinned) || !strings.Contains(err.Error(), "has not run") {
		t.Errorf("flows without pinned state: %v", err)
	}
}
