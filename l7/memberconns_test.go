package l7

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// CloseMember ends a request waiting for the member's response with a
// 502, and closes a client connection pinned to the member by NTLM.
func TestCloseMemberEndsItsRequestsAndPins(t *testing.T) {
	e := newEnv(t, envOptions{users: testUsers, members: 1})
	const host = "webext.example.com"
	id := memberKey{Pool: "sfb-fe", Addr: e.members[0].addr}

	pinned := e.dialTLS(host)
	authenticate(t, pinned, host, "/CertProv/CertProvisioningService.svc", "alice")

	poll := e.dialTLS(host)
	served := e.members[0].fe.Requests()
	status := make(chan int, 1)
	go func() {
		res, _, err := poll.raw("GET /longpoll?wait=60s HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
		if err != nil {
			status <- 0
			return
		}
		status <- res.StatusCode
	}()
	waitFor(t, func() bool { return e.members[0].fe.Requests() > served })

	if n := e.proxy.CloseMember(id); n < 2 {
		t.Fatalf("CloseMember closed %d connections, want the long poll's and the pinned ones", n)
	}
	select {
	case code := <-status:
		if code != 502 {
			t.Fatalf("long poll to the closed member: %d, want 502 (0: no response)", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll to the closed member still runs 10s after CloseMember")
	}
	pinned.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := pinned.c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) || err == nil {
		t.Fatalf("the client connection pinned to the closed member is still open: %v", err)
	} else if !errors.Is(err, io.EOF) {
		t.Logf("pinned client connection ended: %v", err)
	}
	waitFor(t, func() bool { return openUpstream(e) == 0 })
}
