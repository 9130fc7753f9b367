package l4

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrPinsBusy means another process owns the pin directory.
var ErrPinsBusy = errors.New("pinned fast path state in use")

// PinLock is the exclusive ownership of a pin directory: an flock on the
// directory itself (the BPF file system holds no regular file), which the
// kernel releases when its holder exits. Only the holder changes the
// pinned maps and links.
type PinLock struct {
	dir string
	f   *os.File
}

// LockPins creates the pin directory if needed and takes its lock. When
// another process holds it, the error names that process.
func LockPins(dir string) (*PinLock, error) {
	if dir == "" {
		dir = DefaultPinPath
	}
	if err := os.MkdirAll(dir, 0o700); errors.Is(err, unix.EROFS) {
		return nil, fmt.Errorf("create pin directory: %w (under systemd, ProtectKernelTunables= makes /sys/fs/bpf read-only: "+
			"create %s before the start, ExecStartPre=+/usr/bin/mkdir -p -m 0700 %s, and list it in ReadWritePaths=)", err, dir, dir)
	} else if err != nil {
		return nil, fmt.Errorf("create pin directory: %w (is the BPF file system mounted on /sys/fs/bpf?)", err)
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open pin directory: %w", err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		holder := lockHolder(f)
		f.Close()
		return nil, fmt.Errorf("lock pin directory %s: %w by %s: stop it first, or give this one another fastpath.pin_path", dir, ErrPinsBusy, holder)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock pin directory %s: %w", dir, err)
	}
	return &PinLock{dir: dir, f: f}, nil
}

// Dir is the locked pin directory.
func (l *PinLock) Dir() string { return l.dir }

// Release gives the pin directory up (the pinned state stays).
func (l *PinLock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// lockHolder names the process holding the flock on f, from /proc/locks.
func lockHolder(f *os.File) string {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "another process"
	}
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	locks, err := os.Open("/proc/locks")
	if err != nil {
		return "another process"
	}
	defer locks.Close()
	s := bufio.NewScanner(locks)
	for s.Scan() {
		// 1: FLOCK  ADVISORY  WRITE 9507 00:27:13124741 0 EOF
		fields := strings.Fields(s.Text())
		if len(fields) >= 6 && fields[1] == "FLOCK" && fields[5] == id {
			if pid, err := strconv.Atoi(fields[4]); err == nil {
				return fmt.Sprintf("process %d", pid)
			}
		}
	}
	return "another process"
}
