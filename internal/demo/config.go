package demo

import (
	"bytes"
	"fmt"
	"net/netip"
	"text/template"
)

// configTemplate is the demo's configuration: the lab's network, one
// pool of two front ends, a fastl4 virtual (443→4443 and 80→8080 in XDP)
// and the https/http virtuals of the L7 proxy. The monitor is quick so
// that a member failure shows within seconds.
const configTemplate = `# edgeproxy demo: the lab's proxy host publishing a Skype for Business pool.
admin:
  listen: {{.Admin}}            # /metrics, /healthz, /status (inside the proxy namespace)

log:
  level: info

{{.Network}}
fastpath:
  pin_path: {{.PinPath}}

pools:
  sfb-fe:
    members: [{{range $i, $m := .Members}}{{if $i}}, {{end}}{{$m}}{{end}}]
    monitor: {type: tls, port: 4443, interval: 1s, timeout: 500ms, rise: 1, fall: 1, ca: {{.InternalCA}}}

virtuals:
  - name: sfb-web-l4                # F5 FastL4: DNAT + SNAT in XDP, TLS passes through
    mode: fastl4
    listen: {{.FastVIP}}:443
    pool: sfb-fe
    port: 4443
    snat: automap
  - name: sfb-web-l4-http
    mode: fastl4
    listen: {{.FastVIP}}:80
    pool: sfb-fe
    port: 8080
    snat: automap

  - name: sfb-web                   # TLS terminated by the L7 proxy
    mode: https
    listen: {{.L7VIP}}:443
    drain_timeout: 2s
    certificates:
      - {cert: {{.PublicCert}}, key: {{.PublicKey}}}
    sites:
      - hosts: [{{.Hosts}}]
        pool: sfb-fe
        port: 4443
        backend_tls: {ca: {{.InternalCA}}}
        profile: skype
  - name: sfb-web-http
    mode: http
    listen: {{.L7VIP}}:80
    drain_timeout: 2s
    sites:
      - hosts: [{{.Hosts}}]
        pool: sfb-fe
        port: 8080
        profile: skype              # the management paths are closed on port 80 too
`

// configData fills configTemplate.
type configData struct {
	Admin                 string
	Network               string // the network section (lab.Lab.NetworkYAML)
	Members               []string
	PinPath               string
	FastVIP, L7VIP        netip.Addr
	PublicCert, PublicKey string
	InternalCA            string
	Hosts                 string
}

var configTmpl = template.Must(template.New("config").Parse(configTemplate))

// renderConfig returns the configuration file's text.
func renderConfig(d configData) ([]byte, error) {
	var b bytes.Buffer
	if err := configTmpl.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("render configuration: %w", err)
	}
	return b.Bytes(), nil
}
