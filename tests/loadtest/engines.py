#!/usr/bin/env python3
"""The memory engine against the Redis engine, in one run: the figures issue 11
asks for (docs/performance.md, "Redis engine").

    python3 tests/loadtest/engines.py [--runs 3] [--redis-cpu 0] [--only SCENARIO ...]

Starts its own redis-server (Debian's, on a free loopback port, no persistence)
and, for every run of every scenario, a fresh bistream with `--engine memory`
and then one with `--engine redis`, alternately, so that the machine's drift
falls on both. bistream is pinned to core 0 and the load client to core 1;
Redis goes on --redis-cpu: core 1 by default, beside the load client, so that
bistream's core stays its own as it would with Redis on another machine (the
client's share of that core can only slow the Redis runs); `--redis-cpu 0`
puts Redis on the server's core instead, charging its work to bistream's.

Scenarios:
- publish: one subscriber, a burst of 200,000 events in requests of 100 over 16
  keep-alive publisher connections (enough requests in flight that the round
  trip to Redis is not what bounds it): events/s the server takes. With the
  memory engine the one subscriber cannot read that fast and is cut off as a
  slow consumer (counted as lost); that does not slow the publishing.
- fanout:  1,000 subscribers of one stream x 100 events/s for 10 s: p99
  latency and bistream's CPU per delivery (its own process: every thread,
  the Redis command and subscription threads included).

Prints medians and the ratio redis/memory as a Markdown table; Redis's own CPU
per event (from INFO, main thread) is printed beside it.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LT = os.path.join(ROOT, "target/release/bistream-loadtest")
BIN = os.path.join(ROOT, "target/release/bistream")

SCENARIOS = {
    "publish": ["-c", "1", "--burst", "200000", "--batch", "100", "--publishers", "16", "--warmup", "1s"],
    "fanout": ["-c", "1000", "--rate", "100", "--publishers", "4", "--duration", "10s", "--warmup", "1s"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_cli(port, *args):
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True)
    return out.stdout


def redis_cpu_s(port):
    total = 0.0
    for line in redis_cli(port, "info", "cpu").splitlines():
        if line.startswith(("used_cpu_user_main_thread:", "used_cpu_sys_main_thread:")):
            total += float(line.split(":")[1])
    return total


def wait_port(port, within=10.0):
    until = time.time() + within
    while time.time() < until:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def run_one(engine, scenario, redis_port):
    port = free_port()
    args = [BIN, "--listen", f"127.0.0.1:{port}", "--threads", "1", "--engine", engine]
    if engine == "redis":
        args += ["--redis-url", f"redis://127.0.0.1:{redis_port}"]
        redis_cli(redis_port, "flushall")
    server = subprocess.Popen(["taskset", "-c", "0", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port):
            sys.exit(f"bistream ({engine}) did not start")
        cpu0 = redis_cpu_s(redis_port)
        client = subprocess.run(
            ["taskset", "-c", "1", LT, "--url", f"127.0.0.1:{port}", "--server-pid", str(server.pid), "--json"]
            + SCENARIOS[scenario],
            capture_output=True,
            text=True,
        )
        if client.returncode != 0:
            sys.exit(f"loadtest failed ({engine}, {scenario}): {client.stderr[-2000:]}")
        d = json.loads(client.stdout)
        redis_s = redis_cpu_s(redis_port) - cpu0
    finally:
        server.terminate()
        server.wait(timeout=15)
    events = d["published"]["events"]
    return {
        "events_per_s": d["published"]["events_per_second"],
        "deliveries_per_s": d["deliveries"]["per_second"],
        "lost": d["deliveries"]["lost"],
        "p50_ms": d["latency"]["p50_ns"] / 1e6,
        "p99_ms": d["latency"]["p99_ns"] / 1e6,
        "cpu_us_per_delivery": d["server"]["cpu_us_per_delivery"],
        "cpu_us_per_event": d["server"]["cpu_total_s"] * 1e6 / events if events else 0.0,
        "redis_us_per_event": redis_s * 1e6 / events if events else 0.0,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--redis-cpu", default="1")
    ap.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=sorted(SCENARIOS))
    ap.add_argument("--json", action="store_true", help="print every run as JSON too")
    a = ap.parse_args()
    for tool in (BIN, LT):
        if not os.path.exists(tool):
            sys.exit(f"{tool} missing: cargo build --release --workspace")
    if not shutil.which("redis-server"):
        sys.exit("redis-server missing: apt-get install redis-server")
    redis_port = free_port()
    workdir = tempfile.mkdtemp(prefix="bistream-engines-")
    redis = subprocess.Popen(
        ["taskset", "-c", a.redis_cpu, "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    try:
        if not wait_port(redis_port):
            sys.exit("redis-server did not start")
        results = {}
        for scenario in a.only:
            for run in range(a.runs):
                for engine in ("memory", "redis"):
                    r = run_one(engine, scenario, redis_port)
                    results.setdefault((scenario, engine), []).append(r)
                    print(f"{scenario} run {run + 1} {engine}: {json.dumps(r)}", file=sys.stderr)
        if a.json:
            print(json.dumps({f"{s}/{e}": v for (s, e), v in results.items()}, indent=1))
        med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in results.items()}
        rows = []
        if "publish" in a.only:
            rows.append(("publish: events/s", "events_per_s", "publish"))
            rows.append(("publish: bistream CPU per event published (µs)", "cpu_us_per_event", "publish"))
            rows.append(("publish: p99 (ms)", "p99_ms", "publish"))
        if "fanout" in a.only:
            rows.append(("1,000 × 100/s: p99 (ms)", "p99_ms", "fanout"))
            rows.append(("1,000 × 100/s: p50 (ms)", "p50_ms", "fanout"))
            rows.append(("1,000 × 100/s: bistream CPU per delivery (µs)", "cpu_us_per_delivery", "fanout"))
        print(f"medians of {a.runs} runs; bistream on core 0, client on core 1, redis-server on core {a.redis_cpu}")
        print()
        print("| figure | memory | redis | redis / memory |")
        print("|---|---|---|---|")
        for label, field, scenario in rows:
            m, r = med[(scenario, "memory")][field], med[(scenario, "redis")][field]
            print(f"| {label} | {m:.3g} | {r:.3g} | {r / m:.2f} |" if m else f"| {label} | {m} | {r} | - |")
        for scenario in a.only:
            lost_m = sum(x["lost"] for x in results[(scenario, "memory")])
            lost_r = sum(x["lost"] for x in results[(scenario, "redis")])
            print(f"| {scenario}: Redis CPU per event (µs), lost (memory / redis) | | "
                  f"{med[(scenario, 'redis')]['redis_us_per_event']:.2f} | lost {lost_m} / {lost_r} |")
    finally:
        redis.terminate()
        redis.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
