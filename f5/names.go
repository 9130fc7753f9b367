package f5

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// fullPath makes a reference absolute: "/Common/x" stays, "x" is taken
// relative to the folder of the object that refers to it.
func fullPath(folder, name string) string {
	if strings.HasPrefix(name, "/") {
		return name
	}
	if folder == "" {
		folder = "/Common"
	}
	return folder + "/" + name
}

// folderOf is the folder part of a full path ("/Common/app.app/x" →
// "/Common/app.app").
func folderOf(path string) string {
	i := strings.LastIndexByte(path, '/')
	if i <= 0 {
		return "/Common"
	}
	return path[:i]
}

// baseName is the last element of a path.
func baseName(path string) string {
	return path[strings.LastIndexByte(path, '/')+1:]
}

// services maps the service names tmsh prints in place of port numbers
// (from the BIG-IP /etc/services) to ports.
var services = map[string]uint16{
	"any": 0, "ftp-data": 20, "ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25,
	"domain": 53, "gopher": 70, "finger": 79, "http": 80, "www": 80,
	"kerberos": 88, "pop3": 110, "sunrpc": 111, "nntp": 119, "ntp": 123,
	"netbios-ns": 137, "netbios-dgm": 138, "netbios-ssn": 139, "imap": 143,
	"snmp": 161, "snmptrap": 162, "bgp": 179, "irc": 194, "ldap": 389,
	"https": 443, "microsoft-ds": 445, "kpasswd": 464, "isakmp": 500,
	"syslog": 514, "printer": 515, "rtsp": 554, "submission": 587,
	"ldaps": 636, "ftps-data": 989, "ftps": 990, "telnets": 992,
	"imaps": 993, "ircs": 994, "pop3s": 995, "ms-sql-s": 1433,
	"ms-sql-m": 1434, "radius": 1812, "radius-acct": 1813, "nfs": 2049,
	"mysql": 3306, "ms-wbt-server": 3389, "stun": 3478, "pharos": 4443,
	"sip": 5060, "sip-tls": 5061, "sips": 5061, "postgresql": 5432,
	"xmpp-client": 5222, "xmpp-server": 5269, "http-alt": 8080,
	"webcache": 8080, "pcsync-https": 8443, "tproxy": 8081,
}

// parsePort reads a port number or service name.
func parsePort(s string) (uint16, error) {
	if n, err := strconv.ParseUint(s, 10, 16); err == nil {
		return uint16(n), nil
	}
	if p, ok := services[s]; ok {
		return p, nil
	}
	return 0, fmt.Errorf("unknown port or service name %q (use a number)", s)
}

// addr is an address as tmsh writes it: "10.0.0.1", "10.0.0.1%2",
// "any", "any6", "2001:db8::1".
type addr struct {
	IP       netip.Addr
	RD       string // route domain ("" for none)
	Wildcard bool   // any / any6 / 0.0.0.0 / ::
}

func parseAddr(s string) (addr, error) {
	var a addr
	if i := strings.IndexByte(s, '%'); i >= 0 {
		a.RD = s[i+1:]
		s = s[:i]
	}
	switch s {
	case "any", "0.0.0.0":
		a.IP, a.Wildcard = netip.IPv4Unspecified(), true
		return a, nil
	case "any6", "::":
		a.IP, a.Wildcard = netip.IPv6Unspecified(), true
		return a, nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return a, fmt.Errorf("not an IP address: %q", s)
	}
	a.IP = ip.Unmap()
	return a, nil
}

// splitHostPort splits a destination or member name: "10.0.0.1:443",
// "10.0.0.1%2:https", "fe01:4443", "2001:db8::10.443", "any6.any".
// The host part may be an address or a name.
func splitHostPort(s string) (host, port string, err error) {
	// IPv6 uses '.' before the port; IPv4 and names use ':'.
	if strings.Count(s, ":") > 1 || strings.HasPrefix(s, "any6") {
		i := strings.LastIndexByte(s, '.')
		if i < 0 {
			return "", "", fmt.Errorf("no port in %q (IPv6 is written address.port)", s)
		}
		return s[:i], s[i+1:], nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", fmt.Errorf("no port in %q (expected address:port)", s)
	}
	return s[:i], s[i+1:], nil
}

// parsePrefix reads a self IP or route network: "10.0.0.1/24",
// "10.0.0.1%1/24", "default", "default-inet6".
func parsePrefix(s string) (netip.Prefix, string, error) {
	switch s {
	case "default":
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0), "", nil
	case "default-inet6":
		return netip.PrefixFrom(netip.IPv6Unspecified(), 0), "", nil
	}
	rd := ""
	if i := strings.IndexByte(s, '%'); i >= 0 {
		j := strings.IndexByte(s[i:], '/')
		if j < 0 {
			rd = s[i+1:]
			s = s[:i]
		} else {
			rd = s[i+1 : i+j]
			s = s[:i] + s[i+j:]
		}
	}
	if !strings.Contains(s, "/") {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, rd, fmt.Errorf("not an address or prefix: %q", s)
		}
		return netip.PrefixFrom(ip, ip.BitLen()), rd, nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, rd, fmt.Errorf("not a prefix: %q", s)
	}
	return p, rd, nil
}

// parseMaskBits turns "255.255.255.0" or "ffff:ffff::" into a bit count.
func parseMaskBits(s string) (int, bool) {
	if s == "any" || s == "any6" {
		return 0, true
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return 0, false
	}
	b := ip.AsSlice()
	bits, seenZero := 0, false
	for _, x := range b {
		for i := 7; i >= 0; i-- {
			if x&(1<<i) != 0 {
				if seenZero {
					return 0, false
				}
				bits++
			} else {
				seenZero = true
			}
		}
	}
	return bits, true
}
