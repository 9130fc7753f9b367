package health

import (
	"time"

	memberid "github.com/edgeproxy/edgeproxy/internal/member"
)

// Spec is what the checker watches: every pool member, resolved, and the
// monitors by pool (a pool missing there has no monitor).
type Spec struct {
	Targets  []Target
	Monitors map[string]Monitor
}

// MonitorType is the kind of check a monitor runs.
type MonitorType string

// Monitor types; "" is no monitor (members are up without checks).
const (
	MonitorTCP   MonitorType = "tcp"
	MonitorTLS   MonitorType = "tls"
	MonitorHTTPS MonitorType = "https"
	MonitorHTTP  MonitorType = "http"
)

// Monitor is a pool's health check. Zero durations and counts take the
// package defaults (DefaultInterval...).
type Monitor struct {
	Type     MonitorType
	Port     uint16
	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int
	Path     string // http/https
	Host     string // http/https Host and SNI; empty: the member name
	Expect   []int
	// AuthAlive counts a 401 as alive.
	AuthAlive bool
	// CA verifies the member's certificate (tls/https); empty: not verified.
	CA string
}

// ID is the member's identity across the planes.
func (t Target) ID() memberid.ID { return memberid.New(t.Pool, t.Addr) }
