#!/usr/bin/env python3
"""Background compression on a replayed multi-turn conversation: added client latency and input
tokens saved, compression off vs a local-model compressor (`prune`, or `select` with its trained
adapter) in background mode, side by side in one run.

Two condenser processes (built with the local model) over the same mock upstream. Each
conversation resends its whole history every turn, as chat clients do: a ~3k-token system
document plus the turns so far. Turns go to both proxies alternately, `--gap` seconds apart
(a person reading and typing). The first sight of the document is forwarded uncompressed and
pruned off the request path (for no particular question, so it serves every later turn); later
turns carry the cached compression.

  cargo build --release --features local-model --bin condenser --example mock_upstream
  python3 bench/background_bench.py [--compressor prune|select] [--ratio 0.5]
                                    [--conversations 3] [--turns 10] [--gap 4]
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

[[upstreams]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:18001/v1"

[[routes]]
name = "main"
models = ["*"]
upstream = "mock"

[routes.compression]
{compression}

[compressors.{compressor}]
model = "{root}/adapters/base/SmolLM2-135M-Instruct.Q4_1.gguf"
threads = 2
context = 8192
timeout_ms = 300000
{lora}
"""

OFF = "enabled = false"
BACKGROUND = 'enabled = true\ncompressor = "{compressor}"\nmin_tokens = 200\ntarget_ratio = {ratio}\nmode = "background"'
ADAPTERS = {"select": 'lora = "{root}/adapters/select-smollm2-r8.gguf"', "prune": ""}


def document(seed):
    facts = [
        f"Invoice {seed}-{i} for {100 + i * 7} units was shipped from warehouse {chr(65 + i % 6)} "
        f"on day {i + 1} of the quarter, and the customer confirmed receipt two days later."
        for i in range(40)
    ]
    filler = ("The logistics team reviews carrier performance monthly and keeps notes on delays, "
              "damaged parcels and customs paperwork so that recurring problems can be raised.")
    return "\n\n".join(f"{f} {filler}" for f in facts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=3)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--gap", type=float, default=4.0)
    ap.add_argument("--compressor", choices=sorted(ADAPTERS), default="prune")
    ap.add_argument("--ratio", type=float, default=0.5)
    args = ap.parse_args()
    background = f"{args.compressor}, background"
    binary = os.path.join(ROOT, "target", "release", "condenser")
    mock = os.path.join(ROOT, "target", "release", "examples", "mock_upstream")
    tmp = tempfile.mkdtemp()
    procs = [subprocess.Popen([mock, "127.0.0.1:18001"], stdout=subprocess.DEVNULL)]
    ports = {"compression off": (18021, OFF),
             background: (18022, BACKGROUND.format(compressor=args.compressor, ratio=args.ratio))}
    for name, (port, compression) in ports.items():
        cfg = os.path.join(tmp, f"{port}.toml")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(compression=compression, root=ROOT, compressor=args.compressor,
                                  lora=ADAPTERS[args.compressor].format(root=ROOT)))
        procs.append(subprocess.Popen(
            [binary, "serve", "--config", cfg, "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn"}))
    try:
        for port in [18001] + [p for p, _ in ports.values()]:
            wait_port(port)
        conns = {n: http.client.HTTPConnection("127.0.0.1", p) for n, (p, _) in ports.items()}
        latency = {n: [] for n in ports}
        tokens = {n: [0, 0] for n in ports}
        compressed_turns = 0
        for c in range(args.conversations):
            # Conversations 1 and 3 share a document, as a system prompt or RAG source would.
            history = [{"role": "system", "content": document(c % 2)}]
            for t in range(args.turns):
                history.append({"role": "user", "content": f"Which warehouse shipped invoice {c}-{t * 3}?"})
                body = json.dumps({"model": "gpt-4o-mini", "messages": history})
                for name, conn in conns.items():
                    started = time.perf_counter()
                    conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
                    resp = conn.getresponse()
                    resp.read()
                    latency[name].append((time.perf_counter() - started) * 1000)
                    before = int(resp.getheader("x-condenser-tokens-before"))
                    after = int(resp.getheader("x-condenser-tokens-after"))
                    tokens[name][0] += before
                    tokens[name][1] += after
                    if name != "compression off" and after < before:
                        compressed_turns += 1
                history.append({"role": "assistant", "content": f"Warehouse {chr(65 + t % 6)}."})
                time.sleep(args.gap)
            log(f"  conversation {c + 1}/{args.conversations}")
        print("| condenser | requests | p50 ms | p90 ms | max ms | input tokens sent / original |")
        print("|---|---|---|---|---|---|")
        for name, xs in latency.items():
            xs = sorted(xs)
            before, after = tokens[name]
            print(f"| {name} | {len(xs)} | {statistics.median(xs):.2f} | {xs[int(0.9 * (len(xs) - 1))]:.2f} | "
                  f"{xs[-1]:.2f} | {after / before:.3f} |")
        off = statistics.median(latency["compression off"])
        on = statistics.median(latency[background])
        total = args.conversations * args.turns
        before, after = tokens[background]
        print(f"\nadded p50: {on - off:+.2f} ms; turns served compressed: {compressed_turns}/{total}; "
              f"input tokens saved: {1 - after / before:.1%}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()


if __name__ == "__main__":
    main()
