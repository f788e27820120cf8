#!/usr/bin/env python3
"""Proxy overhead, compression off: direct to the mock vs a plain pingora passthrough vs condenser
vs LiteLLM.

All measured in one run against the same mock upstream (examples/mock_upstream.rs), on the same
machine as the load generators. Each proxy is started fresh, measured for its first 5 s cold, then
warmed up and measured. Prints a markdown table.

  cargo build --release --bin condenser --example mock_upstream --example pingora_passthrough
  python3 bench/proxy_bench.py [--threads 1] [--litellm /path/to/venv/bin/litellm] [--seconds 10]
"""

import argparse
import http.server
import json
import threading
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
    "pingora passthrough": "http://127.0.0.1:18004/v1/chat/completions",
    "condenser": "http://127.0.0.1:18002/v1/chat/completions",
    "condenser, metrics off": "http://127.0.0.1:18005/v1/chat/completions",
    "condenser, traced": "http://127.0.0.1:18007/v1/chat/completions",
    "condenser, auth + limits": "http://127.0.0.1:18008/v1/chat/completions",
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


def start(name, args, threads):
    """Starts one target's process; returns it once its port is open."""
    if name == "direct (mock)":
        proc = subprocess.Popen(
            [os.path.join(ROOT, "target/release/examples/mock_upstream"), "127.0.0.1:18001"],
            stdout=subprocess.DEVNULL)
        wait_port(18001)
    elif name == "pingora passthrough":
        proc = subprocess.Popen(
            [os.path.join(ROOT, "target/release/examples/pingora_passthrough"), "127.0.0.1:18004",
             "127.0.0.1:18001", str(threads)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(18004)
    elif name.startswith("condenser"):
        port = {"condenser, metrics off": 18005, "condenser, traced": 18007,
                "condenser, auth + limits": 18008}.get(name, 18002)
        with open(os.path.join(ROOT, "bench/proxy.toml")) as f:
            config = f.read().replace("threads = 1", f"threads = {threads}")
        config = config.replace("127.0.0.1:18002", f"127.0.0.1:{port}")
        if "metrics off" in name:
            config = config.replace("[server]", "[server]\nmetrics = false")
        if "auth" in name:
            # Every request authenticated and counted against a key's rate and in-flight
            # limits set high enough never to refuse (the load generators send `sk-bench`).
            config += ('\n[auth]\n[[auth.keys]]\nname = "bench"\nkey_env = "CONDENSER_BENCH_KEY"\n'
                       'max_in_flight = 100000\nrequests_per_minute = 100000000\n'
                       'input_tokens_per_minute = 2000000000\n')
        if "traced" in name:
            # Every request traced (sample_rate 1) and exported to the local OTLP sink.
            config += '\n[telemetry]\notlp_endpoint = "http://127.0.0.1:18006"\nsample_rate = 1.0\n'
        path = f"/tmp/condenser-bench-{os.getpid()}-{port}.toml"
        with open(path, "w") as f:
            f.write(config)
        proc = subprocess.Popen(
            [os.path.join(ROOT, "target/release/condenser"), "serve", "--config", path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn", "CONDENSER_BENCH_KEY": "sk-bench"})
        wait_port(port)
    else:
        proc = subprocess.Popen(
            [args.litellm, "--config", os.path.join(ROOT, "bench/litellm.yaml"), "--port", "18003",
             "--num_workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "LITELLM_LOG": "ERROR"})
        wait_port(18003)
        time.sleep(3)
    return proc


class OtlpSink(http.server.BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports and drops them (what a collector costs is not condenser's)."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b"{}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def stop(proc):
    try:
        if "litellm" in " ".join(proc.args):
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except Exception:
        proc.kill()
    proc.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--litellm", default="/tmp/litellm-venv/bin/litellm")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1,
                    help="worker threads of condenser and the pingora passthrough (0: one per core)")
    ap.add_argument("--only", default="",
                    help="semicolon-separated target names to run (besides the direct baseline)")
    args = ap.parse_args()
    threads = args.threads or os.cpu_count()
    targets = dict(TARGETS)
    if args.only:
        wanted = {"direct (mock)", *(n.strip() for n in args.only.split(";"))}
        targets = {n: u for n, u in targets.items() if n in wanted}
    if "LiteLLM 1.91.5" in targets and not os.path.exists(args.litellm):
        log(f"LiteLLM not found at {args.litellm}; skipping it")
        del targets["LiteLLM 1.91.5"]
    rows = []
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 18006), OtlpSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    mock = start("direct (mock)", args, threads)
    try:
        for name, url in targets.items():
            proc = mock if name == "direct (mock)" else start(name, args, threads)
            try:
                # The first seconds of a fresh process, before anything warmed it up.
                cold = oha(url, 5, 16) if name != "direct (mock)" and "LiteLLM" not in name else None
                # Warm up (connection pools, lazy init) before measuring.
                oha(url, 2, 4)
                idle = rss_mib(proc.pid)
                log(f"{name}: 1 connection")
                single = oha(url, args.seconds, 1)
                log(f"{name}: fixed rate")
                fixed_100 = oha(url, args.seconds, 16, rate=100)
                fixed_2k = oha(url, args.seconds, 16, rate=2000) if "LiteLLM" not in name else None
                log(f"{name}: ceiling")
                ceiling = wrk(url, args.seconds, 16)
                loaded = rss_mib(proc.pid)
                rows.append((name, idle, loaded, single, fixed_100, fixed_2k, ceiling, cold))
            finally:
                if proc is not mock:
                    stop(proc)
    finally:
        stop(mock)
    base = rows[0]
    print(f"threads: {threads}; {args.seconds} s per measurement")
    print()
    print("| target | ceiling req/s (wrk, 16 conn) | × direct | first 5 s, 16 conn p50 / p99 ms | 1 conn p50 / p99 ms | 100 req/s p50 / p99 ms | 2k req/s p50 / p99 ms | added p50 / p99 at 2k req/s | idle RSS MiB | loaded RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, idle, loaded, single, f100, f2k, ceil, cold in rows:
        two_k = f"{f2k['p50_ms']:.2f} / {f2k['p99_ms']:.2f}" if f2k else "n/a (below capacity)"
        added = (f"{f2k['p50_ms'] - base[5]['p50_ms']:+.2f} / {f2k['p99_ms'] - base[5]['p99_ms']:+.2f}"
                 if f2k and name != base[0] else "—")
        first = f"{cold['p50_ms']:.2f} / {cold['p99_ms']:.2f}" if cold else "—"
        print(f"| {name} | {ceil['rps']:,.0f} | {ceil['rps'] / base[6]['rps']:.2f} | {first} | "
              f"{single['p50_ms']:.2f} / {single['p99_ms']:.2f} | "
              f"{f100['p50_ms']:.2f} / {f100['p99_ms']:.2f} | {two_k} | {added} | {idle:.1f} | {loaded:.1f} |")
    by_name = {r[0]: r for r in rows}
    if "condenser" in by_name and "condenser, metrics off" in by_name:
        on, off = by_name["condenser"], by_name["condenser, metrics off"]
        print()
        print(f"metrics on vs off: 1 conn p50 {on[3]['p50_ms'] - off[3]['p50_ms']:+.3f} ms, "
              f"2k req/s p50 {on[5]['p50_ms'] - off[5]['p50_ms']:+.3f} ms / p99 {on[5]['p99_ms'] - off[5]['p99_ms']:+.2f} ms, "
              f"ceiling {on[6]['rps'] / off[6]['rps']:.2f}×")
    if "condenser" in by_name and "condenser, traced" in by_name:
        on, off = by_name["condenser, traced"], by_name["condenser"]
        print(f"tracing at 100 % vs off: 1 conn p50 {on[3]['p50_ms'] - off[3]['p50_ms']:+.3f} ms, "
              f"2k req/s p50 {on[5]['p50_ms'] - off[5]['p50_ms']:+.3f} ms / p99 {on[5]['p99_ms'] - off[5]['p99_ms']:+.2f} ms, "
              f"ceiling {on[6]['rps'] / off[6]['rps']:.2f}×")
    if "condenser" in by_name and "condenser, auth + limits" in by_name:
        on, off = by_name["condenser, auth + limits"], by_name["condenser"]
        print(f"auth + limits vs none: 1 conn p50 {on[3]['p50_ms'] - off[3]['p50_ms']:+.3f} ms, "
              f"2k req/s p50 {on[5]['p50_ms'] - off[5]['p50_ms']:+.3f} ms / p99 {on[5]['p99_ms'] - off[5]['p99_ms']:+.2f} ms, "
              f"ceiling {on[6]['rps'] / off[6]['rps']:.2f}×")
    if "condenser" in by_name and "pingora passthrough" in by_name:
        c, p = by_name["condenser"], by_name["pingora passthrough"]
        print()
        print(f"condenser over the pingora passthrough: 1 conn p50 {c[3]['p50_ms'] - p[3]['p50_ms']:+.3f} ms, "
              f"2k req/s p50 {c[5]['p50_ms'] - p[5]['p50_ms']:+.2f} ms / p99 {c[5]['p99_ms'] - p[5]['p99_ms']:+.2f} ms, "
              f"ceiling {c[6]['rps'] / p[6]['rps']:.2f}×")
    failures = [(r[0], r[6]["errors"]) for r in rows if r[6]["errors"]]
    if failures:
        print(f"\nnon-2xx responses under wrk: {failures}")


if __name__ == "__main__":
    main()
