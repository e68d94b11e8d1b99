#!/usr/bin/env python3
"""Memory per idle connection (run through benches/conns.sh).

Starts a fast upstream, then in turn Portcullis (1 worker), nginx (1 worker) and HAProxy (1
thread), configured as in the load benchmark. Against each, for each kind of connection, it
opens CONNS connections on loopback, sends one proxied request on each, reads the answer and
leaves the connection open and idle; it then reads the resident memory of the proxy's process
tree and prints the growth per connection, as RSS and as PSS (which splits shared pages between
the processes that map them). Each kind is measured on a freshly started proxy.

Kinds (KINDS, comma-separated; all by default):
  h1   HTTP/1.1 keep-alive, plaintext
  h1-body
       the same, its one request a POST with a 64-byte body
  h2c  HTTP/2 with prior knowledge, plaintext (one stream, then idle)
  tls  HTTP/1.1 keep-alive over TLS 1.3 (a self-signed P-256 certificate)
  stall-100, stall-16k, stall-1m
       a request in flight: STALLED (500) HTTP/1.1 clients each ask for a response of 100 B,
       16 KiB or 1 MiB and never read it (their receive buffer set to its minimum), so what
       the proxy holds for a response it cannot deliver shows, per request
"""

import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import (ROOT, children, haproxy_config, memory_kib, nginx_config,  # noqa: E402
                  rss_kib, self_signed, stop_all, wait_port)

CONNS = int(os.environ.get("CONNS", "4000"))
STALLED = int(os.environ.get("STALLED", "500"))
KINDS = os.environ.get("KINDS", "h1,h1-body,h2c,tls,stall-100,stall-16k,stall-1m").split(",")
# The stalled kinds' response sizes, each from an upstream of its own.
STALLS = {"stall-100": (100, 19190), "stall-16k": (16384, 19191), "stall-1m": (1048576, 19192)}
# How long the connections stay idle before memory is read: long enough for every proxy to
# have finished with the request it served.
SETTLE = float(os.environ.get("SETTLE", "2"))
# Each proxy listens on a plaintext port (HTTP/1.1, and h2c unless a third port is given for
# it) and a TLS one.
PORTS = {"upstream": 19180, "portcullis": (19181, 19184), "nginx": (19182, 19185, 19187),
         "haproxy": (19183, 19186)}
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
REQUEST_WITH_BODY = b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Length: 64\r\n\r\n" + b"x" * 64
# Another build of the gateway, given as the argument, is measured in place of this one.
BINARY = sys.argv[1] if len(sys.argv) > 1 else f"{ROOT}/target/release/portcullis"

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS, H2_HEADERS, H2_END_STREAM, H2_ACK = 4, 1, 0x1, 0x1
# GET http://bench/ in HPACK: :method GET, :path /, :scheme http from the static table, and
# :authority (static name 1) as a literal not indexed.
H2_GET = bytes([0x82, 0x84, 0x86, 0x01, 0x05]) + b"bench"


def h2_frame(kind, flags, stream, payload=b""):
    return (len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big")
            + payload)


def pss_kib(pids):
    return memory_kib(pids, "smaps_rollup", "Pss:")


def recv_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed early")
        data += chunk
    return data


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
    recv_exactly(sock, length - len(body))


def h2_exchange(sock):
    """Opens HTTP/2 on `sock` and carries one GET on stream 1 to its end."""
    sock.sendall(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0) + h2_frame(H2_HEADERS, 0x4 | H2_END_STREAM, 1, H2_GET))
    while True:
        length, kind, flags, stream = (lambda h: (int.from_bytes(h[:3], "big"), h[3], h[4],
                                                  int.from_bytes(h[5:9], "big") & 0x7FFFFFFF))(
            recv_exactly(sock, 9))
        recv_exactly(sock, length)
        if kind == H2_SETTINGS and not flags & H2_ACK:
            sock.sendall(h2_frame(H2_SETTINGS, H2_ACK, 0))
        if kind == 7:
            raise ConnectionError("GOAWAY")
        if stream == 1 and kind in (0, H2_HEADERS) and flags & H2_END_STREAM:
            return


