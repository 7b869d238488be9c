#!/usr/bin/env python3
"""The performance bar of issue 6, measured: bistream against the `floor` server
(bistream-loadtest floor) in the same session, same scenarios, medians of N runs.

    python3 tests/loadtest/bar.py [--runs 3] [--threads 1] [--only SCENARIO ...]

Server pinned to core 0 and the harness to core 1 with --threads 1; with
--threads 2 both share the two cores (said in the output). Figures:

- idle:  VmRSS delta / N at 10,000 idle connections
- rate:  server CPU per delivery at 10,000 connections x 10 events/s
- burst: saturated deliveries/s and CPU per delivery at 10,000 connections
- p99:   latency at 1,000 connections x 100 events/s
- 19k:   19,000 connections connect and all receive a broadcast

Server CPU is utime+stime from /proc over the whole harness run, connects
included (the same for both servers). Prints a Markdown table.

`bistream-loadtest compare` (`make compare`, docs/loadtest.md) now does this in the
harness itself, for the scenarios of the issue-15 table; this script stays because
docs/performance.md quotes the issue-6 bar it measured.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LT = os.path.join(ROOT, "target/release/bistream-loadtest")
BIN = os.path.join(ROOT, "target/release/bistream")
TICK = os.sysconf("SC_CLK_TCK")

SCENARIOS = {
    "idle": ["-c", "10000", "--rate", "0.1", "--warmup", "9s", "--duration", "1s"],
    "rate": ["-c", "10000", "--rate", "10", "--publishers", "4", "--duration", "10s", "--warmup", "1s"],
    "burst": ["-c", "10000", "--burst", "300", "--batch", "100", "--publishers", "2", "--warmup", "1s"],
    "p99": ["-c", "1000", "--rate", "100", "--publishers", "4", "--duration", "10s", "--warmup", "1s"],
    "19k": ["-c", "19000", "--rate", "1", "--duration", "2s", "--warmup", "1s", "--connect-timeout", "30s"],
}


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(kind, threads, port, pin):
    if kind == "floor":
        cmd = [LT, "floor", "--listen", f"127.0.0.1:{port}", "--threads", str(threads), "--exit-after", "10m"]
    else:
        cmd = [BIN, "--listen", f"127.0.0.1:{port}", "--threads", str(threads), "--log-level", "warn"]
    if pin:
        cmd = ["taskset", "-c", "0"] + cmd
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            import socket
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return p
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit(f"{kind} did not start")


def harness(port, args, pin):
    cmd = [LT, "--url", f"127.0.0.1:{port}", "--json", "-q"] + args
    if pin:
        cmd = ["taskset", "-c", "1"] + cmd
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def run_once(kind, scenario, threads, pin, port):
    srv = start(kind, threads, port, pin)
    try:
        time.sleep(0.3)
        rss0, cpu0 = rss_kib(srv.pid), cpu_ticks(srv.pid)
        h = harness(port, SCENARIOS[scenario], pin)
        peak_rss = rss0
        if scenario == "idle":
            # Sample while every connection is up and idle (inside the warm-up).
            time.sleep(7.5)
            peak_rss = rss_kib(srv.pid)
        out, _ = h.communicate(timeout=240)
        cpu1 = cpu_ticks(srv.pid)
        d = json.loads(out)
        res = {
            "established": d["connections"]["established"],
            "deliveries": d["deliveries"]["total"],
            "expected": d["deliveries"]["expected"],
            "lost": d["deliveries"]["lost"],
            "per_second": d["deliveries"]["per_second"],
            "p50_ms": d["latency"]["p50_ns"] / 1e6 if d.get("latency") else None,
            "p99_ms": d["latency"]["p99_ns"] / 1e6 if d.get("latency") else None,
            "cpu_s": (cpu1 - cpu0) / TICK,
        }
        res["cpu_us_per_delivery"] = (
            res["cpu_s"] * 1e6 / res["deliveries"] if res["deliveries"] else None
        )
        if scenario == "idle":
            n = d["connections"]["established"]
            res["rss_bytes_per_conn"] = (peak_rss - rss0) * 1024 / n if n else None
        return res
    finally:
        srv.kill()
        srv.wait()


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=list(SCENARIOS))
    a = ap.parse_args()
    pin = a.threads == 1
    load = os.getloadavg()[0]
    print(f"# bar: --threads {a.threads}, {'server on core 0, harness on core 1' if pin else 'server and harness share both cores'}, "
          f"medians of {a.runs}, load average at start {load:.2f}", flush=True)
    port = 19100
    rows = []
    for sc in a.only:
        per_kind = {}
        for kind in ("floor", "bistream"):
            runs = []
            for i in range(a.runs):
                port += 1
                r = run_once(kind, sc, a.threads, pin, port)
                runs.append(r)
                print(f"  {sc:6} {kind:8} run {i + 1}: " + ", ".join(
                    f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()), flush=True)
            per_kind[kind] = {k: med([r[k] for r in runs]) for k in runs[0]}
        rows.append((sc, per_kind))

    def ratio(b, f):
        return f"{b / f:.2f}" if b is not None and f else "-"

    print()
    print("| scenario | figure | floor | bistream | bistream / floor |")
    print("|---|---|---|---|---|")
    for sc, k in rows:
        f, b = k["floor"], k["bistream"]
        if sc == "idle":
            print(f"| idle 10k | RSS bytes per connection | {f['rss_bytes_per_conn']:.0f} | {b['rss_bytes_per_conn']:.0f} | {ratio(b['rss_bytes_per_conn'], f['rss_bytes_per_conn'])} |")
        elif sc in ("rate", "burst"):
            label = "10k x 10/s" if sc == "rate" else "10k saturated"
            print(f"| {label} | server CPU µs per delivery | {f['cpu_us_per_delivery']:.2f} | {b['cpu_us_per_delivery']:.2f} | {ratio(b['cpu_us_per_delivery'], f['cpu_us_per_delivery'])} |")
            print(f"| {label} | deliveries/s | {f['per_second']:.0f} | {b['per_second']:.0f} | {ratio(b['per_second'], f['per_second'])} |")
            print(f"| {label} | lost | {f['lost']:.0f} | {b['lost']:.0f} | |")
        elif sc == "p99":
            print(f"| 1k x 100/s | p50 ms | {f['p50_ms']:.2f} | {b['p50_ms']:.2f} | {ratio(b['p50_ms'], f['p50_ms'])} |")
            print(f"| 1k x 100/s | p99 ms | {f['p99_ms']:.2f} | {b['p99_ms']:.2f} | {ratio(b['p99_ms'], f['p99_ms'])} |")
        elif sc == "19k":
            print(f"| 19k broadcast | established / delivered of expected | {f['established']:.0f} / {f['deliveries']:.0f} of {f['expected']:.0f} | {b['established']:.0f} / {b['deliveries']:.0f} of {b['expected']:.0f} | |")


if __name__ == "__main__":
    main()
