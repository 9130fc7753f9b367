package health

import (
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// TestPrivilegedMonitorsThroughInternalNIC checks front ends in the
// backend namespace from the proxy namespace, over the internal NIC, on
// the External Web Site port: a member that only has its internal site
// (443) is down.
func TestPrivilegedMonitorsThroughInternalNIC(t *testing.T) {
	testnet.RequireRoot(t)
	lab := testnet.New(t, testnet.Options{Members: 2})
	ca := newCA(t, "internal-ca")
	cert := ca.leaf(t, "fe01.corp.example.com", "fe02.corp.example.com")

	var mu sync.Mutex
	sources := map[netip.Addr]bool{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			mu.Lock()
			sources[ap.Addr().Unmap()] = true
			mu.Unlock()
		}
		w.Header().Set("WWW-Authenticate", "NTLM")
		w.WriteHeader(http.StatusUnauthorized)
	})
	serve := func(addr netip.AddrPort) *http.Server {
		t.Helper()
		ln, err := lab.Backend.Listen("tcp", addr.String())
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
		go hs.Serve(tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
		t.Cleanup(func() { hs.Close() })
		return hs
	}
	fe01v4 := serve(netip.AddrPortFrom(lab.Members4[0], 4443))
	serve(netip.AddrPortFrom(lab.Members6[0], 4443))
	serve(netip.AddrPortFrom(lab.Members4[1], 443)) // fe02: internal site only

	mon := fastMonitor(MonitorHTTPS, 4443)
	mon.CA = ca.pemFile
	mon.AuthAlive = true
	mon.Path = "/"
	c := New(Options{Dial: lab.Proxy.DialContext})
	if err := c.Update([]Target{
		{Pool: "fe4", Member: "fe01.corp.example.com", Addr: lab.Members4[0]},
		{Pool: "fe4", Member: "fe02.corp.example.com", Addr: lab.Members4[1]},
		{Pool: "fe6", Member: "fe01.corp.example.com", Addr: lab.Members6[0]},
	}, map[string]Monitor{"fe4": mon, "fe6": mon}); err != nil {
		t.Fatal(err)
	}
	events := run(t, c)
	first := map[string]Event{}
	timeout := time.After(deadline)
	for len(first) < 3 {
		select {
		case ev := <-events:
			k := ev.Pool + "/" + ev.Member
			if _, ok := first[k]; !ok {
				first[k] = ev
			}
		case <-timeout:
			t.Fatalf("events within %s: %+v", deadline, first)
		}
	}
	for k, want := range map[string]State{"fe4/fe01.corp.example.com": StateUp, "fe6/fe01.corp.example.com": StateUp, "fe4/fe02.corp.example.com": StateDown} {
		if first[k].State != want {
			t.Errorf("%s: first change %+v, want %s", k, first[k], want)
		}
	}
	if r := first["fe4/fe02.corp.example.com"].Reason; !strings.Contains(r, "4443") || !strings.Contains(r, "refused") {
		t.Errorf("fe02 reason %q, want a refused connection on 4443", r)
	}
	mu.Lock()
	if len(sources) != 2 || !sources[lab.IntAddr4] || !sources[lab.IntAddr6] {
		t.Errorf("checks came from %v, want the internal NIC's addresses %s and %s", sources, lab.IntAddr4, lab.IntAddr6)
	}
	mu.Unlock()

	// fe01 stops answering on IPv4: down, fe01 on IPv6 stays up.
	fe01v4.Close()
	ev := waitEvent(t, events, "fe01.corp.example.com", StateDown)
	if ev.Pool != "fe4" {
		t.Fatalf("down event %+v, want the IPv4 pool", ev)
	}
	if up := c.Up("fe6"); len(up) != 1 {
		t.Fatalf("Up(fe6) = %+v", up)
	}
}
