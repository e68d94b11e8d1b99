#!/usr/bin/env python3
"""Memory per idle connection (run through benches/conns.sh).

Starts a fast upstream, then in turn Portcullis (1 worker), nginx (1 worker) and HAProxy (1
thread), configured as in the load benchmark. Against each it opens CONNS HTTP/1.1 keep-alive
connections on loopback, sends one proxied request on each, reads the answer and leaves the
connection open and idle; it then reads the resident memory of the proxy's process tree and
prints the growth per connection, as RSS and as PSS (which splits shared pages between the
processes that map them). Every connection is closed before the next proxy starts.
"""

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import (ROOT, children, haproxy_config, memory_kib, nginx_config,  # noqa: E402
                  rss_kib, stop_all, wait_port)

CONNS = int(os.environ.get("CONNS", "4000"))
# How long the connections stay idle before memory is read: long enough for every proxy to
# have finished with the request it served.
SETTLE = float(os.environ.get("SETTLE", "2"))
PORTS = {"upstream": 19180, "portcullis": 19181, "nginx": 19182, "haproxy": 19183}
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
# Another build of the gateway, given as the argument, is measured in place of this one.
BINARY = sys.argv[1] if len(sys.argv) > 1 else f"{ROOT}/target/release/portcullis"


def pss_kib(pids):
    return memory_kib(pids, "smaps_rollup", "Pss:")


def read_answer(sock):
    """Reads one response with a Content-Length body (what the bench upstream sends)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected answer: {head[:40]!r}")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk


def idle_connections(port, count):
    """`count` connections that each carried one request and now sit idle."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(REQUEST)
        read_answer(sock)
        sockets.append(sock)
    return sockets


def measure(name, port, pids):
    # A few requests first, so buffers, pools and lazily built state exist before the count.
    for sock in idle_connections(port, 8):
        sock.close()
    time.sleep(SETTLE)
    before_rss, before_pss = rss_kib(pids), pss_kib(pids)
    sockets = idle_connections(port, CONNS)
    time.sleep(SETTLE)
    after_rss, after_pss = rss_kib(pids), pss_kib(pids)
    for sock in sockets:
        sock.close()
    rss = (after_rss - before_rss) / CONNS
    pss = (after_pss - before_pss) / CONNS
    print(f"{name:<12}{rss:>10.2f}{pss:>10.2f}{before_rss / 1024:>10.1f}{after_rss / 1024:>10.1f}",
          flush=True)


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * CONNS + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < wanted:
        sys.exit(f"CONNS={CONNS} needs {wanted} open files; the hard limit is {hard}")
    tmp = tempfile.mkdtemp(prefix="portcullis-conns-")
    procs = []

    def start(args):
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        return p

    upstream = f"127.0.0.1:{PORTS['upstream']}"
    try:
        start(["taskset", "-c", "1", f"{ROOT}/target/release/examples/bench_upstream", upstream, "100"])
        wait_port(PORTS["upstream"])
        with open(f"{tmp}/gateway.yaml", "w") as f:
            f.write(f"""listeners: [{{ name: http, address: 127.0.0.1:{PORTS['portcullis']} }}]
admin: {{ address: 127.0.0.1:0 }}
access_log: false
limits: {{ max_connections: {CONNS + 100} }}
upstreams:
  bench: {{ discovery: {{ static: [{upstream}] }} }}
routes:
  - name: all
    upstream: bench
""")
        os.makedirs(f"{tmp}/nginx/logs", exist_ok=True)
        with open(f"{tmp}/nginx/nginx.conf", "w") as f:
            # Idle clients kept as long as the other proxies keep them.
            f.write(nginx_config(tmp, f"127.0.0.1:{PORTS['nginx']}", upstream, connections=wanted,
                                 settings=f"worker_rlimit_nofile {wanted};\n")
                    .replace("access_log off;", "access_log off;\n    keepalive_timeout 300s;"
                             "\n    keepalive_requests 100000;"))
        with open(f"{tmp}/haproxy.cfg", "w") as f:
            config = haproxy_config(f"127.0.0.1:{PORTS['haproxy']}", "roundrobin", f"    server s0 {upstream}")
            # Room for every connection, and idle clients kept as long as the others keep them.
            f.write(config.replace("maxconn 8192", f"maxconn {wanted}")
                    .replace("timeout client 60s", "timeout client 300s\n    timeout http-keep-alive 300s"))
        commands = {
            "PORTCULLIS": (["taskset", "-c", "0", BINARY, "-c",
                            f"{tmp}/gateway.yaml", "--workers", "1", "--log-level", "warn"], False),
            "NGINX": (["taskset", "-c", "0", "nginx", "-p", f"{tmp}/nginx", "-c", f"{tmp}/nginx/nginx.conf",
                       "-g", "daemon off;"], True),
            "HAPROXY": (["taskset", "-c", "0", "haproxy", "-f", f"{tmp}/haproxy.cfg", "-db"], False),
        }
        print(f"{CONNS} idle HTTP/1.1 keep-alive connections, one proxied request each")
        print(f"{'':<12}{'KiB RSS':>10}{'KiB PSS':>10}{'MB before':>10}{'MB after':>10}   (per connection)")
        for name, (command, has_workers) in commands.items():
            proxy = start(command)
            port = PORTS[name.lower()]
            wait_port(port)
            pids = [proxy.pid] + (children(proxy.pid) if has_workers else [])
            try:
                measure(name, port, pids)
            finally:
                proxy.terminate()
                proxy.wait(timeout=10)
                procs.remove(proxy)
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
