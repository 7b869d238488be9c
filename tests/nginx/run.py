#!/usr/bin/env python3
"""bistream behind the real nginx (issue 7), end to end, for both upstream kinds.

Starts, on loopback only:
  - bistream with a TCP and a Unix-socket listener (JWT auth on, trusted proxy
    127.0.0.1, --max-connections-per-ip 3, --heartbeat-interval 500ms), run as
    an unprivileged user whose group is nginx's worker group, socket mode 0660;
  - a control bistream whose heartbeat (1 min) is longer than nginx's read timeout;
  - nginx (Debian package; installed when missing) from a generated config under
    its own prefix in /tmp: the tested config of docs/nginx.md (tests/nginx/*.in)
    with proxy_read_timeout 2s, an unprivileged worker, daemon off.

Then proves, through nginx, on the Unix-socket and on the TCP upstream: the six
endpoints stream; the publish API works on kept-alive upstream connections;
refusals keep their own status (never a 502); --max-connections-per-ip counts the
forwarded address; an idle client outlives proxy_read_timeout thanks to server
pings (and the control, without them, does not); SIGTERM reaches clients as 1001.

Usage: make nginx-test, or, after `make venv`:
       target/venv/bin/python tests/nginx/run.py [--bin target/debug/bistream] [--keep]
Prints `nginx: N passed, M failed`; exits non-zero on any failure. nginx and
both bistream processes are stopped at the end in all cases.
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
DOCS = os.path.join(ROOT, "docs", "nginx.md")

SECRET = "nginx-test-secret-0123456789abcdef-0123456789"
READ_TIMEOUT_S = 2
HEARTBEAT = "500ms"
PER_IP = 3

# The values docs/nginx.md shows; the test renders the same templates with its own.
PROD = {
    "UNIX_SOCKET": "/run/bistream/bistream.sock",
    "TCP_UPSTREAM": "127.0.0.1:8000",
    "LISTEN": "80",
    "SERVER_NAME": "bi.example.com",
    "UPSTREAM": "bistream_unix",
    "WS_READ_TIMEOUT": "60s",
}

SIX = [
    ("/ws/dashboard", "dashboard"),
    ("/ws/bi/revenue-intelligence", "revenue-intelligence"),
    ("/ws/bot-performance", "bot-performance"),
    ("/ws/business-intelligence", "business-intelligence"),
    ("/ws/ai-concierge", "ai-concierge"),
    ("/ws/analytics/advanced", "analytics-advanced"),
]
KINDS = ["unix", "tcp"]


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# Prerequisites: nginx (Debian package) and the websockets package.
# ---------------------------------------------------------------------------


def find_nginx():
    for p in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if p and os.path.exists(p):
            return p
    return None


def ensure_nginx():
    # The project's one installer of Debian packages: installs only when missing,
    # and keeps the package from starting a system nginx on :80.
    if not find_nginx():
        helper = os.path.join(ROOT, "tests", "setup", "ensure-apt.sh")
        if subprocess.run(["bash", helper, "nginx:nginx"]).returncode != 0:
            sys.exit("nginx: could not install nginx (tests/setup/ensure-apt.sh)")
    path = find_nginx()
    if not path:
        sys.exit("nginx: nginx is installed but not found on PATH or in /usr/sbin")
    return path


def ensure_websockets():
    # Installed by `make` into the project's venv (tests/setup/python-venv.sh),
    # never into whatever interpreter happens to run this script.
    try:
        import websockets.sync.client  # noqa: F401
    except ImportError:
        sys.exit("nginx: the websockets package is missing: run this script with the project's "
                 "venv (make nginx-test, or target/venv/bin/python after make venv)")


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------


class Proc:
    """A child process whose stderr is kept (and copied to a log file)."""

    def __init__(self, name, argv, env, logfile):
        self.name = name
        self.lines = []
        self.cond = threading.Condition()
        self.p = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out = open(logfile, "w")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stderr:
            self.out.write(line)
            self.out.flush()
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_lines(self, pred, count, timeout):
        """Waits until `count` stderr lines satisfy pred; returns them."""
        deadline = time.time() + timeout
        with self.cond:
            while True:
                hits = [l for l in self.lines if pred(l)]
                if len(hits) >= count:
                    return hits
                left = deadline - time.time()
                if left <= 0 or self.p.poll() is not None:
                    raise RuntimeError(
                        f"{self.name}: expected output never came; last lines:\n"
                        + "\n".join(self.lines[-20:])
                    )
                self.cond.wait(min(left, 0.2))

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
            except ProcessLookupError:
                pass
        self.out.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def render(text, values):
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", v)
    if "{{" in text:
        raise RuntimeError("unrendered placeholder in:\n" + text)
    return text


def template(name):
    with open(os.path.join(HERE, name)) as f:
        return f.read()


# ---------------------------------------------------------------------------
# The environment under test
# ---------------------------------------------------------------------------


class Env:
    pass


E = Env()
_src = [0]
_src_lock = threading.Lock()


def next_src():
    """A loopback source address of its own for each client, so that the
    per-address limit (counted on the forwarded address) only bites where a
    check wants it to."""
    with _src_lock:
        _src[0] += 1
        n = _src[0]
    return f"127.0.{10 + n // 250}.{1 + n % 250}"


def port_of(kind):
    return {"unix": E.port_unix, "tcp": E.port_tcp, "control": E.port_control}[kind]


def ws_connect(kind, path, src=None, token="sub", headers=None):
    from websockets.sync.client import connect

    port = port_of(kind)
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=5, source_address=(src or next_src(), 0)
    )
    tok = {"sub": E.sub_token, "none": None}.get(token, token)
    uri = f"ws://127.0.0.1:{port}{path}"
    if tok:
        uri += ("&" if "?" in path else "?") + "token=" + tok
    ws = connect(
        uri,
        sock=sock,
        open_timeout=5,
        close_timeout=2,
        ping_interval=None,  # only the server's heartbeats keep connections alive
        additional_headers=headers or {},
        max_size=2**22,
    )
    # Entered by hand (closed by the checks): websockets >= 17.1 warns otherwise.
    return ws.__enter__()


def status_of_refusal(kind, path, **kw):
    """Upgrades `path` expecting a refusal: (status, parsed JSON body or None)."""
    from websockets.exceptions import InvalidStatus

    try:
        ws = ws_connect(kind, path, **kw)
    except InvalidStatus as e:
        body = e.response.body or b""
        try:
            return e.response.status_code, json.loads(body)
        except ValueError:
            return e.response.status_code, None
    ws.close()
    return 101, None


def recv_json(ws, timeout=5):
    return json.loads(ws.recv(timeout=timeout))


def next_event(ws, timeout=5):
    deadline = time.time() + timeout
    while True:
        m = recv_json(ws, max(0.1, deadline - time.time()))
        if m.get("type") == "event":
            return m


def publish(kind, body, token="pub", conn=None, src=None):
    """POST /api/events through nginx: (status, JSON body)."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(
            "127.0.0.1", port_of(kind), timeout=10, source_address=(src or next_src(), 0)
        )
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"Content-Type": "application/json"}
    tok = {"pub": E.pub_token, "none": None}.get(token, token)
    if tok:
        headers["Authorization"] = "Bearer " + tok
    if own:
        headers["Connection"] = "close"
    conn.request("POST", "/api/events", body=data, headers=headers)
    r = conn.getresponse()
    raw = r.read()
    if own:
        conn.close()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw


