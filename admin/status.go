package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeproxy/edgeproxy/bgp"
	"github.com/edgeproxy/edgeproxy/health"
)

// Status is the daemon's state as served on /status and shown by
// `edgeproxy status`.
type Status struct {
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// Time is when the status was taken.
	Time time.Time `json:"time"`
	// Config is the configuration file, Loaded when it was last applied.
	Config string    `json:"config,omitempty"`
	Loaded time.Time `json:"loaded,omitzero"`
	// Rejected is why the last reload was refused, at RejectedAt (the
	// running configuration kept serving).
	Rejected   string    `json:"reload_rejected,omitempty"`
	RejectedAt time.Time `json:"reload_rejected_at,omitzero"`
	// Ready is what /healthz says; Reason tells why not.
	Ready    bool      `json:"ready"`
	Reason   string    `json:"reason,omitempty"`
	Virtuals []Virtual `json:"virtuals"`
	Members  []Member  `json:"members"`
	FastPath *FastPath `json:"fastpath,omitempty"`
	// BGP is the speaker's sessions and routes (nil without bgp).
	BGP *bgp.Status `json:"bgp,omitempty"`
	// HA is the node's role in an active/standby pair (nil: single host).
	HA *HA `json:"ha,omitempty"`
	// Cluster is second chance between the nodes (nil without cluster).
	Cluster *Cluster `json:"cluster,omitempty"`
	// Reloads are the last loads of the configuration, newest first.
	Reloads []Reload `json:"reloads,omitempty"`
	// Certificates are the certificate files in service.
	Certificates []Certificate `json:"certificates,omitempty"`
	// ACME are the certificates ordered from ACME CAs (never their keys).
	ACME []ACMECert `json:"acme,omitempty"`
}

// Cluster is second chance: this node's connections announced to the
// peers (Owned), the peers' ones it sends back to them (Foreign), and
// what the XDP program did: segments sent to their owner (Forwarded),
// SYNs for a peer's tuple opened here (SYNLocal), segments a peer
// forwarded that were not forwarded again (FromPeer), segments to the
// L7 proxy that nobody knew yet, dropped for the client to retransmit
// (Held, since the program was loaded).
type Cluster struct {
	Owned     int           `json:"owned"`
	Foreign   int           `json:"foreign"`
	Forwarded uint64        `json:"forwarded"`
	SYNLocal  uint64        `json:"syn_local"`
	FromPeer  uint64        `json:"from_peer"`
	Held      uint64        `json:"held"`
	Peers     []ClusterPeer `json:"peers"`
}

// ClusterPeer is a peer: its MAC once it spoke, and whether it sent its
// connections when this node started.
type ClusterPeer struct {
	Address string `json:"address"`
	MAC     string `json:"mac,omitempty"`
	Synced  bool   `json:"synced"`
}

// HA is a pair node's role: keepalived's word, and the shared addresses
// (VIPs, floating) the node holds.
type HA struct {
	Role  string    `json:"role"` // unknown | active | standby | fault | stopped
	Since time.Time `json:"since,omitzero"`
	// Held are the shared addresses on this node's NICs, of Shared.
	Held   []string `json:"held"`
	Shared int      `json:"shared"`
	// Cause says why the node is in fault when the role is derived
	// rather than keepalived's word (none since the daemon started).
	Cause string `json:"cause,omitempty"`
	// Mirror is flow mirroring to and from the peer (nil: off).
	Mirror *Mirror `json:"mirror,omitempty"`
}

// Mirror is the state of flow mirroring on a pair node.
type Mirror struct {
	// Synced: the node holds a full copy of the peer's flows (or the
	// peer was silent, or the node was active); until then it does not
	// take the active role.
	Synced bool   `json:"synced"`
	Peer   string `json:"peer"`
	// PeerAge is the time since the peer's last valid datagram, seconds
	// (-1: none yet); SendLag how long the oldest record queued for it
	// has waited.
	PeerAge float64 `json:"peer_age_seconds"`
	SendLag float64 `json:"send_lag_seconds"`
	// Records sent and flows installed and removed from the peer's;
	// Rejected are datagrams refused (wrong key, replayed, malformed).
	// Flows are the established flows of mirrored virtuals this node
	// holds (on the standby: the active node's).
	Flows     int    `json:"flows"`
	Sent      uint64 `json:"records_sent"`
	Installed uint64 `json:"flows_installed"`
	Removed   uint64 `json:"flows_removed"`
	Rejected  uint64 `json:"rejected"`
}

// Certificate is a certificate file the L7 proxy serves.
type Certificate struct {
	File     string    `json:"file"`
	NotAfter time.Time `json:"not_after"`
}

