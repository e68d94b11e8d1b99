#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind (run through benches/instructions.sh).

A throughput figure on a shared 2-core machine moves by a third from one run to the next; an
instruction count does not. This starts the fast upstream and Portcullis (one worker) under
`valgrind --tool=callgrind`, warms every route up, then for each route zeroes the counters,
sends REQUESTS requests one after another on one keep-alive connection, and dumps: the
instructions Portcullis spent, divided by the requests. Routes: the bare route, a `cache`
route answering from memory (HIT), a `cache` route whose answers are never storable (MISS),
a 90/10 split across two upstreams over the same endpoint (SPLIT), and a route mirroring 10%
of its requests to a third (MIRROR: the copies' work counts too). Argument: the binary to measure (default target/release/portcullis), so two builds can
be compared on the same machine.
"""

import glob
import http.client
import os
import subprocess
import sys
import tempfile
import time

from load import wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = sys.argv[1] if len(sys.argv) > 1 else f"{ROOT}/target/release/portcullis"
REQUESTS = int(os.environ.get("REQUESTS", "2000"))
WARMUP = 300
PORTS = {"upstream": 19180, "portcullis": 19181}
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


def send(path, count):
    connection = http.client.HTTPConnection("127.0.0.1", PORTS["portcullis"])
    for _ in range(count):
        connection.request("GET", path)
        connection.getresponse().read()
    connection.close()


def instructions(dump):
    for line in open(dump):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    sys.exit(f"no totals in {dump}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/gateway.yaml", "w") as f:
            f.write(CONFIG)
        upstream = subprocess.Popen([f"{ROOT}/target/release/examples/bench_upstream",
                                     f"127.0.0.1:{PORTS['upstream']}", "100"])
        gateway = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out",
                                    BINARY, "-c", f"{tmp}/gateway.yaml", "--workers", "1",
                                    "--log-level", "warn"], stderr=subprocess.DEVNULL)
        try:
            wait_port(PORTS["upstream"])
            wait_port(PORTS["portcullis"], timeout=60)  # valgrind starts slowly
            for path in ROUTES.values():
                send(path, WARMUP)
            per_request = {}
            for name, path in ROUTES.items():
                subprocess.run(["callgrind_control", "-z", str(gateway.pid)], check=True,
                               capture_output=True)
                send(path, REQUESTS)
                subprocess.run(["callgrind_control", "-d", str(gateway.pid)], check=True,
                               capture_output=True)
                time.sleep(0.5)
                dump = max(glob.glob(f"{tmp}/out.*"), key=os.path.getmtime)
                per_request[name] = instructions(dump) / REQUESTS
                os.remove(dump)
        finally:
            gateway.terminate()
            upstream.terminate()
            gateway.wait()
            upstream.wait()
    bare = per_request["bare"]
    print(f"{os.path.basename(BINARY)}: instructions per request over {REQUESTS} requests")
    for name, count in per_request.items():
        print(f"  {name:<6} {count:9.0f}   {count / bare:.3f}x bare")


if __name__ == "__main__":
    main()
