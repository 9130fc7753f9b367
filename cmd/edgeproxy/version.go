package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// commit is set at build time with -ldflags "-X main.commit=..."; when
// it is not, the VCS stamp of the Go build is used.
var commit string

// writeVersion prints the version, the commit it was built from, the Go
// toolchain and platform, and that the binary needs no libbpf (the BPF
// object is embedded and loaded by cilium/ebpf).
func writeVersion(w io.Writer) {
	commit, modified := commit, false
	if bi, ok := debug.ReadBuildInfo(); ok && commit == "" {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	if modified {
		commit += " (modified)"
	}
	fmt.Fprintf(w, "edgeproxy %s\ncommit %s\n%s %s/%s\nBPF: embedded object, no libbpf (cilium/ebpf)\n",
		version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
