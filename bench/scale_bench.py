#!/usr/bin/env python3
"""Two replicas' combined ceiling against one, through the scale profile's load balancer:
nginx running deploy/scale/nginx.conf (replica addresses put in for the compose names) in front
of one condenser replica (both upstream entries naming it) or two, each with one worker thread
and the shared Redis tier, over the release mock upstream; plus one replica without nginx, to
show what the balancer costs. wrk, 16 connections, the same 4 KB chat body as
bench/proxy_bench.py, side by side in one run; prints a markdown table with ratios.

On a 2-core machine the replicas, nginx, wrk and the mock share the cores: this reports, it
does not set a target.

  cargo build --release --bin condenser --example mock_upstream
  python3 bench/scale_bench.py [--seconds 10]
"""

import argparse
import os
import re
import subprocess
import tempfile
import time

from ports import free_port, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = os.path.join(ROOT, "bench", "body-4k.json")


def replica(workdir, mock_port, redis_port):
    port = free_port()
    with open(os.path.join(ROOT, "bench/proxy.toml")) as f:
        config = f.read()
    config = config.replace("127.0.0.1:18002", f"127.0.0.1:{port}")
    config = config.replace("127.0.0.1:18001", f"127.0.0.1:{mock_port}")
    config += f'\n[shared_cache]\nurl = "redis://127.0.0.1:{redis_port}/0"\n'
    path = os.path.join(workdir, f"replica-{port}.toml")
    with open(path, "w") as f:
        f.write(config)
    proc = subprocess.Popen(
        [os.path.join(ROOT, "target/release/condenser"), "serve", "--config", path],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": "warn", "MALLOC_ARENA_MAX": "2"})
    wait_port(port)
    return proc, port


def nginx(workdir, upstreams):
    port = free_port()
    with open(os.path.join(ROOT, "deploy/scale/nginx.conf")) as f:
        conf = f.read()
    conf = conf.replace("condenser-a:8787", f"127.0.0.1:{upstreams[0]}")
    conf = conf.replace("condenser-b:8787", f"127.0.0.1:{upstreams[1]}")
    conf = conf.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    temp = "".join(f"    {k}_temp_path {workdir}/{k};\n"
                   for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = conf.replace("http {", "http {\n    access_log off;\n" + temp)
    conf = (f"daemon off;\nmaster_process off;\npid {workdir}/nginx.pid;\n"
            f"error_log {workdir}/nginx-error.log;\n") + conf
    path = os.path.join(workdir, f"nginx-{port}.conf")
    with open(path, "w") as f:
        f.write(conf)
    binary = "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else "nginx"
    proc = subprocess.Popen([binary, "-p", workdir, "-e", f"{workdir}/nginx-error.log", "-c", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc, port


def wrk(port, seconds):
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    # Warm-up: connection pools, lazy initialisation.
    subprocess.run(["wrk", "-t2", "-c4", "-d2s", "-s", os.path.join(ROOT, "bench/post.lua"), url],
                   capture_output=True, check=True, env={**os.environ, "BODY_FILE": BODY})
    out = subprocess.run(
        ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", "-s",
         os.path.join(ROOT, "bench/post.lua"), url],
        capture_output=True, text=True, check=True, env={**os.environ, "BODY_FILE": BODY}).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, float(p50.group(1)) * scale, int(non2xx.group(1)) if non2xx else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    args = ap.parse_args()
    procs = []
    with tempfile.TemporaryDirectory() as workdir:
        try:
            mock_port = free_port()
            procs.append(subprocess.Popen(
                [os.path.join(ROOT, "target/release/examples/mock_upstream"),
                 f"127.0.0.1:{mock_port}"], stdout=subprocess.DEVNULL))
            wait_port(mock_port)
            redis_port = free_port()
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", workdir],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(redis_port)
            a, a_port = replica(workdir, mock_port, redis_port)
            b, b_port = replica(workdir, mock_port, redis_port)
            procs += [a, b]
            one_lb, one_port = nginx(workdir, [a_port, a_port])
            two_lb, two_port = nginx(workdir, [a_port, b_port])
            procs += [one_lb, two_lb]
            rows = [
                ("one replica, direct", wrk(a_port, args.seconds)),
                ("nginx → one replica", wrk(one_port, args.seconds)),
                ("nginx → two replicas", wrk(two_port, args.seconds)),
            ]
        finally:
            for proc in procs:
                proc.kill()
                proc.wait()
    base = rows[1][1][0]
    print(f"wrk, 16 connections, {args.seconds} s each; replicas with 1 worker thread each; "
          f"{os.cpu_count()} cores shared by everything")
    print()
    print("| target | ceiling req/s | × nginx → one | p50 ms | non-2xx |")
    print("|---|---|---|---|---|")
    for name, (rps, p50, errors) in rows:
        print(f"| {name} | {rps:,.0f} | {rps / base:.2f} | {p50:.2f} | {errors} |")


if __name__ == "__main__":
    main()
