#!/usr/bin/env python3
"""Two bistream nodes on one Redis behind the real nginx (issue 11), end to end.

Starts, on loopback only:
  - redis-server (Debian package; installed when missing) on a free port, with
    no persistence (a restart comes back empty);
  - two bistream nodes with `--engine redis` on that Redis, JWT auth on (the
    same secret on both), trusted proxy 127.0.0.1;
  - nginx (Debian package; installed when missing) from the tested config of
    docs/cluster.md (tests/nginx/cluster.conf.in), rendered with the nodes'
    ports, under its own prefix in /tmp.

Then proves, through nginx:
  - subscribers land on both nodes (each node's bistream_connections), and an
    event published through nginx (to either node) reaches every subscriber on
    both with the same seq and epoch;
  - a client that loses its connection resumes through nginx on the OTHER node
    with since/epoch, mid-stream, and is told complete:true, without gap or
    duplicate (several rounds, while events are published through nginx);
  - Redis stopped: each node's /readyz turns 503 within a second, publishes and
    upgrades through nginx get 503 engine_unavailable, open connections stay;
    Redis back empty: the nodes are ready again, their clients get 4010 and a
    resume through nginx is complete:false under a new epoch;
  - one node stopped (SIGTERM): its clients get 1001 and resume through nginx on
    the other node with complete:true at the first attempt (nginx retries the
    draining node's 503 on the next node), no event lost or doubled.

Usage: make nginx-test, or, after `make venv`:
       target/venv/bin/python tests/nginx/cluster.py [--bin target/debug/bistream] [--keep]
Prints `nginx cluster: N passed, M failed`; exits non-zero on any failure.
Every process it started is stopped at the end in all cases.
"""

import argparse
import grp
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DOCS = os.path.join(ROOT, "docs", "cluster.md")
sys.path.insert(0, HERE)
import run as base  # noqa: E402 - the single-node driver's helpers (Proc, render, check, ...)

SECRET = "nginx-cluster-secret-0123456789abcdef-012345"

# The values docs/cluster.md shows; the test renders the same template with its own.
PROD = {
    "NODE_A": "10.0.0.11:8000",
    "NODE_B": "10.0.0.12:8000",
    "LISTEN": "80",
    "SERVER_NAME": "bi.example.com",
}

RESUME_ROUNDS = 8
RATE = 200  # events per second from the background publishers

log = base.log
eq = base.eq
check = base.check


# ---------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------


def ensure_redis():
    found = shutil.which("redis-server") or (os.path.exists("/usr/bin/redis-server") and "/usr/bin/redis-server")
    if not found:
        helper = os.path.join(ROOT, "tests", "setup", "ensure-apt.sh")
        if subprocess.run(["bash", helper, "redis-server:redis-server"]).returncode != 0:
            sys.exit("nginx cluster: could not install redis-server (tests/setup/ensure-apt.sh)")
        found = shutil.which("redis-server") or "/usr/bin/redis-server"
    return found


# ---------------------------------------------------------------------------
# The environment under test
# ---------------------------------------------------------------------------


class Node:
    def __init__(self, name, proc, port):
        self.name, self.proc, self.port = name, proc, port

    def __repr__(self):
        return f"node {self.name} (:{self.port})"


class Env:
    pass


E = Env()


