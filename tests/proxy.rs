//! Issue 14: the PROXY protocol phase (docs/protocol.md §11) against the real
//! binary, with raw v1 and v2 headers on real sockets: the named client is
//! what the per-address limit and the logs see, `X-Forwarded-For` is ignored
//! behind a header, `LOCAL` and `UNKNOWN` use the peer's own address, and a
//! header from an untrusted peer, a malformed, a missing or an incomplete one
//! closes the connection without an answer.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

fn v1(client: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {client} 127.0.0.1 {port} 8000\r\n").into_bytes()
}

fn v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = bistream::proxy_protocol::V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&8000u16.to_be_bytes());
    h
}

fn v2_local() -> Vec<u8> {
    let mut h = bistream::proxy_protocol::V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0, 0]);
    h
}

/// Sends `header` then `request`; the response, or `None` when the server
/// closed without one.
fn exchange(addr: SocketAddr, header: &[u8], request: &str) -> Option<(u16, String, TcpStream)> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(request.as_bytes());
    // The server may close before reading it all: a reset here is an answer too.
    let _ = s.write_all(&bytes);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status = head.split_whitespace().nth(1)?.parse().ok()?;
            return Some((status, head, s));
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

const HEALTH: &str = "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

fn upgrade(path: &str, extra: &str) -> String {
    upgrade_request(path, extra)
}

