package l7

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// A spec the proxy cannot serve is refused with what is wrong and the
// fix, and the running one keeps serving.
func TestApplyRefusesUnservableSpec(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, tc := range []struct {
		name   string
		change func(*testConfig)
		is     error
		says   string
	}{
		{"member without address", func(c *testConfig) { c.Pools["owas"] = []Member{{Name: "owas01.corp.example.com"}} },
			ErrUnresolved, "owas01.corp.example.com"},
		{"unknown mode", func(c *testConfig) { c.Virtuals[1].Mode = "fastl4" }, ErrBadValue, "use https or http"},
		{"no certificate", func(c *testConfig) { c.Virtuals[0].Certificates = nil }, ErrNoCertificate, "add certificates"},
		{"host in two sites", func(c *testConfig) { c.Virtuals[0].Sites[1].Hosts = []string{"meet.example.com"} },
			ErrDuplicateHost, "keep each host in one site"},
		{"address of two virtuals", func(c *testConfig) {
			c.Virtuals[0].Listen = netip.MustParseAddrPort("127.0.0.1:8443")
			c.Virtuals[1].Listen = c.Virtuals[0].Listen
		}, ErrDuplicateListen, "sfb-web"},
		{"members' port missing", func(c *testConfig) { c.Virtuals[0].Sites[0].Port = 0 }, ErrBadValue, "the members' port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := e.config(envOptions{})
			tc.change(cfg)
			err := e.proxy.Apply(cfg.spec())
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("apply: %v, want %v saying %q", err, tc.is, tc.says)
			}
			if res, _ := e.dialTLS("webext.example.com").do(get("webext.example.com", "/whoami")); res.StatusCode != 200 {
				t.Fatalf("after a refused spec: %d", res.StatusCode)
			}
		})
	}
}
