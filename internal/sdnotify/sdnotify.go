// Package sdnotify tells systemd about the daemon's state through the
// datagram socket NOTIFY_SOCKET names (Type=notify services): READY=1,
// RELOADING=1 with MONOTONIC_USEC, STOPPING=1. Without NOTIFY_SOCKET it
// does nothing.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Messages systemd understands.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Reloading is RELOADING=1 with the monotonic time systemd needs to tell
// this reload from an earlier one.
func Reloading() string {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
}

// Status is a free-form STATUS= line systemctl status shows.
func Status(s string) string { return "STATUS=" + s }

// Notify sends the lines to NOTIFY_SOCKET (a path, or @name for the
// abstract namespace); it does nothing when the variable is unset.
func Notify(lines ...string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify systemd: open NOTIFY_SOCKET: %w", err)
	}
	defer c.Close()
	msg := ""
	for _, l := range lines {
		msg += l + "\n"
	}
	if _, err := c.Write([]byte(msg)); err != nil {
		return fmt.Errorf("notify systemd: %w", err)
	}
	return nil
}