// ACMECert is the state of an ACME certificate: the first name's
// certificate in service and the last order or renewal.
type ACMECert struct {
	Names       []string  `json:"names"`
	CA          string    `json:"ca"`
	Challenge   string    `json:"challenge"`
	NotAfter    time.Time `json:"not_after,omitzero"`
	Serial      string    `json:"serial,omitempty"`
	LastOutcome string    `json:"last_outcome,omitempty"` // obtained | renewed | failed | loaded (a standby, from the shared state directory)
	LastAt      time.Time `json:"last_at,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
}

// Virtual is one published address:port.
type Virtual struct {
	Name   string `json:"name"`
	Mode   string `json:"mode"` // fastl4 | https | http
	Listen string `json:"listen"`
	// Pools are the pools it forwards to: one for fastl4, one per site
	// for https/http.
	Pools []string `json:"pools,omitempty"`
	Port  uint16   `json:"port,omitempty"` // member port (fastl4)
	// MembersUp of Members (all pools of the virtual) take new traffic.
	MembersUp int `json:"members_up"`
	Members   int `json:"members"`
	// Flows are the active L4 flows (fastl4).
	Flows uint64 `json:"flows"`
	// Connections are the open client connections and Requests the
	// requests served since start (https/http).
	Connections uint64 `json:"connections"`
	Requests    uint64 `json:"requests"`
	// Errors counts failed requests (https/http) or dropped packets
	// (fastl4) since start.
	Errors uint64 `json:"errors"`
}

// Member is a pool member and its health.
type Member struct {
	Pool          string    `json:"pool"`
	Member        string    `json:"member"`
	Address       string    `json:"address"`
	State         string    `json:"state"` // unknown | up | down | disabled
	Monitor       string    `json:"monitor"`
	Reason        string    `json:"reason,omitempty"`
	LastChange    time.Time `json:"last_change"`
	LastError     string    `json:"last_error,omitempty"`
	LastErrorTime time.Time `json:"last_error_time,omitzero"`
	Checks        uint64    `json:"checks"`
	Failures      uint64    `json:"failures"`
	// Flows are the active L4 flows to the member.
	Flows uint64 `json:"flows"`
	// Runtime is the state set with `edgeproxy member` (disable or
	// drain; empty when enabled), kept until enabled again.
	Runtime      string    `json:"runtime_state,omitempty"`
	RuntimeSince time.Time `json:"runtime_since,omitzero"`
	// Requests forwarded to the member by the L7 proxy since start, and
	// Errors of those answered with a 5xx status.
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
}

// FastPath is the XDP data path's state.
type FastPath struct {
	Interfaces []string `json:"interfaces"` // attached NICs with their XDP mode, e.g. "ext0 (native)"
	Flows      uint64   `json:"flows"`
	MaxFlows   uint64   `json:"max_flows"`
	// State says what becomes of a pinned fast path the configuration no
	// longer has: "draining" then "removed" (empty while in service).
	State string `json:"state,omitempty"`
}

// MembersFromHealth converts a health snapshot for Status.Members.
func MembersFromHealth(snap []health.MemberStatus) []Member {
	out := make([]Member, 0, len(snap))
	for _, s := range snap {
		out = append(out, Member{
			Pool: s.Pool, Member: s.Member, Address: s.Addr.String(),
			State: string(s.State), Monitor: s.Monitor, Reason: s.Reason,
			LastChange: s.LastChange, LastError: s.LastError, LastErrorTime: s.LastErrorTime,
			Checks: s.Checks, Failures: s.Failures,
		})
	}
	return out
}

// ErrStatus is returned when the admin endpoint answers /status with an
// error.
var ErrStatus = errors.New("admin endpoint refused status")

// StatusURL turns an admin address ("127.0.0.1:9469", "[::1]:9469" or
// an http:// URL) into the URL of its /status.
func StatusURL(admin string) string {
	if strings.HasPrefix(admin, "http://") || strings.HasPrefix(admin, "https://") {
		return strings.TrimSuffix(admin, "/") + "/status"
	}
	return "http://" + admin + "/status"
}

// FetchStatus gets /status from the admin endpoint at admin and returns
// it decoded and as received.
func FetchStatus(ctx context.Context, admin string) (*Status, []byte, error) {
	url := StatusURL(admin)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch status: bad admin address %q: %w", admin, err)
	}
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch status: %w (is edgeproxy running, with admin.listen at %s?)", err, admin)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("fetch status from %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, body, fmt.Errorf("fetch status from %s: %w: %s: %s", url, ErrStatus, resp.Status, strings.TrimSpace(string(body)))
	}
	var s Status
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, body, fmt.Errorf("decode status from %s: %w", url, err)
	}
	return &s, body, nil
}

// WriteText renders s as tables for a terminal; relative times are
// computed from s.Time.
func (s *Status) WriteText(w io.Writer) error {
	now := s.Time
	if now.IsZero() {
		now = time.Now()
	}
	ready := "ready"
	if !s.Ready {
		ready = "NOT READY"
		if s.Reason != "" {
			ready += ": " + s.Reason
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "edgeproxy %s, up %s, %s\n", s.Version, ago(now, s.Started, false), ready)
	if s.Config != "" {
		fmt.Fprintf(&b, "config %s, loaded %s\n", s.Config, ago(now, s.Loaded, true))
	}
	if h := s.HA; h != nil {
		fmt.Fprintf(&b, "ha %s since %s, holds %d of %d shared addresses\n", h.Role, ago(now, h.Since, true), len(h.Held), h.Shared)
		if h.Cause != "" {
			fmt.Fprintf(&b, "ha fault: %s\n", h.Cause)
		}
		if m := h.Mirror; m != nil {
			synced := "synced"
			if !m.Synced {
				synced = "NOT SYNCED (receiving the peer's flows)"
			}
			fmt.Fprintf(&b, "mirror %s, %d mirrored flows held, peer %s last heard %s, send lag %.3fs, %d records sent, %d installed, %d rejected\n",
				synced, m.Flows, m.Peer, peerAge(m.PeerAge), m.SendLag, m.Sent, m.Installed, m.Rejected)
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write status: %w", err)
	}

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nVIRTUAL\tMODE\tLISTEN\tPOOL\tUP\tFLOWS\tCONNS\tREQUESTS\tERRORS")
	for _, v := range s.Virtuals {
		pool := strings.Join(v.Pools, ",")
		if v.Port != 0 && len(v.Pools) == 1 {
			pool += ":" + strconv.Itoa(int(v.Port))
		}
		flows, conns, reqs := "-", "-", "-"
		if v.Mode == "fastl4" {
			flows = strconv.FormatUint(v.Flows, 10)
		} else {
			conns = strconv.FormatUint(v.Connections, 10)
			reqs = strconv.FormatUint(v.Requests, 10)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%d\n",
			v.Name, v.Mode, v.Listen, dash(pool), v.MembersUp, v.Members, flows, conns, reqs, v.Errors)
	}
	fmt.Fprintln(tw, "\nPOOL\tMEMBER\tADDRESS\tSTATE\tMONITOR\tSINCE\tCHECKS\tFAILED\tLAST ERROR")
	for _, m := range s.Members {
		lastErr := "-"
		if m.LastError != "" {
			lastErr = ago(now, m.LastErrorTime, true) + ": " + m.LastError
		}
		state := strings.ToUpper(m.State)
		if m.Runtime != "" {
			state += " (" + m.Runtime + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n",
			m.Pool, m.Member, m.Address, state, dash(m.Monitor),
			ago(now, m.LastChange, true), m.Checks, m.Failures, lastErr)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	if fp := s.FastPath; fp != nil {
		b.Reset()
		fmt.Fprintf(&b, "\nfast path on %s: %d of %d flows\n", dash(strings.Join(fp.Interfaces, ", ")), fp.Flows, fp.MaxFlows)
		if _, err := io.WriteString(w, b.String()); err != nil {
			return fmt.Errorf("write status: %w", err)
		}
	}
	if err := writeBGP(w, s.BGP, now); err != nil {
		return err
	}
	if err := writeCluster(w, s.Cluster); err != nil {
		return err
	}
	return s.writeACME(w, now)
}

// writeCluster shows second chance, with the peers.
func writeCluster(w io.Writer, c *Cluster) error {
	if c == nil {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\ncluster: %d connections of this node announced, %d of the peers' sent back to them; %d segments forwarded, %d SYNs for a peer's tuple opened here, %d forwarded segments not forwarded again, %d segments held\nPEER\tMAC\tSYNCED AT START\n",
		c.Owned, c.Foreign, c.Forwarded, c.SYNLocal, c.FromPeer, c.Held)
	for _, p := range c.Peers {
		fmt.Fprintf(tw, "%s\t%s\t%v\n", p.Address, dash(p.MAC), p.Synced)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}

// writeBGP lists the BGP sessions and, for each VIP, whether its route is
// announced and why.
func writeBGP(w io.Writer, st *bgp.Status, now time.Time) error {
	if st == nil {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\nBGP AS %d router id %s\nNEIGHBOR\tAS\tSESSION\tBFD\tLAST ERROR\n", st.LocalAS, st.RouterID)
	for _, n := range st.Sessions {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", n.Neighbor, n.AS, strings.ToUpper(n.State), dash(n.BFD), dash(n.Reason))
	}
	fmt.Fprintln(tw, "\nROUTE\tSINCE\tSTATE")
	for _, r := range st.Routes {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Prefix, ago(now, r.Since, true), r.Why)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}

// writeACME lists the ACME certificates, when there are any.
func (s *Status) writeACME(w io.Writer, now time.Time) error {
	if len(s.ACME) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nACME CERTIFICATE\tCHALLENGE\tEXPIRES\tLAST ORDER\tERROR")
	for _, a := range s.ACME {
		expires, last := "not obtained", "-"
		if !a.NotAfter.IsZero() {
			expires = a.NotAfter.Format(time.RFC3339)
		}
		if a.LastOutcome != "" {
			last = a.LastOutcome + " " + ago(now, a.LastAt, true)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", strings.Join(a.Names, ","), a.Challenge, expires, last, dash(a.LastError))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write status: %w", err)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ago renders the time from t to now, rounded to the second, with " ago"
// when suffix is set; "-" for a zero t.
func ago(now, t time.Time, suffix bool) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t).Round(time.Second)
	if d < 0 {
		d = 0
	}
	if suffix {
		return d.String() + " ago"
	}
	return d.String()
}

func peerAge(s float64) string {
	if s < 0 {
		return "never"
	}
	return fmt.Sprintf("%.1fs ago", s)
}
