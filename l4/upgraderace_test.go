package l4

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/edgeproxy/edgeproxy/bpf"
	"github.com/edgeproxy/edgeproxy/internal/testnet"
)

// runWith runs prog on a frame as e.run does, from the proxy namespace
// (the NICs looked up before).
func (e *env) runWith(t *testing.T, prog *ebpf.Program, in []byte) (uint32, parsed) {
	t.Helper()
	nic := e.ingressOf(in)
	ret, out, err := runProgram(prog, e.toNIC(in, nic), e.nic(nic).ifindex)
	if err != nil {
		t.Errorf("run program: %v", err)
	}
	p, _ := parseFrame(out)
	return ret, p
}

// An upgrade to a build of another flow layout copies the tables, then
// swaps the program, then copies again what the old program did
// meanwhile. A reset connection opened anew on its client port, and one
// that ended, after the first copy, are as the old program left them once
// the new one serves: the new connection is not reaped at the close
// timeout of the reset one, the ended one forwards no more. A handshake
// the old program began and the new one completed stays completed.
func TestPrivilegedUpgradeLatePassFollowsTheOldTables(t *testing.T) {
	objB := buildVariant(t, "-DFLOW_VAL_TEST_PAD")
	e := progEnv(t, nil, fastl4("short", "198.18.0.10:9443", "fe4", 4443, func(v *Virtual) {
		v.CloseTimeout = time.Second
		v.ResetOnTimeout = false
	}))
	e.resolve()
	e.nic(testnet.ExtIf)
	e.nic(testnet.IntIf)
	vip := ap(vip4, 9443)
	reopened, ended, promoted := ap(client4, 46300), ap(client4, 46301), ap(client4, 46302)
	establish(t, e, reopened, vip)
	endedMember, endedSnat := establish(t, e, ended, vip)
	toMember, toClient := e.hops()
	expectRedirect(t, e, frame{src: reopened, dst: vip, proto: protoTCP, flags: flagRST, seq: 101}.bytes(), toMember)
	old, err := e.fp.objs.EdgeproxyFastl4.Clone()
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()

	// A handshake the old program begins and the new one ends.
	p := expectRedirect(t, e, frame{src: promoted, dst: vip, proto: protoTCP, flags: flagSYN, seq: 100}.bytes(), toMember)
	pMember, pSnat := p.dst, p.src
	expectRedirect(t, e, frame{src: pMember, dst: pSnat, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 101}.bytes(), toClient)

	var member, snat netip.AddrPort
	migrateFault = func(step string) error {
		if step == "swap" {
			// The new program serves: it completes the handshake the
			// old one began, moving it out of the half-open table.
			ret, _ := e.runWith(t, e.linkedProgram(t), frame{src: promoted, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes())
			if ret != xdpRedirect {
				t.Errorf("the new program's end of the handshake of %s: verdict %d", promoted, ret)
			}
			return nil
		}
		if step != "copy" {
			return nil
		}
		// Between the copies the old program serves on: a new handshake
		// on the reset connection's client port.
		ret, p := e.runWith(t, old, frame{src: reopened, dst: vip, proto: protoTCP, flags: flagSYN, seq: 100}.bytes())
		member, snat = p.dst, p.src
		ret2, _ := e.runWith(t, old, frame{src: member, dst: snat, proto: protoTCP, flags: flagSYN | flagACK, seq: 900, ack: 101}.bytes())
		ret3, _ := e.runWith(t, old, frame{src: reopened, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes())
		if ret != xdpRedirect || ret2 != xdpRedirect || ret3 != xdpRedirect {
			t.Errorf("the old program's new handshake: verdicts %d %d %d, want redirects", ret, ret2, ret3)
		}
		// The other connection ends (flows kill, the reaper).
		tcp, err := ebpf.LoadPinnedMap(filepath.Join(e.opts.PinPath, bpf.FastL4MapFlows4Tcp), nil)
		if err != nil {
			return err
		}
		defer tcp.Close()
		for _, k := range []bpf.FastL4FlowKey{flowKey(ended, vip, protoTCP), flowKey(endedMember, endedSnat, protoTCP)} {
			if err := tcp.Delete(key4(&k)); err != nil {
				return err
			}
		}
		return nil
	}
	t.Cleanup(func() { migrateFault = nil })
	e.fp.Close()
	useBuild(t, objB)
	e.open()
	migrateFault = nil
	if !member.IsValid() {
		t.Fatal("the upgrade to the test build copied no flow table")
	}

	time.Sleep(1500 * time.Millisecond) // past the reset connection's close timeout
	e.do(func() {
		if err := e.fp.collect(); err != nil {
			t.Fatal(err)
		}
	})
	ret, out := e.run(frame{src: reopened, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes())
	if p, err := parseFrame(out); ret != xdpRedirect || err != nil || p.src != snat || p.dst != member {
		t.Errorf("after the upgrade the new connection of %s: verdict %d, %v -> %v (%v), want forwarded %s -> %s", reopened, ret, p.src, p.dst, err, snat, member)
	}
	ret, out = e.run(frame{src: member, dst: snat, proto: protoTCP, flags: flagACK, seq: 901, ack: 101}.bytes())
	if p, err := parseFrame(out); ret != xdpRedirect || err != nil || p.dst != reopened {
		t.Errorf("after the upgrade the member's answer to %s: verdict %d, to %v (%v)", reopened, ret, p.dst, err)
	}
	if ret, _ := e.run(frame{src: ended, dst: vip, proto: protoTCP, flags: flagACK, seq: 101, ack: 901}.bytes()); ret == xdpRedirect {
		t.Errorf("after the upgrade the connection of %s, ended before the swap, forwards again", ended)
	}
	if p := expectRedirect(t, e, frame{src: pMember, dst: pSnat, proto: protoTCP, flags: flagACK, seq: 901, ack: 101}.bytes(), toClient); p.dst != promoted {
		t.Errorf("the member's answer to %s, whose handshake ended under the new program, goes to %s", promoted, p.dst)
	}
	half, err := ebpf.LoadPinnedMap(filepath.Join(e.opts.PinPath, bpf.FastL4MapHalfOpen), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	var v []byte
	if k := flowKey(promoted, vip, protoTCP); half.Lookup(&k, &v) == nil {
		t.Errorf("the handshake of %s, promoted by the new program, is back in the half-open table", promoted)
	}
}

// linkedProgram is the program the pinned link of the external NIC runs.
func (e *env) linkedProgram(t *testing.T) *ebpf.Program {
	t.Helper()
	l, err := link.LoadPinnedLink(filepath.Join(e.opts.PinPath, "link_"+testnet.ExtIf), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