def raw_http(kind, req, src=None):
    """One raw request through nginx: (status, head, body)."""
    s = socket.create_connection(
        ("127.0.0.1", port_of(kind)), timeout=5, source_address=(src or next_src(), 0)
    )
    s.sendall(req.encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    head = head.decode("latin-1")
    length = 0
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    s.close()
    status = int(head.split()[1]) if head else 0
    return status, head, body


def upgrade_head(path, version="13", key=True, upgrade=True, method="GET"):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if upgrade:
        lines += ["Upgrade: websocket", "Connection: Upgrade"]
    if key:
        lines.append("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
    if version:
        lines.append(f"Sec-WebSocket-Version: {version}")
    if method == "POST":
        lines.append("Content-Length: 0")
    lines.append("Connection: close" if not upgrade else "")
    return "\r\n".join(l for l in lines if l) + "\r\n\r\n"


def upstream_conns(kind):
    """bistream's side of its connections from nginx: TCP remote ports or
    Unix-socket inodes of established connections."""
    if kind == "tcp":
        want = "0100007F:%04X" % E.bistream_port
        out = set()
        with open("/proc/net/tcp") as f:
            for line in list(f)[1:]:
                p = line.split()
                if p[1] == want and p[3] == "01":
                    out.add(p[2])
        return out
    out = set()
    with open("/proc/net/unix") as f:
        for line in list(f)[1:]:
            p = line.split()
            if len(p) >= 8 and p[7] == E.sock and p[5] == "03":
                out.add(p[6])
    return out


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

RESULTS = []


def check(name, fn):
    t0 = time.time()
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
        RESULTS.append((name, False))
        log(f"FAIL {name}: {e!r}")
        tb = traceback.format_exc().strip().splitlines()
        for line in tb[-6:]:
            log("     " + line)
        return
    RESULTS.append((name, True))
    log(f"ok   {name} ({time.time() - t0:.2f}s)")


def eq(a, b, what=""):
    if a != b:
        raise AssertionError(f"{what}: got {a!r}, want {b!r}")


def t_docs_in_sync():
    with open(DOCS) as f:
        docs = f.read()
    for name, values in (
        ("bistream.conf.in", PROD),
        ("site.conf.in", PROD),
    ):
        text = render(template(name), values).strip()
        if text not in docs:
            raise AssertionError(f"docs/nginx.md does not show {name} as rendered with production values")


def t_health(kind):
    for path in ("/healthz", "/readyz"):
        st, _, body = raw_http(kind, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        eq(st, 200, path)
    st, _, body = raw_http(kind, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", src="127.0.0.1")
    eq(st, 200, "/metrics from 127.0.0.1")
    if b"bistream_connections_total" not in body:
        raise AssertionError("metrics body")


def t_publish_keepalive(kind):
    # 40 publishes on fresh client connections, then 40 on one kept-alive client
    # connection: nginx serves all 80 over the same few upstream connections.
    loc = f"ka-{kind}"
    ev = {"channel": "dashboard", "location_id": loc, "event_type": "KA", "data": None}
    for i in range(40):
        st, body = publish(kind, ev)
        eq((st, body), (202, {"accepted": 1}), f"publish {i}")
    first = upstream_conns(kind)
    conn = http.client.HTTPConnection("127.0.0.1", port_of(kind), timeout=10, source_address=(next_src(), 0))
    for i in range(40):
        st, body = publish(kind, ev, conn=conn)
        eq((st, body), (202, {"accepted": 1}), f"keep-alive publish {i}")
    conn.close()
    second = upstream_conns(kind)
    if not (1 <= len(second) <= 4):
        raise AssertionError(f"{len(second)} upstream connections after 80 publishes (keep-alive off?)")
    if not (first & second):
        raise AssertionError(f"no upstream connection was reused: {first} then {second}")
    # A full batch, and one over the limit answered by bistream itself.
    batch = [dict(ev, event_type=f"B{i}") for i in range(1000)]
    st, body = publish(kind, batch)
    eq((st, body), (202, {"accepted": 1000}), "1000-event batch")
    big = json.dumps({"channel": "dashboard", "location_id": loc, "event_type": "BIG", "data": "x" * (1 << 20)})
    st, body = publish(kind, big)
    eq(st, 413, "body over 1 MiB")
    st, body = publish(kind, ev, token="none")
    eq(st, 401, "publish without a token")


def t_endpoint(kind, prefix, channel):
    loc = f"{kind}-{channel}"
    ws = ws_connect(kind, f"{prefix}/{loc}")
    try:
        hello = recv_json(ws)
        eq(hello.get("type"), "BI_CONNECTION_ESTABLISHED", "first message")
        eq((hello.get("channel"), hello.get("location_id")), (channel, loc), "hello names the stream")
        st, body = publish(kind, {"channel": channel, "location_id": loc, "event_type": "VIA_NGINX", "data": {"kind": kind}})
        eq((st, body), (202, {"accepted": 1}), "publish")
        ev = next_event(ws)
        eq((ev["channel"], ev["location_id"], ev["event_type"], ev["seq"], ev["data"]),
           (channel, loc, "VIA_NGINX", 1, {"kind": kind}), "event")
    finally:
        ws.close()


def t_refusals(kind):
    cases = []
    st, body = status_of_refusal(kind, "/ws/nope/x")
    cases.append(("unknown path", st, 404, body))
    st, body = status_of_refusal(kind, "/ws/dashboard/bad%41id")
    cases.append(("bad location_id", st, 400, body))
    st, body = status_of_refusal(kind, "/ws/dashboard/loc?since=abc")
    cases.append(("bad since", st, 400, body))
    st, body = status_of_refusal(kind, "/ws/dashboard/loc", token="none")
    cases.append(("no token", st, 401, body))
    st, body = status_of_refusal(kind, "/ws/dashboard/loc", token="not.a.jwt")
    cases.append(("bad token", st, 401, body))
    st, body = status_of_refusal(kind, "/ws/dashboard/elsewhere", token=E.narrow_token)
    cases.append(("token for another location", st, 403, body))
    tok = "?token=" + E.sub_token
    for what, req, want in (
        ("no Upgrade header", upgrade_head("/ws/dashboard/loc" + tok, upgrade=False), 400),
        ("no Sec-WebSocket-Key", upgrade_head("/ws/dashboard/loc" + tok, key=False), 400),
        ("Sec-WebSocket-Version 8", upgrade_head("/ws/dashboard/loc" + tok, version="8"), 426),
        ("POST on a /ws/ path", upgrade_head("/ws/dashboard/loc" + tok, method="POST", upgrade=False), 405),
    ):
        st, head, raw = raw_http(kind, req)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        cases.append((what, st, want, body))
        if want == 426 and "sec-websocket-version: 13" not in head.lower():
            raise AssertionError("426 without Sec-WebSocket-Version: 13 passed through:\n" + head)
    bad = [(w, st, want) for (w, st, want, body) in cases if st != want or not (body or {}).get("error")]
    if bad:
        raise AssertionError(f"refusals changed on the way: {bad}")


def t_per_ip(kind):
    a, b = {"tcp": ("127.0.0.2", "127.0.0.3"), "unix": ("127.0.0.4", "127.0.0.5")}[kind]
    path = f"/ws/ai-concierge/perip-{kind}"
    held = []
    try:
        for _ in range(PER_IP):
            ws = ws_connect(kind, path, src=a)
            eq(recv_json(ws)["type"], "BI_CONNECTION_ESTABLISHED", "hello")
            held.append(ws)
        st, body = status_of_refusal(kind, path, src=a)
        eq(st, 503, f"connection {PER_IP + 1} from {a}")
        if not (body or {}).get("error"):
            raise AssertionError(f"503 body: {body}")
        # Forging the header through nginx does not help: nginx appends the real
        # address and bistream reads from the right.
        st, _ = status_of_refusal(kind, path, src=a, headers={"X-Forwarded-For": "198.51.100.9"})
        eq(st, 503, "forged X-Forwarded-For through nginx")
        # Another client behind the same nginx is counted on its own.
        ws = ws_connect(kind, path, src=b)
        eq(recv_json(ws)["type"], "BI_CONNECTION_ESTABLISHED", f"client {b}")
        held.append(ws)
    finally:
        for ws in held:
            ws.close()


def t_idle(results, kind):
    """Idle for 2.5 read timeouts, then an event must still arrive."""
    try:
        loc = f"idle-{kind}"
        ws = ws_connect(kind, f"/ws/bot-performance/{loc}")
        recv_json(ws)
        time.sleep(READ_TIMEOUT_S * 2.5)
        st, _ = publish(kind, {"channel": "bot-performance", "location_id": loc, "event_type": "AFTER_IDLE"})
        eq(st, 202, "publish after idling")
        eq(next_event(ws)["event_type"], "AFTER_IDLE", "event after idling")
        ws.close()
        results[kind] = None
        results[kind + "_s"] = READ_TIMEOUT_S * 2.5
    except Exception as e:  # noqa: BLE001
        results[kind] = e


def t_idle_control(results):
    """Without heartbeats (the control bistream pings every minute) nginx cuts the
    idle connection after proxy_read_timeout: the timeout is real."""
    from websockets.exceptions import ConnectionClosed

    try:
        ws = ws_connect("control", "/ws/dashboard/control", token="none")
        recv_json(ws)
        t0 = time.time()
        try:
            ws.recv(timeout=READ_TIMEOUT_S * 4)
            raise AssertionError("the control received a message")
        except ConnectionClosed as e:
            took = time.time() - t0
            if e.rcvd is not None:
                raise AssertionError(f"closed by bistream ({e.rcvd}), not by nginx")
            if not (READ_TIMEOUT_S * 0.8 <= took <= READ_TIMEOUT_S * 3):
                raise AssertionError(f"nginx cut the idle control after {took:.1f}s")
            results["control_s"] = took
        except TimeoutError:
            raise AssertionError("nginx never cut the idle control connection")
        results["control"] = None
    except Exception as e:  # noqa: BLE001
        results["control"] = e


def t_sigterm():
    from websockets.exceptions import ConnectionClosed

    clients = []
    for kind in KINDS:
        for prefix, channel in SIX[:2]:
            ws = ws_connect(kind, f"{prefix}/term-{kind}")
            recv_json(ws)
            clients.append((kind, ws))
    E.bistream.p.send_signal(signal.SIGTERM)
    codes = []
    for kind, ws in clients:
        code = "no close"
        try:
            while True:
                ws.recv(timeout=8)
        except ConnectionClosed as e:
            code = e.rcvd.code if e.rcvd else None
        except TimeoutError:
            code = "timeout"
        codes.append((kind, code))
    bad = [c for c in codes if c[1] != 1001]
    if bad:
        raise AssertionError(f"close codes through nginx: {codes}")
    rc = E.bistream.p.wait(15)
    eq(rc, 0, "bistream exit status after the drain")
    if os.path.exists(E.sock):
        raise AssertionError("the socket file is left behind")


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("BISTREAM_BIN", os.path.join(ROOT, "target", "debug", "bistream")))
    ap.add_argument("--keep", action="store_true", help="keep the prefix directory (logs) even on success")
    args = ap.parse_args()
    start = time.time()
    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        sys.exit(f"no bistream binary at {binary} (cargo build first, or pass --bin)")
    nginx = ensure_nginx()
    ensure_websockets()

    # SIGTERM/SIGINT/SIGHUP to the driver still run the clean-up below.
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    prefix = tempfile.mkdtemp(prefix="bistream-nginx-")
    os.chmod(prefix, 0o755)
    procs = []
    ok = False
    try:
        ok = run(prefix, nginx, binary, procs)
    except KeyboardInterrupt as e:
        log(f"interrupted: {e}")
    except Exception as e:  # noqa: BLE001
        log(f"setup failed: {e}")
        traceback.print_exc()
    finally:
        for p in reversed(procs):
            # nginx: SIGTERM is its fast shutdown (SIGQUIT would wait for every
            # open WebSocket); bistream: SIGTERM drains.
            p.stop(signal.SIGTERM)
        passed = sum(1 for _, good in RESULTS if good)
        failed = sum(1 for _, good in RESULTS if not good)
        if not ok and failed == 0:
            failed = 1
        if failed:
            for name in ("error.log", "bistream.log", "control.log"):
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
        log(f"nginx: {passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 else 1)


def run(prefix, nginx, binary, procs):
    root = os.geteuid() == 0
    run_dir = os.path.join(prefix, "run")
    os.makedirs(os.path.join(prefix, "tmp"))
    os.makedirs(run_dir)
    E.sock = os.path.join(run_dir, "bistream.sock")

    # nginx's worker runs unprivileged; bistream runs as nobody with the worker's
    # group, so that mode 0660 lets exactly nginx in (as on a real box).
    worker = None
    wrap = []
    mode = "0660"
    if root:
        worker = "www-data" if _user_exists("www-data") else "nobody"
        wgid = pwd.getpwnam(worker).pw_gid
        nobody = pwd.getpwnam("nobody").pw_uid
        os.chown(run_dir, nobody, wgid)
        os.chmod(run_dir, 0o750)
        wrap = ["setpriv", f"--reuid={nobody}", f"--regid={wgid}", "--clear-groups", "--"]
        probe = subprocess.run(wrap + [binary, "--version"], capture_output=True)
        if probe.returncode != 0:
            log(f"note: {binary} cannot run as nobody ({probe.stderr.decode().strip()}); running it as root, socket mode 0666")
            wrap, mode = [], "0666"
            os.chmod(run_dir, 0o755)
        log(f"nginx worker user {worker} (group {grp.getgrgid(wgid).gr_name}); bistream socket mode {mode}")
    else:
        log("note: not root: nginx runs without a `user` directive, bistream as this user")

    env = {k: v for k, v in os.environ.items() if not k.startswith("BISTREAM_") and not k.startswith("JWT_")}
    env["RUST_LOG"] = "info"
    auth_env = dict(env, JWT_SECRET_KEY=SECRET)

    def mint(*extra):
        r = subprocess.run([binary, "token", *extra], env=auth_env, capture_output=True, text=True, check=True)
        return r.stdout.strip()

    E.sub_token = mint("--location", "*")
    E.pub_token = mint("--publisher", "--location", "*")
    E.narrow_token = mint("--location", "only-here")

    E.bistream = Proc(
        "bistream",
        wrap + [
            binary,
            "--listen", "127.0.0.1:0",
            "--listen", "unix:" + E.sock,
            "--unix-socket-mode", mode,
            "--trusted-proxies", "127.0.0.1/32",
            "--max-connections-per-ip", str(PER_IP),
            "--heartbeat-interval", HEARTBEAT,
            "--drain-timeout", "5s",
            "--threads", "2",
        ],
        auth_env,
        os.path.join(prefix, "bistream.log"),
    )
    procs.append(E.bistream)
    tcp_line = E.bistream.wait_lines(lambda l: "listening on 127.0.0.1:" in l, 1, 20)[0]
    E.bistream_port = int(tcp_line.rsplit(":", 1)[1])
    E.bistream.wait_lines(lambda l: "listening on unix:" in l, 1, 20)

    control = Proc(
        "control",
        [binary, "--listen", "127.0.0.1:0", "--heartbeat-interval", "1m", "--threads", "1"],
        env,
        os.path.join(prefix, "control.log"),
    )
    procs.append(control)
    line = control.wait_lines(lambda l: "listening on 127.0.0.1:" in l, 1, 20)[0]
    control_port = int(line.rsplit(":", 1)[1])

    E.port_unix, E.port_tcp, E.port_control = free_port(), free_port(), free_port()
    test_values = {
        "UNIX_SOCKET": E.sock,
        "TCP_UPSTREAM": f"127.0.0.1:{E.bistream_port}",
        "SERVER_NAME": "localhost",
        "WS_READ_TIMEOUT": f"{READ_TIMEOUT_S}s",
    }
    files = {
        "bistream.conf": render(template("bistream.conf.in"), test_values),
        "site-unix.conf": render(template("site.conf.in"), dict(test_values, LISTEN=f"127.0.0.1:{E.port_unix}", UPSTREAM="bistream_unix")),
        "site-tcp.conf": render(template("site.conf.in"), dict(test_values, LISTEN=f"127.0.0.1:{E.port_tcp}", UPSTREAM="bistream_tcp")),
        "site-control.conf": render(template("site.conf.in"), dict(test_values, LISTEN=f"127.0.0.1:{E.port_control}", UPSTREAM="bistream_control")),
        "nginx.conf": render(template("nginx.conf.in"), {
            "PREFIX": prefix,
            "USER_LINE": f"user {worker} {grp.getgrgid(pwd.getpwnam(worker).pw_gid).gr_name};" if worker else "",
            "CONTROL_UPSTREAM": f"127.0.0.1:{control_port}",
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
    ng = Proc("nginx", [nginx, "-p", prefix, "-c", conf, "-e", errlog], env, os.path.join(prefix, "nginx.stderr"))
    procs.append(ng)
    for port in (E.port_unix, E.port_tcp, E.port_control):
        wait_port(port)
    v = subprocess.run([nginx, "-v"], capture_output=True, text=True)
    log(f"{(v.stderr or v.stdout).strip()} on 127.0.0.1:{E.port_unix} (unix upstream), "
        f":{E.port_tcp} (tcp upstream), :{E.port_control} (control); bistream on :{E.bistream_port} and {E.sock}")

    check("docs/nginx.md shows the tested config", t_docs_in_sync)
    for kind in KINDS:
        check(f"[{kind}] /healthz, /readyz, /metrics through nginx", lambda k=kind: t_health(k))
        check(f"[{kind}] publish API on kept-alive upstream connections", lambda k=kind: t_publish_keepalive(k))
    for kind in KINDS:
        for prefix_, channel in SIX:
            check(f"[{kind}] {prefix_}/{{location_id}} streams through nginx",
                  lambda k=kind, p=prefix_, c=channel: t_endpoint(k, p, c))
    for kind in KINDS:
        check(f"[{kind}] refusals keep their status (400, 401, 403, 404, 405, 426)", lambda k=kind: t_refusals(k))
        check(f"[{kind}] --max-connections-per-ip counts the forwarded address (503)", lambda k=kind: t_per_ip(k))

    # The idle checks run side by side: one wait for all three.
    idle = {}
    threads = [threading.Thread(target=t_idle, args=(idle, k), daemon=True) for k in KINDS]
    threads.append(threading.Thread(target=t_idle_control, args=(idle,), daemon=True))
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for kind in KINDS:
        check(f"[{kind}] an idle client outlives proxy_read_timeout {READ_TIMEOUT_S}s (heartbeat {HEARTBEAT}; "
              f"idle {idle.get(kind + '_s', 0):.1f}s)",
              lambda k=kind: _reraise(idle.get(k, RuntimeError("did not run"))))
    check(f"[control] without heartbeats nginx cuts the idle client at proxy_read_timeout "
          f"(after {idle.get('control_s', 0):.1f}s)",
          lambda: _reraise(idle.get("control", RuntimeError("did not run"))))

    with open(errlog) as f:
        upstream_errors = [l for l in f if "[error]" in l or "[crit]" in l or "[alert]" in l]
    check("nginx logged no upstream errors", lambda: _reraise(
        AssertionError("".join(upstream_errors[:5])) if upstream_errors else None))

    check("SIGTERM reaches clients through nginx as 1001 on both upstreams; socket removed", t_sigterm)
    return True


def _reraise(e):
    if e is not None:
        raise e


def _user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


if __name__ == "__main__":
    main()
