#!/bin/sh
# Installs the Debian packages edgeproxy's build, tests, demo and benchmarks
# use. Idempotent: does nothing when everything is present.
set -eu
pkgs="clang llvm libbpf-dev bpftool iproute2 iputils-ping ethtool nftables haproxy nginx libnginx-mod-stream wrk iperf3 nghttp2-client curl openssl util-linux prometheus chromium bird2 keepalived systemd-container"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# The XDP fast path pins its programs and maps on the BPF filesystem.
if [ "$(id -u)" = 0 ] && ! mountpoint -q /sys/fs/bpf; then
	mount -t bpf bpf /sys/fs/bpf
fi
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:$missing; run as root or install them" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
# The packaged daemons are started on demand by tests and benchmarks only.
for s in nginx haproxy keepalived; do
	systemctl disable --now "$s" >/dev/null 2>&1 || service "$s" stop >/dev/null 2>&1 || true
done
