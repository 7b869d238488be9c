//! Edge deployment (issue 7; docs/protocol.md §1, §6, §8): Unix-socket listeners
//! (stale files, live sockets, removal at exit, `--unix-socket-mode`), client
//! addresses through trusted proxies as `--max-connections-per-ip` counts them,
//! and `--check-config`. The nginx end-to-end run lives in `tests/nginx/`.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tungstenite::{Message, WebSocket};

const SECRET: &str = "edge-test-secret-0123456789abcdef-0123456789";
const PREVIOUS: &str = "edge-previous-secret-zyxwvutsrqponmlkjihgfe";

/// A fresh directory for this test's socket files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("bistream-edge-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn listen_unix(p: &Path) -> String {
    format!("unix:{}", p.display())
}

/// Reads one HTTP response head (and its Content-Length body) off any stream.
fn read_http<S: Read>(s: &mut S) -> (u16, String, String) {
    read_response(s)
}

fn unix_stream(sock: &Path) -> UnixStream {
    let s = UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect {sock:?}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

/// One HTTP exchange over a fresh Unix-socket connection.
fn unix_http(sock: &Path, req: &str) -> (u16, String, String) {
    let mut s = unix_stream(sock);
    s.write_all(req.as_bytes()).expect("write");
    read_http(&mut s)
}

fn unix_get(sock: &Path, path: &str) -> u16 {
    unix_http(
        sock,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    )
    .0
}

fn unix_publish(sock: &Path, body: &str) -> u16 {
    let req = format!(
        "POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    unix_http(sock, &req).0
}

/// A WebSocket client over the Unix socket, past `BI_CONNECTION_ESTABLISHED`.
fn unix_subscribe(sock: &Path, path: &str) -> WebSocket<UnixStream> {
    let url = format!("ws://localhost{path}");
    let (mut ws, resp) = tungstenite::client::client(url.as_str(), unix_stream(sock))
        .unwrap_or_else(|e| panic!("upgrade {path} over {sock:?}: {e}"));
    assert_eq!(resp.status().as_u16(), 101);
    let hello = unix_json(&mut ws);
    assert_eq!(hello["type"], "BI_CONNECTION_ESTABLISHED", "{hello}");
    ws
}

fn unix_json(ws: &mut WebSocket<UnixStream>) -> Value {
    loop {
        match ws.read().expect("read a message") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The next `event` message's `event_type`.
fn next_event_type(m: impl FnMut() -> Value) -> String {
    let mut m = m;
    loop {
        let v = m();
        if v["type"] == "event" {
            return v["event_type"].as_str().unwrap_or_default().to_string();
        }
    }
}

fn ev(location: &str, event_type: &str) -> String {
    event("dashboard", location, event_type, Value::Null).to_string()
}

/// A raw upgrade on `s` with extra header lines: the answer's status, head and body.
/// On 101 the stream stays open (the connection holds its per-address slot).
fn upgrade_on<S: Read + Write>(s: &mut S, path: &str, extra: &str) -> (u16, String, String) {
    s.write_all(upgrade_request(path, extra).as_bytes())
        .expect("write upgrade");
    read_http(s)
}

fn upgrade_tcp(addr: SocketAddr, path: &str, extra: &str) -> (u16, TcpStream, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (status, _, body) = upgrade_on(&mut s, path, extra);
    (status, s, body)
}

fn upgrade_unix(sock: &Path, path: &str, extra: &str) -> (u16, UnixStream, String) {
    let mut s = unix_stream(sock);
    let (status, _, body) = upgrade_on(&mut s, path, extra);
    (status, s, body)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn wait_for_log(log: &std::sync::mpsc::Receiver<String>, needle: &str) -> bool {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while let Ok(line) =
        log.recv_timeout(until.saturating_duration_since(std::time::Instant::now()))
    {
        if line.contains(needle) {
            return true;
        }
    }
    false
}

// ---------------------------------------------------------------------------
// Unix sockets
// ---------------------------------------------------------------------------

#[test]
fn a_unix_listener_serves_streams_and_the_api_next_to_tcp() {
    let dir = TempDir::new("both");
    let sock = dir.path("bistream.sock");
    let s = Server::start(&["--listen", "127.0.0.1:0", "--listen", &listen_unix(&sock)]);
    let meta = std::fs::symlink_metadata(&sock).expect("socket file");
    assert!(meta.file_type().is_socket());

    assert_eq!(unix_get(&sock, "/healthz"), 200);
    assert_eq!(unix_get(&sock, "/readyz"), 200);
    assert_eq!(unix_get(&sock, "/nope"), 404);

    let mut over_unix = unix_subscribe(&sock, "/ws/dashboard/u1");
    let (mut over_tcp, _) = s.subscribe("/ws/dashboard/u1");
    // Published over TCP, delivered to both; published over the socket, likewise.
    assert_eq!(s.publish(&ev("u1", "VIA_TCP")).0, 202);
    assert_eq!(next_event_type(|| unix_json(&mut over_unix)), "VIA_TCP");
    assert_eq!(next_event_type(|| recv_json(&mut over_tcp)), "VIA_TCP");
    assert_eq!(unix_publish(&sock, &ev("u1", "VIA_UNIX")), 202);
    assert_eq!(next_event_type(|| unix_json(&mut over_unix)), "VIA_UNIX");
    assert_eq!(next_event_type(|| recv_json(&mut over_tcp)), "VIA_UNIX");

    // Refusals over the socket are the same HTTP answers as over TCP.
    let (st, _, body) = upgrade_unix(&sock, "/ws/dashboard/bad%41id", "");
    assert_eq!(st, 400, "{body}");
    let v8 = "GET /ws/dashboard/u1 HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 8\r\n\r\n";
    let (st, head, _) = unix_http(&sock, v8);
    assert_eq!(st, 426);
    assert!(head.contains("Sec-WebSocket-Version: 13"), "{head}");
}

#[test]
fn a_unix_only_server_starts_and_serves() {
    let dir = TempDir::new("only");
    let sock = dir.path("b.sock");
    let s = UnixServer::start(&["--listen", &listen_unix(&sock)], &[]);
    assert_eq!(unix_get(&sock, "/healthz"), 200);
    let mut ws = unix_subscribe(&sock, "/ws/ai-concierge/only");
    assert_eq!(
        unix_publish(
            &sock,
            &event("ai-concierge", "only", "HELLO", Value::Null).to_string()
        ),
        202
    );
    assert_eq!(next_event_type(|| unix_json(&mut ws)), "HELLO");
    drop(s);
}

#[test]
fn a_stale_socket_file_from_a_crashed_run_is_replaced() {
    let dir = TempDir::new("stale");
    let sock = dir.path("b.sock");
    // What a crashed run leaves behind: the socket file, nobody listening.
    drop(UnixListener::bind(&sock).expect("bind"));
    assert!(
        std::fs::symlink_metadata(&sock).is_ok(),
        "stale file present"
    );
    let err = UnixStream::connect(&sock).expect_err("nobody listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

    let _s = UnixServer::start(&["--listen", &listen_unix(&sock)], &[]);
    assert_eq!(unix_get(&sock, "/healthz"), 200);
    let _ws = unix_subscribe(&sock, "/ws/dashboard/stale");
}

#[test]
fn a_live_socket_is_never_replaced() {
    let dir = TempDir::new("live");
    let sock = dir.path("b.sock");
    let _first = UnixServer::start(&["--listen", &listen_unix(&sock)], &[]);
    let mut ws = unix_subscribe(&sock, "/ws/dashboard/live");
    let ino = std::fs::symlink_metadata(&sock).expect("socket").ino();

    let out = run_bistream(&["--listen", &listen_unix(&sock)], &[]);
    assert!(
        !out.status.success(),
        "a second server started on a live socket"
    );
    let err = text(&out.stderr);
    assert!(err.contains("in use"), "{err}");

    // The first server still owns the very same file and keeps serving.
    assert_eq!(std::fs::symlink_metadata(&sock).expect("socket").ino(), ino);
    assert_eq!(unix_get(&sock, "/healthz"), 200);
    assert_eq!(unix_publish(&sock, &ev("live", "STILL_HERE")), 202);
    assert_eq!(next_event_type(|| unix_json(&mut ws)), "STILL_HERE");
}

#[test]
fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = TempDir::new("regular");
    let path = dir.path("precious.db");
    std::fs::write(&path, b"do not delete").expect("write");
    let out = run_bistream(&["--listen", &listen_unix(&path)], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not a socket"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&path).expect("still there"), b"do not delete");
}

#[test]
fn the_socket_file_is_removed_at_exit_after_sigterm() {
    let dir = TempDir::new("exit");
    let sock = dir.path("b.sock");
    let mut s = UnixServer::start(
        &["--listen", &listen_unix(&sock), "--drain-timeout", "5s"],
        &[],
    );
    let mut ws = unix_subscribe(&sock, "/ws/bot-performance/exit");
    s.signal("TERM");
    // The drain reaches clients on the socket as on TCP: close 1001.
    let code = loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => break Some(u16::from(f.code)),
            Ok(Message::Close(None)) | Err(_) => break None,
            Ok(_) => continue,
        }
    };
    assert_eq!(code, Some(1001));
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "socket file left behind after exit"
    );
}

#[test]
fn unix_socket_mode_is_applied() {
    let dir = TempDir::new("mode");
    for (flag, want) in [("0660", 0o660), ("600", 0o600), ("0o666", 0o666)] {
        let sock = dir.path(&format!("m{flag}.sock"));
        let s = UnixServer::start(
            &["--listen", &listen_unix(&sock), "--unix-socket-mode", flag],
            &[],
        );
        let mode = std::fs::metadata(&sock)
            .expect("socket")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, want, "--unix-socket-mode {flag} gave {mode:o}");
        assert_eq!(unix_get(&sock, "/healthz"), 200);
        drop(s);
    }
    // The environment variable does the same.
    let sock = dir.path("env.sock");
    let _s = UnixServer::start(
        &["--listen", &listen_unix(&sock)],
        &[("BISTREAM_UNIX_SOCKET_MODE", "0640")],
    );
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o640);
}

// ---------------------------------------------------------------------------
// Trusted proxies and --max-connections-per-ip
// ---------------------------------------------------------------------------

#[test]
fn a_direct_client_forging_x_forwarded_for_gains_nothing() {
    // No trusted proxies at all, and a list that does not hold the peer.
    for trusted in [None, Some("10.0.0.0/8,192.168.0.0/16")] {
        let mut args = vec!["--max-connections-per-ip", "2"];
        if let Some(t) = trusted {
            args.extend(["--trusted-proxies", t]);
        }
        let s = Server::start_with_env(&args, &[("RUST_LOG", "debug")]);
        let mut held = Vec::new();
        // Every connection claims to be someone else; all are 127.0.0.1 to the server.
        for forged in [
            "X-Forwarded-For: 198.51.100.1\r\n",
            "X-Real-IP: 198.51.100.2\r\n",
        ] {
            let (st, c, body) = upgrade_tcp(s.addr, "/ws/dashboard/forge", forged);
            assert_eq!(st, 101, "{trusted:?} {forged}: {body}");
            held.push(c);
        }
        for forged in [
            "X-Forwarded-For: 198.51.100.3\r\n",
            "X-Forwarded-For: 198.51.100.4, 10.1.2.3\r\n",
            "X-Real-IP: 198.51.100.5\r\n",
            "X-Forwarded-For: 198.51.100.6\r\nX-Real-IP: 198.51.100.7\r\n",
        ] {
            let (st, _, body) = upgrade_tcp(s.addr, "/ws/dashboard/forge", forged);
            assert_eq!(st, 503, "{trusted:?} {forged}: {body}");
            let v: Value = serde_json::from_str(&body).expect("JSON refusal");
            assert!(v["error"].is_string(), "{v}");
        }
        // The log names the real peer, not the forged address.
        assert!(
            wait_for_log(&s.log, "refused handshake from 127.0.0.1: 503"),
            "the refusal is logged against the real peer"
        );
        drop(held);
    }
}

#[test]
fn a_trusted_proxys_forwarded_address_is_what_is_counted() {
    let s = Server::start_with_env(
        &[
            "--trusted-proxies",
            "127.0.0.1/32",
            "--max-connections-per-ip",
            "2",
        ],
        &[("RUST_LOG", "debug")],
    );
    let path = "/ws/bi/revenue-intelligence/proxied";
    let a = "X-Forwarded-For: 198.51.100.7\r\n";
    let mut held_a = Vec::new();
    for _ in 0..2 {
        let (st, c, body) = upgrade_tcp(s.addr, path, a);
        assert_eq!(st, 101, "{body}");
        held_a.push(c);
    }
    // The same client through the proxy again: its third connection is refused,
    // whichever header names it and whatever it prepended itself.
    for same in [
        a,
        "X-Forwarded-For: 203.0.113.66, 198.51.100.7\r\n",
        "X-Real-IP: 198.51.100.7\r\n",
    ] {
        let (st, _, body) = upgrade_tcp(s.addr, path, same);
        assert_eq!(st, 503, "{same}: {body}");
    }
    assert!(
        wait_for_log(&s.log, "refused handshake from 198.51.100.7: 503"),
        "the log shows the forwarded client address"
    );
    // Other clients behind the same proxy are counted on their own.
    let mut held_b = Vec::new();
    for other in [
        "X-Forwarded-For: 198.51.100.8\r\n",
        "X-Forwarded-For: 198.51.100.8\r\n",
        "X-Real-IP: 198.51.100.9\r\n",
        "",
        "",
    ] {
        let (st, c, body) = upgrade_tcp(s.addr, path, other);
        assert_eq!(st, 101, "{other:?}: {body}");
        held_b.push(c);
    }
    // Without a header the proxy itself (127.0.0.1) is the client: at its limit too.
    let (st, _, _) = upgrade_tcp(s.addr, path, "");
    assert_eq!(st, 503);

    // A closed connection gives its slot back.
    drop(held_a.pop());
    assert!(
        wait_until(Duration::from_secs(5), || {
            let (st, c, _) = upgrade_tcp(s.addr, path, a);
            if st == 101 {
                held_a.push(c);
            }
            st == 101
        }),
        "the slot of a closed connection is released"
    );
    // The API is not counted: publishing still works for everyone.
    assert_eq!(
        s.publish_with(
            &event("revenue-intelligence", "proxied", "X", Value::Null).to_string(),
            &[("X-Forwarded-For", "198.51.100.7")]
        )
        .0,
        202
    );
}

#[test]
fn unix_socket_peers_are_trusted_local_proxies() {
    let dir = TempDir::new("xff");
    let sock = dir.path("b.sock");
    let _s = UnixServer::start(
        &[
            "--listen",
            &listen_unix(&sock),
            "--max-connections-per-ip",
            "1",
        ],
        &[],
    );
    let path = "/ws/business-intelligence/unix";
    let (st, _a, body) = upgrade_unix(&sock, path, "X-Forwarded-For: 198.51.100.20\r\n");
    assert_eq!(st, 101, "{body}");
    let (st, _, body) = upgrade_unix(&sock, path, "X-Forwarded-For: 198.51.100.20\r\n");
    assert_eq!(st, 503, "{body}");
    let (st, _b, body) = upgrade_unix(&sock, path, "X-Real-IP: 198.51.100.21\r\n");
    assert_eq!(st, 101, "{body}");
}

// ---------------------------------------------------------------------------
// --check-config
// ---------------------------------------------------------------------------

#[test]
fn check_config_prints_the_effective_config_with_secrets_redacted() {
    let dir = TempDir::new("check");
    let sock = dir.path("never-created.sock");
    // A port that is taken: --check-config must not try to bind it.
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr").to_string();
    let out = run_bistream(
        &[
            "--check-config",
            "--listen",
            "0.0.0.0:8000",
            "--listen",
            &busy_addr,
            "--listen",
            &listen_unix(&sock),
            "--trusted-proxies",
            "10.0.0.0/8,127.0.0.1",
            "--unix-socket-mode",
            "0660",
            "--heartbeat-interval",
            "500ms",
        ],
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("JWT_SECRET_KEY_PREVIOUS", PREVIOUS),
            ("BISTREAM_MAX_CONNECTIONS_PER_IP", "50"),
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    for want in [
        format!("listen = 0.0.0.0:8000,{busy_addr},unix:{}", sock.display()),
        "trusted-proxies = 10.0.0.0/8,127.0.0.1/32".to_string(),
        "max-connections-per-ip = 50".to_string(),
        "unix-socket-mode = 0660".to_string(),
        "heartbeat-interval = 500ms".to_string(),
        format!(
            "auth = HS256, secret <redacted {} bytes>, previous secret <redacted>",
            SECRET.len()
        ),
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&want)),
            "missing `{want}` in:\n{stdout}"
        );
    }
    for secret in [SECRET, PREVIOUS, &SECRET[..16], &PREVIOUS[..16]] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret));
    }
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "--check-config created the socket"
    );

    // A secret from a file (systemd credentials) is not printed either.
    let file = dir.path("jwt-secret");
    std::fs::write(&file, format!("{SECRET}\n")).expect("write");
    let out = run_bistream(
        &[
            "--check-config",
            "--jwt-secret-file",
            file.to_str().expect("utf-8"),
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains(&format!("secret <redacted {} bytes>", SECRET.len())));
    assert!(!stdout.contains(&SECRET[..16]) && !text(&out.stderr).contains(&SECRET[..16]));

    // The defaults alone are a valid configuration, open on loopback.
    let out = run_bistream(&["--check-config"], &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.contains("listen = 127.0.0.1:8000"), "{stdout}");
    assert!(stdout.contains("auth = off"), "{stdout}");
}

