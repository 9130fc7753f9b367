package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/edgeproxy/edgeproxy/internal/lab"
)

// Layers.
const (
	layerL4 = "L4"
	layerL7 = "L7"
)

// Products (chart series and the reference for ratios).
const (
	prodEdgeproxy = "edgeproxy"
	prodNftables  = "nftables"
	prodHAProxy   = "haproxy"
	prodNginx     = "nginx"
)

var products = []string{prodEdgeproxy, prodNftables, prodHAProxy, prodNginx}

// Paths of the peers' Debian binaries.
var (
	haproxyBin = "/usr/sbin/haproxy"
	nginxBin   = "/usr/sbin/nginx"
	nginxMods  = "/usr/lib/nginx/modules"
)

// errNotAvailable marks a candidate that cannot run on this machine or in
// this phase; the report shows the reason instead of numbers.
var errNotAvailable = errors.New("not available")

// candidate is one system under test.
type candidate struct {
	name    string // row label
	product string
	layer   string
	// unsupported says why the candidate cannot do a phase ("" if it can).
	unsupported func(phase string) string
	// available says why the candidate cannot run at all (nil if it can).
	available func(e *env) error
	// install starts the candidate in the trial's proxy namespace for a
	// phase; the returned installation is ready for traffic once probe
	// succeeds.
	install func(ctx context.Context, t *trial, phase string) (*installation, error)
}

// installation is a running candidate.
type installation struct {
	procs  []*process
	config string // the configuration, for the report
	cmds   []string
	stops  []func()
}

func (in *installation) pids() []int {
	var out []int
	for _, p := range in.procs {
		out = append(out, p.pid())
	}
	return out
}

// alive returns an error when a process of the candidate has exited.
func (in *installation) alive() error {
	for _, p := range in.procs {
		if done, err := p.exited(); done {
			return fmt.Errorf("%s: %v: %s", filepath.Base(p.name), err, p.tail(6))
		}
	}
	return nil
}

func (in *installation) stop() {
	for _, p := range in.procs {
		p.stop(syscall.SIGTERM, 15*time.Second)
	}
	for i := len(in.stops) - 1; i >= 0; i-- {
		in.stops[i]()
	}
}

func allCandidates() []*candidate {
	l4 := func(string) string { return "" }
	return []*candidate{
		{name: "edgeproxy fastl4", product: prodEdgeproxy, layer: layerL4, unsupported: l4, available: edgeproxyAvailable, install: installEdgeproxy},
		{name: "nftables DNAT+SNAT", product: prodNftables, layer: layerL4, unsupported: l4, available: lookPath("nft"), install: installNftables},
		{name: nftTSOName, product: prodNftables, layer: layerL4, unsupported: l4, available: lookPath("nft"), install: installNftablesTSO},
		{name: "haproxy tcp", product: prodHAProxy, layer: layerL4, unsupported: func(phase string) string {
			if phase == phaseUDP {
				return "HAProxy does not proxy UDP"
			}
			return ""
		}, available: lookPath(haproxyBin), install: installHAProxyTCP},
		{name: "nginx stream", product: prodNginx, layer: layerL4, unsupported: l4, available: nginxStreamAvailable, install: installNginxStream},
		{name: "edgeproxy https", product: prodEdgeproxy, layer: layerL7, unsupported: l4, available: edgeproxyAvailable, install: installEdgeproxy},
		{name: "haproxy tls", product: prodHAProxy, layer: layerL7, unsupported: l4, available: lookPath(haproxyBin), install: installHAProxyTLS},
		{name: "nginx tls", product: prodNginx, layer: layerL7, unsupported: l4, available: lookPath(nginxBin), install: installNginxTLS},
	}
}

func lookPath(bin string) func(*env) error {
	return func(*env) error {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%w: %s is not installed (make deps)", errNotAvailable, bin)
		}
		return nil
	}
}

func nginxStreamAvailable(e *env) error {
	if err := lookPath(nginxBin)(e); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(nginxMods, "ngx_stream_module.so")); err != nil {
		return fmt.Errorf("%w: nginx's stream module is not installed (apt-get install libnginx-mod-stream)", errNotAvailable)
	}
	return nil
}

