package l7

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// A peer proxy (HAProxy, nginx, started by startPeerProxy) or edgeproxy,
// in front of its own raw member.
type peerProxy struct {
	name string
	addr string
	m    *rawMember
}

// outcome describes what a sequence did: the statuses, and the requests
// the member received (method and target). bad: a smuggled, folded or
// HTTP/1.0+TE request reached the member.
func outcome(got []int, beforeData string, before []string, m *rawMember) (string, bool) {
	data, lines := m.received()
	data, lines = data[len(beforeData):], lines[len(before):]
	var st []string
	for _, s := range got {
		switch s {
		case 0:
			st = append(st, "closed")
		case -1:
			st = append(st, "no answer")
		default:
			st = append(st, fmt.Sprint(s))
		}
	}
	var reqs []string
	for _, l := range lines {
		reqs = append(reqs, strings.TrimSuffix(strings.TrimSuffix(l, " HTTP/1.1"), " HTTP/1.0"))
	}
	cell := strings.Join(st, ", ") + "; member got: "
	if len(reqs) == 0 {
		cell += "nothing"
	}
	cell += strings.Join(reqs, ", ")
	if strings.Contains(data, "/smuggled") {
		cell += " + SMUGGLED"
	}
	return cell, strings.Contains(data, "/smuggled") || strings.Contains(data, "/fold") || strings.Contains(data, "/te10")
}

// The desync sequences against edgeproxy, HAProxy and nginx in the same
// run, plain HTTP, each in front of its own raw member (the peers in the
// configuration of the path table, which does not touch framing): the
// table is in the test's output (go test -v -run TestDesyncPeers) and in
// l7/README.md. Only edgeproxy's results are asserted.
func TestDesyncPeers(t *testing.T) {
	m := startRawMember(t, false)
	e := rawEnv(t, m, nil)
	peers := []*peerProxy{{name: "edgeproxy", addr: e.httpAddr, m: m}}
	for _, name := range []string{"haproxy", "nginx"} {
		pm := startRawMember(t, false)
		if addr, _ := startPeerProxy(t, name, pm.ln.Addr().String()); addr != "" {
			peers = append(peers, &peerProxy{name: name, addr: addr, m: pm})
		}
	}
	var tab strings.Builder
	w := tabwriter.NewWriter(&tab, 0, 4, 2, ' ', 0)
	fmt.Fprint(w, "| sequence\t")
	for _, p := range peers {
		fmt.Fprintf(w, "| %s\t", p.name)
	}
	fmt.Fprintln(w, "|")
	for _, seq := range desyncSequences("lyncdiscover.example.com") {
		fmt.Fprintf(w, "| %s\t", seq.name)
		for _, p := range peers {
			c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			beforeData, before := p.m.received()
			got := seq.runFor(&rawTLS{t: t, c: c, r: bufio.NewReader(c)}, 3*time.Second)
			c.Close()
			time.Sleep(50 * time.Millisecond) // let the member record
			cell, bad := outcome(got, beforeData, before, p.m)
			if p.name == "edgeproxy" && bad {
				t.Errorf("edgeproxy: %s: %s", seq.name, cell)
			}
			fmt.Fprintf(w, "| %s\t", cell)
		}
		fmt.Fprintln(w, "|")
	}
	w.Flush()
	t.Logf("desync sequences, plain HTTP:\n%s", tab.String())
	if os.Getenv("EDGEPROXY_PEER_TABLE") != "" {
		writeFile(t, os.Getenv("EDGEPROXY_PEER_TABLE"), []byte(tab.String()))
	}
}
