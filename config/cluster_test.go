package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeproxy/edgeproxy/config"
)

// clusterSection lists one peer and a key file written for the test.
func clusterSection(t *testing.T, mode os.FileMode) string {
	t.Helper()
	key := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(key, []byte(strings.Repeat("k", 40)+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	return "\ncluster:\n  peers: [203.0.113.11]\n  key_file: " + key + "\n"
}

func TestClusterAccepted(t *testing.T) {
	c, err := config.Parse("skype.yaml", []byte(example(t)+bgpSection+clusterSection(t, 0o600)))
	if err != nil {
		t.Fatalf("cluster section rejected:\n%v", err)
	}
	if cl := c.Cluster; cl == nil || len(cl.Peers) != 1 || config.ClusterAddr(c).String() != "203.0.113.10" {
		t.Fatalf("cluster = %+v, address %s", cl, config.ClusterAddr(c))
	}
}

// Each mistake is named with the fix.
func TestClusterRejected(t *testing.T) {
	for _, c := range []struct {
		name, text, msg string
	}{
		{"without bgp", example(t) + clusterSection(t, 0o600), "cluster needs a bgp section"},
		{"peer off the external subnet", example(t) + bgpSection + strings.Replace(clusterSection(t, 0o600), "203.0.113.11", "192.0.2.7", 1), "peer 192.0.2.7 is on no subnet of network.external"},
		{"own address as a peer", example(t) + bgpSection + strings.Replace(clusterSection(t, 0o600), "203.0.113.11", "203.0.113.10", 1), "this node's own address"},
		{"key readable by others", example(t) + bgpSection + clusterSection(t, 0o644), "chmod 600"},
		{"no key file", example(t) + bgpSection + "\ncluster:\n  peers: [203.0.113.11]\n", "cluster needs key_file"},
	} {
		_, err := config.Parse("skype.yaml", []byte(c.text))
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: error %v, want one saying %q", c.name, err, c.msg)
		}
	}
}