// edgeproxyAvailable checks that the binary exists and has the run command.
func edgeproxyAvailable(e *env) error {
	if _, err := os.Stat(e.edgeproxy); err != nil {
		return fmt.Errorf("%w: %s is not built (make build)", errNotAvailable, e.edgeproxy)
	}
	out, _ := exec.Command(e.edgeproxy, "run", "-h").CombinedOutput()
	if strings.Contains(string(out), "unknown command") {
		return fmt.Errorf("%w: %s has no run command yet (the daemon is not built in)", errNotAvailable, e.edgeproxy)
	}
	// Flags that keep a benchmark daemon from leaving state on the host
	// or meeting another daemon's files, when this build has them.
	e.edgeproxyFlags = nil
	for _, f := range [][]string{
		{"-cleanup"},             // remove pinned programs and maps on exit
		{"-netcfg-state", "-"},   // no journal of network changes
		{"-pid-file", ""},        // no pid file
		{"-control-socket", "-"}, // no control socket
		{"-member-state", "-"},   // no member state file
	} {
		if strings.Contains(string(out), "\n  "+f[0]+" ") || strings.Contains(string(out), "\n  "+f[0]+"\n") {
			e.edgeproxyFlags = append(e.edgeproxyFlags, f...)
		}
	}
	return nil
}

// render writes a configuration from a template into the trial
// directory and returns its path and text.
func (t *trial) render(name, tmpl string, data any) (string, string, error) {
	tp, err := template.New(name).Parse(tmpl)
	if err != nil {
		return "", "", fmt.Errorf("parse %s template: %w", name, err)
	}
	var b bytes.Buffer
	if err := tp.Execute(&b, data); err != nil {
		return "", "", fmt.Errorf("render %s: %w", name, err)
	}
	return t.write(name, b.String())
}

// write writes a configuration into the trial directory and returns its
// path and text.
func (t *trial) write(name, text string) (string, string, error) {
	path := filepath.Join(t.dir, name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		return "", "", fmt.Errorf("write %s: %w", name, err)
	}
	return path, text, nil
}

// tmplData is what the configuration templates see.
type tmplData struct {
	VIP, IntAddr, MemberNet string
	Members                 []string
	Dir                     string
	Threads                 int
	UDP                     bool
	// Resume turns TLS session resumption on (tickets and a cache).
	Resume bool
	// Conns is nginx's cap on connections (client and upstream sides),
	// MaxConn HAProxy's (client side): room for the idle phase's polls.
	Conns, MaxConn int
	// Files is the descriptor limit the harness runs with (nginx's
	// worker_rlimit_nofile).
	Files int
	Certs *certFiles
	Host  string
}

// connCap is nginx's connection cap in phase: 8000, or in the idle phase
// room for every long poll, client and upstream side, plus the sixteenth
// nginx keeps free (below it, it closes connections still in their TLS
// handshake to make room).
func (e *env) connCap(phase string) int {
	if phase == phaseIdle {
		return max(8000, (2*e.idleConns+400)*17/16)
	}
	return 8000
}

// maxConn is HAProxy's maxconn (client connections; it sizes its own
// descriptor limit to about twice that) in phase.
func (e *env) maxConn(phase string) int {
	if phase == phaseIdle {
		return max(8000, e.idleConns+200)
	}
	return 8000
}

func (t *trial) data(phase string) tmplData {
	l := t.lab
	var members []string
	for _, m := range l.Members4 {
		members = append(members, m.String())
	}
	if phase == phaseUDP {
		// iperf3's UDP server answers from the address routing picks
		// unless it is bound to one: one member, one bound server.
		members = members[:1]
	}
	return tmplData{
		VIP: l.VIP4.String(), IntAddr: l.IntAddr4.String(), MemberNet: l.MemberNet4.String(),
		Members: members, Dir: t.dir, Threads: t.env.cpus.proxyN,
		UDP: phase == phaseUDP, Resume: phase == phaseResume, Conns: t.env.connCap(phase), MaxConn: t.env.maxConn(phase), Files: t.env.files, Certs: t.env.certs, Host: benchHost,
	}
}

// --- nftables ---

const nftTmpl = `table ip edgeproxy_bench {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr {{.VIP}} tcp dport 443 dnat to numgen inc mod {{len .Members}} map { {{range $i, $m := .Members}}{{if $i}}, {{end}}{{$i}} : {{$m}}{{end}} } : 4443
{{- if .UDP}}
		ip daddr {{.VIP}} udp dport 443 dnat to numgen inc mod {{len .Members}} map { {{range $i, $m := .Members}}{{if $i}}, {{end}}{{$i}} : {{$m}}{{end}} } : 4443
{{- end}}
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "int0" ip daddr {{.MemberNet}} snat to {{.IntAddr}}
	}
}
`

