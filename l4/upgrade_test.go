package l4

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// buildVariant compiles bpf/fastl4.c with the Makefile's flags and the
// given -D flags into a temporary directory, and returns the object.
func buildVariant(t *testing.T, defines ...string) string {
	t.Helper()
	return compileProgram(t, filepath.Join("..", "bpf"), defines...)
}

// buildCommit compiles bpf/fastl4.c as it was at commit (every bpf/*.c
// and *.h of that commit), and returns the object.
func buildCommit(t *testing.T, commit string) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is absent: this test compiles an earlier build from the history")
	}
	out, err := exec.Command("git", "ls-tree", "--name-only", commit, "../bpf/").Output()
	if err != nil {
		t.Skipf("the history has no commit %s (a shallow clone?): %v", commit, err)
	}
	dir := t.TempDir()
	for _, name := range strings.Fields(string(out)) {
		if !strings.HasSuffix(name, ".c") && !strings.HasSuffix(name, ".h") {
			continue
		}
		src, err := exec.Command("git", "show", commit+":"+name).Output()
		if err != nil {
			t.Fatalf("read %s at %s: %v", name, commit, err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(name)), src, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return compileProgram(t, dir)
}

// compileProgram compiles fastl4.c of the directory src with the
// Makefile's flags and the given -D flags into a temporary directory, and
// returns the object.
func compileProgram(t *testing.T, src string, defines ...string) string {
	t.Helper()
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Skip("clang is absent: this test compiles a second build of bpf/fastl4.c")
	}
	multiarch := ""
	if out, err := exec.Command("gcc", "-print-multiarch").Output(); err == nil {
		multiarch = strings.TrimSpace(string(out))
	} else {
		var u unix.Utsname
		_ = unix.Uname(&u)
		multiarch = unix.ByteSliceToString(u.Machine[:]) + "-linux-gnu"
	}
	obj := filepath.Join(t.TempDir(), "fastl4_variant.o")
	args := append([]string{"-O2", "-g", "-Wall", "-Werror", "-mcpu=v3", "-I/usr/include/" + multiarch,
		"-target", "bpfel", "-c", filepath.Join(src, "fastl4.c"), "-o", obj}, defines...)
	if out, err := exec.Command(clang, args...).CombinedOutput(); err != nil {
		t.Fatalf("compile the program of %s with %v: %v\n%s", src, defines, err, out)
	}
	return obj
}

// useBuild makes the next Open load the program from obj ("" for the
// committed build).
func useBuild(t *testing.T, obj string) {
	if obj == "" {
		loadSpec = bpf.LoadFastL4
		return
	}
	loadSpec = func() (*ebpf.CollectionSpec, error) { return ebpf.LoadCollectionSpec(obj) }
	t.Cleanup(func() { loadSpec = bpf.LoadFastL4 })
}

// variantSpec is the collection of the build obj ("" the committed one).
func variantSpec(t *testing.T, obj string) *ebpf.CollectionSpec {
	t.Helper()
	load := bpf.LoadFastL4
	if obj != "" {
		load = func() (*ebpf.CollectionSpec, error) { return ebpf.LoadCollectionSpec(obj) }
	}
	spec, err := load()
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// variantLayout is the layout of the build obj ("" the committed one).
func variantLayout(t *testing.T, obj string) layout {
	t.Helper()
	l, err := specLayout(variantSpec(t, obj))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// pinState is what is pinned under a pin directory: the id of every map
// and the program of every link.
func pinState(t *testing.T, dir string) map[string]uint32 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint32{}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if m, err := ebpf.LoadPinnedMap(p, nil); err == nil {
			info, err := m.Info()
			m.Close()
			if err != nil {
				t.Fatal(err)
			}
			id, _ := info.ID()
			out[e.Name()] = uint32(id)
			continue
		}
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			t.Fatalf("pinned %s is neither a map nor a link: %v", p, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = uint32(info.Program)
	}
	return out
}

// pinnedValueSize is the value size of the pinned map name.
func pinnedValueSize(t *testing.T, dir, name string) uint32 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	return m.ValueSize()
}

// receiver is a member's end of a paced transfer: what it received and the
// longest wait between two reads.
type receiver struct {
	mu     sync.Mutex
	n      uint64
	maxGap time.Duration
}

