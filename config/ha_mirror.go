package config

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/edgeproxy/edgeproxy/internal/peerlink"
)

// Bandwidth is a rate in bytes a second, written with a unit:
// "10MB/s", "500kB/s", "80Mbit/s" (the "/s" may be left out).
type Bandwidth int64

var bandwidthUnits = []struct {
	suffix string
	mult   float64
}{
	{"gbit", 1e9 / 8}, {"mbit", 1e6 / 8}, {"kbit", 1e3 / 8}, {"bit", 1.0 / 8},
	{"gb", 1e9}, {"mb", 1e6}, {"kb", 1e3}, {"b", 1},
}

// ParseBandwidth reads a Bandwidth.
func ParseBandwidth(s string) (Bandwidth, error) {
	t := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), "/s")
	for _, u := range bandwidthUnits {
		num, ok := strings.CutSuffix(t, u.suffix)
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
		if err != nil || f <= 0 {
			break
		}
		return Bandwidth(f * u.mult), nil
	}
	return 0, fmt.Errorf("bandwidth %q: write a positive number and a unit, e.g. 10MB/s or 80Mbit/s", s)
}

func (b Bandwidth) String() string { return strconv.FormatInt(int64(b), 10) + "B/s" }

// MarshalText implements encoding.TextMarshaler.
func (b Bandwidth) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (b *Bandwidth) UnmarshalText(t []byte) error {
	v, err := ParseBandwidth(string(t))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MinMirrorBandwidth is the least ha.mirror.bandwidth: a few datagrams
// a second.
const MinMirrorBandwidth = Bandwidth(100_000)

// haMirror checks ha.mirror: two distinct addresses of one family with
// ports, a readable key of 32 bytes or more, a bandwidth.
func (v *validator) haMirror() {
	m := v.c.HA.Mirror
	if m == nil {
		return
	}
	const eg = "e.g. 198.18.1.1:7400"
	switch {
	case !m.Listen.IsValid() || m.Listen.Port() == 0:
		v.errorf("ha.mirror.listen", "this node's address and port for flow mirroring are required (%s): an address on the internal NIC or a dedicated link", eg)
	case m.Listen.Addr().IsUnspecified():
		v.errorf("ha.mirror.listen", "%s listens on every address: write this node's own address on the link to the peer", m.Listen)
	}
	switch {
	case !m.Peer.IsValid() || m.Peer.Port() == 0:
		v.errorf("ha.mirror.peer", "the peer's address and port for flow mirroring are required (%s): its ha.mirror.listen", eg)
	case m.Peer == m.Listen:
		v.errorf("ha.mirror.peer", "%s is this node's ha.mirror.listen: write the other node's", m.Peer)
	case m.Listen.IsValid() && m.Peer.Addr().Is4() != m.Listen.Addr().Is4():
		v.errorf("ha.mirror.peer", "%s and ha.mirror.listen %s are of different families: use one family for both", m.Peer, m.Listen)
	}
	if m.KeyFile == "" {
		v.errorf("ha.mirror.key_file", "the shared key file is required: the same file on both nodes, e.g. head -c 48 /dev/urandom | base64 > /etc/edgeproxy/mirror.key; chmod 600 it")
	} else if _, err := peerlink.LoadKey(m.KeyFile); err != nil {
		v.errorf("ha.mirror.key_file", "%v", err)
	}
	if m.Bandwidth < MinMirrorBandwidth {
		v.errorf("ha.mirror.bandwidth", "%s is too little for flow mirroring: give it at least 100kB/s (default 10MB/s)", m.Bandwidth)
	}
}
