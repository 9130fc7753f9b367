package netcfg

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// IPv6 routes can expire (those learned from router advertisements, or
// added with "ip -6 route add ... expires N"). The netlink library
// neither reports nor sets the expiry, so netcfg reads it from a dump of
// its own (RTA_CACHEINFO) and restores a route that has one with a
// request of its own (RTA_EXPIRES).

// userHZ is the unit of the kernel's clock_t values (rta_expires).
const userHZ = 100

// expiring is the time an IPv6 route of the main table has left.
type expiring struct {
	key  string // expiryKey
	left time.Duration
}

// expiryKey identifies a route for its expiry: link, destination, next
// hop and metric.
func expiryKey(index int, dst netip.Prefix, via netip.Addr, metric int) string {
	return fmt.Sprintf("%d|%s|%s|%d", index, dst, via, metric)
}

// routeExpiries returns when the IPv6 routes of the main table that
// expire will, by expiryKey.
func (h *Host) routeExpiries() (map[string]time.Time, error) {
	now := time.Now()
	es, err := dump(func() (es []expiring, err error) {
		err = h.inNS(func() error {
			req := nl.NewNetlinkRequest(unix.RTM_GETROUTE, unix.NLM_F_DUMP)
			req.AddData(&nl.RtMsg{RtMsg: unix.RtMsg{Family: unix.AF_INET6}})
			msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWROUTE)
			for _, m := range msgs {
				if e, ok := parseExpiring(m); ok {
					es = append(es, e)
				}
			}
			return err
		})
		return es, err
	})
	if err != nil {
		return nil, fmt.Errorf("list the expiry of IPv6 routes: %w", err)
	}
	out := make(map[string]time.Time, len(es))
	for _, e := range es {
		out[e.key] = now.Add(e.left)
	}
	return out, nil
}

// parseExpiring reads the expiry of one route message; ok is false for
// a route of another table, one without a link, or one that does not
// expire.
func parseExpiring(m []byte) (e expiring, ok bool) {
	msg := nl.DeserializeRtMsg(m)
	attrs, err := nl.ParseRouteAttr(m[msg.Len():])
	if err != nil {
		return e, false
	}
	native := nl.NativeEndian()
	table := int(msg.Table)
	var dst, via netip.Addr
	index, metric := 0, 0
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.RTA_TABLE:
			table = int(native.Uint32(a.Value))
		case unix.RTA_DST:
			dst, _ = netip.AddrFromSlice(a.Value)
		case unix.RTA_GATEWAY:
			via, _ = netip.AddrFromSlice(a.Value)
		case unix.RTA_OIF:
			index = int(native.Uint32(a.Value))
		case unix.RTA_PRIORITY:
			metric = int(native.Uint32(a.Value))
		case unix.RTA_CACHEINFO:
			if len(a.Value) >= 12 { // rta_expires follows rta_clntref and rta_lastuse
				e.left = time.Duration(int32(native.Uint32(a.Value[8:12]))) * time.Second / userHZ
			}
		}
	}
	if table != unix.RT_TABLE_MAIN || index == 0 || e.left <= 0 {
		return e, false
	}
	if !dst.IsValid() {
		dst = netip.IPv6Unspecified()
	}
	e.key = expiryKey(index, netip.PrefixFrom(dst, int(msg.Dst_len)), via, metric)
	return e, true
}

// errExpired: a route that expires has expired since it was recorded:
// the kernel would have removed it by now.
var errExpired = errors.New("expired since it was removed")

// putRoute adds the route of s (replace: in place of the route in the
// same slot). A route with an expiry gets the time it has left, through
// a request of netcfg's own; one whose expiry has passed is not added
// (errExpired).
func (h *Host) putRoute(s RouteSpec, replace bool) error {
	r, err := h.nlRoute(s)
	if err != nil {
		return err
	}
	if s.ExpiresAt.IsZero() {
		if replace {
			return h.nl.RouteReplace(r)
		}
		return h.nl.RouteAdd(r)
	}
	left := time.Until(s.ExpiresAt)
	if left <= 0 {
		return errExpired
	}
	req := expiringRouteRequest(r, left, replace)
	return h.inNS(func() error {
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	})
}

// expiringRouteRequest is the RTM_NEWROUTE of r, with what netcfg keeps
// of a route (RouteSpec) and the time it has left (RTA_EXPIRES, whole
// seconds).
func expiringRouteRequest(r *netlink.Route, left time.Duration, replace bool) *nl.NetlinkRequest {
	flags := unix.NLM_F_CREATE | unix.NLM_F_ACK | unix.NLM_F_EXCL
	if replace {
		flags = unix.NLM_F_CREATE | unix.NLM_F_ACK | unix.NLM_F_REPLACE
	}
	req := nl.NewNetlinkRequest(unix.RTM_NEWROUTE, flags)
	u32 := func(v int) []byte { return nl.Uint32Attr(uint32(v)) }
	msg := nl.NewRtMsg()
	bits, _ := r.Dst.Mask.Size()
	msg.Family, msg.Dst_len = uint8(nl.GetIPFamily(r.Dst.IP)), uint8(bits)
	msg.Scope, msg.Flags = uint8(r.Scope), uint32(r.Flags)
	if r.Protocol > 0 {
		msg.Protocol = uint8(r.Protocol)
	}
	if r.Type > 0 {
		msg.Type = uint8(r.Type)
	}
	msg.Table = unix.RT_TABLE_UNSPEC
	if r.Table < 256 {
		msg.Table = uint8(r.Table)
	}
	req.AddData(msg)
	if r.Table >= 256 {
		req.AddData(nl.NewRtAttr(unix.RTA_TABLE, u32(r.Table)))
	}
	req.AddData(nl.NewRtAttr(unix.RTA_DST, r.Dst.IP))
	if r.Src != nil {
		req.AddData(nl.NewRtAttr(unix.RTA_PREFSRC, r.Src))
	}
	if r.Gw != nil {
		req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, r.Gw))
	}
	if r.Priority > 0 {
		req.AddData(nl.NewRtAttr(unix.RTA_PRIORITY, u32(r.Priority)))
	}
	if r.MTU > 0 || r.AdvMSS > 0 || r.Hoplimit > 0 {
		metrics := nl.NewRtAttr(unix.RTA_METRICS, nil)
		for _, m := range []struct{ key, v int }{{unix.RTAX_MTU, r.MTU}, {unix.RTAX_ADVMSS, r.AdvMSS}, {unix.RTAX_HOPLIMIT, r.Hoplimit}} {
			if m.v > 0 {
				metrics.AddChild(nl.NewRtAttr(m.key, u32(m.v)))
			}
		}
		req.AddData(metrics)
	}
	req.AddData(nl.NewRtAttr(unix.RTA_OIF, u32(r.LinkIndex)))
	req.AddData(nl.NewRtAttr(unix.RTA_EXPIRES, u32(int(min(math.Ceil(left.Seconds()), math.MaxInt32)))))
	return req
}