func (r *receiver) serve(c net.Conn) {
	buf := make([]byte, 64<<10)
	var last time.Time
	for {
		n, err := c.Read(buf)
		now := time.Now()
		r.mu.Lock()
		r.n += uint64(n)
		if !last.IsZero() && now.Sub(last) > r.maxGap {
			r.maxGap = now.Sub(last)
		}
		r.mu.Unlock()
		last = now
		if err != nil {
			break
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = binary.Write(c, binary.BigEndian, r.n)
}

// send writes 16 KiB every 2 ms to vip until stop is closed (at most a
// minute), half-closes and returns what it sent and what the member
// counted, with the connection's retransmissions.
func send(ctx context.Context, lab *testnet.Lab, vip string, stop <-chan struct{}) (sent, counted uint64, retrans uint32, err error) {
	c, err := lab.Client.DialContext(ctx, "tcp", vip)
	if err != nil {
		return 0, 0, 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(90 * time.Second))
	buf := make([]byte, 16<<10)
	end := time.After(time.Minute)
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-end:
			break loop
		case <-time.After(2 * time.Millisecond):
		}
		n, err := c.Write(buf)
		sent += uint64(n)
		if err != nil {
			return sent, 0, 0, fmt.Errorf("write: %w", err)
		}
	}
	tc := c.(*net.TCPConn)
	if rc, err := tc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			if info, err := unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO); err == nil {
				retrans = info.Total_retrans
			}
		})
	}
	if err := tc.CloseWrite(); err != nil {
		return sent, 0, retrans, err
	}
	err = binary.Read(c, binary.BigEndian, &counted)
	return sent, counted, retrans, err
}

// trafficEnv is a lab whose fast path publishes a paced transfer
// (198.18.0.10:5002), a long poll (198.18.0.10:7100) and whoami
// (198.18.0.10:7000) of one member.
func trafficEnv(t *testing.T) *e2eEnv {
	e := newEnv(t, func(lab *testnet.Lab) *Spec {
		return testSpec(lab, fastl4("stream", "198.18.0.10:5002", "one4", 5002), fastl4("poll", "198.18.0.10:7100", "one4", 7100),
			fastl4("whoami", "198.18.0.10:7000", "one4", 7000))
	}, nil)
	x := &e2eEnv{env: e, whoErrs: make(chan error, 16)}
	x.serveWhoami(t, e.lab.Members4[0])
	x.start()
	return x
}

// traffic is a paced transfer and an idle long poll through the fast
// path of a trafficEnv.
type traffic struct {
	recv    receiver
	release chan struct{} // the member answers the long poll
	polled  chan error    // the member read the client's goodbye
	poll    net.Conn
	stop    chan struct{} // the transfer ends
	res     chan transfer
}

type transfer struct {
	sent, counted uint64
	retrans       uint32
	err           error
}

// startTraffic opens the long poll and starts the transfer.
func startTraffic(ctx context.Context, t *testing.T, x *e2eEnv) *traffic {
	tr := &traffic{release: make(chan struct{}), polled: make(chan error, 1), stop: make(chan struct{}), res: make(chan transfer, 1)}
	member := x.lab.Members4[0]
	x.serve(t, member, 5002, tr.recv.serve)
	x.serve(t, member, 7100, func(c net.Conn) {
		<-tr.release
		if _, err := io.WriteString(c, "done\n"); err != nil {
			tr.polled <- err
			return
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err == nil && line != "bye\n" {
			err = fmt.Errorf("member read %q, want bye", line)
		}
		tr.polled <- err
	})
	var err error
	if tr.poll, err = x.lab.Client.DialContext(ctx, "tcp", "198.18.0.10:7100"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.poll.Close() })
	go func() {
		s, c, r, err := send(ctx, x.lab, "198.18.0.10:5002", tr.stop)
		tr.res <- transfer{s, c, r, err}
	}()
	return tr
}

// finish completes the long poll and the transfer, and checks that both
// went through whole, the transfer never waiting a second.
func (tr *traffic) finish(t *testing.T, across string) {
	t.Helper()
	close(tr.release)
	_ = tr.poll.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(tr.poll).ReadString('\n')
	if err != nil || line != "done\n" {
		t.Fatalf("long poll across %s: %q, %v", across, line, err)
	}
	if _, err := io.WriteString(tr.poll, "bye\n"); err != nil {
		t.Fatalf("long poll across %s: %v", across, err)
	}
	if err := <-tr.polled; err != nil {
		t.Fatalf("long poll across %s: %v", across, err)
	}
	close(tr.stop)
	r := <-tr.res
	if r.err != nil {
		t.Fatalf("transfer across %s: %v (sent %d)", across, r.err, r.sent)
	}
	if r.sent == 0 || r.counted != r.sent {
		t.Fatalf("transfer across %s: member counted %d of %d bytes", across, r.counted, r.sent)
	}
	tr.recv.mu.Lock()
	gap := tr.recv.maxGap
	tr.recv.mu.Unlock()
	if gap > time.Second {
		t.Errorf("the transfer across %s stalled for %v", across, gap)
	}
	t.Logf("%d bytes across %s; longest wait %v, %d retransmissions", r.sent, across, gap, r.retrans)
}

