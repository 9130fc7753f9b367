package health

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
)

func TestTargetsFromConfig(t *testing.T) {
	c := &config.Config{
		Network: config.Network{Hosts: map[string]netip.Addr{"fe01.corp.example.com": netip.MustParseAddr("10.10.0.11")}},
		Pools: map[string]*config.Pool{
			"sfb-fe": {
				Members: []config.Member{{Address: "fe01.corp.example.com"}, {Address: "10.10.0.12", Disabled: true}},
				Monitor: config.Monitor{Type: config.MonitorTLS, Port: 4443},
			},
			"owas": {
				Members: []config.Member{{Address: "owas01.corp.example.com"}},
				Monitor: config.Monitor{Type: config.MonitorHTTPS, Port: 443, Path: "/hosting/discovery"},
			},
		},
	}
	if _, _, err := Targets(context.Background(), c, nil); !errors.Is(err, ErrUnresolved) {
		t.Fatalf("member missing from hosts without resolver: %v, want ErrUnresolved", err)
	}
	var asked []string
	targets, mons, err := Targets(context.Background(), c, func(_ context.Context, name string) (netip.Addr, error) {
		asked = append(asked, name)
		return netip.MustParseAddr("10.10.0.30"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Target{
		{Pool: "owas", Member: "owas01.corp.example.com", Addr: netip.MustParseAddr("10.10.0.30")},
		{Pool: "sfb-fe", Member: "fe01.corp.example.com", Addr: netip.MustParseAddr("10.10.0.11")},
		{Pool: "sfb-fe", Member: "10.10.0.12", Addr: netip.MustParseAddr("10.10.0.12"), Disabled: true},
	}
	if len(targets) != len(want) {
		t.Fatalf("targets %+v, want %+v", targets, want)
	}
	for i := range want {
		if targets[i] != want[i] {
			t.Errorf("target %d = %+v, want %+v", i, targets[i], want[i])
		}
	}
	if len(asked) != 1 || asked[0] != "owas01.corp.example.com" {
		t.Errorf("resolver asked for %v, want only the name missing from hosts", asked)
	}
	if mons["owas"].Path != "/hosting/discovery" || mons["sfb-fe"].Port != 4443 {
		t.Errorf("monitors %+v", mons)
	}
	if err := New(Options{}).Update(targets, mons); err != nil {
		t.Errorf("Update with the targets: %v", err)
	}
}
