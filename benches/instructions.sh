#!/usr/bin/env bash
# Instructions and allocations per request (callgrind) on the bare, cache HIT and MISS, split and
# mirror routes, and on the minimal hyper floor; LOADED=1: under load, next to HAProxy and nginx.
# Installs valgrind when missing, builds release binaries, then runs benches/instructions.py
# (argument: another portcullis binary to measure instead).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
if [ "${LOADED:-}" = 1 ] && { ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || ! command -v haproxy >/dev/null; }; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light haproxy wrk >/dev/null
fi
# The gateway on its own: built with the example, it would get the dev-dependencies' features
# (tokio's test-util clock), which cost instructions on every request.
cargo build --release --bin portcullis
cargo build --release --example bench_upstream --example floor_proxy
exec python3 benches/instructions.py "$@"
