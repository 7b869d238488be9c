#!/usr/bin/env python3
"""bistream behind real load balancers that speak the PROXY protocol (issue 14,
docs/protocol.md §11), end to end:

  - HAProxy (Debian package) in TCP mode with `send-proxy-v2`, its health
    checks sent with a PROXY header too (`check-send-proxy`);
  - nginx's stream module (Debian package libnginx-mod-stream) with
    `proxy_protocol on` (v1).

All on loopback: bistream with `--proxy-protocol --trusted-proxies 127.0.0.1/32
--max-connections-per-ip 2`; each client connects to the proxy from a loopback
address of its own (127.0.0.x), which the proxy names in its header. Proves, for
each proxy: health, streaming and publishing through it; the per-address limit
and the logs see the forwarded client address; X-Forwarded-For is ignored behind
a header; HAProxy's health checks pass. Then, directly: a missing and a malformed
header are refused without an answer, and a bistream that does not trust the
proxy closes what it forwards.

Usage: make proxy-test, or, after `make venv`:
       target/venv/bin/python tests/proxy/run.py [--bin target/debug/bistream] [--keep]
Prints `proxy: N passed, M failed`; exits non-zero on any failure. Every process
it started is stopped at the end.
"""

import argparse
import json
import os
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
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
PER_IP = 2


def log(msg):
    print(msg, flush=True)


def find(name):
    for p in (shutil.which(name), f"/usr/sbin/{name}"):
        if p and os.path.exists(p):
            return p
    return None


def ensure_packages():
    helper = os.path.join(ROOT, "tests", "setup", "ensure-apt.sh")
    if subprocess.run(["bash", helper, "haproxy:haproxy", "nginx:nginx", "libnginx-mod-stream"]).returncode != 0:
        sys.exit("proxy: could not install haproxy, nginx and libnginx-mod-stream (tests/setup/ensure-apt.sh)")
    if not os.path.exists(NGINX_STREAM_MODULE):
        sys.exit(f"proxy: {NGINX_STREAM_MODULE} is missing after installing libnginx-mod-stream")
    try:
        import websockets.sync.client  # noqa: F401
    except ImportError:
        sys.exit("proxy: run with the project's venv (make proxy-test)")
    return find("haproxy"), find("nginx")


class Proc:
    """A child whose stderr is kept in memory and in a log file."""

    def __init__(self, name, argv, env, logfile):
        self.name = name
        self.lines = []
        self.cond = threading.Condition()
        self.out = open(logfile, "w")
        self.p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                  stdout=self.out, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stderr:
            self.out.write(line)
            self.out.flush()
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_line(self, pred, timeout=20):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for l in self.lines:
                    if pred(l):
                        return l
                left = deadline - time.time()
                if left <= 0 or self.p.poll() is not None:
                    raise RuntimeError(f"{self.name}: expected output never came; last lines:\n"
                                       + "\n".join(self.lines[-15:]))
                self.cond.wait(min(left, 0.2))

    def has_line(self, needle):
        with self.cond:
            return any(needle in l for l in self.lines)

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.send_signal(signal.SIGTERM)
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
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


