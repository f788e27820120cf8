#!/usr/bin/env python3
"""Added latency of a shared-tier (Redis) hit against an in-process (moka) hit, and against
computing the compression, side by side in one run: two condenser replicas (release build) share
a local redis-server; for each of N distinct long documents, replica A computes and publishes it,
then replica B gets it from Redis (a local miss), then B again from its own cache. Client-side
request latency against the release mock upstream; prints medians and ratios.

  cargo build --release --bin condenser --example mock_upstream
  python3 bench/shared_cache_bench.py [--documents 200]
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

from ports import free_port, wait_port
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ask(port, text):
    body = json.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": text + "\n\nWho lit the lamp?"}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                 {"content-type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req) as resp:
        resp.read()
        compressor = resp.headers.get("x-condenser-compressor")
    assert compressor == "extractive", compressor
    return (time.perf_counter() - start) * 1000


def document(i):
    topics = ["The river delta supports a large population of migratory birds.",
              "Local farmers rotate wheat and barley to keep the soil productive.",
              "The old railway station was converted into a museum in 1987.",
              "A regional orchestra performs in the cathedral every summer.",
              "Engineers reinforced the northern bridge after inspections."]
    parts = [f"Document {i}."]
    for section in range(40):
        parts.append(f"Section {section} of report {i}. " + " ".join(topics))
    parts.append(f"The keeper of lighthouse {i} lit the lamp on 14 March 1896.")
    return "\n\n".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--documents", type=int, default=200)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    procs = []
    try:
        redis_port, mock_port = free_port(), free_port()
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            [os.path.join(ROOT, "target/release/examples/mock_upstream"), f"127.0.0.1:{mock_port}"],
            stdout=subprocess.DEVNULL))
        wait_port(redis_port)
        wait_port(mock_port)
        replicas = []
        for name in ["a", "b"]:
            port = free_port()
            config = os.path.join(tmp, f"{name}.toml")
            with open(config, "w") as f:
                f.write(f"""
[server]
threads = 1

[[upstreams]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:{mock_port}/v1"

[[routes]]
name = "main"
models = ["*"]
upstream = "mock"

[routes.compression]
enabled = true
compressor = "extractive"
min_tokens = 200

[shared_cache]
url = "redis://127.0.0.1:{redis_port}/0"
""")
            procs.append(subprocess.Popen(
                [os.path.join(ROOT, "target/release/condenser"), "serve", "--config", config,
                 "--listen", f"127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
            replicas.append(port)
        a, b = replicas
        ask(a, "warm up " + document(-1))
        computed, redis_hit, local_hit = [], [], []
        for i in range(args.documents):
            text = document(i)
            computed.append(ask(a, text))
            time.sleep(0.005)  # A publishes off the request path
            redis_hit.append(ask(b, text))
            local_hit.append(ask(b, text))
        with urllib.request.urlopen(f"http://127.0.0.1:{b}/healthz") as resp:
            health = json.load(resp)["compression"]
        med = statistics.median
        print(f"{args.documents} documents of ~{len(document(0)) // 4} tokens, one run\n")
        print("| served from | median ms | p90 ms |")
        print("|---|---|---|")
        for name, xs in [("computed (replica A, extractive)", computed),
                         ("Redis tier (replica B, local miss)", redis_hit),
                         ("in-process cache (replica B again)", local_hit)]:
            print(f"| {name} | {med(xs):.2f} | {statistics.quantiles(xs, n=10)[-1]:.2f} |")
        print(f"\nRedis hit over a local hit: {med(redis_hit) - med(local_hit):+.2f} ms median; "
              f"computing over a Redis hit: {med(computed) - med(redis_hit):+.2f} ms")
        print(f"replica B: computed {health['computed']}, shared hits "
              f"{health['shared_cache']['hits']}")
    finally:
        for p in procs:
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
