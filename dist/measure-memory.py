#!/usr/bin/env python3
"""Measures bistream's resident memory per idle WebSocket connection.

Starts BIN on 127.0.0.1 (a free port), reads VmRSS, opens N WebSocket
connections from this one process (each waits for BI_CONNECTION_ESTABLISHED),
waits for the figure to settle, reads VmRSS again, then publishes one event to
every stream (so each stream holds one event of history and each connection has
written one frame) and reads it a third time. Prints KiB per connection.

    python3 dist/measure-memory.py --bin target/release/bistream --conns 10000 --streams 10000
    python3 dist/measure-memory.py --bin target/release/bistream --conns 10000 --streams 100

Loopback only, bounded in time (connect phase at most --timeout seconds); the
server is stopped at the end. Needs an open-file limit above N (the hard limit is
used; see `ulimit -Hn`).
"""

import argparse
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
CHANNELS = [
    ("/ws/dashboard", "dashboard"),
    ("/ws/bi/revenue-intelligence", "revenue-intelligence"),
    ("/ws/bot-performance", "bot-performance"),
    ("/ws/business-intelligence", "business-intelligence"),
    ("/ws/ai-concierge", "ai-concierge"),
    ("/ws/analytics/advanced", "analytics-advanced"),
]


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def stream_of(i, streams):
    s = i % streams
    prefix, channel = CHANNELS[s % len(CHANNELS)]
    return prefix, channel, f"loc-{s}"


def settle(pid, seconds=2.0):
    """VmRSS once it has not moved for a second (at most `seconds` + 3 s)."""
    last, stable_since, end = -1, time.time(), time.time() + seconds + 3
    while time.time() < end:
        now = status(pid, "VmRSS")
        if now != last:
            last, stable_since = now, time.time()
        elif time.time() - stable_since >= 1.0 and time.time() > end - 3:
            break
        time.sleep(0.2)
    return last


SOCKET_CACHES = ("TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi")


def slab_kib():
    """Kernel memory of the slab caches a TCP socket lives in (struct tcp_sock,
    its inode, file, dentry, epoll entry): not in VmRSS. /proc/slabinfo is
    readable by root only; None elsewhere."""
    total = 0
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                p = line.split()
                if p and p[0] in SOCKET_CACHES:
                    total += int(p[1]) * int(p[3])
    except OSError:
        return None
    return total // 1024


def post(port, body, token=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    data = json.dumps(body).encode()
    s.sendall(
        b"POST /api/events HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\n"
        + (f"Authorization: Bearer {token}\r\n" if token else "").encode()
        + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
        + data
    )
    resp = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        resp += chunk
    s.close()
    return int(resp.split()[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/bistream")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--streams", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=90)
    ap.add_argument("--events", type=int, default=1, help="events published to each stream after the idle reading")
    ap.add_argument("--auth", action="store_true", help="run with JWT_SECRET_KEY; clients send ?token=")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.conns + 100:
        sys.exit(f"open-file hard limit {hard} is too low for {args.conns} connections")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BISTREAM_", "JWT_"))}
    env["RUST_LOG"] = "error"
    sub_token = pub_token = None
    if args.auth:
        env["JWT_SECRET_KEY"] = "measure-memory-secret-0123456789abcdef-01234"
        mint = lambda *a: subprocess.run([args.bin, "token", *a], env=env, check=True,
                                         capture_output=True, text=True).stdout.strip()
        sub_token = mint("--location", "*")
        pub_token = mint("--publisher", "--location", "*")
    # Heartbeat long enough that this client, which never answers pings, is not
    # closed during the run; the interval does not change what a connection holds.
    server = subprocess.Popen(
        [args.bin, "--listen", f"127.0.0.1:{port}", "--threads", str(args.threads),
         "--heartbeat-interval", "10m"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )
    socks = []
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        time.sleep(0.5)
        base_rss = settle(server.pid, 1)
        base_slab = slab_kib()

        sel = selectors.DefaultSelector()
        pending = {}
        opened = established = 0
        end = time.time() + args.timeout
        t0 = time.time()
        while established < args.conns and time.time() < end:
            # Keep at most 500 handshakes in flight.
            while opened < args.conns and len(pending) < 500:
                prefix, _, loc = stream_of(opened, args.streams)
                c = socket.create_connection(("127.0.0.1", port), timeout=10)
                c.sendall(
                    f"GET {prefix}/{loc}{'?token=' + sub_token if sub_token else ''} HTTP/1.1\r\nHost: m\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                )
                c.setblocking(False)
                pending[c] = b""
                sel.register(c, selectors.EVENT_READ)
                opened += 1
            for key, _ in sel.select(timeout=1):
                c = key.fileobj
                try:
                    data = c.recv(65536)
                except BlockingIOError:
                    continue
                if not data:
                    raise RuntimeError("the server closed a connection during the handshake")
                pending[c] += data
                if b"BI_CONNECTION_ESTABLISHED" in pending[c]:
                    if not pending[c].startswith(b"HTTP/1.1 101"):
                        raise RuntimeError(pending[c][:200])
                    sel.unregister(c)
                    del pending[c]
                    socks.append(c)
                    established += 1
        took = time.time() - t0
        if established < args.conns:
            raise RuntimeError(f"only {established} of {args.conns} connections established")
        idle_rss = settle(server.pid, 3)
        idle_slab = slab_kib()
        # One event per stream, in batches of up to 1000 events per request.
        evs = []
        for k in range(args.events):
            for i in range(min(args.streams, args.conns)):
                _, channel, loc = stream_of(i, args.streams)
                evs.append({"channel": channel, "location_id": loc, "event_type": "MEASURE",
                            "data": {"revenue": 1250.5, "i": i, "k": k}})
        for j in range(0, len(evs), 1000):
            st = post(port, evs[j:j + 1000], pub_token)
            if st != 202:
                raise RuntimeError(f"publish answered {st}")
        time.sleep(1)
        after_rss = settle(server.pid, 3)
        hwm = status(server.pid, "VmHWM")
        n = args.conns
        print(f"binary            {args.bin}")
        print(f"connections       {n} on {min(args.streams, n)} streams, {args.threads} loops "
              f"(established in {took:.1f}s)")
        print(f"VmRSS before       {base_rss} KiB")
        print(f"VmRSS idle         {idle_rss} KiB  (+{idle_rss - base_rss} KiB, "
              f"{(idle_rss - base_rss) / n:.2f} KiB per connection)")
        print(f"events            {args.events} per stream published after the idle reading, "
              f"{len(evs)} in all (kept as history: --history-size 1000 per stream)")
        print(f"VmRSS after events {after_rss} KiB  (+{after_rss - base_rss} KiB, "
              f"{(after_rss - base_rss) / n:.2f} KiB per connection)")
        print(f"VmHWM              {hwm} KiB")
        if base_slab is not None and idle_slab is not None:
            print(f"kernel sockets     +{idle_slab - base_slab} KiB in {', '.join(SOCKET_CACHES)} for "
                  f"both ends ({(idle_slab - base_slab) / n / 2:.2f} KiB per socket; not in VmRSS)")
        print(f"auth              {'on (HS256 token per connection)' if args.auth else 'off'}")
    finally:
        for c in socks:
            c.close()
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
