#!/usr/bin/env python3
"""The README's first five minutes, with a real Python `websockets` client:
start the server with --demo, connect, see demo events, publish with HTTP, see it."""
import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request

import websockets

BIN = os.environ.get("BISTREAM_BIN", "target/debug/bistream")


def start():
    p = subprocess.Popen([BIN, "--listen", "127.0.0.1:0", "--demo", "--heartbeat-interval", "1s"],
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        m = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        if m:
            return p, m.group(1)
    raise SystemExit("no banner")


async def scenario(addr):
    results = []
    async with websockets.connect(f"ws://{addr}/ws/dashboard/loc-1") as ws:
        hello = json.loads(await ws.recv())
        results.append(("established first", hello["type"] == "BI_CONNECTION_ESTABLISHED"))
        demo = json.loads(await asyncio.wait_for(ws.recv(), 5))
        results.append(("demo events stream", demo["type"] == "event" and demo["location_id"] == "loc-1"))
        body = json.dumps({"channel": "dashboard", "location_id": "loc-1",
                           "event_type": "README_CHECK", "data": {"commission": 1250.5}}).encode()
        req = urllib.request.Request(f"http://{addr}/api/events", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req) as r:
            results.append(("publish answers 202", r.status == 202 and json.load(r) == {"accepted": 1}))
        while True:
            ev = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if ev.get("event_type") == "README_CHECK":
                results.append(("published event arrives", ev["data"] == {"commission": 1250.5}))
                break
        await ws.send(json.dumps({"type": "ping", "id": "py"}))
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), 5))
            if m["type"] == "pong":
                results.append(("pong carries the id", m.get("id") == "py"))
                break
        # The library answers the server's heartbeat pings by itself: still open after 3 intervals.
        await asyncio.sleep(3)
        await ws.send(json.dumps({"type": "ping"}))
        results.append(("survives heartbeats", True))
    return results


def main():
    proc, addr = start()
    try:
        results = asyncio.run(scenario(addr))
    finally:
        proc.terminate()
        proc.wait(15)
    failed = [name for name, ok in results if not ok]
    for name, ok in results:
        print(("ok   " if ok else "FAIL ") + name)
    print(f"python: {len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
