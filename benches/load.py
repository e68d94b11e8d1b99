#!/usr/bin/env python3
"""Load benchmark orchestration (run through benches/load.sh).

Starts a fast upstream, Portcullis (1 worker), nginx (1 worker) and HAProxy (1 thread) as
equivalent keep-alive reverse proxies on loopback, and FLOOR, a minimal hyper proxy
(examples/floor_proxy.rs: one upstream, pooled connections, nothing else) that shows what hyper
itself costs. Proxies are pinned to core 0; the upstream and wrk to core 1. Rounds interleave
the targets; medians are reported, with proxy CPU time per request (from /proc/PID/stat) and
resident memory idle and under load.

The proxies' configs are as close to Portcullis's bare route as their features allow: HTTP/1.1
keep-alive to the upstream with connection reuse, X-Forwarded-For added, no access log, one
worker (nginx `worker_processes 1`, HAProxy `nbthread 1`). FLOOR sets no forwarded headers and
checks nothing, and does not speak TLS (left out with TLS=1).
"""

import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "10"))
BODY = int(os.environ.get("BODY", "16384" if os.environ.get("COMPRESS", "") not in ("", "0") else "100"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "64"))
EXTRA_YAML = os.environ.get("EXTRA_ROUTE_YAML", "")
# TLS=1: both proxies terminate TLS (a self-signed certificate made with openssl) and wrk
# speaks https to them; DIRECT stays plaintext.
TLS = os.environ.get("TLS", "") not in ("", "0")
# JWT=HS256 or JWT=RS256: also measure PORTCULLIS+JWT, the same proxy on a route with a `jwt`
# filter, against the bare route. JWT_TOKENS distinct tokens are sent in turn: 1 (default)
# measures the verification cache; more than the cache holds per worker (4096) measures a full
# verification on every request.
JWT = os.environ.get("JWT", "")
JWT_TOKENS = int(os.environ.get("JWT_TOKENS", "1"))
# LIMIT=local or LIMIT=redis: also measure PORTCULLIS+LIMIT, a route with a rate_limit (that
# never refuses) and a circuit_breaker, against the bare route. redis starts a redis-server.
LIMIT = os.environ.get("LIMIT", "")
# CACHE=1: also measure PORTCULLIS+HIT (a cache filter answering every request) and
# PORTCULLIS+MISS (a cache filter whose responses are never storable: the miss path).
CACHE = os.environ.get("CACHE", "") not in ("", "0")
# COMPRESS=1: the upstream sends a JSON document of BODY bytes (default 16 KiB); also measure
# PORTCULLIS+GZIP and NGINX+GZIP (both gzip level 1, nginx's default) for clients that accept
# gzip, with the bytes each sends.
COMPRESS = os.environ.get("COMPRESS", "") not in ("", "0")
# EXT_AUTHZ=1: also measure PORTCULLIS+AUTHZ, a route with ext_authz against a second fast
# upstream on the upstream's core that allows everything, and print the p50 it adds.
EXT_AUTHZ = os.environ.get("EXT_AUTHZ", "") not in ("", "0")
# TRAFFIC=1: also measure PORTCULLIS+SPLIT (a 90/10 split across two upstreams over the same
# endpoints, sticky by a header every request carries) and PORTCULLIS+MIRROR (10% of requests
# copied to a third such upstream) against the bare route.
TRAFFIC = os.environ.get("TRAFFIC", "") not in ("", "0")
# TRACING=1: also measure PORTCULLIS+TRACED, a second Portcullis with the same config plus
# `tracing:` at sample 1.0 (every request exported as OTLP/HTTP; the upstream process, which
# answers any request, stands in for the collector), against the bare route.
TRACING = os.environ.get("TRACING", "") not in ("", "0")
# BASELINE=/path/to/portcullis: also measure that build (BASELINE) with the same config in the
# same interleaved rounds, and print this build's ratios to it.
BASELINE = os.environ.get("BASELINE", "")
# ONLY=PORTCULLIS,PORTCULLIS+TRACED: measure only these targets (more rounds of one comparison
# in the same time; the comparisons with targets left out are not printed).
ONLY = [name for name in os.environ.get("ONLY", "").split(",") if name]
# ENDPOINTS=4: both proxies balance over that many upstream processes (DIRECT still talks to
# the first), with BALANCE=round_robin (default), random or least_request (nginx: its default
# round robin, random, least_conn).
ENDPOINTS = int(os.environ.get("ENDPOINTS", "1"))
BALANCE = os.environ.get("BALANCE", "round_robin")
# REALISTIC=1: also measure PORTCULLIS+REAL, a route as a production API would have it (a `jwt`
# filter with HS256 and one token, a local rate_limit that never refuses, a circuit_breaker, and
# an upstream of 4 endpoints balanced least_request), against NGINX on its bare route.
REALISTIC = os.environ.get("REALISTIC", "") not in ("", "0")
REAL_ENDPOINTS = 4
PORTS = {"upstream": 19080, "portcullis": 19081, "nginx": 19082, "redis": 19083, "baseline": 19084,
         "auth": 19085, "floor": 19086, "haproxy": 19087, "traced": 19088}
