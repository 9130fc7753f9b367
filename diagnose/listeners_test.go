package diagnose

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgeproxy/edgeproxy/admin"
	"github.com/edgeproxy/edgeproxy/config"
)

func TestParseProcNetTCP(t *testing.T) {
	v4 := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0A0012C6:01BB 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 4444 1 0000000000000000 100 0 0 10 0
`
	v6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: B80D0120000001000000000010000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 100 0 0 10 0
`
	got, err := parseProcNetTCP([]byte(v4))
	if err != nil {
		t.Fatal(err)
	}
	want := []socket{
		{Local: netip.MustParseAddrPort("127.0.0.1:8080"), Inode: 4242},
		{Local: netip.MustParseAddrPort("0.0.0.0:80"), Inode: 4444, UID: 33},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("v4: got %v, want %v", got, want)
	}
	got, err = parseProcNetTCP([]byte(v6))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Local != netip.MustParseAddrPort("[2001:db8:1::10]:443") {
		t.Errorf("v6: got %v", got)
	}
	wild6 := socket{Local: netip.MustParseAddrPort("[::]:443")}
	if !wild6.accepts(netip.MustParseAddrPort("198.18.0.10:443")) || wild6.accepts(netip.MustParseAddrPort("198.18.0.10:80")) {
		t.Error("a v6 wildcard socket accepts IPv4 on its port only")
	}
	wild4 := socket{Local: netip.MustParseAddrPort("0.0.0.0:443")}
	if wild4.accepts(netip.MustParseAddrPort("[2001:db8:1::10]:443")) {
		t.Error("a v4 wildcard socket does not accept IPv6")
	}
}

// listenersConfig publishes addr in mode on the loopback interface.
func listenersConfig(mode config.Mode, addr netip.AddrPort) *config.Config {
	return &config.Config{
		Network: config.Network{
			External: config.NIC{Interface: "lo"},
			Internal: config.NIC{Interface: "lo"},
		},
		FastPath: config.FastPath{PinPath: filepath.Join(os.TempDir(), "edgeproxy-diagnose-no-such-pin-path")},
		Virtuals: []*config.Virtual{{Name: "v", Mode: mode, Listen: addr, Pool: "p", Port: 4443}},
	}
}

func freePort(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func TestListeners(t *testing.T) {
	t.Run("bound by the proxy", func(t *testing.T) {
		ln := listen(t, "127.0.0.1:0")
		addr := netip.MustParseAddrPort(ln.Addr().String())
		fs := runCheck(t, &Env{Config: listenersConfig(config.ModeHTTPS, addr), IsProxy: selfPID}, Listeners)
		expectAtMost(t, fs, Pass)
		expect(t, fs, "VIP 127.0.0.1", Pass, "on lo")
		expect(t, fs, "v "+addr.String(), Pass, fmt.Sprintf("(pid %d) on %s", os.Getpid(), addr))
	})

	t.Run("nothing listens", func(t *testing.T) {
		addr := freePort(t)
		fs := runCheck(t, &Env{Config: listenersConfig(config.ModeHTTPS, addr), IsProxy: selfPID}, Listeners)
		expect(t, fs, "v "+addr.String(), Fail, "nothing listens on "+addr.String(), "edgeproxy run")
	})

	t.Run("another process owns the port", func(t *testing.T) {
		py, err := exec.LookPath("python3")
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("needs python3")
			}
			t.Skip("needs python3")
		}
		addr := freePort(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, py, "-c", fmt.Sprintf(
			"import socket,sys,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',%d))\ns.listen()\nprint('ok',flush=True)\ntime.sleep(60)\n", addr.Port()))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		buf := make([]byte, 3)
		if _, err := out.Read(buf); err != nil {
			t.Fatalf("python3 did not listen: %v", err)
		}
		fs := runCheck(t, &Env{Config: listenersConfig(config.ModeHTTPS, addr), IsProxy: selfPID}, Listeners)
		expect(t, fs, "v "+addr.String(), Fail, "owned by another process", "python3 (pid "+strconv.Itoa(cmd.Process.Pid)+")")
	})

	t.Run("fastl4 without XDP", func(t *testing.T) {
		addr := freePort(t)
		fs := runCheck(t, &Env{Config: listenersConfig(config.ModeFastL4, addr), IsProxy: selfPID}, Listeners)
		expect(t, fs, "XDP lo", Fail, "no XDP program attached to lo")
		expect(t, fs, "pinned maps", Fail, "not pinned")
		expect(t, fs, "v "+addr.String(), Fail, "no XDP program on lo")
	})

	t.Run("VIP not on this host", func(t *testing.T) {
		cfg := listenersConfig(config.ModeHTTPS, netip.MustParseAddrPort("198.51.100.77:443"))
		fs := runCheck(t, &Env{Config: cfg, IsProxy: selfPID}, Listeners)
		expect(t, fs, "VIP 198.51.100.77", Fail, "not an address of this host", "ip addr add 198.51.100.77/32 dev lo")
	})
}

// edgeproxy's daemon is the process behind the admin endpoint, whatever
// its name (this test binary is not called edgeproxy): its listeners
// pass; with no admin endpoint answering, they are another process's.
func TestListenersKnowTheDaemonByItsAdminEndpoint(t *testing.T) {
	ln := listen(t, "127.0.0.1:0")
	addr := netip.MustParseAddrPort(ln.Addr().String())
	adminLn := listen(t, "127.0.0.1:0")
	srv := admin.New(admin.Options{Listener: adminLn, Version: "test",
		Status: func(context.Context) (*admin.Status, error) {
			return &admin.Status{Version: "test", Started: time.Now()}, nil
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	cfg := listenersConfig(config.ModeHTTPS, addr)
	cfg.Admin.Listen = adminLn.Addr().String()
	fs := runCheck(t, &Env{Config: cfg}, Listeners)
	expect(t, fs, "v "+addr.String(), Pass, fmt.Sprintf("(pid %d) on %s", os.Getpid(), addr))

	cfg.Admin.Listen = freePort(t).String()
	fs = runCheck(t, &Env{Config: cfg}, Listeners)
	expect(t, fs, "v "+addr.String(), Fail, "owned by another process", "does not answer /status", "is edgeproxy running?")
}