TLS_CONTEXT = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
TLS_CONTEXT.check_hostname = False
TLS_CONTEXT.verify_mode = ssl.CERT_NONE


def open_one(kind, ports):
    if kind in STALLS:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        sock.settimeout(10)
        sock.connect(("127.0.0.1", ports[0]))
        sock.sendall(f"GET /{kind} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        return sock
    plain, tls = ports[:2]
    if kind == "h2c" and len(ports) > 2:
        plain = ports[2]
    if kind == "tls":
        sock = TLS_CONTEXT.wrap_socket(socket.create_connection(("127.0.0.1", tls), timeout=10))
    else:
        sock = socket.create_connection(("127.0.0.1", plain), timeout=10)
    if kind == "h2c":
        h2_exchange(sock)
    else:
        sock.sendall(REQUEST_WITH_BODY if kind == "h1-body" else REQUEST)
        read_answer(sock)
    return sock


def idle_connections(kind, ports, count):
    """`count` connections that each carried one request and now sit idle."""
    return [open_one(kind, ports) for _ in range(count)]


def measure(name, kind, ports, pids):
    # A few requests first, so buffers, pools and lazily built state exist before the count.
    for sock in idle_connections("h1" if kind in STALLS else kind, ports, 8):
        sock.close()
    time.sleep(SETTLE)
    count = STALLED if kind in STALLS else CONNS
    before_rss, before_pss = rss_kib(pids), pss_kib(pids)
    sockets = idle_connections(kind, ports, count)
    time.sleep(SETTLE)
    after_rss, after_pss = rss_kib(pids), pss_kib(pids)
    for sock in sockets:
        sock.close()
    rss = (after_rss - before_rss) / count
    pss = (after_pss - before_pss) / count
    print(f"{name:<12}{kind:<10}{rss:>10.2f}{pss:>10.2f}{before_rss / 1024:>10.1f}"
          f"{after_rss / 1024:>10.1f}", flush=True)


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
    cert, cert_key = self_signed(tmp)
    try:
        start(["taskset", "-c", "1", f"{ROOT}/target/release/examples/bench_upstream", upstream, "100"])
        wait_port(PORTS["upstream"])
        for size, port in STALLS.values():
            start(["taskset", "-c", "1", f"{ROOT}/target/release/examples/bench_upstream",
                   f"127.0.0.1:{port}", str(size)])
            wait_port(port)
        stall_upstreams = "".join(f"  {kind}: {{ discovery: {{ static: [127.0.0.1:{port}] }} }}\n"
                                  for kind, (_, port) in STALLS.items())
        stall_routes = "".join(f"  - {{ name: {kind}, match: {{ path: /{kind} }}, upstream: {kind} }}\n"
                               for kind in STALLS)
        nginx_stalls = "".join(f"upstream {kind} {{ server 127.0.0.1:{port}; keepalive 128; }}\n    "
                               for kind, (_, port) in STALLS.items())
        nginx_locations = "".join(f"location = /{kind} {{ proxy_pass http://{kind}; proxy_http_version 1.1; "
                                  f"proxy_set_header Connection \"\"; }}\n        " for kind in STALLS)
        haproxy_rules = "".join(f"    use_backend {kind} if {{ path /{kind} }}\n" for kind in STALLS)
        haproxy_backends = "".join(f"backend {kind}\n    server s0 127.0.0.1:{port}\n"
                                   for kind, (_, port) in STALLS.items())
        plain, tls = PORTS["portcullis"]
        with open(f"{tmp}/gateway.yaml", "w") as f:
            # Idle clients kept as long as the other proxies keep them.
            f.write(f"""listeners:
  - {{ name: http, address: 127.0.0.1:{plain} }}
  - {{ name: https, address: 127.0.0.1:{tls}, tls: {{ certificates: [{{ cert_file: {cert}, key_file: {cert_key} }}] }} }}
admin: {{ address: 127.0.0.1:0 }}
access_log: false
limits: {{ max_connections: {CONNS + 100}, idle_timeout: 300s, header_read_timeout: 300s }}
upstreams:
  bench: {{ discovery: {{ static: [{upstream}] }} }}
{stall_upstreams}routes:
{stall_routes}  - name: all
    upstream: bench
""")
        os.makedirs(f"{tmp}/nginx/logs", exist_ok=True)
        plain, tls, h2c = PORTS["nginx"]
        with open(f"{tmp}/nginx/nginx.conf", "w") as f:
            # nginx 1.22 turns HTTP/2 on per listening port: h2c gets a port of its own.
            f.write(nginx_config(tmp, f"127.0.0.1:{plain}", upstream, connections=wanted,
                                 settings=f"worker_rlimit_nofile {wanted};\n")
                    .replace("access_log off;", "access_log off;\n    keepalive_timeout 300s;"
                             "\n    keepalive_requests 100000;"
                             f"\n    ssl_certificate {cert};\n    ssl_certificate_key {cert_key};")
                    .replace(f"listen 127.0.0.1:{plain};",
                             f"listen 127.0.0.1:{plain};\n        listen 127.0.0.1:{tls} ssl;"
                             f"\n        listen 127.0.0.1:{h2c} http2;")
                    .replace("upstream bench", f"{nginx_stalls}upstream bench")
                    .replace("location / {", f"{nginx_locations}location / {{"))
        with open(f"{tmp}/haproxy.pem", "w") as pem:
            pem.write(open(cert).read() + open(cert_key).read())
        plain, tls = PORTS["haproxy"]
        with open(f"{tmp}/haproxy.cfg", "w") as f:
            config = haproxy_config(f"127.0.0.1:{plain}", "roundrobin", f"    server s0 {upstream}")
            # Room for every connection, and idle clients kept as long as the others keep them.
            # HTTP/1.1 and h2c share the plaintext port (HAProxy detects the preface).
            f.write(config.replace("maxconn 8192", f"maxconn {wanted}")
                    .replace("timeout client 60s", "timeout client 300s\n    timeout http-keep-alive 300s")
                    .replace(f"bind 127.0.0.1:{plain}",
                             f"bind 127.0.0.1:{plain}\n    bind 127.0.0.1:{tls} ssl crt {tmp}/haproxy.pem")
                    .replace("    default_backend bench", f"{haproxy_rules}    default_backend bench")
                    + haproxy_backends)
        commands = {
            "PORTCULLIS": (["taskset", "-c", "0", BINARY, "-c",
                            f"{tmp}/gateway.yaml", "--workers", "1", "--log-level", "warn"], False),
            "NGINX": (["taskset", "-c", "0", "nginx", "-p", f"{tmp}/nginx", "-c", f"{tmp}/nginx/nginx.conf",
                       "-g", "daemon off;"], True),
            "HAPROXY": (["taskset", "-c", "0", "haproxy", "-f", f"{tmp}/haproxy.cfg", "-db"], False),
        }
        print(f"{CONNS} idle keep-alive connections of each kind, one proxied request each")
        print(f"{'':<12}{'kind':<10}{'KiB RSS':>10}{'KiB PSS':>10}{'MB before':>10}{'MB after':>10}"
              "   (per connection)")
        # A fresh process for every kind: memory freed by one kind's connections stays
        # resident and would be reused by the next.
        for name, (command, has_workers) in commands.items():
            ports = PORTS[name.lower()]
            for kind in KINDS:
                proxy = start(command)
                wait_port(ports[0])
                pids = [proxy.pid] + (children(proxy.pid) if has_workers else [])
                try:
                    measure(name, kind, ports, pids)
                finally:
                    proxy.terminate()
                    proxy.wait(timeout=10)
                    procs.remove(proxy)
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