// restart stops the control plane and opens it again from the build obj
// ("" the committed one), returning Open's error instead of failing.
func (x *e2eEnv) restart(t *testing.T, obj string) error {
	t.Helper()
	x.stop()
	if err := x.fp.Close(); err != nil {
		t.Fatal(err)
	}
	useBuild(t, obj)
	var err error
	x.do(func() {
		var fp *FastPath
		if fp, err = Open(x.opts); err == nil {
			x.fp = fp
		}
	})
	if err != nil {
		return err
	}
	spec := *x.spec
	spec.Options = x.opts
	x.do(func() {
		if err := x.fp.Apply(&spec); err != nil {
			t.Fatalf("apply: %v", err)
		}
	})
	x.start()
	return nil
}

func TestPrivilegedUpgradeKeepsFlows(t *testing.T) {
	testnet.RequireRoot(t)
	objB := buildVariant(t, "-DFLOW_VAL_TEST_PAD")
	x := trafficEnv(t)
	pins := x.opts.PinPath
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// An idle long poll and a paced transfer, opened by the committed
	// build (A).
	tr := startTraffic(ctx, t, x)
	time.Sleep(time.Second)
	sizeA := pinnedValueSize(t, pins, bpf.FastL4MapFlows4Tcp)

	// A failure part way leaves the old program and maps serving.
	for _, step := range []string{"copy", "swap"} {
		before := pinState(t, pins)
		migrateFault = func(s string) error {
			if s == step {
				return fmt.Errorf("injected failure at %s", s)
			}
			return nil
		}
		err := x.restart(t, objB)
		migrateFault = nil
		if err == nil || !strings.Contains(err.Error(), "injected failure") {
			t.Fatalf("upgrade failing at %s: Open returned %v", step, err)
		}
		if after := pinState(t, pins); !maps.Equal(before, after) {
			t.Fatalf("upgrade failing at %s changed the pins: %v, then %v", step, before, after)
		}
		if err := x.restart(t, ""); err != nil {
			t.Fatalf("restart the old build after a failed upgrade: %v", err)
		}
	}

	// The upgrade to B: the flows move into maps of B's layout.
	if err := x.restart(t, objB); err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	if sizeB := pinnedValueSize(t, pins, bpf.FastL4MapFlows4Tcp); sizeB != sizeA+8 {
		t.Fatalf("after the upgrade the pinned flow values are %d bytes, want B's %d", sizeB, sizeA+8)
	}
	time.Sleep(time.Second)

	// The downgrade to A is refused and changes nothing.
	before := pinState(t, pins)
	err := x.restart(t, "")
	la, lb := variantLayout(t, ""), variantLayout(t, objB)
	if lb.version != la.version+1 {
		t.Fatalf("the test build declares layout version %d, want one above the committed %d", lb.version, la.version)
	}
	if !errors.Is(err, ErrNewerPins) || !strings.Contains(err.Error(), fmt.Sprintf("layout version %d", lb.version)) ||
		!strings.Contains(err.Error(), fmt.Sprintf("up to %d", la.version)) {
		t.Fatalf("downgrade: Open returned %v, want %v naming versions %d and %d", err, ErrNewerPins, lb.version, la.version)
	}
	if after := pinState(t, pins); !maps.Equal(before, after) {
		t.Fatalf("the refused downgrade changed the pins: %v, then %v", before, after)
	}
	if err := x.restart(t, objB); err != nil {
		t.Fatalf("restart B: %v", err)
	}
	time.Sleep(time.Second)

	tr.finish(t, "two failed upgrades, the upgrade and a refused downgrade")
}

// layout1Commit is main's last commit with flow layout 1 (full keys in
// struct flow_val, LAYOUT_VERSION 1).
const layout1Commit = "8b64bca"
