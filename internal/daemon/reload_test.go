package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/config"
)

// TestEveryConfigKeyClassified: every key of the configuration file says
// whether a reload applies it, so a new knob cannot be forgotten; and the
// table names no key the file does not have.
func TestEveryConfigKeyClassified(t *testing.T) {
	keys := configKeys()
	if len(keys) < 50 {
		t.Fatalf("walked only %d keys of config.Config: %v", len(keys), keys)
	}
	for _, k := range keys {
		if _, ok := reloadKeys[k]; !ok {
			t.Errorf("key %s is not classified: add it to reloadKeys (onReload, atStart, fastPathOpen or boundOnce)", k)
		}
	}
	for k := range reloadKeys {
		if !slices.Contains(keys, k) {
			t.Errorf("reloadKeys names %s, which the configuration does not have", k)
		}
	}
}

func baseConfig() *config.Config {
	return &config.Config{
		Admin:    config.Admin{Listen: "127.0.0.1:9469"},
		FastPath: config.FastPath{MaxFlows: 262144, PinPath: "/sys/fs/bpf/edgeproxy"},
		Pools:    map[string]*config.Pool{"fe": {Members: []config.Member{{Address: "fe01"}}}},
		Virtuals: []*config.Virtual{{
			Name: "web", Mode: config.ModeHTTPS, Listen: netip.MustParseAddrPort("198.18.0.10:443"),
			Sites: []*config.Site{{Hosts: []string{"a.example.com"}, Pool: "fe"}},
		}},
	}
}

// TestReloadNeedsRestart: a reload that changes a key only a restart
// applies is refused naming the key; keys a reload applies pass.
func TestReloadNeedsRestart(t *testing.T) {
	fastPath := running{fastPath: true}
	for _, tc := range []struct {
		name   string
		change func(c *config.Config)
		r      running
		want   []string // keys refused; none: the reload goes ahead
	}{
		{"max_flows with the fast path open", func(c *config.Config) { c.FastPath.MaxFlows = 1000 }, fastPath, []string{"fastpath.max_flows"}},
		{"max_flows before the fast path opens", func(c *config.Config) { c.FastPath.MaxFlows = 1000 }, running{}, nil},
		{"admin endpoint", func(c *config.Config) { c.Admin.Listen = "127.0.0.1:9470" }, running{}, []string{"admin.listen"}},
		{"log level and pin path", func(c *config.Config) { c.Log.Level = "debug"; c.FastPath.PinPath = "/sys/fs/bpf/x" }, fastPath, []string{"fastpath.pin_path"}},
		{"first interface", func(c *config.Config) { c.Network.External.Interface = "ext0" }, running{}, nil},
		{"site, member and a new virtual", func(c *config.Config) {
			c.Virtuals[0].Sites[0].Hosts = append(c.Virtuals[0].Sites[0].Hosts, "b.example.com")
			c.Pools["fe"].Members = append(c.Pools["fe"].Members, config.Member{Address: "fe02"})
			c.Virtuals = append(c.Virtuals, &config.Virtual{Name: "l4", Mode: config.ModeFastL4, Pool: "fe", Port: 4443})
			c.Virtuals[0].DrainTimeout = config.Duration(time.Minute)
		}, fastPath, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := baseConfig()
			tc.change(next)
			err := restartKeys(baseConfig(), next, tc.r)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("reload refused: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrNeedsRestart) {
				t.Fatalf("reload not refused: %v", err)
			}
			for _, k := range tc.want {
				if !strings.Contains(err.Error(), "needs restart: "+k) {
					t.Errorf("error %q does not name %s", err, k)
				}
			}
		})
	}
	ext := baseConfig()
	ext.Network.External.Interface = "ext0"
	next := baseConfig()
	next.Network.External.Interface = "eth1"
	if err := restartKeys(ext, next, running{}); err == nil || !strings.Contains(err.Error(), "needs restart: network.external.interface") {
		t.Fatalf("renaming the external NIC: %v", err)
	}
}

// TestRollbackOrder: when step k fails, steps k-1 down to 0 are restored,
// in that order, and the failing step and later ones are not.
func TestRollbackOrder(t *testing.T) {
	var log []string
	errPort := errors.New("address already in use")
	mk := func(name string, fail bool) step {
		return step{
			name: name,
			apply: func(context.Context) error {
				log = append(log, "apply "+name)
				if fail {
					return errPort
				}
				return nil
			},
			restore: func(context.Context) error {
				log = append(log, "restore "+name)
				return nil
			},
		}
	}
	steps := []step{mk("network", false), mk("fast path", false), mk("L7", true), mk("monitors", false)}
	err := runSteps(t.Context(), steps)
	if !errors.Is(err, errPort) || !strings.Contains(err.Error(), "L7") {
		t.Fatalf("runSteps = %v, want the L7 step's error", err)
	}
	want := []string{"apply network", "apply fast path", "apply L7", "restore fast path", "restore network"}
	if !slices.Equal(log, want) {
		t.Fatalf("steps ran as %q, want %q", log, want)
	}

	// A cancelled reload applies nothing further and still restores.
	log = nil
	ctx, cancel := context.WithCancel(t.Context())
	steps[1].apply = func(context.Context) error { cancel(); return nil }
	steps[1].restore = func(ctx context.Context) error {
		log = append(log, fmt.Sprintf("restore fast path (ctx err %v)", ctx.Err()))
		return nil
	}
	if err := runSteps(ctx, steps); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled reload: %v", err)
	}
	want = []string{"apply network", "restore fast path (ctx err <nil>)", "restore network"}
	if !slices.Equal(log, want) {
		t.Fatalf("cancelled reload ran %q, want %q", log, want)
	}
}

// TestDrainTimeoutLargest: on SIGTERM the L7 connections get the largest
// drain_timeout of the L7 virtuals, whatever their order.
func TestDrainTimeoutLargest(t *testing.T) {
	cfg := baseConfig()
	long := *cfg.Virtuals[0]
	long.Name, long.DrainTimeout = "long", config.Duration(2*time.Minute)
	short := *cfg.Virtuals[0]
	short.Name, short.DrainTimeout = "short", config.Duration(10*time.Second)
	l4 := &config.Virtual{Name: "l4", Mode: config.ModeFastL4, DrainTimeout: config.Duration(time.Hour)}
	cfg.Virtuals = []*config.Virtual{&long, l4, &short}
	d := &Daemon{cfg: cfg}
	if got := d.drainTimeout(); got != 2*time.Minute {
		t.Fatalf("drain timeout %v, want the largest L7 one, 2m0s", got)
	}
}
