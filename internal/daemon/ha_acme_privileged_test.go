package daemon_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/internal/certgen"
	"github.com/edgeproxy/edgeproxy/internal/lab"
	"github.com/edgeproxy/edgeproxy/internal/labtest"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// TestPrivilegedHAACMESharedIssuance: both nodes of a pair order the
// https virtual's certificate from Pebble (tls-alpn-01, validated through
// the VIP) with one state directory. Only the active node orders; the
// standby shows the same certificate loaded, not ordered; after the
// active node dies, the VIP serves that same certificate from the other
// node, and Pebble has issued one certificate in all.
func TestPrivilegedHAACMESharedIssuance(t *testing.T) {
	testnet.RequireRoot(t, "keepalived")
	p, err := lab.BuildPair(1)
	if err != nil {
		t.Fatalf("build pair lab: %v", err)
	}
	t.Cleanup(p.Close)
	dir := t.TempDir()
	if _, err := certgen.Write(dir, certgen.Options{}); err != nil {
		t.Fatal(err)
	}
	const name = "webext.example.com"
	pb := labtest.StartPebble(t, p.Client, labtest.PebbleOptions{Addr: p.ClientAddr,
		DNS: lab.DNSTable{name: {p.VIP}}, Validity: 24 * time.Hour})
	// The ACME entry first (the no-SNI default), the file one after it.
	format := fmt.Sprintf("acme: {state_dir: %s, check_interval: 500ms}\n", filepath.Join(dir, "acme")) +
		strings.Replace(pairConfig, "    certificates:\n", fmt.Sprintf(
			"    certificates:\n      - acme: {names: [%s], ca: %q, ca_root: %s, challenge: tls-alpn-01}\n",
			name, pb.Directory(), pb.TLSRoot), 1)
	startPairMember(t, p)
	bin := rootOnlyBinary(t)
	var nodes [2]*pairNodeRun
	for i := range nodes {
		nodes[i] = startPairNode(t, p, i, bin, dir, func(nd string) string {
			return fmt.Sprintf(format, nd, p.NodeNetworkYAML(i), testnet.TestPinDir(t, p.Nodes[i].Name), 150-50*i,
				p.ExtAddrs[1-i], p.IntAddrs[1-i], p.Floating, p.Members[0], p.VIP, dir, netip.MustParseAddr("198.18.0.20"))
		})
	}
	active := waitActive(t, nodes)
	act := waitPairACME(t, nodes[active], "obtained by the active node", func(s admin.ACMECert) bool { return s.LastOutcome == "obtained" })
	stb := waitPairACME(t, nodes[1-active], "loaded by the standby", func(s admin.ACMECert) bool { return s.Serial != "" })
	if stb.LastOutcome != "loaded" || stb.Serial != act.Serial {
		t.Errorf("standby's certificate: %+v; want serial %s loaded, not ordered", stb, act.Serial)
	}
	roots := pb.Roots(t)
	if got := pairServedSerial(t, p, name, roots); got != act.Serial {
		t.Errorf("the VIP serves serial %s, want the active node's %s", got, act.Serial)
	}

	nodes[active].die(t)
	waitPairACME(t, nodes[1-active], "managed by the new active node", func(admin.ACMECert) bool {
		st, err := nodes[1-active].daemon.Status()
		return err == nil && st.HA != nil && st.HA.Role == "active"
	})
	if got := pairServedSerial(t, p, name, roots); got != act.Serial {
		t.Errorf("after the failover the VIP serves serial %s, want the same %s", got, act.Serial)
	}
	if now, _ := nodes[1-active].daemon.Status(); len(now.ACME) != 1 || now.ACME[0].LastOutcome != "loaded" {
		t.Errorf("new active node's certificate: %+v, want the loaded one, not a new order", now.ACME)
	}
	if n := strings.Count(pb.Log.String(), "Issued certificate serial"); n != 1 {
		t.Errorf("Pebble issued %d certificates for %s, want 1: only the active node orders", n, name)
	}
}

// waitPairACME waits (60 s at most) until the node's one ACME
// certificate's status satisfies ok.
func waitPairACME(t *testing.T, n *pairNodeRun, what string, ok func(admin.ACMECert) bool) admin.ACMECert {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := n.daemon.Status()
		if err == nil && len(st.ACME) == 1 && ok(st.ACME[0]) {
			return st.ACME[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("ACME certificate not %s in 60 s: %+v %v", what, st, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// pairServedSerial waits (20 s at most) until the VIP's 443 serves name
// a certificate verifying against roots, and returns its serial.
func pairServedSerial(t *testing.T, p *lab.Pair, name string, roots *x509.CertPool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		raw, err := p.Client.DialContext(ctx, "tcp", netip.AddrPortFrom(p.VIP, 443).String())
		if err == nil {
			c := tls.Client(raw, &tls.Config{ServerName: name, RootCAs: roots, MinVersion: tls.VersionTLS12})
			err = c.HandshakeContext(ctx)
			raw.Close()
			if err == nil {
				cancel()
				return c.ConnectionState().PeerCertificates[0].SerialNumber.Text(16)
			}
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatalf("%s: no certificate verifying against Pebble's root through the VIP in 20 s: %v", name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
