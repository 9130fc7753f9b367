package l7

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Reverse-proxy configurations of the peers as a Skype deployment
// typically writes them: the management applications refused by a
// case-insensitive prefix, everything else passed to the member as it
// came. %[1]s is the listen address, %[2]s the member, %[3]s a
// directory of the test's own, %[4]s a second listen address for HTTP/2
// with prior knowledge (h2c).
const (
	haproxyPathConfig = `global
    maxconn 256
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend web
    bind %[1]s
    bind %[4]s proto h2
    http-request deny if { path_beg -i /cscp /ocspowershell /rgsconfig }
    default_backend fe
backend fe
    server fe01 %[2]s
`
	nginxPathConfig = `daemon off;
master_process off;
worker_processes 1;
pid %[3]s/nginx.pid;
error_log %[3]s/error.log;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[3]s/body;
    proxy_temp_path %[3]s/proxy;
    fastcgi_temp_path %[3]s/fastcgi;
    uwsgi_temp_path %[3]s/uwsgi;
    scgi_temp_path %[3]s/scgi;
    server {
        listen %[1]s;
        listen %[4]s http2;
        location ~* ^/(cscp|ocspowershell|rgsconfig) { return 403; }
        location / { proxy_pass http://%[2]s; proxy_set_header Host $host; }
    }
}
`
)

// startPeerProxy runs haproxy or nginx on two free loopback ports in
// front of member and returns its HTTP/1.1 and h2c addresses, or "" when
// the program is missing (outside CI).
func startPeerProxy(t *testing.T, name, member string) (addr, h2c string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is needed: %v", name, err)
		}
		t.Logf("%s missing: left out of the comparison", name)
		return "", ""
	}
	addr, h2c = freeLoopbackAddr(t), freeLoopbackAddr(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, name+".conf")
	var args []string
	switch name {
	case "haproxy":
		writeFile(t, cfg, fmt.Appendf(nil, haproxyPathConfig, addr, member, dir, h2c))
		args = []string{"-db", "-f", cfg}
	default:
		writeFile(t, cfg, fmt.Appendf(nil, nginxPathConfig, addr, member, dir, h2c))
		args = []string{"-p", dir, "-c", cfg}
	}
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for range 100 {
		if c, err := net.DialTimeout("tcp", h2c, time.Second); err == nil {
			c.Close()
			return addr, h2c
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not listen on %s: %s", name, h2c, out.String())
	return "", ""
}

// freeLoopbackAddr is a loopback address with a port free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
