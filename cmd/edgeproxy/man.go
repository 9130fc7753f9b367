package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

func init() {
	register(command{name: "man", summary: "print the manual page (roff), built from every command's help", run: func(ctx context.Context, _ []string) error {
		return writeMan(ctx, os.Stdout)
	}})
}

// helpOutput, when set, receives the flag sets' usage instead of stderr
// (for the manual page).
var helpOutput io.Writer

// writeMan writes edgeproxy(8): the commands and, for each, the usage
// and flags its -h prints.
func writeMan(ctx context.Context, w io.Writer) error {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, ".TH EDGEPROXY 8 %q %q \"System Administration\"\n", time.Now().UTC().Format("2006-01-02"), "edgeproxy "+version)
	b.WriteString(".SH NAME\nedgeproxy \\- Linux edge proxy with an XDP fast path and a TLS reverse proxy\n")
	b.WriteString(".SH SYNOPSIS\n.B edgeproxy\n.I command\n[flags]\n.br\n.B edgeproxy\n\\-v | \\-\\-version\n")
	b.WriteString(".SH DESCRIPTION\nedgeproxy publishes internal web services on a dual-homed DMZ host: fastl4 virtuals are forwarded by an XDP program, https and http virtuals by a TLS-terminating reverse proxy. The configuration file is /etc/edgeproxy/edgeproxy.yaml; the admin endpoint (127.0.0.1:9469) serves a status page, /metrics, /healthz and /status.\n")
	b.WriteString(".SH COMMANDS\n")
	for _, n := range names {
		if n == "man" || n == "version" {
			continue
		}
		fmt.Fprintf(&b, ".SS %s\n%s\n", n, roff(commands[n].summary))
		var help bytes.Buffer
		helpOutput = &help
		_ = commands[n].run(ctx, []string{"-h"})
		helpOutput = nil
		if text := strings.TrimSpace(help.String()); text != "" {
			fmt.Fprintf(&b, ".PP\n.nf\n%s\n.fi\n", roff(text))
		}
	}
	b.WriteString(".SH SIGNALS\nSIGHUP reloads the configuration file atomically; SIGUSR1 reopens the access and connection logs; SIGTERM drains and stops.\n")
	b.WriteString(".SH FILES\n/etc/edgeproxy/edgeproxy.yaml, /sys/fs/bpf/edgeproxy (pinned fast path state), /var/lib/edgeproxy/netcfg.json (network changes made)\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// roff escapes text for a manual page: backslashes, and a leading dot or
// quote that roff would read as a request.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, ".") || strings.HasPrefix(l, "'") {
			lines[i] = `\&` + l
		}
	}
	return strings.Join(lines, "\n")
}