def raw(port, data, src="127.0.0.1", timeout=5):
    """Sends bytes; returns everything the server sent until it closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(src, 0))
    try:
        s.sendall(data)
    except OSError:
        pass
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    return out


def http_get(port, path, src):
    out = raw(port, f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode(), src)
    head, _, body = out.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    return status, body


def ws(port, path, src, headers=None):
    from websockets.sync.client import connect
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
    c = connect(f"ws://127.0.0.1:{port}{path}", sock=sock, open_timeout=5, close_timeout=2,
                ping_interval=None, additional_headers=headers or {})
    return c.__enter__()


def ws_status(port, path, src, headers=None):
    from websockets.exceptions import InvalidStatus
    try:
        c = ws(port, path, src, headers)
    except InvalidStatus as e:
        return e.response.status_code, None
    return 101, c


def publish(port, body, src):
    data = json.dumps(body).encode()
    out = raw(port, b"POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
              + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data, src)
    return int(out.split()[1]) if out else 0


RESULTS = []


def check(name, fn):
    t0 = time.time()
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
        RESULTS.append((name, False))
        log(f"FAIL {name}: {e!r}")
        for line in traceback.format_exc().strip().splitlines()[-6:]:
            log("     " + line)
        return
    RESULTS.append((name, True))
    log(f"ok   {name} ({time.time() - t0:.2f}s)")


def eq(a, b, what):
    if a != b:
        raise AssertionError(f"{what}: got {a!r}, want {b!r}")


class Env:
    pass


E = Env()


def metric(name):
    # /metrics straight from bistream needs a header too: a v1 one naming the test.
    out = raw(E.bport, b"PROXY TCP4 127.0.0.1 127.0.0.1 1 1\r\nGET /metrics HTTP/1.1\r\nHost: t\r\n"
              b"Connection: close\r\n\r\n")
    for line in out.decode(errors="replace").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def t_health(port):
    eq(http_get(port, "/healthz", "127.0.0.5")[0], 200, "/healthz through the proxy")
    eq(http_get(port, "/readyz", "127.0.0.5")[0], 200, "/readyz through the proxy")


def t_stream(port, tag):
    loc = f"pp-{tag}"
    c = ws(port, f"/ws/dashboard/{loc}", "127.0.0.6")
    hello = json.loads(c.recv(timeout=5))
    eq(hello["type"], "BI_CONNECTION_ESTABLISHED", "hello")
    eq(publish(port, {"channel": "dashboard", "location_id": loc, "event_type": "PP",
                      "data": {"via": tag}}, "127.0.0.7"), 202, "publish through the proxy")
    ev = json.loads(c.recv(timeout=5))
    eq((ev["type"], ev["data"]["via"]), ("event", tag), "event through the proxy")
    c.close()


def t_per_ip(port, n):
    src = f"127.0.{n}.21"
    path = f"/ws/dashboard/limit-{n}"
    held = []
    for i in range(PER_IP):
        st, c = ws_status(port, path, src)
        eq(st, 101, f"connection {i + 1} from {src}")
        held.append(c)
    st, _ = ws_status(port, path, src)
    eq(st, 503, f"connection {PER_IP + 1} from {src} (the forwarded address is counted)")
    st, c = ws_status(port, path, f"127.0.{n}.22")
    eq(st, 101, "another client behind the same proxy")
    held.append(c)
    # X-Forwarded-For naming the busy address changes nothing behind a header.
    st, c = ws_status(port, path, f"127.0.{n}.23", {"X-Forwarded-For": src})
    eq(st, 101, "X-Forwarded-For is ignored behind a PROXY header")
    held.append(c)
    # The refusal is logged with the forwarded address, not the proxy's.
    E.bistream.wait_line(lambda l: f"refused handshake from {src}: 503" in l, 5)
    for c in held:
        c.close()


def t_haproxy_checks():
    # HAProxy's own view: the server is UP through health checks sent with a PROXY header.
    s = socket.socket(socket.AF_UNIX)
    s.connect(E.haproxy_stats)
    s.sendall(b"show stat\n")
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    rows = [r.split(",") for r in out.decode().splitlines() if r.startswith("bistream,")]
    status = [r[17] for r in rows if r[1] == "b1"]
    eq(status, ["UP"], "HAProxy's health check of bistream (check-send-proxy)")
    if metric('bistream_proxy_headers_total{version="2"}') < 3:
        raise AssertionError("bistream counted fewer than 3 PROXY v2 headers")


def t_refusals():
    before = {r: metric(f'bistream_proxy_refusals_total{{reason="{r}"}}') for r in ("missing", "malformed")}
    eq(raw(E.bport, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"), b"",
       "a request without a header gets no answer")
    eq(raw(E.bport, b"PROXY TCP4 300.1.1.1 127.0.0.1 1 2\r\nGET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"), b"",
       "a malformed header gets no answer")
    eq(metric('bistream_proxy_refusals_total{reason="missing"}') - before["missing"], 1.0, "missing counted")
    eq(metric('bistream_proxy_refusals_total{reason="malformed"}') - before["malformed"], 1.0, "malformed counted")


def t_untrusted():
    # HAProxy forwards to a bistream that trusts only 10.0.0.0/8: closed unanswered.
    eq(raw(E.port_untrusted, b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
           "127.0.0.9"), b"", "a header from an untrusted peer gets no answer")
    E.untrusted.wait_line(lambda l: "not a trusted proxy" in l, 5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "debug", "bistream"))
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    binary = os.path.abspath(args.bin)
    if not os.access(binary, os.X_OK):
        sys.exit(f"no bistream binary at {binary} (cargo build first, or pass --bin)")
    haproxy, nginx = ensure_packages()
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda n, _f: (_ for _ in ()).throw(KeyboardInterrupt(f"signal {n}")))
    prefix = tempfile.mkdtemp(prefix="bistream-proxy-")
    procs = []
    start = time.time()
    ok = False
    try:
        ok = run(prefix, binary, haproxy, nginx, procs)
    except KeyboardInterrupt as e:
        log(f"interrupted: {e}")
    except Exception as e:  # noqa: BLE001
        log(f"setup failed: {e}")
        traceback.print_exc()
    finally:
        for p in reversed(procs):
            p.stop()
        passed = sum(1 for _, g in RESULTS if g)
        failed = sum(1 for _, g in RESULTS if not g) or (0 if ok else 1)
        if failed or args.keep:
            log(f"logs kept in {prefix}")
        else:
            shutil.rmtree(prefix, ignore_errors=True)
        log(f"finished in {time.time() - start:.1f}s")
        log(f"proxy: {passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 else 1)


def start_bistream(name, binary, trusted, prefix, procs):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BISTREAM_", "JWT_", "LISTEN_", "NOTIFY_SOCKET"))}
    env["RUST_LOG"] = "debug"
    p = Proc(name, [binary, "--listen", "127.0.0.1:0", "--proxy-protocol", "--trusted-proxies", trusted,
                    "--max-connections-per-ip", str(PER_IP), "--threads", "2"],
             env, os.path.join(prefix, f"{name}.log"))
    procs.append(p)
    line = p.wait_line(lambda l: "listening on 127.0.0.1:" in l)
    return p, int(line.rsplit(":", 1)[1])


def run(prefix, binary, haproxy, nginx, procs):
    E.bistream, E.bport = start_bistream("bistream", binary, "127.0.0.1/32", prefix, procs)
    E.untrusted, uport = start_bistream("untrusted", binary, "10.0.0.0/8", prefix, procs)
    E.port_haproxy, E.port_nginx, E.port_untrusted = free_port(), free_port(), free_port()
    E.haproxy_stats = os.path.join(prefix, "haproxy.sock")

    hcfg = os.path.join(prefix, "haproxy.cfg")
    with open(hcfg, "w") as f:
        f.write(f"""global
    stats socket {E.haproxy_stats} mode 600 level admin
    maxconn 256

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