func installNftables(ctx context.Context, t *trial, phase string) (*installation, error) {
	path, text, err := t.render("nftables.conf", nftTmpl, t.data(phase))
	if err != nil {
		return nil, err
	}
	in := &installation{config: text, cmds: []string{
		"ip netns exec $PROXY_NS sysctl -w net.ipv4.ip_forward=1",
		"ip netns exec $PROXY_NS nft -f nftables.conf",
	}}
	p := t.lab.Proxy
	setForward := func(v string) error {
		return p.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(v), 0) })
	}
	if err := setForward("1"); err != nil {
		return nil, fmt.Errorf("turn on forwarding: %w", err)
	}
	in.stops = append(in.stops, func() { _ = setForward("0") })
	if out, err := p.Command(ctx, "nft", "-f", path).CombinedOutput(); err != nil {
		in.stop()
		return nil, fmt.Errorf("load nftables rules: %v: %s", err, strings.TrimSpace(string(out)))
	}
	in.stops = append(in.stops, func() {
		_ = p.Command(context.Background(), "nft", "delete", "table", "ip", "edgeproxy_bench").Run()
	})
	return in, nil
}

// nftTSOName is nftables on veth ends left with their defaults (TX
// checksum offload, so TSO and GSO, on): what a user without XDP deploys.
// The lab turns TX checksum offload off for every other candidate, as
// XDP_REDIRECT needs full checksums.
const nftTSOName = "nftables, veth defaults (TSO on)"

func installNftablesTSO(ctx context.Context, t *trial, phase string) (*installation, error) {
	l := t.lab
	var cmds []string
	for _, d := range []struct {
		ns  *lab.NS
		dev string
	}{{l.Client, lab.ClientIf}, {l.Proxy, lab.ExtIf}, {l.Proxy, lab.IntIf}, {l.Backend, lab.BackendIf}} {
		args := []string{"-K", d.dev, "tx", "on", "tso", "on", "gso", "on"}
		if out, err := d.ns.Command(ctx, "ethtool", args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("turn on TX offloads on %s: %v: %s", d.dev, err, strings.TrimSpace(string(out)))
		}
		cmds = append(cmds, "ethtool "+joinArgs(args))
	}
	in, err := installNftables(ctx, t, phase)
	if err != nil {
		return nil, err
	}
	in.cmds = append([]string{strings.Join(cmds, "; ") + " (in each end's namespace)"}, in.cmds...)
	return in, nil
}

// --- HAProxy ---

const haproxyGlobal = `global
	nbthread {{.Threads}}
	maxconn {{.MaxConn}}
	tune.ssl.default-dh-param 2048
{{- if not .Resume}}
	tune.ssl.cachesize 0
{{- end}}
	ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
	timeout connect 5s
	timeout client 60s
	timeout server 60s
	timeout http-keep-alive 60s
`

const haproxyTCPTmpl = haproxyGlobal + `	mode tcp
frontend vip
	bind {{.VIP}}:443
	default_backend members
backend members
	balance roundrobin
	source {{.IntAddr}}
{{- range $i, $m := .Members}}
	server m{{$i}} {{$m}}:4443
{{- end}}
`

const haproxyTLSTmpl = haproxyGlobal + `	mode http
	option http-keep-alive
frontend vip
	bind {{.VIP}}:443 ssl crt {{.Certs.PublicBoth}} alpn http/1.1{{if not .Resume}} no-tls-tickets{{end}}
	default_backend members
backend members
	balance roundrobin
	source {{.IntAddr}}
	http-reuse always
{{- range $i, $m := .Members}}
	server m{{$i}} {{$m}}:4443 ssl verify required ca-file {{$.Certs.InternalCA}} sni req.hdr(host),field(1,:)
{{- end}}
`

func installHAProxyTCP(ctx context.Context, t *trial, phase string) (*installation, error) {
	return installHAProxy(t, phase, haproxyTCPTmpl)
}

func installHAProxyTLS(ctx context.Context, t *trial, phase string) (*installation, error) {
	return installHAProxy(t, phase, haproxyTLSTmpl)
}

func installHAProxy(t *trial, phase, tmpl string) (*installation, error) {
	path, text, err := t.render("haproxy.cfg", tmpl, t.data(phase))
	if err != nil {
		return nil, err
	}
	if out, err := exec.Command(haproxyBin, "-c", "-q", "-f", path).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("check haproxy configuration: %v: %s", err, strings.TrimSpace(string(out)))
	}
	p, err := startProcess(t.lab.Proxy, t.env.cpus.proxy, nil, haproxyBin, "-f", path, "-db")
	if err != nil {
		return nil, err
	}
	return &installation{procs: []*process{p}, config: text, cmds: []string{
		fmt.Sprintf("ip netns exec $PROXY_NS taskset -c %s %s -f haproxy.cfg -db", t.env.cpus.proxy, haproxyBin),
	}}, nil
}

