package ha

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Role is this node's part in the pair.
type Role string

// Roles, from keepalived's states of the sync group.
const (
	RoleUnknown Role = "unknown" // no word from keepalived yet
	RoleActive  Role = "active"  // MASTER: holds the shared addresses
	RoleStandby Role = "standby" // BACKUP
	RoleFault   Role = "fault"   // FAULT: cannot serve (check or link)
	RoleStopped Role = "stopped" // STOP: keepalived stopped
)

// Roles lists every role, for a metric with one series per role.
var Roles = []Role{RoleUnknown, RoleActive, RoleStandby, RoleFault, RoleStopped}

// ParseNotify reads one notify_fifo line of keepalived, e.g.
// `GROUP "edgeproxy" MASTER` or `INSTANCE "edgeproxy_ext" BACKUP 150`,
// and returns the role it gives the pair's sync group (or its external
// instance). ok is false for lines about anything else.
func ParseNotify(line string) (Role, bool) {
	f := strings.Fields(line)
	if len(f) < 3 {
		return "", false
	}
	name := strings.Trim(f[1], `"`)
	if !(f[0] == "GROUP" && name == SyncGroup || f[0] == "INSTANCE" && name == ExternalInstance) {
		return "", false
	}
	switch f[2] {
	case "MASTER":
		return RoleActive, true
	case "BACKUP":
		return RoleStandby, true
	case "FAULT":
		return RoleFault, true
	case "STOP":
		return RoleStopped, true
	}
	return "", false
}

// Follow reads keepalived's notify_fifo at path, creating the FIFO when
// it is missing, and calls set with each role keepalived announces, until
// ctx ends. The FIFO is held open for writing as well, so keepalived's
// restarts do not end the stream.
func Follow(ctx context.Context, path string, set func(Role)) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create directory of keepalived fifo: %w", err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create keepalived fifo %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open keepalived fifo %s: %w", path, err)
	}
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if r, ok := ParseNotify(sc.Text()); ok {
			set(r)
		}
	}
	f.Close()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("read keepalived fifo %s: %w", path, sc.Err())
}

// Held returns which of addrs the interface holds: the shared addresses
// on this node say it is active whatever keepalived last wrote.
func Held(ifname string, addrs []netip.Addr) ([]netip.Addr, error) {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("find interface %s: %w", ifname, err)
	}
	list, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", ifname, err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		for _, l := range list {
			if ip, ok := netip.AddrFromSlice(l.IP); ok && ip.Unmap() == a {
				out = append(out, a)
				break
			}
		}
	}
	return out, nil
}

// Running tells whether the interface is up and running (carrier), as
// keepalived requires of an instance's interface: one that is not puts
// the instance in FAULT.
func Running(ifname string) (bool, error) {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return false, fmt.Errorf("find interface %s: %w", ifname, err)
	}
	a := link.Attrs()
	return a.Flags&net.FlagUp != 0 && a.RawFlags&unix.IFF_RUNNING != 0, nil
}

// SetHold writes the file keepalived tracks: on, this node gives up the
// active role at once and takes it no more (FAULT); off, it may serve.
func SetHold(path string, on bool) error {
	v := "0\n"
	if on {
		v = "1\n"
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create directory of keepalived hold file: %w", err)
	}
	if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
		return fmt.Errorf("write keepalived hold file %s: %w", path, err)
	}
	return nil
}
