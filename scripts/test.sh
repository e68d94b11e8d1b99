#!/usr/bin/env bash
# The test suite, on a fresh machine: installs the real services some tests start for
# themselves (redis-server) when they are missing, then runs `cargo test`.
# Arguments are passed to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi
# The tests start redis-server themselves on ephemeral ports; a packaged instance that the
# install may have started is not used.
exec cargo test "$@"