// --- nginx ---

const nginxMain = `worker_processes {{.Threads}};
worker_rlimit_nofile {{.Files}};
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/nginx-error.log warn;
events { worker_connections {{.Conns}}; }
`

const nginxStreamTmpl = `load_module ` + "{{.ModDir}}" + `/ngx_stream_module.so;
` + nginxMain + `stream {
	upstream members {
{{- range .Members}}
		server {{.}}:4443;
{{- end}}
	}
	server {
		listen {{.VIP}}:443;
		proxy_pass members;
		proxy_bind {{.IntAddr}};
	}
{{- if .UDP}}
	server {
		listen {{.VIP}}:443 udp;
		proxy_pass members;
		proxy_bind {{.IntAddr}};
		proxy_timeout 10s;
	}
{{- end}}
}
`

const nginxHTTPTemps = `	client_body_temp_path {{.Dir}}/client_body;
	proxy_temp_path {{.Dir}}/proxy;
	fastcgi_temp_path {{.Dir}}/fastcgi;
	uwsgi_temp_path {{.Dir}}/uwsgi;
	scgi_temp_path {{.Dir}}/scgi;
	access_log off;
	keepalive_requests 1000000;
	keepalive_timeout 60s;
`

const nginxTLSTmpl = nginxMain + `http {
` + nginxHTTPTemps + `	upstream members {
{{- range .Members}}
		server {{.}}:4443;
{{- end}}
		keepalive 64;
	}
	server {
		listen {{.VIP}}:443 ssl;
		server_name {{.Host}};
		ssl_certificate {{.Certs.PublicChain}};
		ssl_certificate_key {{.Certs.PublicKey}};
		ssl_protocols TLSv1.2 TLSv1.3;
{{- if .Resume}}
		ssl_session_tickets on;
		ssl_session_cache shared:bench:10m;
{{- else}}
		ssl_session_tickets off;
		ssl_session_cache off;
{{- end}}
		location / {
			proxy_pass https://members;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host $host;
			proxy_bind {{.IntAddr}};
			proxy_ssl_server_name on;
			proxy_ssl_name $host;
			proxy_ssl_verify on;
			proxy_ssl_trusted_certificate {{.Certs.InternalCA}};
			proxy_ssl_session_reuse on;
		}
	}
}
`

// nginxBackendTmpl is the backend: a small static file over TLS on 4443
// and plain HTTP on 8080, on every member address; in the conn phase,
// plain HTTP on 4443 answering one byte.
const nginxBackendTmpl = nginxMain + `http {
` + nginxHTTPTemps + `	server {
{{- if .Plain}}
		listen 4443 backlog=8192;
		location = ` + connPath + ` { return 200 "x"; }
{{- else}}
		listen 4443 ssl;
		listen 8080;
		ssl_certificate {{.Certs.BackendCert}};
		ssl_certificate_key {{.Certs.BackendKey}};
		ssl_protocols TLSv1.2 TLSv1.3;
		root {{.WWW}};
{{- end}}
	}
}
`

type nginxData struct {
	tmplData
	ModDir, WWW string
	Plain       bool
}

func installNginxStream(ctx context.Context, t *trial, phase string) (*installation, error) {
	return installNginx(t, phase, nginxStreamTmpl)
}

func installNginxTLS(ctx context.Context, t *trial, phase string) (*installation, error) {
	return installNginx(t, phase, nginxTLSTmpl)
}

func installNginx(t *trial, phase, tmpl string) (*installation, error) {
	prefix := filepath.Join(t.dir, "nginx-proxy")
	d := nginxData{tmplData: t.data(phase), ModDir: nginxMods}
	d.Dir = prefix
	if err := os.MkdirAll(filepath.Join(prefix, "logs"), 0o755); err != nil {
		return nil, fmt.Errorf("create nginx prefix: %w", err)
	}
	path, text, err := t.render("nginx-proxy.conf", tmpl, d)
	if err != nil {
		return nil, err
	}
	p, err := startProcess(t.lab.Proxy, t.env.cpus.proxy, nil, nginxBin, "-p", prefix, "-c", path, "-g", "daemon off;")
	if err != nil {
		return nil, err
	}
	return &installation{procs: []*process{p}, config: text, cmds: []string{
		fmt.Sprintf("ip netns exec $PROXY_NS taskset -c %s %s -p PREFIX -c nginx-proxy.conf -g 'daemon off;'", t.env.cpus.proxy, nginxBin),
	}}, nil
}

