#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind (run through benches/instructions.sh).

A throughput figure on a shared 2-core machine moves by a third from one run to the next; an
instruction count does not. This starts the fast upstream and Portcullis (one worker) under
`valgrind --tool=callgrind`, warms every route up, then for each route zeroes the counters,
sends REQUESTS requests one after another on one keep-alive connection, and dumps: the
instructions Portcullis spent, divided by the requests. Routes: the bare route, a `cache`
route answering from memory (HIT), a `cache` route whose answers are never storable (MISS),
a 90/10 split across two upstreams over the same endpoint (SPLIT), and a route mirroring 10%
of its requests to a third (MIRROR: the copies' work counts too); then TRACED, the bare route of
a second gateway with `tracing:` at sample 1.0 (the upstream stands in for the collector; the
window waits for the exports of its own requests, which count too); then FLOOR, the minimal
hyper proxy of examples/floor_proxy.rs, the same way. Allocations are the calls to malloc, calloc
and realloc in the same window. Argument: the binary to measure (default target/release/portcullis), so two builds can
be compared on the same machine.

LOADED=1 measures instead under load, as the load benchmark drives the proxies: the bare route of
Portcullis, the floor, HAProxy and nginx (configured as in load.py), each under callgrind and
saturated by wrk with 64 keep-alive connections for LOADED_SECONDS (8); instructions and
allocations are divided by the requests wrk completed in the window. One request at a time pays
each event-loop turn for one request; under load the turns are shared, as in production.
"""

import glob
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time

from load import haproxy_config, nginx_config, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = sys.argv[1] if len(sys.argv) > 1 else f"{ROOT}/target/release/portcullis"
REQUESTS = int(os.environ.get("REQUESTS", "2000"))
WARMUP = 300
PORTS = {"upstream": 19180, "portcullis": 19181, "floor": 19182}
ROUTES = {"bare": "/", "HIT": "/hit", "MISS": "/miss", "SPLIT": "/split", "MIRROR": "/mirror"}
CONFIG = f"""listeners: [{{ name: http, address: 127.0.0.1:{PORTS['portcullis']} }}]
admin: {{ address: 127.0.0.1:0 }}
access_log: false
upstreams:
  bench: {{ discovery: {{ static: [127.0.0.1:{PORTS['upstream']}] }} }}
  canary: {{ discovery: {{ static: [127.0.0.1:{PORTS['upstream']}] }} }}
  shadow: {{ discovery: {{ static: [127.0.0.1:{PORTS['upstream']}] }} }}
routes:
  - name: split
    match: {{ path_prefix: /split }}
    upstream: {{ split: [{{ upstream: bench, weight: 90 }}, {{ upstream: canary, weight: 10 }}] }}
  - name: mirror
    match: {{ path_prefix: /mirror }}
    upstream: bench
    mirror: {{ upstream: shadow, percent: 10 }}
  - name: hit
    match: {{ path_prefix: /hit }}
    upstream: bench
    filters: [ {{ cache: {{ ttl: 1h }} }} ]
  - name: miss
    match: {{ path_prefix: /miss }}
    upstream: bench
    filters: [ {{ cache: {{}} }} ]
  - name: all
    upstream: bench
"""


def send(port, path, count):
    connection = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(count):
        connection.request("GET", path)
        connection.getresponse().read()
    connection.close()


def counts(dump):
    """Instructions, and calls to malloc, calloc and realloc, in a callgrind dump."""
    total, allocations, names, wanted = None, 0, {}, False
    for line in open(dump):
        if line.startswith(("summary:", "totals:")):
            total = int(line.split()[1])
        elif line.startswith("cfn="):
            # `cfn=name`, or compressed: `cfn=(id) name` the first time, `cfn=(id)` after.
            text = line[4:].strip()
            if text.startswith("("):
                ident, _, name = text.partition(" ")
                if name:
                    names[ident] = name
                text = names.get(ident, "")
            wanted = text in ("malloc", "calloc", "realloc")
        elif line.startswith("calls=") and wanted:
            allocations += int(line[6:].split()[0])
            wanted = False
    if total is None:
        sys.exit(f"no totals in {dump}")
    return total, allocations


def measure(pid, port, path, tmp, settle=0.0):
    """(instructions, allocations) per request on `path`, counted from zero; `settle`: seconds
    to wait before zeroing and before dumping, for work done after the responses (exports)."""
    time.sleep(settle)
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    send(port, path, REQUESTS)
    time.sleep(settle)
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    time.sleep(0.5)
    dump = max(glob.glob(f"{tmp}/out.*"), key=os.path.getmtime)
    total, allocations = counts(dump)
    os.remove(dump)
    return total / REQUESTS, allocations / REQUESTS


def under_callgrind(args, tmp):
    return subprocess.Popen(["valgrind", "--tool=callgrind", "--compress-strings=no",
                             f"--callgrind-out-file={tmp}/out"] + args,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


LOADED_PORTS = {"portcullis": 19191, "floor": 19192, "haproxy": 19193, "nginx": 19194}


def loaded(tmp):
    """(instructions, allocations) per request of each proxy saturated by wrk."""
    upstream = f"127.0.0.1:{PORTS['upstream']}"
    ports = LOADED_PORTS
    with open(f"{tmp}/gateway.yaml", "w") as f:
        f.write(CONFIG.replace(f"127.0.0.1:{PORTS['portcullis']}", f"127.0.0.1:{ports['portcullis']}"))
    os.makedirs(f"{tmp}/nginx/logs", exist_ok=True)
    with open(f"{tmp}/nginx/nginx.conf", "w") as f:
        f.write(nginx_config(tmp, f"127.0.0.1:{ports['nginx']}", upstream,
                             settings="master_process off;\ndaemon off;\n"))
    with open(f"{tmp}/haproxy.cfg", "w") as f:
        f.write(haproxy_config(f"127.0.0.1:{ports['haproxy']}", "roundrobin", f"    server s0 {upstream}"))
    commands = {
        "PORTCULLIS": [BINARY, "-c", f"{tmp}/gateway.yaml", "--workers", "1", "--log-level", "warn"],
        "FLOOR": [f"{ROOT}/target/release/examples/floor_proxy", f"127.0.0.1:{ports['floor']}", upstream],
        "HAPROXY": ["haproxy", "-f", f"{tmp}/haproxy.cfg", "-db"],
        "NGINX": ["nginx", "-p", f"{tmp}/nginx", "-c", f"{tmp}/nginx/nginx.conf"],
    }
    seconds = os.environ.get("LOADED_SECONDS", "8")
    per_request = {}
    for name, command in commands.items():
        port = ports[name.lower()]
        proxy = under_callgrind(command, tmp)
        try:
            wait_port(port, timeout=60)
            url = f"http://127.0.0.1:{port}/"
            subprocess.run(["wrk", "-t1", "-c64", "-d2s", url], check=True, capture_output=True)
            subprocess.run(["callgrind_control", "-z", str(proxy.pid)], check=True, capture_output=True)
            out = subprocess.run(["wrk", "-t1", "-c64", f"-d{seconds}s", url], check=True,
                                 capture_output=True, text=True).stdout
            subprocess.run(["callgrind_control", "-d", str(proxy.pid)], check=True, capture_output=True)
            time.sleep(0.5)
        finally:
            proxy.terminate()
            proxy.wait()
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        dump = max(glob.glob(f"{tmp}/out.*"), key=os.path.getmtime)
        total, allocations = counts(dump)
        os.remove(dump)
        per_request[name] = (total / requests, allocations / requests)
    return per_request


def main():
    per_request = {}
    if os.environ.get("LOADED") == "1":
        with tempfile.TemporaryDirectory() as tmp:
            upstream = subprocess.Popen([f"{ROOT}/target/release/examples/bench_upstream",
                                         f"127.0.0.1:{PORTS['upstream']}", "100"])
            try:
                wait_port(PORTS["upstream"])
                per_request = loaded(tmp)
            finally:
                upstream.terminate()
                upstream.wait()
        print(f"{os.path.basename(BINARY)}: per request, saturated by 64 connections")
        print(f"  {'':<11}{'instructions':>13}{'vs floor':>10}{'allocations':>13}")
        floor = per_request["FLOOR"][0]
        for name, (count, allocations) in per_request.items():
            print(f"  {name:<11}{count:13.0f}{count / floor:9.3f}x{allocations:13.1f}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/gateway.yaml", "w") as f:
            f.write(CONFIG)
        upstream = subprocess.Popen([f"{ROOT}/target/release/examples/bench_upstream",
                                     f"127.0.0.1:{PORTS['upstream']}", "100"])
        gateway = under_callgrind([BINARY, "-c", f"{tmp}/gateway.yaml", "--workers", "1",
                                   "--log-level", "warn"], tmp)
        try:
            wait_port(PORTS["upstream"])
            wait_port(PORTS["portcullis"], timeout=60)  # valgrind starts slowly
            for path in ROUTES.values():
                send(PORTS["portcullis"], path, WARMUP)
            for name, path in ROUTES.items():
                per_request[name] = measure(gateway.pid, PORTS["portcullis"], path, tmp)
        finally:
            gateway.terminate()
            gateway.wait()
        with open(f"{tmp}/traced.yaml", "w") as f:
            f.write(CONFIG + f"tracing: {{ otlp: {{ endpoint: http://127.0.0.1:{PORTS['upstream']} }}, sample: 1.0 }}\n")
        traced = under_callgrind([BINARY, "-c", f"{tmp}/traced.yaml", "--workers", "1",
                                  "--log-level", "warn"], tmp)
        try:
            wait_port(PORTS["portcullis"], timeout=60)
            send(PORTS["portcullis"], "/", WARMUP)
            # Exports leave at least once a second; under callgrind, give them three.
            per_request["TRACED"] = measure(traced.pid, PORTS["portcullis"], "/", tmp, settle=3.0)
        finally:
            traced.terminate()
            traced.wait()
        floor = under_callgrind([f"{ROOT}/target/release/examples/floor_proxy",
                                 f"127.0.0.1:{PORTS['floor']}", f"127.0.0.1:{PORTS['upstream']}"], tmp)
        try:
            wait_port(PORTS["floor"], timeout=60)
            send(PORTS["floor"], "/", WARMUP)
            per_request["FLOOR"] = measure(floor.pid, PORTS["floor"], "/", tmp)
        finally:
            floor.terminate()
            upstream.terminate()
            floor.wait()
            upstream.wait()
    bare = per_request["bare"][0]
    print(f"{os.path.basename(BINARY)}: per request over {REQUESTS} requests")
    print(f"  {'':<7}{'instructions':>13}{'vs bare':>9}{'allocations':>13}")
    for name, (count, allocations) in per_request.items():
        print(f"  {name:<7}{count:13.0f}{count / bare:8.3f}x{allocations:13.1f}")


if __name__ == "__main__":
    main()
