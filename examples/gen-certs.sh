#!/bin/sh
# Writes the certificates examples/skype.yaml names: a public CA chain with a
# SAN certificate for webext, meet, dialin, lyncdiscover and owas.example.com
# (public.pem = leaf + issuing CA, public.key, public-root-ca.pem for test
# clients), and an internal CA (internal-ca.pem) with certificates for the
# pool members (fe01/fe02/owas01.corp.example.com).
#
# usage: examples/gen-certs.sh [DIR] [-force]     (DIR defaults to /etc/edgeproxy/tls)
set -eu
dir=/etc/edgeproxy/tls
case "${1:-}" in
-*|"") ;;
*) dir=$1; shift ;;
esac
cd "$(dirname "$0")/.."
exec go run ./internal/certgen/cmd/certgen -dir "$dir" "$@"
