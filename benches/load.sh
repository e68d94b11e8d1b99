#!/usr/bin/env bash
# Load benchmark: DIRECT vs PORTCULLIS vs NGINX vs HAPROXY vs a minimal hyper FLOOR in one run,
# on loopback. Installs nginx-light, haproxy and wrk when missing, builds release binaries, then
# runs benches/load.py.
# Settings (environment): ROUNDS (3), DURATION (10 s), BODY (100 bytes), CONNECTIONS (64),
# TLS=1, JWT=HS256|RS256 with JWT_TOKENS, LIMIT=local|redis, CACHE=1, TRAFFIC=1, TRACING=1, ENDPOINTS=4 with
# BALANCE=round_robin|random|least_request, REALISTIC=1, ONLY=name,name to measure only those targets
# (see load.py).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || ! command -v haproxy >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light haproxy wrk >/dev/null
fi
# The gateway on its own: built with the examples, it would get the dev-dependencies' features
# (tokio's test-util clock), which cost instructions on every request.
cargo build --release --bin portcullis
cargo build --release --example bench_upstream --example bench_tokens --example floor_proxy
exec python3 benches/load.py "$@"
