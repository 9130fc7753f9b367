package daemon_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/fakefe"
	"github.com/edgeproxy/edgeproxy/internal/lab"
)

// The fastl4 services of the pair lab's member: an echo, iperf3 and
// HTTP long polls, each behind a fastl4 virtual on the same port of
// pairRun.l4VIP.
const (
	echoPort  = 5201
	iperfPort = 5202
	pollPort  = 8081
)

// TestPrivilegedHAUnplannedFailover: two nodes with keepalived carry 50
// long-lived TCP connections (each echoing a numbered line every 100 ms),
// 2 iperf3 streams, 20 idle long polls through fastl4 virtuals and a
// loop of HTTPS requests through the L7 VIP; the active node dies (links
// down, keepalived and daemon killed). Every fastl4 connection completes
// with its data intact, the long polls get their answers (sent by the
// member after the failover), no RST is seen on the client or the member
// for them, the longest stall of each is within 1.5 s, and the L7 VIP
// serves again within 1.5 s, from the other node.
//
// The virtuals mirror their flows and have no loose_init, and the
// client's ports are outside the SNAT range: the connections survive
// because the standby holds the active node's flows when it takes over.
// Recreating a flow from its next segment (loose_init) could not carry
// the long polls: the member speaks next, and its segment names only the
// floating SNAT address and port, never the client.
func TestPrivilegedHAUnplannedFailover(t *testing.T) {
	r, _ := startMirrorPair(t, true)
	p, nodes := r.p, r.nodes
	p.Client.Run(t, "sysctl", "-qw", "net.ipv4.ip_local_port_range=32768 39999")
	member := p.Members[0]
	serveLongPolls(t, p.Backend, netip.AddrPortFrom(member, pollPort))
	active := r.settled(t)
	t.Logf("node %d active", active)
	r.waitSynced(t, 1-active)
	if err := r.get(300 * time.Millisecond); err != nil {
		t.Fatalf("the L7 VIP does not serve before the failover: %v", err)
	}
	rsts := map[string]*rstCounter{"client": countRSTs(t, p.Client, echoPort, iperfPort, pollPort),
		"member": countRSTs(t, p.Backend, echoPort, iperfPort, pollPort)}

	var pingers []*pinger
	for i := range 50 {
		e, err := openEcho(p, r.l4VIP, 0)
		if err != nil {
			t.Fatalf("echo connection %d through the fastl4 VIP: %v", i, err)
		}
		defer e.c.Close()
		pingers = append(pingers, e.ping())
	}
	bulk := startIperf(t, p.Client, p.Backend, netip.AddrPortFrom(member, iperfPort), netip.AddrPortFrom(r.l4VIP, iperfPort), 2, 9*time.Second)
	polls := startLongPolls(p.Client, netip.AddrPortFrom(r.l4VIP, pollPort), 20, 5*time.Second)
	time.Sleep(2 * time.Second)

	killed := time.Now()
	nodes[active].die(t)
	back := r.l7Back(killed, 10*time.Second)
	t.Logf("L7 VIP served again %s after the active node died (-1: not within 10s)", back.Round(time.Millisecond))
	if back < 0 || back > 1500*time.Millisecond {
		t.Errorf("L7 VIP served again after %s, want within 1.5s", back)
	}
	if st, err := nodes[1-active].daemon.Status(); err != nil || st.HA == nil || st.HA.Role != "active" {
		t.Errorf("the surviving node's status: %+v, %v; want role active", st, err)
	}

	checkLongPolls(t, polls)
	checkIperf(t, bulk.end(), 1500*time.Millisecond)
	time.Sleep(time.Until(killed.Add(5 * time.Second)))
	checkPingers(t, pingers, 1500*time.Millisecond)
	for side, c := range rsts {
		if n := c.count(t); n != 0 {
			t.Errorf("%d RSTs on the fastl4 connections seen by the %s", n, side)
		}
	}
}

