#!/usr/bin/env bash
# The test suite, on a fresh machine: installs the real services some tests start for
# themselves (redis-server, etcd, dnsmasq, ZooKeeper on a JVM, headless Chromium with its
# WebDriver for the status page) when they are missing, then runs `cargo test`.
# Arguments are passed to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
# The ZooKeeper server runs from Debian's jar (the package brings a JRE).
{ [ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null; } || missing+=(zookeeper)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The tests start these servers themselves on ephemeral loopback ports; packaged instances
# that the install may have started are not used.
exec cargo test "$@"
