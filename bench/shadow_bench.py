#!/usr/bin/env python3
"""Client latency with shadow A/B on vs off, side by side in one run.

Two condenser processes over the same mock upstream (examples/mock_upstream.rs): one without
`[shadow]`, one shadowing every request (sample_rate = 1.0, serve = "original", embedding gate on
MiniLM, fact gate; no judge). Requests alternate between them on keep-alive connections, one at a
time, with a 4k-token document that extractive compression shortens. Prints a markdown table of
client-side latency percentiles and what the shadow store recorded.

  cargo build --release --bin condenser --example mock_upstream
  python3 bench/shadow_bench.py [--requests 300]
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy_bench import ROOT, log, wait_port  # noqa: E402

CONFIG = """
[server]
threads = 1
grace_period_seconds = 1
{admin}

[[upstreams]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:18001/v1"

[[routes]]
name = "main"
models = ["*"]
upstream = "mock"

[routes.compression]
enabled = true
compressor = "extractive"
min_tokens = 200
target_ratio = 0.35
{shadow}
"""

SHADOW = """
[routes.shadow]
sample_rate = 1.0
serve = "original"

[shadow]
store = "{store}"
embedding_model = "{root}/models/all-MiniLM-L6-v2"
"""


def document():
    topics = [
        "The river delta supports a large population of migratory birds in winter.",
        "Local farmers rotate wheat and barley to keep the soil productive.",
        "The old railway station became a museum of industrial history in 1987.",
        "A regional orchestra performs in the cathedral every summer.",
        "Engineers reinforced the northern bridge after finding corroded cables.",
    ]
    parts = []
    for i in range(60):
        parts.append(f"Section {i}. " + " ".join(topics) + f" Record {i * 37} was filed.")
    parts.insert(31, "The lighthouse keeper, Marguerite Okonkwo, first lit the lamp on 14 March 1896.")
    return "\n\n".join(parts)


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    binary = os.path.join(ROOT, "target", "release", "condenser")
    mock = os.path.join(ROOT, "target", "release", "examples", "mock_upstream")
    tmp = tempfile.mkdtemp()
    store = os.path.join(tmp, "shadow.db")
    procs = [subprocess.Popen([mock, "127.0.0.1:18001"], stdout=subprocess.DEVNULL)]
    ports = {"shadow off": 18011, "shadow on": 18012}
    for name, port in ports.items():
        cfg = os.path.join(tmp, f"{port}.toml")
        shadow = SHADOW.format(store=store, root=ROOT) if name == "shadow on" else ""
        admin = 'admin_listen = "127.0.0.1:18013"' if name == "shadow on" else ""
        with open(cfg, "w") as f:
            f.write(CONFIG.format(shadow=shadow, admin=admin))
        procs.append(subprocess.Popen(
            [binary, "serve", "--config", cfg, "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn"}))
    try:
        for port in [18001, *ports.values()]:
            wait_port(port)
        body = json.dumps({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": document()},
                {"role": "user", "content": "When was the lighthouse lamp first lit, and by whom?"},
            ],
        })
        conns = {n: http.client.HTTPConnection("127.0.0.1", p) for n, p in ports.items()}
        times = {n: [] for n in ports}
        for i in range(args.requests + 20):
            for name, conn in conns.items():
                started = time.perf_counter()
                conn.request("POST", "/v1/chat/completions", body,
                             {"content-type": "application/json", "authorization": "Bearer bench"})
                resp = conn.getresponse()
                resp.read()
                elapsed = (time.perf_counter() - started) * 1000
                assert resp.status == 200, resp.status
                if i >= 20:  # warm-up: compression cache, connection pools
                    times[name].append(elapsed)
            if (i + 1) % 100 == 0:
                log(f"  {i + 1} request pairs")
        time.sleep(3)
        admin = http.client.HTTPConnection("127.0.0.1", 18013)
        admin.request("GET", "/admin/shadow")
        report = json.loads(admin.getresponse().read())
        print("| condenser | requests | p50 ms | p90 ms | p99 ms |")
        print("|---|---|---|---|---|")
        for name, xs in times.items():
            print(f"| {name} | {len(xs)} | {statistics.median(xs):.2f} | "
                  f"{percentile(xs, 90):.2f} | {percentile(xs, 99):.2f} |")
        on, off = statistics.median(times["shadow on"]), statistics.median(times["shadow off"])
        print(f"\nadded p50: {on - off:+.2f} ms ({on / off:.2f}x)")
        stats = report["stats"]
        route = report["routes"][0] if report["routes"] else {}
        print(f"shadow store: {route.get('samples', 0)} samples, {route.get('scored', 0)} scored, "
              f"dropped {stats['dropped']}, in flight {report['in_flight']}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
