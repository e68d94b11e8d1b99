#!/usr/bin/env bash
# Memory per idle connection: PORTCULLIS vs NGINX vs HAPROXY, each holding CONNS (4000) idle
# HTTP/1.1 keep-alive connections on loopback that carried one proxied request each. Installs
# nginx-light and haproxy when missing, builds release binaries, then runs benches/conns.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light haproxy >/dev/null
fi
cargo build --release --bin portcullis
cargo build --release --example bench_upstream
exec python3 benches/conns.py "$@"
