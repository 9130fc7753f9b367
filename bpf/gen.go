// Package bpf holds the XDP fast path of edgeproxy: the C program
// (fastl4.c and its headers) and the Go bindings bpf2go generates from
// it, committed. The control plane is package l4.
//
// Regenerate with `make generate` (clang, llvm-strip and libbpf-dev;
// Debian 12's clang 14 reproduces the committed files byte for byte): the
// Makefile pins the toolchain and its flags (BPF2GO_CC, BPF2GO_STRIP,
// BPF2GO_CFLAGS, with the multiarch include directory derived from the
// host). The reasons counted by the program (enum reason) and the flag
// enums are shared with Go through -type.
package bpf

//go:generate sh -c "test -n \"$BPF2GO_CFLAGS\" || { echo 'go generate ./bpf: BPF2GO_CFLAGS is not set; run make generate, which pins the BPF toolchain and its flags' >&2; exit 1; }"
//go:generate go tool bpf2go -tags linux -go-package bpf -target bpfel -type reason -type flow_key -type flow_key4 -type flow_val -type svc_key -type svc_val -type config -type stat -type neigh_key -type vinfo -type pinfo -type addr -type flow_seen -type flow_close -type flow_dir -type svc_flags -type pin_meta -type flow_event -type flow_event_kind -type flow_end -type reap_run -type reap_count -type reap_member -type reap_event -type owner FastL4 fastl4.c