TICK = os.sysconf("SC_CLK_TCK")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def memory_kib(pids, source="status", field="VmRSS:"):
    """A memory figure in KiB added up over `pids`: RSS by default; PSS from `smaps_rollup`."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/{source}") as f:
            for line in f:
                if line.startswith(field):
                    total += int(line.split()[1])
    return total


def rss_kib(pids):
    return memory_kib(pids)


def stop_all(procs):
    """Stops the processes a benchmark started, the last started first; kills a straggler."""
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]
    except OSError:
        return []


def nginx_config(tmp, listen, upstream, settings="", connections=4096):
    """nginx as the plain keep-alive reverse proxy of one upstream, one worker, no access log,
    X-Forwarded-For added; `settings`: more lines at the top of the file or of `http`."""
    return f"""worker_processes 1;
pid {tmp}/nginx/nginx.pid;
error_log {tmp}/nginx/logs/error.log warn;
events {{ worker_connections {connections}; }}
{settings}http {{
    access_log off;
    upstream bench {{ server {upstream}; keepalive 128; }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def haproxy_config(bind, balance, servers):
    """HAProxy as an equivalent keep-alive reverse proxy: one thread, connection reuse to the
    upstream, X-Forwarded-For added, no log. `servers`: its `server` lines."""
    return f"""global
    nbthread 1
    maxconn 8192
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    option forwardfor
    http-reuse always
frontend bench
    bind {bind}
    default_backend bench
backend bench
    balance {balance}
{servers}
"""


def self_signed(tmp):
    """A self-signed P-256 certificate for localhost and 127.0.0.1, made with openssl: the
    paths of the certificate and its key."""
    cert, key = f"{tmp}/cert.pem", f"{tmp}/key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def wait_port(port, timeout=10):
    """Waits until something accepts TCP connections on the port."""
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listening on {port}")


def gzip_size(port, scheme="http"):
    """Bytes of one gzip answer from `port`'s /gzip route."""
    out = subprocess.run(["curl", "-sk", "-H", "Accept-Encoding: gzip", "-o", "/dev/null", "-w", "%{size_download}",
                          f"{scheme}://127.0.0.1:{port}/gzip"], capture_output=True, text=True, check=True)
    return int(out.stdout)


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(port, scheme="http", extra=(), path="/"):
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION}s", "--latency"]
        + list(extra) + [f"{scheme}://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = dict(re.findall(r"\s+(50|99)%\s+([\d.]+\w+)", out))
    parse = lambda s: to_ms(*re.match(r"([\d.]+)(\w+)", s).groups())
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        sys.exit(f"wrk saw {errors.group(1)} error responses on port {port}:\n{out}")
    return rps, total, parse(lat["50"]), parse(lat["99"])


def measure(name, port, pids, scheme="http", extra=(), path="/"):
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            if pids:
                peak[0] = max(peak[0], rss_kib(pids))

    sampler = threading.Thread(target=sample)
    sampler.start()
    before = cpu_ticks(pids) if pids else 0
    rps, total, p50, p99 = wrk(port, scheme, extra, path)
    after = cpu_ticks(pids) if pids else 0
    stop.set()
    sampler.join()
    cpu_us = (after - before) * 1e6 / TICK / total if pids else float("nan")
    return {"rps": rps, "p50": p50, "p99": p99, "cpu_us": cpu_us, "rss_load": peak[0] / 1024}


def main():
    tmp = tempfile.mkdtemp(prefix="portcullis-bench-")
    procs = []

    def start(args, **kw):
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        procs.append(p)
        return p

    try:
        processes = max(ENDPOINTS, REAL_ENDPOINTS if REALISTIC else 1)
        all_ports = [PORTS["upstream"]] + [19090 + i for i in range(1, processes)]
        upstream_ports = all_ports[:ENDPOINTS]
        for port in all_ports:
            start(["taskset", "-c", "1", f"{ROOT}/target/release/examples/bench_upstream",
                   f"127.0.0.1:{port}", str(BODY)] + (["json"] if COMPRESS else []))
            wait_port(port)
        if EXT_AUTHZ:
            start(["taskset", "-c", "1", f"{ROOT}/target/release/examples/bench_upstream",
                   f"127.0.0.1:{PORTS['auth']}", "0"])
            wait_port(PORTS["auth"])
        endpoints = ", ".join(f"127.0.0.1:{port}" for port in upstream_ports)
        nginx_servers = " ".join(f"server 127.0.0.1:{port};" for port in upstream_ports)
        nginx_balance = {"round_robin": "", "random": "random;", "least_request": "least_conn;"}[BALANCE]

        cert, cert_key = self_signed(tmp) if TLS else ("", "")
        tls_yaml = f", tls: {{ certificates: [{{ cert_file: {cert}, key_file: {cert_key} }}] }}" if TLS else ""
        jwt_yaml, jwt_route, jwt_args = "", "", []
        if JWT:
            tokens = f"{tmp}/tokens.txt"
            with open(tokens, "w") as f:
                subprocess.run([f"{ROOT}/target/release/examples/bench_tokens", JWT, str(JWT_TOKENS)],
                               stdout=f, check=True, cwd=ROOT)
            key = ("secret: a-benchmark-secret-of-sufficient-length" if JWT == "HS256"
                   else f"public_key_file: {ROOT}/benches/keys/rsa-bench-public.pem")
            jwt_yaml = f"""jwt_providers:
  bench: {{ issuer: https://auth.example.com, audiences: [api], algorithms: [{JWT}], {key} }}
"""
            jwt_route = """  - name: jwt
    match: { path_prefix: /jwt }
    upstream: bench
    filters: [ { jwt: { provider: bench, forward_claims: { sub: x-user-id } } } ]
"""
            script = f"{tmp}/tokens.lua"
            with open(tokens) as f:
                first = f.readline().strip()
            # One token: a plain header, so wrk spends nothing on scripting.
            jwt_args = (["-H", f"Authorization: Bearer {first}"] if JWT_TOKENS == 1
                        else ["-s", script])
            with open(script, "w") as f:
                f.write(f"""local tokens = {{}}
for line in io.lines("{tokens}") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/jwt", {{ ["Authorization"] = "Bearer " .. tokens[i] }})
end
""")
        limit_yaml, limit_route = "", ""
        if LIMIT:
            if LIMIT == "redis":
                start(["taskset", "-c", "1", "redis-server", "--port", str(PORTS["redis"]), "--bind",
                       "127.0.0.1", "--save", "", "--appendonly", "no"])
                wait_port(PORTS["redis"])
                limit_yaml = f"stores: {{ redis: {{ url: redis://127.0.0.1:{PORTS['redis']}, timeout: 50ms }} }}\n"
            limit_route = f"""  - name: limited
    match: {{ path_prefix: /limited }}
    upstream: bench
    filters:
      - rate_limit: {{ rate: 100000000/s, burst: 100000000, key: client_ip, store: {LIMIT} }}
      - circuit_breaker: {{ failure_ratio: 0.5, min_requests: 20, window: 10s, open_for: 30s }}
"""
        real_yaml, real_route, real_args = "", "", []
        if REALISTIC:
            real_endpoints = ", ".join(f"127.0.0.1:{port}" for port in all_ports[:REAL_ENDPOINTS])
            token = subprocess.run([f"{ROOT}/target/release/examples/bench_tokens", "HS256", "1"],
                                   capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
            real_args = ["-H", f"Authorization: Bearer {token}"]
            real_yaml = """  real_jwt: { issuer: https://auth.example.com, audiences: [api], algorithms: [HS256],
              secret: a-benchmark-secret-of-sufficient-length }
""" if JWT else """jwt_providers:
  real_jwt: { issuer: https://auth.example.com, audiences: [api], algorithms: [HS256],
              secret: a-benchmark-secret-of-sufficient-length }
"""
            real_route = """  - name: real
    match: { path_prefix: /real }
    upstream: real
    filters:
      - jwt: { provider: real_jwt, forward_claims: { sub: x-user-id } }
      - rate_limit: { rate: 100000000/s, burst: 100000000, key: client_ip }
      - circuit_breaker: { failure_ratio: 0.5, min_requests: 20, window: 10s, open_for: 30s }
"""
        cache_routes = real_route
        if CACHE:
            cache_routes = """  - name: hit
    match: { path_prefix: /hit }
    upstream: bench
    filters: [ { cache: { ttl: 1h } } ]
  - name: miss
    match: { path_prefix: /miss }
    upstream: bench
    filters: [ { cache: {} } ]
"""
        if COMPRESS:
            cache_routes += """  - name: gzip
    match: { path_prefix: /gzip }
    upstream: bench
    filters: [ { compress: { algorithms: [gzip], levels: { gzip: 1 } } } ]
"""
        auth_yaml = ""
        if EXT_AUTHZ:
            auth_yaml = f"  auth: {{ discovery: {{ static: [127.0.0.1:{PORTS['auth']}] }} }}\n"
            cache_routes += """  - name: authz
    match: { path_prefix: /authz }
    upstream: bench
    filters: [ { ext_authz: { upstream: auth, path: /check, upstream_headers: [x-user-id] } } ]
"""
        if TRAFFIC:
            auth_yaml += f"""  canary: {{ discovery: {{ static: [{endpoints}] }}, balance: {BALANCE} }}
  shadow: {{ discovery: {{ static: [{endpoints}] }} }}
"""
            cache_routes += """  - name: split
    match: { path_prefix: /split }
    upstream: { split: [{ upstream: bench, weight: 90 }, { upstream: canary, weight: 10 }], sticky: { header: x-user } }
  - name: mirror
    match: { path_prefix: /mirror }
    upstream: bench
    mirror: { upstream: shadow, percent: 10 }
"""
        real_upstream = (f"  real: {{ discovery: {{ static: [{real_endpoints}] }}, balance: least_request }}\n"
                         if REALISTIC else "")
        # Like nginx below: no access log. Metrics stay on.
        config = f"""listeners: [{{ name: http, address: 127.0.0.1:{PORTS['portcullis']}{tls_yaml} }}]
admin: {{ address: 127.0.0.1:0 }}
access_log: false
upstreams:
  bench: {{ discovery: {{ static: [{endpoints}] }}, balance: {BALANCE} }}
{auth_yaml}{real_upstream}{jwt_yaml}{real_yaml}{limit_yaml}routes:
{EXTRA_YAML}{jwt_route}{limit_route}{cache_routes}  - name: all
    upstream: bench
"""
        with open(f"{tmp}/gateway.yaml", "w") as f:
            f.write(config)
        portcullis = start(["taskset", "-c", "0", f"{ROOT}/target/release/portcullis",
                            "-c", f"{tmp}/gateway.yaml", "--workers", "1", "--log-level", "warn"])
        wait_port(PORTS["portcullis"])
        traced = None
        if TRACING:
            with open(f"{tmp}/traced.yaml", "w") as f:
                f.write(config.replace(f"127.0.0.1:{PORTS['portcullis']}", f"127.0.0.1:{PORTS['traced']}", 1)
                        + f"tracing: {{ otlp: {{ endpoint: http://127.0.0.1:{PORTS['upstream']} }}, sample: 1.0 }}\n")
            traced = start(["taskset", "-c", "0", f"{ROOT}/target/release/portcullis", "-c", f"{tmp}/traced.yaml",
                            "--workers", "1", "--log-level", "warn"])
            wait_port(PORTS["traced"])
        baseline = None
        if BASELINE:
            with open(f"{tmp}/baseline.yaml", "w") as f:
                f.write(config.replace(f"127.0.0.1:{PORTS['portcullis']}", f"127.0.0.1:{PORTS['baseline']}", 1))
            baseline = start(["taskset", "-c", "0", BASELINE, "-c", f"{tmp}/baseline.yaml",
                              "--workers", "1", "--log-level", "warn"])
            wait_port(PORTS["baseline"])

        os.makedirs(f"{tmp}/nginx/logs", exist_ok=True)
        with open(f"{tmp}/nginx/nginx.conf", "w") as f:
            f.write(f"""worker_processes 1;
pid {tmp}/nginx/nginx.pid;
error_log {tmp}/nginx/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream bench {{ {nginx_balance} {nginx_servers} keepalive 128; }}
    server {{
        listen 127.0.0.1:{PORTS['nginx']}{' ssl' if TLS else ''};
        {f'ssl_certificate {cert}; ssl_certificate_key {cert_key};' if TLS else ''}
        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
        location /gzip {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            gzip on; gzip_comp_level 1; gzip_proxied any; gzip_min_length 1024;
            gzip_types application/json; gzip_vary on;
        }}
    }}
}}
""")
        nginx = start(["taskset", "-c", "0", "nginx", "-p", f"{tmp}/nginx", "-c",
                       f"{tmp}/nginx/nginx.conf", "-g", "daemon off;"])
        wait_port(PORTS["nginx"])

        haproxy_balance = {"round_robin": "roundrobin", "random": "random",
                           "least_request": "leastconn"}[BALANCE]
        haproxy_servers = "\n".join(f"    server s{i} 127.0.0.1:{port}"
                                     for i, port in enumerate(upstream_ports))
        haproxy_bind = f"127.0.0.1:{PORTS['haproxy']}"
        if TLS:
            with open(f"{tmp}/haproxy.pem", "w") as pem:
                pem.write(open(cert).read() + open(cert_key).read())
            haproxy_bind += f" ssl crt {tmp}/haproxy.pem"
        with open(f"{tmp}/haproxy.cfg", "w") as f:
            f.write(haproxy_config(haproxy_bind, haproxy_balance, haproxy_servers))
        haproxy = start(["taskset", "-c", "0", "haproxy", "-f", f"{tmp}/haproxy.cfg", "-db"])
        wait_port(PORTS["haproxy"])
        floor = None
        if not TLS:
            floor = start(["taskset", "-c", "0", f"{ROOT}/target/release/examples/floor_proxy",
                           f"127.0.0.1:{PORTS['floor']}", f"127.0.0.1:{PORTS['upstream']}"])
            wait_port(PORTS["floor"])
        time.sleep(0.5)

        proxied = "https" if TLS else "http"
        targets = {
            "DIRECT": (PORTS["upstream"], [], "http", [], "/"),
            "PORTCULLIS": (PORTS["portcullis"], [portcullis.pid], proxied, [], "/"),
            "NGINX": (PORTS["nginx"], [nginx.pid] + children(nginx.pid), proxied, [], "/"),
            "HAPROXY": (PORTS["haproxy"], [haproxy.pid], proxied, [], "/"),
        }
        if floor:
            targets["FLOOR"] = (PORTS["floor"], [floor.pid], "http", [], "/")
        if baseline:
            targets["BASELINE"] = (PORTS["baseline"], [baseline.pid], proxied, [], "/")
        if traced:
            targets["PORTCULLIS+TRACED"] = (PORTS["traced"], [traced.pid], proxied, [], "/")
        if JWT:
            targets["PORTCULLIS+JWT"] = (PORTS["portcullis"], [portcullis.pid], proxied, jwt_args, "/jwt")
        if CACHE:
            targets["PORTCULLIS+HIT"] = (PORTS["portcullis"], [portcullis.pid], proxied, [], "/hit")
            targets["PORTCULLIS+MISS"] = (PORTS["portcullis"], [portcullis.pid], proxied, [], "/miss")
        gzip_args = ["-H", "Accept-Encoding: gzip"]
        if COMPRESS:
            targets["PORTCULLIS+GZIP"] = (PORTS["portcullis"], [portcullis.pid], proxied, gzip_args, "/gzip")
            targets["NGINX+GZIP"] = (PORTS["nginx"], [nginx.pid] + children(nginx.pid), proxied, gzip_args, "/gzip")
        if EXT_AUTHZ:
            targets["PORTCULLIS+AUTHZ"] = (PORTS["portcullis"], [portcullis.pid], proxied, [], "/authz")
        if TRAFFIC:
            targets["PORTCULLIS+SPLIT"] = (PORTS["portcullis"], [portcullis.pid], proxied,
                                           ["-H", "x-user: 42"], "/split")
            targets["PORTCULLIS+MIRROR"] = (PORTS["portcullis"], [portcullis.pid], proxied, [], "/mirror")
        if REALISTIC:
            targets["PORTCULLIS+REAL"] = (PORTS["portcullis"], [portcullis.pid], proxied, real_args, "/real")
        if LIMIT:
            targets["PORTCULLIS+LIMIT"] = (PORTS["portcullis"], [portcullis.pid], proxied, [], "/limited")
        if ONLY:
            targets = {name: target for name, target in targets.items() if name in ONLY}
        idle = {name: rss_kib(pids) / 1024 for name, (_, pids, *_) in targets.items() if pids}
        results = {name: [] for name in targets}
        print(f"body {BODY} B, {CONNECTIONS} connections, {DURATION} s x {ROUNDS} rounds"
              f"{', proxies over TLS' if TLS else ''}"
              f"{f', {ENDPOINTS} upstream endpoints ({BALANCE})' if ENDPOINTS > 1 else ''}"
              f"{f', JWT {JWT} over {JWT_TOKENS} token(s)' if JWT else ''}"
              f"{f', rate limit + breaker ({LIMIT} store)' if LIMIT else ''}"
              f"{', realistic route' if REALISTIC else ''}", flush=True)
        for round_ in range(ROUNDS):
            order = list(targets)
            order = order[round_ % len(order):] + order[: round_ % len(order)]
            for name in order:
                port, pids, scheme, extra, path = targets[name]
                r = measure(name, port, pids, scheme, extra, path)
                results[name].append(r)
                print(f"  round {round_ + 1} {name:<14} {r['rps']:>10.0f} req/s  p50 {r['p50']:.3f} ms"
                      f"  p99 {r['p99']:.3f} ms  cpu {r['cpu_us']:.2f} us/req", flush=True)

        med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in results.items()}
        print()
        print(f"{'':<15}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/req':>12}{'RSS idle MB':>13}{'RSS load MB':>13}")
        for name, m in med.items():
            cpu = f"{m['cpu_us']:.2f}" if name != "DIRECT" else "-"
            ri = f"{idle[name]:.1f}" if name in idle else "-"
            rl = f"{m['rss_load']:.1f}" if name != "DIRECT" else "-"
            print(f"{name:<15}{m['rps']:>10.0f}{m['p50']:>9.3f}{m['p99']:>9.3f}{cpu:>12}{ri:>13}{rl:>13}")
        p = med["PORTCULLIS"]
        print()
        if traced and "PORTCULLIS+TRACED" in med:
            # Each round's pair measured minutes apart at most: the spread of these ratios is
            # the machine's noise, and their median drifts less than the ratio of medians.
            ratios = sorted(t["rps"] / b["rps"] for t, b in zip(results["PORTCULLIS+TRACED"], results["PORTCULLIS"]))
            print(f"TRACED 1.0/bare    throughput per round: median {statistics.median(ratios):.2f}x, "
                  f"range {ratios[0]:.2f}x-{ratios[-1]:.2f}x")
        if ONLY:
            return
        d, n = med["DIRECT"], med["NGINX"]
        print(f"PORTCULLIS/DIRECT  throughput {p['rps'] / d['rps']:.2f}x")
        print(f"PORTCULLIS/NGINX   throughput {p['rps'] / n['rps']:.2f}x   "
              f"cpu/request {p['cpu_us'] / n['cpu_us']:.2f}x   p99 {p['p99'] / n['p99']:.2f}x")
        h = med["HAPROXY"]
        print(f"PORTCULLIS/HAPROXY throughput {p['rps'] / h['rps']:.2f}x   "
              f"cpu/request {p['cpu_us'] / h['cpu_us']:.2f}x   p99 {p['p99'] / h['p99']:.2f}x")
        if floor:
            fl = med["FLOOR"]
            print(f"PORTCULLIS/FLOOR   throughput {p['rps'] / fl['rps']:.2f}x   "
                  f"cpu/request {p['cpu_us'] / fl['cpu_us']:.2f}x   p99 {p['p99'] / fl['p99']:.2f}x")
        if baseline:
            b = med["BASELINE"]
            print(f"PORTCULLIS/BASELINE throughput {p['rps'] / b['rps']:.2f}x   "
                  f"cpu/request {p['cpu_us'] / b['cpu_us']:.2f}x   p99 {p['p99'] / b['p99']:.2f}x")
        if CACHE:
            hit, miss = med["PORTCULLIS+HIT"], med["PORTCULLIS+MISS"]
            print(f"cache HIT/bare     throughput {hit['rps'] / p['rps']:.2f}x   "
                  f"cpu/request {hit['cpu_us'] / p['cpu_us']:.2f}x   HIT/DIRECT {hit['rps'] / d['rps']:.2f}x")
            print(f"cache MISS/bare    throughput {miss['rps'] / p['rps']:.2f}x   "
                  f"cpu/request {miss['cpu_us'] / p['cpu_us']:.2f}x")
        if LIMIT:
            lim = med["PORTCULLIS+LIMIT"]
            print(f"LIMIT route/bare   throughput {lim['rps'] / p['rps']:.2f}x   "
                  f"cpu/request {lim['cpu_us'] / p['cpu_us']:.2f}x   "
                  f"p50 +{(lim['p50'] - p['p50']) * 1000:.0f} us")
        if COMPRESS:
            pg, ng = med["PORTCULLIS+GZIP"], med["NGINX+GZIP"]
            sizes = {name: gzip_size(PORTS[port], scheme=proxied)
                     for name, port in (("PORTCULLIS+GZIP", "portcullis"), ("NGINX+GZIP", "nginx"))}
            print(f"gzip, {BODY} B JSON  PORTCULLIS/NGINX throughput {pg['rps'] / ng['rps']:.2f}x   "
                  f"cpu/request {pg['cpu_us'] / ng['cpu_us']:.2f}x   "
                  f"bytes sent: Portcullis {sizes['PORTCULLIS+GZIP']} ({100 * sizes['PORTCULLIS+GZIP'] / BODY:.1f}%), "
                  f"nginx {sizes['NGINX+GZIP']} ({100 * sizes['NGINX+GZIP'] / BODY:.1f}%)")
        if EXT_AUTHZ:
            a = med["PORTCULLIS+AUTHZ"]
            print(f"AUTHZ route/bare   throughput {a['rps'] / p['rps']:.2f}x   "
                  f"cpu/request {a['cpu_us'] / p['cpu_us']:.2f}x   p50 +{(a['p50'] - p['p50']) * 1000:.0f} us")
        if TRAFFIC:
            for label, name in (("SPLIT route/bare  ", "PORTCULLIS+SPLIT"), ("MIRROR 10%/bare   ", "PORTCULLIS+MIRROR")):
                t = med[name]
                print(f"{label} throughput {t['rps'] / p['rps']:.2f}x   "
                      f"cpu/request {t['cpu_us'] / p['cpu_us']:.2f}x   p99 {t['p99'] / p['p99']:.2f}x")
        if traced:
            t = med["PORTCULLIS+TRACED"]
            print(f"TRACED 1.0/bare    throughput {t['rps'] / p['rps']:.2f}x   "
                  f"cpu/request {t['cpu_us'] / p['cpu_us']:.2f}x   p99 {t['p99'] / p['p99']:.2f}x")
        if REALISTIC:
            r = med["PORTCULLIS+REAL"]
            print(f"REAL route/NGINX   throughput {r['rps'] / n['rps']:.2f}x   "
                  f"cpu/request {r['cpu_us'] / n['cpu_us']:.2f}x   p99 {r['p99'] / n['p99']:.2f}x")
            print(f"REAL route/bare    throughput {r['rps'] / p['rps']:.2f}x   "
                  f"cpu/request {r['cpu_us'] / p['cpu_us']:.2f}x")
        if JWT:
            j = med["PORTCULLIS+JWT"]
            print(f"JWT route/bare     throughput {j['rps'] / p['rps']:.2f}x   "
                  f"cpu/request {j['cpu_us'] / p['cpu_us']:.2f}x")
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
