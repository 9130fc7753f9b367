package diagnose

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// tcpListen is the TCP_LISTEN state in /proc/net/tcp.
const tcpListen = 0x0A

// socket is one listening TCP socket of the proxy host.
type socket struct {
	Local netip.AddrPort
	Inode uint64
	UID   int
}

// owner is the process holding a socket.
type owner struct {
	PID  int
	Comm string
}

func (o owner) String() string { return fmt.Sprintf("%s (pid %d)", o.Comm, o.PID) }

// listeningSockets reads the TCP sockets in LISTEN state from the proxy
// host's namespace (/proc/thread-self/net/tcp and tcp6).
func (e *Env) listeningSockets() ([]socket, error) {
	var out []socket
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := e.readNetFile("/proc/thread-self/net/" + f)
		if err != nil {
			if f == "tcp6" && os.IsNotExist(err) {
				continue // IPv6 disabled
			}
			return nil, fmt.Errorf("read listening sockets: %w", err)
		}
		socks, err := parseProcNetTCP(b)
		if err != nil {
			return nil, fmt.Errorf("read listening sockets from /proc/net/%s: %w", f, err)
		}
		out = append(out, socks...)
	}
	return out, nil
}

// parseProcNetTCP parses the format of /proc/net/tcp{,6}, keeping the
// sockets in LISTEN state.
func parseProcNetTCP(b []byte) ([]socket, error) {
	var out []socket
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		st, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("parse state %q: %w", f[3], err)
		}
		if st != tcpListen {
			continue
		}
		local, err := parseHexAddrPort(f[1])
		if err != nil {
			return nil, err
		}
		uid, _ := strconv.Atoi(f[7])
		inode, _ := strconv.ParseUint(f[9], 10, 64)
		out = append(out, socket{Local: local, Inode: inode, UID: uid})
	}
	return out, sc.Err()
}

// parseHexAddrPort parses "0100007F:1F90": the address as 32-bit words
// in host byte order (little endian here), the port big endian.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	as, ps, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("parse socket address %q: no port", s)
	}
	raw, err := hex.DecodeString(as)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("parse socket address %q: bad address", s)
	}
	for i := 0; i < len(raw); i += 4 {
		w := binary.LittleEndian.Uint32(raw[i:])
		binary.BigEndian.PutUint32(raw[i:], w)
	}
	port, err := strconv.ParseUint(ps, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("parse socket address %q: bad port", s)
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a, uint16(port)), nil
}

// accepts reports whether a listening socket receives connections to
// dst: same port and the same address or a wildcard (a v6 wildcard also
// takes IPv4 unless it is v6-only, which /proc does not tell).
func (s socket) accepts(dst netip.AddrPort) bool {
	if s.Local.Port() != dst.Port() {
		return false
	}
	la := s.Local.Addr()
	if la.Unmap() == dst.Addr().Unmap() {
		return true
	}
	if la.IsUnspecified() {
		return la.Is6() || dst.Addr().Is4()
	}
	return false
}

// owner finds the process holding a socket by its inode, scanning the
// file descriptors under /proc once per run.
func (e *Env) owner(inode uint64) (owner, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.ownersOK {
		e.owners = scanSocketOwners(e.procDir())
		e.ownersOK = true
	}
	o, ok := e.owners[inode]
	return o, ok
}

func scanSocketOwners(proc string) map[uint64]owner {
	out := map[uint64]owner{}
	ents, err := os.ReadDir(proc)
	if err != nil {
		return out
	}
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(filepath.Join(proc, d.Name(), "fd"))
		if err != nil {
			continue
		}
		var comm string
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join(proc, d.Name(), "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(l, "socket:[") {
				continue
			}
			inode, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]"), 10, 64)
			if err != nil {
				continue
			}
			if _, seen := out[inode]; seen {
				continue
			}
			if comm == "" {
				b, _ := os.ReadFile(filepath.Join(proc, d.Name(), "comm"))
				comm = strings.TrimSpace(string(b))
			}
			out[inode] = owner{PID: pid, Comm: comm}
		}
	}
	return out
}