def http_get(port, path, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def readyz(port):
    try:
        return http_get(port, "/readyz", timeout=2)[0]
    except OSError:
        return 0


def metrics(node):
    st, body = http_get(node.port, "/metrics")
    eq(st, 200, f"/metrics of {node}")
    return body.decode()


def metric(text, series, missing=None):
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    if missing is not None:
        return missing
    raise AssertionError(f"no series {series}")


def conns(node, channel=None):
    """WebSocket connections open on a node (of one channel, or all)."""
    text = metrics(node)
    total = 0
    for line in text.splitlines():
        if line.startswith("bistream_connections{"):
            label = line.split('"')[1]
            if channel is None or label == channel:
                total += int(float(line.split()[-1]))
    return total


def wait_for(what, pred, timeout=5, step=0.02):
    deadline = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(step)


def ws_open(path, token="sub"):
    """A WebSocket through nginx (entered by hand: closed by the checks)."""
    from websockets.sync.client import connect

    tok = {"sub": E.sub_token}.get(token, token)
    uri = f"ws://127.0.0.1:{E.port}{path}" + ("&" if "?" in path else "?") + "token=" + tok
    return connect(uri, open_timeout=5, close_timeout=2, ping_interval=None, max_size=2**22).__enter__()


def recv_json(ws, timeout=5):
    return json.loads(ws.recv(timeout=timeout))


def subscribe(path):
    ws = ws_open(path)
    hello = recv_json(ws)
    eq(hello.get("type"), "BI_CONNECTION_ESTABLISHED", f"first message on {path}")
    return ws, hello


def refusal(path):
    """An upgrade through nginx expected to be refused: (status, JSON body)."""
    from websockets.exceptions import InvalidStatus

    try:
        ws = ws_open(path)
    except InvalidStatus as e:
        try:
            return e.response.status_code, json.loads(e.response.body or b"")
        except ValueError:
            return e.response.status_code, None
    ws.close()
    return 101, None


def drop(ws):
    """The client loses its connection: no close frame, just the end of TCP."""
    try:
        ws.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    ws.socket.close()


def tick(channel, location, n, event_type="TICK"):
    return {"channel": channel, "location_id": location, "event_type": event_type, "data": {"n": n}}


def publish(body, conn=None):
    """POST /api/events through nginx: (status, JSON body)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", E.port, timeout=10)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer " + E.pub_token}
    if own:
        headers["Connection"] = "close"
    conn.request("POST", "/api/events", body=json.dumps(body), headers=headers)
    r = conn.getresponse()
    raw = r.read()
    if own:
        conn.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw


class Publisher(threading.Thread):
    """Publishes TICK events with data.n = 0, 1, 2, ... to one stream through
    nginx at RATE per second, in batches of 4, on a kept-alive connection. A
    refused batch (503 draining, a 502 from nginx) is sent again, the same
    events: a publisher's retry."""

    def __init__(self, channel, location):
        super().__init__(daemon=True)
        self.channel, self.location = channel, location
        self.acked = 0
        self.retries = []
        self.error = None
        self.stopping = threading.Event()

    def run(self):
        conn = None
        t0 = time.time()
        try:
            while not self.stopping.is_set():
                batch = [tick(self.channel, self.location, self.acked + i) for i in range(4)]
                for attempt in range(100):
                    try:
                        if conn is None:
                            conn = http.client.HTTPConnection("127.0.0.1", E.port, timeout=10)
                        st, body = publish(batch, conn)
                    except (OSError, http.client.HTTPException) as e:
                        st, body, conn = f"error {e!r}", None, None
                    if st == 202:
                        break
                    if st not in (502, 503) and not str(st).startswith("error"):
                        raise AssertionError(f"publish answered {st} {body}")
                    self.retries.append(st)
                    if conn is not None:
                        conn.close()
                        conn = None
                    time.sleep(0.05)
                else:
                    raise AssertionError(f"publish never accepted; last answer {st}")
                self.acked += len(batch)
                due = t0 + self.acked / RATE
                if due > time.time():
                    time.sleep(due - time.time())
        except Exception as e:  # noqa: BLE001 - reported by the check that owns it
            self.error = e
        finally:
            if conn is not None:
                conn.close()

    def finish(self):
        self.stopping.set()
        self.join(15)
        if self.error:
            raise self.error
        return self.acked


class Follower(threading.Thread):
    """A client that follows one stream through nginx and resumes with
    since/epoch whenever the server closes with 1001 or 4010. Records every
    event, every `recovered` and every close; stops once it has seen `until`."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.events = []  # (epoch, seq, n)
        self.recovered = []
        self.closes = []
        self.refused = []
        self.error = None
        self.until = None
        self.ready = threading.Event()

    def run(self):
        from websockets.exceptions import ConnectionClosed, InvalidStatus

        epoch = since = None
        try:
            while True:
                q = f"?since={since}&epoch={epoch}" if since is not None else ""
                try:
                    ws, hello = subscribe(self.path + q)
                except InvalidStatus as e:
                    self.refused.append(e.response.status_code)
                    if len(self.refused) > 20:
                        raise
                    time.sleep(0.1)
                    continue
                self.ready.set()
                epoch = hello["epoch"]
                if since is None:
                    since = hello["last_seq"]
                try:
                    while True:
                        if self.until is not None and since >= self.until:
                            ws.close()
                            return
                        try:
                            m = recv_json(ws, timeout=0.2)
                        except TimeoutError:
                            continue
                        if m["type"] == "event":
                            self.events.append((epoch, m["seq"], m["data"]["n"]))
                            since = m["seq"]
                        elif m["type"] == "recovered":
                            self.recovered.append(m)
                except ConnectionClosed as e:
                    code = e.rcvd.code if e.rcvd else None
                    self.closes.append(code)
                    if code not in (1001, 4010):
                        raise AssertionError(f"closed with {code}")
        except Exception as e:  # noqa: BLE001
            self.error = e
            self.ready.set()

    def finish(self, until, timeout=10):
        self.until = until
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"{self.path}: stuck at {self.events[-1:]} waiting for seq {until}")
        if self.error:
            raise self.error


def exactly_once(events, total, what):
    """Events numbered 1..total in one epoch, each the n-th publish (n = seq - 1)."""
    seqs = [s for _, s, _ in events]
    if seqs != list(range(1, total + 1)):
        gaps = [(a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1]
        raise AssertionError(f"{what}: {len(seqs)} events for {total} published; breaks at {gaps[:5]}")
    bad = [(s, n) for _, s, n in events if n != s - 1]
    if bad:
        raise AssertionError(f"{what}: seq and publish order disagree at {bad[:5]}")
    if len({e for e, _, _ in events}) != 1:
        raise AssertionError(f"{what}: more than one epoch")


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def t_docs_in_sync():
    with open(DOCS) as f:
        docs = f.read()
    text = base.render(base.template("cluster.conf.in"), PROD).strip()
    if text not in docs:
        raise AssertionError("docs/cluster.md does not show cluster.conf.in as rendered with production values")


def t_fanout():
    """Subscribers through nginx spread over both nodes; events published
    through nginx reach every one of them with the same seq and epoch."""
    subs = [subscribe("/ws/dashboard/fan") for _ in range(6)]
    try:
        on = {n.name: conns(n, "dashboard") for n in E.nodes}
        if not (on["A"] > 0 and on["B"] > 0 and on["A"] + on["B"] == 6):
            raise AssertionError(f"subscribers per node: {on}")
        epochs = {h["epoch"] for _, h in subs}
        eq(len(epochs), 1, f"epochs named by the two nodes {epochs}")
        before = {n.name: metric(metrics(n), 'bistream_publish_requests_total{status="202"}', 0) for n in E.nodes}
        for i in range(20):
            st, body = publish(tick("dashboard", "fan", i))
            eq((st, body), (202, {"accepted": 1}), f"publish {i}")
        after = {n.name: metric(metrics(n), 'bistream_publish_requests_total{status="202"}', 0) for n in E.nodes}
        took = {k: after[k] - before[k] for k in after}
        if not (took["A"] > 0 and took["B"] > 0):
            raise AssertionError(f"publishes did not reach both nodes: {took}")
        for ws, _ in subs:
            got = []
            while len(got) < 20:
                m = recv_json(ws)
                eq(m["type"], "event", "message")
                got.append((m["seq"], m["data"]["n"]))
            eq(got, [(i + 1, i) for i in range(20)], "seq and data on every subscriber")
        log(f"     6 subscribers: {on['A']} on A, {on['B']} on B; publishes taken by A {took['A']:.0f}, by B {took['B']:.0f}")
    finally:
        for ws, _ in subs:
            ws.close()
    wait_for("the fan-out subscribers to be gone", lambda: all(conns(n) == 0 for n in E.nodes))


class Holders:
    """Connections through nginx whose only job is to weigh on least_conn, so
    that the next connection nginx places goes where a check wants it."""

    def __init__(self):
        self.held = []  # (ws, node)

    def open(self):
        before = {n.name: conns(n, "ai-concierge") for n in E.nodes}
        ws, _ = subscribe("/ws/ai-concierge/holder")
        after = {n.name: conns(n, "ai-concierge") for n in E.nodes}
        node = next(n for n in E.nodes if after[n.name] > before[n.name])
        self.held.append((ws, node))

    def close_on(self, node):
        keep = []
        for ws, n in self.held:
            if n is node:
                ws.close()
            else:
                keep.append((ws, n))
        self.held = keep
        mine = sum(1 for _, n in keep if n is node)
        wait_for(f"holders on {node} to close", lambda: conns(node, "ai-concierge") == mine)

    def steer_away_from(self, node):
        """After this, and once a connection on `node` is gone, nginx's
        least_conn picks the other node: `node` ends up with more of nginx's
        connections than the other, counting the one about to go."""
        other = next(n for n in E.nodes if n is not node)
        for _ in range(10):
            if any(n is node for _, n in self.held):
                break
            self.open()  # least_conn fills the lighter node; ties alternate
        else:
            raise AssertionError("no holder landed on " + repr(node))
        self.close_on(other)
        mine, theirs = conns(node), conns(other)
        if not mine - 1 > theirs:
            raise AssertionError(f"steering failed: {mine} on {node}, {theirs} on {other}")

    def close(self):
        for ws, _ in self.held:
            ws.close()
        self.held = []


def node_of(channel, counts_without):
    """The node that holds one more connection of `channel` than expected."""
    hits = [n for n in E.nodes if conns(n, channel) > counts_without[n.name]]
    if len(hits) != 1:
        raise AssertionError(f"cannot tell the node: {[(n.name, conns(n, channel)) for n in E.nodes]}")
    return hits[0]


def t_resume_on_the_other_node():
    """A client loses its connection mid-stream and resumes through nginx; it
    lands on the other node and gets complete:true, no gap, no duplicate."""
    stream = "/ws/bot-performance/resume"
    # One watcher per node keeps the stream live on both: the resume then
    # meets a node that has been delivering the stream itself.
    watchers = [Follower(stream) for _ in range(2)]
    for w in watchers:
        w.start()
        w.ready.wait(5)
        if w.error:
            raise w.error
    base_counts = {n.name: conns(n, "bot-performance") for n in E.nodes}
    eq(sorted(base_counts.values()), [1, 1], "one watcher per node")
    x, hello = subscribe(stream)
    epoch, last = hello["epoch"], hello["last_seq"]
    node = node_of("bot-performance", base_counts)
    pub = Publisher("bot-performance", "resume")
    pub.start()
    holders = Holders()
    landings = []
    try:
        for rnd in range(RESUME_ROUNDS):
            for _ in range(10 + 7 * rnd % 20):
                m = recv_json(x)
                eq((m["type"], m["seq"], m["data"]["n"]), ("event", last + 1, last), f"round {rnd} live")
                last += 1
            holders.steer_away_from(node)
            drop(x)
            wait_for("the node to see the client gone", lambda: conns(node, "bot-performance") == 1)
            x, hello = subscribe(f"{stream}?since={last}&epoch={epoch}")
            eq(hello["epoch"], epoch, "epoch on the other node")
            now_on = node_of("bot-performance", base_counts)
            if now_on is node:
                raise AssertionError(f"round {rnd}: the resume landed on the same {node}")
            landings.append(now_on.name)
            node = now_on
            while True:
                m = recv_json(x)
                if m["type"] == "recovered":
                    eq(m["complete"], True, f"round {rnd} recovered {m}")
                    break
                eq((m["type"], m["seq"], m["data"]["n"]), ("event", last + 1, last), f"round {rnd} replay")
                last += 1
        total = pub.finish()
        while last < total:
            m = recv_json(x)
            eq((m["seq"], m["data"]["n"]), (last + 1, last), "after the last resume")
            last += 1
        for w in watchers:
            w.finish(total)
            exactly_once(w.events, total, "watcher")
        log(f"     {RESUME_ROUNDS} resumes, landing on {' '.join(landings)}; {total} events published "
            f"through nginx at {RATE}/s, {len(pub.retries)} retried")
    finally:
        pub.stopping.set()
        x.close()
        holders.close()
        for w in watchers:
            w.until = 0
    wait_for("the resume clients to be gone", lambda: all(conns(n) == 0 for n in E.nodes))


def t_redis_stopped():
    """Redis stopped: 503s and /readyz 503, connections kept, and through nginx
    bistream's 503 every time. Redis back empty: 4010, a resume through nginx
    is complete:false under a new epoch."""
    a = E.nodes[0]
    subs, resumed = [], []
    try:
        _redis_stopped(a, subs, resumed)
    finally:
        for ws, _ in subs + resumed:
            ws.close()
    wait_for("the Redis-check clients to be gone", lambda: all(conns(n) == 0 for n in E.nodes))


def _redis_stopped(a, subs, resumed):
    """The body of t_redis_stopped; the clients it opens go in subs/resumed."""
    subs.extend(subscribe("/ws/dashboard/redis") for _ in range(2))
    eq([conns(n, "dashboard") for n in E.nodes], [1, 1], "one subscriber per node")
    old = subs[0][1]["epoch"]
    for i in range(3):
        eq(publish(tick("dashboard", "redis", i))[0], 202, "publish before the stop")
    for ws, _ in subs:
        eq([recv_json(ws)["seq"] for _ in range(3)], [1, 2, 3], "events before the stop")

    E.redis.stop(signal.SIGTERM)
    t0 = time.time()
    for n in E.nodes:
        wait_for(f"/readyz 503 on {n}", lambda n=n: readyz(n.port) == 503, timeout=1)
    took_down = time.time() - t0
    st, body = http_get(a.port, "/readyz")
    eq((st, json.loads(body)), (503, {"status": "engine_unavailable"}), "/readyz body")
    for n in E.nodes:
        eq(metric(metrics(n), "bistream_engine_up"), 0.0, f"bistream_engine_up on {n}")
    for ws, _ in subs:
        ws.send(json.dumps({"type": "ping", "id": "still-there"}))
        eq(recv_json(ws)["type"], "pong", "an open connection answers while Redis is down")
    # Through nginx: every node refuses, so the client gets bistream's own 503,
    # every time: bistream_ws counts no failures (max_fails=0).
    eq(http_get(E.port, "/readyz")[0], 503, "/readyz through nginx with no node ready")
    answers = [refusal("/ws/dashboard/redis") for _ in range(5)]
    answers = [(st, (body or {}).get("error")) for st, body in answers]
    eq(answers, [(503, "engine_unavailable")] * 5, "upgrades through nginx")
    st, body = publish(tick("dashboard", "redis", 99))
    eq((st, (body or {}).get("error")), (503, "engine_unavailable"), "publish through nginx")

    t1 = time.time()
    E.redis = start_redis()
    for n in E.nodes:
        wait_for(f"/readyz 200 on {n}", lambda n=n: readyz(n.port) == 200, timeout=10)
    took_up = time.time() - t1
    from websockets.exceptions import ConnectionClosed

    for ws, _ in subs:
        try:
            m = recv_json(ws, timeout=5)
            raise AssertionError(f"expected close 4010, got {m}")
        except ConnectionClosed as e:
            eq(e.rcvd and e.rcvd.code, 4010, "close code after Redis came back empty")
    eq(publish(tick("dashboard", "redis", 100))[0], 202, "publish after Redis came back")
    resumed.extend(subscribe(f"/ws/dashboard/redis?since=3&epoch={old}") for _ in range(2))
    for ws, hello in resumed:
        if hello["epoch"] == old:
            raise AssertionError("the old epoch came back")
        eq(hello["last_seq"], 1, "the new epoch holds the publish made after the restart")
        rec = recv_json(ws)
        eq((rec["type"], rec["complete"]), ("recovered", False), f"resume after the loss: {rec}")
    eq(publish(tick("dashboard", "redis", 101))[0], 202, "publish to the resumed clients")
    for ws, _ in resumed:
        m = recv_json(ws)
        eq((m["seq"], m["data"]["n"]), (2, 101), "next event of the new epoch")
    for n in E.nodes:
        v = metric(metrics(n), 'bistream_engine_resyncs_total{outcome="new_epoch"}')
        if v < 1:
            raise AssertionError(f"{n}: no new_epoch resync counted")
    log(f"     /readyz 503 on both nodes {took_down * 1000:.0f} ms after Redis stopped, 200 again "
        f"{took_up * 1000:.0f} ms after redis-server was started again")


def straggler(node, path):
    """A client straight on a node that takes its hello and then reads
    nothing more: on SIGTERM the node waits for it until --drain-timeout
    before it exits, as it would for a client on a slow link. That keeps the
    node draining (and answering 503) while its other clients move."""
    s = socket.create_connection(("127.0.0.1", node.port), timeout=5)
    s.sendall((f"GET {path}?token={E.sub_token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = s.recv(4096)
    if not head.startswith(b"HTTP/1.1 101"):
        raise AssertionError(f"straggler refused: {head[:80]!r}")
    return s


def t_sigterm_one_node():
    """SIGTERM to one node: its clients get 1001 and resume through nginx on the
    other node with complete:true at the first attempt: nginx passes the
    draining node's 503 on to the next node, and then its refused connects."""
    a, b = E.nodes
    stream = "/ws/bot-performance/term"
    followers = []
    for _ in range(4):
        f = Follower(stream)
        f.start()
        f.ready.wait(5)
        if f.error:
            raise f.error
        followers.append(f)
    on = {n.name: conns(n, "bot-performance") for n in E.nodes}
    if not (on["A"] > 0 and on["B"] > 0):
        raise AssertionError(f"followers per node: {on}")
    slow = straggler(a, "/ws/dashboard/slow")
    pub = Publisher("bot-performance", "term")
    pub.start()
    try:
        time.sleep(0.5)
        a.proc.p.send_signal(signal.SIGTERM)
        t0 = time.time()
        wait_for("every follower on node B", lambda: conns(b, "bot-performance") == 4)
        moved_in = time.time() - t0
        if a.proc.p.poll() is not None:
            raise AssertionError("node A exited before its clients had moved (refusals on the way: "
                                 f"{[f.refused for f in followers]})")
        rc = a.proc.p.wait(10)
        exited = time.time() - t0
        eq(rc, 0, "exit status of the drained node")
        eq(http_get(E.port, "/readyz")[0], 200, "/readyz through nginx with one node left")
        time.sleep(0.3)
        total = pub.finish()
        moved = 0
        for f in followers:
            f.finish(total)
            if f.refused:
                raise AssertionError(f"a follower was refused on its way over: {f.refused}")
            if f.closes:
                eq(f.closes, [1001], "close codes")
                eq([r["complete"] for r in f.recovered], [True], "the resume on node B")
                moved += 1
            exactly_once(f.events, total, "follower")
        eq(moved, on["A"], "followers that moved")
        # nginx's record of the resumes: A's 503 (draining), passed on to B's 101.
        addr_a, addr_b = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
        want = f'GET {stream} 101 "{addr_a}, {addr_b}" "503, 101"'
        with open(os.path.join(E.prefix, "access.log")) as fh:
            passed_on = sum(1 for line in fh if line.strip() == want)
        eq(passed_on, moved, f"access.log lines `{want}`")
        log(f"     {moved} clients moved from A to B within {moved_in * 1000:.0f} ms, each through A's 503; "
            f"A exited {exited:.2f} s after SIGTERM (its drain timeout: the straggler never read its 1001); {total} events published, "
            f"{len(pub.retries)} batches retried ({sorted(set(map(str, pub.retries)))})")
    finally:
        pub.stopping.set()
        slow.close()
        for f in followers:
            f.until = 0


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def start_redis():
    d = os.path.join(E.prefix, "redis")
    os.makedirs(d, exist_ok=True)
    p = base.Proc(
        "redis",
        [E.redis_bin, "--port", str(E.redis_port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", d,
         "--logfile", os.path.join(E.prefix, "redis.log")],
        E.env,
        os.path.join(E.prefix, "redis.stderr"),
    )
    E.procs.append(p)
    base.wait_port(E.redis_port)
    return p


def start_node(name):
    p = base.Proc(
        f"bistream {name}",
        [E.binary,
         "--listen", "127.0.0.1:0",
         "--engine", "redis",
         "--redis-url", f"redis://127.0.0.1:{E.redis_port}",
         "--trusted-proxies", "127.0.0.1/32",
         "--threads", "1",
         "--drain-timeout", "2s"],
        E.auth_env,
        os.path.join(E.prefix, f"node-{name}.log"),
    )
    E.procs.append(p)
    line = p.wait_lines(lambda l: "listening on 127.0.0.1:" in l, 1, 20)[0]
    node = Node(name, p, int(line.rsplit(":", 1)[1]))
    wait_for(f"{node} ready", lambda: readyz(node.port) == 200, timeout=10)
    return node


def run(prefix, nginx):
    E.prefix = prefix
    os.makedirs(os.path.join(prefix, "tmp"))
    E.env = {k: v for k, v in os.environ.items() if not k.startswith("BISTREAM_") and not k.startswith("JWT_")}
    E.env["RUST_LOG"] = "info"
    E.auth_env = dict(E.env, JWT_SECRET_KEY=SECRET)

    def mint(*extra):
        r = subprocess.run([E.binary, "token", *extra], env=E.auth_env, capture_output=True, text=True, check=True)
        return r.stdout.strip()

    E.sub_token = mint("--location", "*")
    E.pub_token = mint("--publisher", "--location", "*")

    E.redis_port = base.free_port()
    E.redis = start_redis()
    E.nodes = [start_node("A"), start_node("B")]
    E.port = base.free_port()
    values = {
        "NODE_A": f"127.0.0.1:{E.nodes[0].port}",
        "NODE_B": f"127.0.0.1:{E.nodes[1].port}",
        "LISTEN": f"127.0.0.1:{E.port}",
        "SERVER_NAME": "localhost",
    }
    root = os.geteuid() == 0
    worker = None
    if root:
        worker = "www-data" if base._user_exists("www-data") else "nobody"
    files = {
        "cluster.conf": base.render(base.template("cluster.conf.in"), values),
        "nginx.conf": base.render(base.template("cluster-nginx.conf.in"), {
            "PREFIX": prefix,
            "USER_LINE": f"user {worker} {grp.getgrgid(pwd.getpwnam(worker).pw_gid).gr_name};" if worker else "",
        }),
    }
    for name, text in files.items():
        with open(os.path.join(prefix, name), "w") as f:
            f.write(text)
    conf = os.path.join(prefix, "nginx.conf")
    errlog = os.path.join(prefix, "error.log")
    t = subprocess.run([nginx, "-t", "-p", prefix, "-c", conf, "-e", errlog], capture_output=True, text=True)
    if t.returncode != 0:
        raise RuntimeError("nginx -t refused the generated config:\n" + t.stdout + t.stderr)
    ng = base.Proc("nginx", [nginx, "-p", prefix, "-c", conf, "-e", errlog], E.env, os.path.join(prefix, "nginx.stderr"))
    E.procs.append(ng)
    base.wait_port(E.port)
    v = subprocess.run([nginx, "-v"], capture_output=True, text=True)
    r = subprocess.run([E.redis_bin, "--version"], capture_output=True, text=True)
    log(f"{(v.stderr or v.stdout).strip()} on 127.0.0.1:{E.port}; nodes A :{E.nodes[0].port}, "
        f"B :{E.nodes[1].port}; {r.stdout.split(' sha=')[0].strip()} on :{E.redis_port}")

    check("docs/cluster.md shows the tested config", t_docs_in_sync)
    check("subscribers through nginx land on both nodes; every event reaches all with the same seq/epoch", t_fanout)
    check("a client that loses its connection resumes through nginx on the other node, complete:true",
          t_resume_on_the_other_node)
    check("Redis stopped: /readyz 503, 503 engine_unavailable through nginx, connections kept; "
          "back empty: 4010, complete:false", t_redis_stopped)
    check("SIGTERM to one node: 1001, its clients resume on the other through nginx, complete:true",
          t_sigterm_one_node)
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("BISTREAM_BIN", os.path.join(ROOT, "target", "debug", "bistream")))
    ap.add_argument("--keep", action="store_true", help="keep the prefix directory (logs) even on success")
    args = ap.parse_args()
    start = time.time()
    E.binary = os.path.abspath(args.bin)
    if not os.access(E.binary, os.X_OK):
        sys.exit(f"no bistream binary at {E.binary} (cargo build first, or pass --bin)")
    nginx = base.ensure_nginx()
    E.redis_bin = ensure_redis()
    base.ensure_websockets()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    prefix = tempfile.mkdtemp(prefix="bistream-nginx-cluster-")
    os.chmod(prefix, 0o755)
    E.procs = []
    ok = False
    try:
        ok = run(prefix, nginx)
    except KeyboardInterrupt as e:
        log(f"interrupted: {e}")
    except Exception as e:  # noqa: BLE001
        log(f"setup failed: {e}")
        traceback.print_exc()
    finally:
        for p in reversed(E.procs):
            p.stop(signal.SIGTERM)
        results = base.RESULTS
        passed = sum(1 for _, good in results if good)
        failed = sum(1 for _, good in results if not good)
        if not ok and failed == 0:
            failed = 1
        if failed:
            for name in ("error.log", "node-A.log", "node-B.log", "redis.log"):
                p = os.path.join(prefix, name)
                if os.path.exists(p):
                    with open(p) as f:
                        tail = f.read().splitlines()[-15:]
                    log(f"--- last lines of {name}:")
                    for line in tail:
                        log("    " + line)
        if failed or args.keep:
            log(f"logs kept in {prefix}")
        else:
            shutil.rmtree(prefix, ignore_errors=True)
        log(f"finished in {time.time() - start:.1f}s")
        log(f"nginx cluster: {passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