// startNginxBackend starts the web backend of phase in the backend
// namespace.
func (t *trial) startNginxBackend(phase string) error {
	prefix := filepath.Join(t.dir, "nginx-backend")
	if err := os.MkdirAll(filepath.Join(prefix, "logs"), 0o755); err != nil {
		return fmt.Errorf("create nginx prefix: %w", err)
	}
	d := nginxData{tmplData: t.data(phase), WWW: t.env.www, Plain: phase == phaseConn}
	d.Dir = prefix
	d.Threads = 1
	path, _, err := t.render("nginx-backend.conf", nginxBackendTmpl, d)
	if err != nil {
		return err
	}
	ports := []uint16{4443, 8080}
	if d.Plain {
		ports = ports[:1]
	}
	return t.startBackend(nil, ports, nginxBin, "-p", prefix, "-c", path, "-g", "daemon off;")
}

// --- edgeproxy ---

// edgeproxyConfig writes edgeproxy's configuration for phase: the lab's
// Skype pool published by a fastl4 virtual (and its UDP twin for the UDP
// phase), or by the https virtual for the web phase.
func edgeproxyConfig(t *trial, phase, pinPath string) (string, string, error) {
	d := t.data(phase)
	sk := lab.Skype{
		LogLevel: "warn", NoAccessLog: true, PinPath: pinPath, Pool: "members", Members: d.Members,
		Monitor: lab.SkypeMonitor{Interval: 2 * time.Second, Timeout: time.Second, Rise: 1},
	}
	if isL7(phase) {
		sk.L7 = &lab.SkypeL7{VIP: t.lab.VIP4, Hosts: []string{d.Host}, Cert: d.Certs.PublicChain, Key: d.Certs.PublicKey,
			InternalCA: d.Certs.InternalCA, Drain: time.Second, NoSessionTickets: !d.Resume}
		if phase == phaseIdle {
			// A Skype site (long-poll timeouts); every long poll comes
			// from the one client address, the peers set no cap on that.
			sk.L7.Skype, sk.L7.MaxConnsPerSource = true, d.Conns
		}
	} else {
		sk.FastL4 = &lab.SkypeFastL4{VIP: t.lab.VIP4, UDP: d.UDP}
	}
	return t.write("edgeproxy.yaml", t.lab.SkypeYAML(sk))
}

func installEdgeproxy(ctx context.Context, t *trial, phase string) (*installation, error) {
	// `ip netns exec` hides /sys/fs/bpf: pin on a BPF file system the
	// daemon sees from inside the namespace.
	pins, err := lab.PinDir("bench-" + filepath.Base(t.dir))
	if err != nil {
		return nil, err
	}
	path, text, err := edgeproxyConfig(t, phase, pins)
	if err != nil {
		os.RemoveAll(pins)
		return nil, err
	}
	args := append([]string{"run", "-config", path}, t.env.edgeproxyFlags...)
	p, err := startProcess(t.lab.Proxy, t.env.cpus.proxy, nil, t.env.edgeproxy, args...)
	if err != nil {
		os.RemoveAll(pins)
		return nil, err
	}
	args[2] = "edgeproxy.yaml"
	in := &installation{procs: []*process{p}, config: text, cmds: []string{
		fmt.Sprintf("ip netns exec $PROXY_NS taskset -c %s %s %s", t.env.cpus.proxy, t.env.edgeproxyShown(), joinArgs(args)),
	}}
	in.stops = append(in.stops, func() { _ = os.RemoveAll(pins) })
	return in, nil
}

// vip is the published address the clients connect to.
func (t *trial) vip() netip.AddrPort { return netip.AddrPortFrom(t.lab.VIP4, 443) }

// edgeproxyShown is the binary's path as the report prints it: relative
// to the module root when it is inside.
func (e *env) edgeproxyShown() string {
	if rel, err := filepath.Rel(e.root, e.edgeproxy); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return e.edgeproxy
}

// edgeproxyVersion describes the measured build: its version output when
// it has one, the source revision and the binary's time.
func (e *env) edgeproxyVersion() string {
	st, err := os.Stat(e.edgeproxy)
	if err != nil {
		return "not built"
	}
	v := e.edgeproxyShown() + " built " + st.ModTime().UTC().Format(time.RFC3339)
	if out, err := commandOutput(e.edgeproxy, "version"); err == nil && strings.HasPrefix(out, "edgeproxy ") {
		first, _, _ := strings.Cut(out, "\n") // the version; the rest is build details
		v += ", `" + strings.TrimSpace(first) + "`"
	}
	if out, err := commandOutput("git", "-C", e.root, "describe", "--always", "--dirty"); err == nil {
		v += ", source tree " + strings.TrimSpace(out)
	}
	return v
}