fn metrics(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut req = v1("127.0.0.1", 1);
    req.extend_from_slice(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.write_all(&req).expect("write");
    read_response(&mut s).2
}

fn proxied_server(extra: &[&str]) -> Server {
    let mut args = vec![
        "--proxy-protocol",
        "--trusted-proxies",
        "127.0.0.1/32",
        "--max-connections-per-ip",
        "1",
        "--handshake-timeout",
        "400ms",
        "--threads",
        "1",
    ];
    args.extend_from_slice(extra);
    Server::launch(&[], &args, &[("RUST_LOG", "debug")])
}

#[test]
fn v1_and_v2_headers_name_the_client_for_the_per_address_limit_and_logs() {
    let s = proxied_server(&[]);
    assert_eq!(
        exchange(s.addr, &v1("203.0.113.7", 40000), HEALTH).map(|r| r.0),
        Some(200)
    );
    assert_eq!(
        exchange(s.addr, &v2([198, 51, 100, 9], 40001), HEALTH).map(|r| r.0),
        Some(200)
    );

    // One WebSocket per address: 203.0.113.7 has its one, a second is 503,
    // another client behind the same proxy is not affected.
    let path = "/ws/dashboard/p";
    let (st, _, _held) =
        exchange(s.addr, &v1("203.0.113.7", 40002), &upgrade(path, "")).expect("101");
    assert_eq!(st, 101);
    let (st, _, _) =
        exchange(s.addr, &v2([203, 0, 113, 7], 40003), &upgrade(path, "")).expect("503");
    assert_eq!(st, 503);
    let (st, _, _other) =
        exchange(s.addr, &v1("203.0.113.8", 40004), &upgrade(path, "")).expect("101");
    assert_eq!(st, 101);
    // Behind a header, X-Forwarded-For is ignored: naming the busy address
    // there changes nothing for a third client.
    let (st, _, _third) = exchange(
        s.addr,
        &v1("203.0.113.9", 40005),
        &upgrade(path, "X-Forwarded-For: 203.0.113.7\r\n"),
    )
    .expect("101");
    assert_eq!(st, 101);
    // The refusal's log line names the forwarded client.
    let log = s.take_log();
    assert!(
        log.iter()
            .any(|l| l.contains("refused handshake from 203.0.113.7: 503")),
        "{log:#?}"
    );
    let m = metrics(s.addr);
    assert!(
        metric(&m, r#"bistream_proxy_headers_total{version="1"}"#) >= 4.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"bistream_proxy_headers_total{version="2"}"#),
        2.0
    );
}

#[test]
fn local_and_unknown_headers_use_the_peers_own_address() {
    let s = proxied_server(&[]);
    assert_eq!(
        exchange(s.addr, &v2_local(), HEALTH).map(|r| r.0),
        Some(200)
    );
    let unknown = b"PROXY UNKNOWN\r\n";
    assert_eq!(exchange(s.addr, unknown, HEALTH).map(|r| r.0), Some(200));
    // Both count as 127.0.0.1, the proxy itself: one WebSocket, then 503.
    let path = "/ws/dashboard/l";
    let (st, _, _held) = exchange(s.addr, &v2_local(), &upgrade(path, "")).expect("101");
    assert_eq!(st, 101);
    let (st, _, _) = exchange(s.addr, unknown, &upgrade(path, "")).expect("503");
    assert_eq!(st, 503);
}

#[test]
fn missing_malformed_incomplete_and_untrusted_headers_get_no_answer() {
    let s = proxied_server(&[]);
    // Missing: a plain request.
    assert!(exchange(s.addr, b"", HEALTH).is_none());
    // Malformed: not an address of its family, a bad port, a v2 with a bad command.
    assert!(exchange(s.addr, b"PROXY TCP4 999.1.1.1 127.0.0.1 1 2\r\n", HEALTH).is_none());
    assert!(exchange(s.addr, b"PROXY TCP4 1.2.3.4 127.0.0.1 01 2\r\n", HEALTH).is_none());
    let mut bad = v2([1, 2, 3, 4], 5);
    bad[12] = 0x2f;
    assert!(exchange(s.addr, &bad, HEALTH).is_none());
    // Incomplete: half a header, then nothing until the handshake timeout.
    let t0 = std::time::Instant::now();
    assert!(exchange(s.addr, b"PROXY TCP4 1.2.3.4", "").is_none());
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    // Incomplete: the peer ends mid-header.
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.write_all(&v2([1, 2, 3, 4], 5)[..20]).expect("write");
    c.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut rest = Vec::new();
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(c.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0), 0);

    let m = metrics(s.addr);
    assert_eq!(
        metric(&m, r#"bistream_proxy_refusals_total{reason="missing"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"bistream_proxy_refusals_total{reason="malformed"}"#),
        3.0
    );
    assert_eq!(
        metric(&m, r#"bistream_proxy_refusals_total{reason="incomplete"}"#),
        2.0
    );

    // A peer that is not a trusted proxy is closed at once, even with a
    // perfectly good header.
    let strict = Server::launch(
        &[],
        &[
            "--proxy-protocol",
            "--trusted-proxies",
            "10.0.0.0/8",
            "--threads",
            "1",
        ],
        &[],
    );
    assert!(exchange(strict.addr, &v1("203.0.113.7", 1), HEALTH).is_none());
    assert!(exchange(strict.addr, b"", HEALTH).is_none());
}

#[test]
fn proxy_protocol_without_trusted_proxies_refuses_to_start() {
    let out = run_bistream(&["--listen", "127.0.0.1:0", "--proxy-protocol"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--proxy-protocol needs --trusted-proxies"),
        "{err}"
    );
}

#[test]
fn unix_listeners_take_no_header() {
    let dir = std::env::temp_dir().join(format!("bistream-proxy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let sock = dir.join("b.sock");
    let listen = format!("unix:{}", sock.display());
    let s = Server::launch(
        &[],
        &[
            "--listen",
            "127.0.0.1:0",
            "--listen",
            &listen,
            "--proxy-protocol",
            "--trusted-proxies",
            "127.0.0.1",
        ],
        &[],
    );
    assert!(wait_until(Duration::from_secs(5), || sock.exists()));
    let mut u = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    u.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    u.write_all(HEALTH.as_bytes()).expect("write");
    assert_eq!(read_response(&mut u).0, 200);
    // TCP still needs its header.
    assert!(exchange(s.addr, b"", HEALTH).is_none());
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