# The docs/deploy.md shape: TCP mode, PROXY v2 to bistream, health checks
# on /readyz carrying a PROXY header as well.
frontend web
    bind 127.0.0.1:{E.port_haproxy}
    default_backend bistream

backend bistream
    option httpchk GET /readyz
    http-check expect status 200
    server b1 127.0.0.1:{E.bport} send-proxy-v2 check check-send-proxy inter 300ms

frontend untrusted
    bind 127.0.0.1:{E.port_untrusted}
    default_backend untrusted

backend untrusted
    server u1 127.0.0.1:{uport} send-proxy-v2
""")
    t = subprocess.run([haproxy, "-c", "-f", hcfg], capture_output=True, text=True)
    if t.returncode != 0:
        raise RuntimeError("haproxy -c refused the config:\n" + t.stdout + t.stderr)
    procs.append(Proc("haproxy", [haproxy, "-db", "-f", hcfg], dict(os.environ), os.path.join(prefix, "haproxy.log")))

    ncfg = os.path.join(prefix, "nginx.conf")
    os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
    with open(ncfg, "w") as f:
        f.write(f"""load_module {NGINX_STREAM_MODULE};
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/nginx-error.log info;
events {{ worker_connections 256; }}
stream {{
    server {{
        listen 127.0.0.1:{E.port_nginx};
        proxy_pass 127.0.0.1:{E.bport};
        proxy_protocol on;
    }}
}}
""")
    t = subprocess.run([nginx, "-t", "-p", prefix, "-c", ncfg, "-e", os.path.join(prefix, "nginx-error.log")],
                       capture_output=True, text=True)
    if t.returncode != 0:
        raise RuntimeError("nginx -t refused the config:\n" + t.stdout + t.stderr)
    procs.append(Proc("nginx", [nginx, "-p", prefix, "-c", ncfg, "-e", os.path.join(prefix, "nginx-error.log")],
                      dict(os.environ), os.path.join(prefix, "nginx.stderr")))
    for port in (E.port_haproxy, E.port_nginx, E.port_untrusted):
        wait_port(port)
    v = subprocess.run([haproxy, "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    n = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    log(f"{v}; {n} (stream); bistream on :{E.bport}")
    # Let HAProxy's first health checks run.
    time.sleep(1.0)

    for name, port, n in (("haproxy send-proxy-v2", E.port_haproxy, 1), ("nginx stream proxy_protocol v1", E.port_nginx, 2)):
        check(f"[{name}] /healthz and /readyz", lambda p=port: t_health(p))
        check(f"[{name}] a stream and a publish", lambda p=port, t=n: t_stream(p, t))
        check(f"[{name}] the per-address limit and the log see the forwarded client; X-Forwarded-For ignored",
              lambda p=port, k=n: t_per_ip(p, k))
    check("[haproxy] health checks with a PROXY header keep bistream UP", t_haproxy_checks)
    check("[nginx] bistream counted its v1 headers", lambda: (metric('bistream_proxy_headers_total{version="1"}') >= 5)
          or (_ for _ in ()).throw(AssertionError("fewer than 5 v1 headers counted")))
    check("[direct] missing and malformed headers get no answer, and are counted", t_refusals)
    check("[haproxy] a bistream that does not trust the proxy closes what it forwards", t_untrusted)
    return True


if __name__ == "__main__":
    main()