#[test]
fn check_config_exits_non_zero_on_an_invalid_config() {
    let short = "short-secret-value";
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (vec![], vec![("JWT_SECRET_KEY", short)]),
        (vec![], vec![("JWT_SECRET_KEY", "")]),
        (vec!["--listen", "0.0.0.0:8000"], vec![]),
        (vec!["--max-connections-per-ip", "0"], vec![]),
        (vec!["--unix-socket-mode", "0999"], vec![]),
        (vec!["--unix-socket-mode", "01777"], vec![]),
        (vec!["--trusted-proxies", "10.0.0.0/33"], vec![]),
        (vec!["--trusted-proxies", "not-an-address"], vec![]),
        (vec!["--listen", "unix:"], vec![]),
        (vec!["--heartbeat-interval", "1ms"], vec![]),
        (
            vec!["--jwt-secret-file", "/nonexistent/bistream/jwt-secret"],
            vec![],
        ),
        (
            vec![],
            vec![
                ("JWT_SECRET_KEY", SECRET),
                ("BISTREAM_JWT_SECRET_FILE", "/dev/null"),
            ],
        ),
        (vec![], vec![("JWT_SECRET_KEY_PREVIOUS", PREVIOUS)]),
    ];
    for (args, env) in cases {
        let mut all = vec!["--check-config"];
        all.extend(&args);
        let out = run_bistream(&all, &env);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(
            !out.status.success(),
            "{args:?} {env:?} passed --check-config:\n{stdout}"
        );
        assert!(!stderr.trim().is_empty(), "{args:?}: no reason given");
        assert!(!stdout.contains("listen ="), "{args:?}: printed a config");
        for (_, v) in &env {
            if v.len() >= 8 && !v.starts_with('/') {
                assert!(
                    !stderr.contains(v),
                    "{args:?}: the secret is echoed: {stderr}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The shipped unit and environment file (dist/, docs/deploy.md)
// ---------------------------------------------------------------------------

#[test]
fn the_shipped_unit_and_env_file_are_documented_and_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read =
        |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let (unit, envf, docs) = (
        read("dist/bistream.service"),
        read("dist/bistream.env"),
        read("docs/deploy.md"),
    );
    assert!(
        docs.contains(unit.trim_end()),
        "docs/deploy.md does not show dist/bistream.service"
    );
    assert!(
        docs.contains(envf.trim_end()),
        "docs/deploy.md does not show dist/bistream.env"
    );
    for f in ["dist/bistream.socket", "dist/bistream-socket.conf"] {
        assert!(
            docs.contains(read(f).trim_end()),
            "docs/deploy.md does not show {f}"
        );
    }
    for line in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "LimitNOFILE=",
        "RuntimeDirectory=bistream",
        "LoadCredential=jwt-secret:",
        "ExecStart=/usr/local/bin/bistream --jwt-secret-file %d/jwt-secret",
        "EnvironmentFile=/etc/bistream/bistream.env",
        "Type=notify",
        "ExecReload=/bin/kill -USR2 $MAINPID",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "the unit lacks {line}"
        );
    }

    // The service's configuration as systemd would pass it: valid, and the socket
    // lives in the unit's RuntimeDirectory.
    let vars: Vec<(&str, &str)> = envf
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('=').expect("KEY=VALUE"))
        .collect();
    assert!(
        vars.iter().all(|(k, _)| k.starts_with("BISTREAM_")),
        "{vars:?}"
    );
    let dir = TempDir::new("unit");
    let secret = dir.path("jwt-secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("write");
    let out = run_bistream(
        &[
            "--check-config",
            "--jwt-secret-file",
            secret.to_str().expect("utf-8"),
        ],
        &vars,
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for want in [
        "listen = unix:/run/bistream/bistream.sock",
        "unix-socket-mode = 0660",
        "auth = HS256",
    ] {
        assert!(stdout.contains(want), "missing `{want}` in:\n{stdout}");
    }
}
