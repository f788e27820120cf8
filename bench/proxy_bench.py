#!/usr/bin/env python3
"""Proxy overhead, compression off: direct to the mock vs through condenser vs through LiteLLM.

All three measured in one run against the same mock upstream (examples/mock_upstream.rs), on
the same machine as the load generators. Prints a markdown table.

  cargo build --release --bin condenser --example mock_upstream
  python3 bench/proxy_bench.py [--litellm /path/to/venv/bin/litellm] [--seconds 10]
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = os.path.join(ROOT, "bench", "body-4k.json")
TARGETS = {
    "direct (mock)": "http://127.0.0.1:18001/v1/chat/completions",
    "condenser": "http://127.0.0.1:18002/v1/chat/completions",
    "LiteLLM 1.91.5": "http://127.0.0.1:18003/v1/chat/completions",
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def wait_port(port, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"port {port} never opened")


def rss_mib(pid):
    """RSS of a process and its children, MiB."""
    total = 0
    pids = [str(pid)]
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    pids += out
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


def oha(url, seconds, connections, rate=None):
    cmd = ["oha", "-z", f"{seconds}s", "-c", str(connections), "-m", "POST", "-D", BODY,
           "-T", "application/json", "-H", "Authorization: Bearer sk-bench", "--no-tui",
           "--output-format", "json", url]
    if rate:
        cmd[1:1] = ["-q", str(rate)]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    pct = out["latencyPercentiles"]
    ok = out.get("statusCodeDistribution", {})
    return {
        "rps": out["summary"]["requestsPerSec"],
        "p50_ms": pct["p50"] * 1000,
        "p99_ms": pct["p99"] * 1000,
        "ok": sum(v for k, v in ok.items() if k.startswith("2")),
        "total": sum(ok.values()),
    }


def wrk(url, seconds, connections):
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
         os.path.join(ROOT, "bench", "post.lua"), url],
        capture_output=True, text=True, check=True, env={**os.environ, "BODY_FILE": BODY},
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "errors": int(non2xx.group(1)) if non2xx else 0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--litellm", default="/tmp/litellm-venv/bin/litellm")
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    procs = {}
    procs["direct (mock)"] = subprocess.Popen(
        [os.path.join(ROOT, "target/release/examples/mock_upstream"), "127.0.0.1:18001"],
        stdout=subprocess.DEVNULL)
    wait_port(18001)
    procs["condenser"] = subprocess.Popen(
        [os.path.join(ROOT, "target/release/condenser"), "serve", "--config",
         os.path.join(ROOT, "bench/proxy.toml")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    wait_port(18002)
    targets = dict(TARGETS)
    if os.path.exists(args.litellm):
        procs["LiteLLM 1.91.5"] = subprocess.Popen(
            [args.litellm, "--config", os.path.join(ROOT, "bench/litellm.yaml"), "--port", "18003",
             "--num_workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "LITELLM_LOG": "ERROR"})
        wait_port(18003)
        time.sleep(3)
    else:
        log(f"LiteLLM not found at {args.litellm}; skipping it")
        del targets["LiteLLM 1.91.5"]
    rows = []
    try:
        for name, url in targets.items():
            pid = procs[name].pid
            # Warm up (connection pools, lazy init) before measuring.
            oha(url, 2, 4)
            idle = rss_mib(pid)
            log(f"{name}: 1 connection")
            single = oha(url, args.seconds, 1)
            log(f"{name}: fixed rate")
            fixed_100 = oha(url, args.seconds, 16, rate=100)
            fixed_2k = oha(url, args.seconds, 16, rate=2000) if "LiteLLM" not in name else None
            log(f"{name}: ceiling")
            ceiling = wrk(url, args.seconds, 16)
            loaded = rss_mib(pid)
            rows.append((name, idle, loaded, single, fixed_100, fixed_2k, ceiling))
    finally:
        for p in procs.values():
            try:
                os.killpg(p.pid, signal.SIGKILL) if p.pid and "litellm" in " ".join(p.args) else p.kill()
            except Exception:
                p.kill()
    base = rows[0]
    print("| target | ceiling req/s (wrk, 16 conn) | 1 conn p50 / p99 ms | 100 req/s p50 / p99 ms | 2k req/s p50 / p99 ms | added p99 at 2k req/s | idle RSS MiB | loaded RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, idle, loaded, single, f100, f2k, ceil in rows:
        two_k = f"{f2k['p50_ms']:.2f} / {f2k['p99_ms']:.2f}" if f2k else "n/a (below capacity)"
        added = f"{f2k['p99_ms'] - base[5]['p99_ms']:+.2f} ms" if f2k and name != base[0] else "—"
        print(f"| {name} | {ceil['rps']:,.0f} | {single['p50_ms']:.2f} / {single['p99_ms']:.2f} | "
              f"{f100['p50_ms']:.2f} / {f100['p99_ms']:.2f} | {two_k} | {added} | {idle:.1f} | {loaded:.1f} |")
    failures = [(r[0], r[6]["errors"]) for r in rows if r[6]["errors"]]
    if failures:
        print(f"\nnon-2xx responses under wrk: {failures}")


if __name__ == "__main__":
    main()