// l7Back sends HTTPS requests through the L7 VIP until one succeeds and
// returns how long after since that was, or -1 if none did within limit.
func (r *pairRun) l7Back(since time.Time, limit time.Duration) time.Duration {
	for n := 0; n < 1000 && time.Since(since) < limit; n++ {
		if err := r.get(300 * time.Millisecond); err == nil {
			return time.Since(since)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return -1
}

// checkPingers ends the echo loops: each must have echoed every line,
// with no stall longer than limit.
func checkPingers(t *testing.T, pingers []*pinger, limit time.Duration) {
	t.Helper()
	var worst time.Duration
	for i, pg := range pingers {
		n, stall, err := pg.end()
		worst = max(worst, stall)
		if err != "" {
			t.Errorf("echo connection %d after %d echoes: %s", i, n, err)
		} else if stall > limit {
			t.Errorf("echo connection %d stalled for %s, want within %s", i, stall.Round(time.Millisecond), limit)
		}
	}
	t.Logf("%d echo connections, longest stall %s", len(pingers), worst.Round(time.Millisecond))
}

// rstCounter counts, with nftables in one namespace, the TCP RSTs sent
// or received on given ports.
type rstCounter struct{ ns *lab.NS }

// countRSTs starts counting RSTs from or to ports in ns.
func countRSTs(t *testing.T, ns *lab.NS, ports ...int) *rstCounter {
	t.Helper()
	var set []string
	for _, p := range ports {
		set = append(set, strconv.Itoa(p))
	}
	ps := "{ " + strings.Join(set, ", ") + " }"
	ns.Run(t, "nft", "add table inet rstcount")
	ns.Run(t, "nft", "add counter inet rstcount rsts")
	for _, hook := range []string{"input", "output"} {
		ns.Run(t, "nft", fmt.Sprintf("add chain inet rstcount %s { type filter hook %s priority 0 ; }", hook, hook))
		for _, dir := range []string{"sport", "dport"} {
			ns.Run(t, "nft", fmt.Sprintf("add rule inet rstcount %s tcp flags & rst == rst tcp %s %s counter name rsts", hook, dir, ps))
		}
	}
	return &rstCounter{ns}
}

var nftPackets = regexp.MustCompile(`packets (\d+)`)

func (c *rstCounter) count(t *testing.T) int {
	t.Helper()
	m := nftPackets.FindStringSubmatch(c.ns.Run(t, "nft", "list counter inet rstcount rsts"))
	if m == nil {
		t.Fatalf("nft list counter: no packet count")
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// serveLongPolls runs fakefe's plain HTTP on addr in ns (its /longpoll
// answers after ?wait=).
func serveLongPolls(t *testing.T, ns *lab.NS, addr netip.AddrPort) {
	t.Helper()
	ln, err := ns.Listen("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go fakefe.New(fakefe.Options{Name: "fe01"}).Serve(ln, nil)
}

// startLongPolls opens n connections from ns to addr, each sending one
// GET /longpoll?wait=wait and reading the answer; each result (nil for
// the expected body) arrives on the channel.
func startLongPolls(ns *lab.NS, addr netip.AddrPort, n int, wait time.Duration) chan error {
	out := make(chan error, n)
	want := fmt.Sprintf("{\"waited\":%q}\n", wait.String())
	for range n {
		go func() { out <- longPoll(ns, addr, wait, want) }()
	}
	return out
}

// longPoll is one long poll on a connection of its own, bounded to
// wait+3s.
func longPoll(ns *lab.NS, addr netip.AddrPort, wait time.Duration, want string) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait+3*time.Second)
	defer cancel()
	c, err := ns.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	req, err := http.NewRequest("GET", "http://"+addr.String()+"/longpoll?wait="+wait.String(), nil)
	if err != nil {
		return err
	}
	if err := req.Write(c); err != nil {
		return fmt.Errorf("send long poll from %s: %w", c.LocalAddr(), err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return fmt.Errorf("long poll from %s: %w", c.LocalAddr(), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 || string(body) != want {
		return fmt.Errorf("long poll from %s: %s %q, %v; want 200 %q", c.LocalAddr(), resp.Status, body, err, want)
	}
	return nil
}

// checkLongPolls waits for the long polls: each must have its answer.
func checkLongPolls(t *testing.T, polls chan error) {
	t.Helper()
	n := 0
	for range cap(polls) {
		if err := <-polls; err != nil {
			n++
			t.Errorf("%v", err)
		}
	}
	t.Logf("%d long polls, %d without their answer", cap(polls), n)
}

// iperfRun is an iperf3 transfer from one namespace to a server in
// another.
type iperfRun struct {
	done chan iperfResult
}

// iperfResult is what `iperf3 -J --get-server-output` reports.
type iperfResult struct {
	err error
	out []byte
}

// startIperf starts an iperf3 server on srvAddr in srv and a client in
// cli sending streams streams to dst (a VIP in front of srvAddr) for dur,
// reporting every 0.1 s, both bounded to dur+20s.
func startIperf(t *testing.T, cli, srv *lab.NS, srvAddr, dst netip.AddrPort, streams int, dur time.Duration) *iperfRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dur+20*time.Second)
	t.Cleanup(cancel)
	s := srv.Command(ctx, "iperf3", "-s", "-1", "-J", "-i", "0.1", "-B", srvAddr.Addr().String(), "-p", strconv.Itoa(int(srvAddr.Port())))
	if err := s.Start(); err != nil {
		t.Fatalf("start iperf3 server: %v", err)
	}
	t.Cleanup(func() { s.Process.Kill(); s.Wait() })
	time.Sleep(200 * time.Millisecond) // listening
	r := &iperfRun{done: make(chan iperfResult, 1)}
	go func() {
		c := cli.Command(ctx, "iperf3", "-c", dst.Addr().String(), "-p", strconv.Itoa(int(dst.Port())), "-P", strconv.Itoa(streams),
			"-t", strconv.FormatFloat(dur.Seconds(), 'f', -1, 64), "-i", "0.1", "-b", "100M", "-J", "--get-server-output", "--connect-timeout", "3000")
		out, err := c.Output()
		r.done <- iperfResult{err, out}
	}()
	return r
}

func (r *iperfRun) end() iperfResult { return <-r.done }

// iperfIntervals is the part of iperf3's JSON the checks read.
type iperfIntervals struct {
	Error     string `json:"error"`
	Intervals []struct {
		Streams []struct {
			Socket  int     `json:"socket"`
			Seconds float64 `json:"seconds"`
			Bytes   float64 `json:"bytes"`
		} `json:"streams"`
		Sum struct {
			Bytes float64 `json:"bytes"`
		} `json:"sum"`
	} `json:"intervals"`
	End struct {
		SumSent struct {
			Bytes       float64 `json:"bytes"`
			Retransmits int     `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes float64 `json:"bytes"`
		} `json:"sum_received"`
	} `json:"end"`
	Server *iperfIntervals `json:"server_output_json"`
}

// longestStall is, per stream of the receiver's intervals, the longest
// run of intervals that moved nothing plus one interval (the gap between
// the last byte before and the first after lies within a run and a run
// plus two).
func (j *iperfIntervals) longestStall() map[int]time.Duration {
	run, worst := map[int]float64{}, map[int]time.Duration{}
	for _, iv := range j.Intervals {
		for _, s := range iv.Streams {
			if _, ok := worst[s.Socket]; !ok {
				worst[s.Socket] = 0
			}
			if s.Bytes > 0 {
				run[s.Socket] = 0
				continue
			}
			run[s.Socket] += s.Seconds
			worst[s.Socket] = max(worst[s.Socket], time.Duration((run[s.Socket]+s.Seconds)*float64(time.Second)))
		}
	}
	return worst
}

// checkIperf checks that the transfer completed, every byte sent was
// received, and no stream of the receiver stalled longer than limit.
func checkIperf(t *testing.T, r iperfResult, limit time.Duration) {
	t.Helper()
	var j iperfIntervals
	if err := json.Unmarshal(r.out, &j); err != nil || r.err != nil || j.Error != "" {
		t.Errorf("iperf3 through the fastl4 VIP: %v, %v, %q\n%s", r.err, err, j.Error, r.out)
		return
	}
	if j.Server == nil || len(j.Server.Intervals) == 0 {
		t.Errorf("iperf3 has no server output:\n%s", r.out)
		return
	}
	t.Logf("iperf3: %.0f bytes sent, %.0f received, %d retransmissions", j.End.SumSent.Bytes, j.End.SumReceived.Bytes, j.End.SumSent.Retransmits)
	if j.End.SumSent.Bytes == 0 || j.End.SumSent.Bytes != j.End.SumReceived.Bytes {
		t.Errorf("iperf3 sent %.0f bytes, the member received %.0f", j.End.SumSent.Bytes, j.End.SumReceived.Bytes)
	}
	for sock, stall := range j.Server.longestStall() {
		t.Logf("iperf3 stream (server socket %d): longest stall %s", sock, stall.Round(time.Millisecond))
		if stall > limit {
			t.Errorf("iperf3 stream (server socket %d) stalled for %s, want within %s", sock, stall.Round(time.Millisecond), limit)
		}
	}
}
