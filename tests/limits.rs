//! Limits and protocol violations (docs/protocol.md §1 refusals, §6): every refusal
//! gets the right status or close code, the server's close frame comes before
//! TCP closes, and the server keeps serving a healthy client alongside.

mod common;
use common::*;

use std::io::Write;
use std::time::{Duration, Instant};

const STREAM: &str = "/ws/dashboard/loc-1";

/// Sends `bytes` on a fresh stream connection and returns the server's close.
fn close_after(s: &Server, bytes: &[u8]) -> (Option<(u16, String)>, Duration) {
    let mut ws = RawWs::subscribe(s.addr, STREAM);
    let t0 = Instant::now();
    ws.send(bytes).expect("send");
    let close = ws.expect_close();
    let took = t0.elapsed();
    assert!(
        ws.closed_within(Duration::from_secs(3)),
        "TCP still open after the close frame"
    );
    (close, took)
}

fn code(c: &Option<(u16, String)>) -> u16 {
    c.as_ref().map_or(0, |(c, _)| *c)
}

#[test]
fn protocol_violations_get_1002_and_others_are_served() {
    let s = Server::start(&[]);
    let mut healthy = Healthy::new(&s);

    // Unmasked text frame.
    let (c, _) = close_after(&s, &[0x81, 0x02, b'h', b'i']);
    assert_eq!(code(&c), 1002, "unmasked: {c:?}");
    healthy.check(&s);

    // Control frame over 125 bytes.
    let (c, _) = close_after(&s, &client_frame(0x89, &[7; 126]));
    assert_eq!(code(&c), 1002, "ping of 126 bytes: {c:?}");
    healthy.check(&s);

    // Fragmented control frame (FIN clear on a ping).
    let (c, _) = close_after(&s, &client_frame(0x09, b"half"));
    assert_eq!(code(&c), 1002, "fragmented ping: {c:?}");

    // Reserved bits and reserved opcodes.
    let (c, _) = close_after(&s, &client_frame(0xC1, b"{}"));
    assert_eq!(code(&c), 1002, "RSV1: {c:?}");
    let (c, _) = close_after(&s, &client_frame(0x83, b"{}"));
    assert_eq!(code(&c), 1002, "opcode 3: {c:?}");
    let (c, _) = close_after(&s, &client_frame(0x8B, b""));
    assert_eq!(code(&c), 1002, "opcode 11: {c:?}");

    // A continuation with no message.
    let (c, _) = close_after(&s, &client_frame(0x80, b"x"));
    assert_eq!(code(&c), 1002, "lone continuation: {c:?}");
    healthy.check(&s);
}

#[test]
fn huge_declared_lengths_and_big_messages_get_1009() {
    let s = Server::start(&[]);
    let mut healthy = Healthy::new(&s);

    // 2^63: refused from the header alone, at once, and nothing is allocated.
    let rss0 = s.rss_kib();
    let (c, took) = close_after(&s, &client_header(0x82, 1u64 << 63));
    assert_eq!(code(&c), 1009, "2^63 length: {c:?}");
    assert!(took < Duration::from_millis(500), "1009 took {took:?}");
    let (c, _) = close_after(&s, &client_header(0x81, u64::MAX >> 1));
    assert_eq!(code(&c), 1009, "2^63-1 length: {c:?}");
    assert!(
        s.rss_kib() < rss0 + 16 * 1024,
        "RSS grew from {rss0} to {} KiB",
        s.rss_kib()
    );
    healthy.check(&s);

    // A 200 KiB message with the 64 KiB default.
    let (c, _) = close_after(&s, &client_frame(0x81, &vec![b' '; 200 << 10]));
    assert_eq!(code(&c), 1009, "200 KiB message: {c:?}");

    // The same size in fragments of 16 KiB: the limit counts the whole message.
    let mut frags = Vec::new();
    for i in 0..13 {
        let first = if i == 0 {
            0x01
        } else if i == 12 {
            0x80
        } else {
            0x00
        };
        frags.extend(client_frame(first, &vec![b' '; 16 << 10]));
    }
    let (c, _) = close_after(&s, &frags);
    assert_eq!(code(&c), 1009, "fragmented 208 KiB message: {c:?}");
    healthy.check(&s);
}

#[test]
fn max_message_size_flag_is_respected() {
    let s = Server::start(&["--max-message-size", "1000"]);
    let mut healthy = Healthy::new(&s);
    let ping = |len: usize| {
        let head = r#"{"type":"ping","id":""#;
        let pad = "p".repeat(len - head.len() - 2);
        format!("{head}{pad}\"}}")
    };
    let mut ws = RawWs::subscribe(s.addr, STREAM);
    let at_limit = ping(1000);
    assert_eq!(at_limit.len(), 1000);
    ws.send(&client_frame(0x81, at_limit.as_bytes())).unwrap();
    let pong = ws.json();
    assert_eq!(pong["type"], "pong", "{pong}");
    // A ping between the fragments of a message at the limit is answered:
    // control frames do not count toward the message.
    let (a, b) = at_limit.as_bytes().split_at(950);
    let mut frags = client_frame(0x01, a);
    frags.extend(client_frame(0x89, &[b'k'; 100]));
    frags.extend(client_frame(0x80, b));
    ws.send(&frags).unwrap();
    let f = ws.frame().unwrap().expect("a pong frame");
    assert_eq!((f.opcode, f.payload.len()), (10, 100), "{f:?}");
    assert_eq!(ws.json()["type"], "pong");
    ws.send(&client_frame(0x81, ping(1001).as_bytes())).unwrap();
    let c = ws.expect_close();
    assert_eq!(code(&c), 1009, "1001 bytes over a 1000 limit: {c:?}");
    healthy.check(&s);
}

#[test]
fn invalid_utf8_gets_1007() {
    let s = Server::start(&[]);
    let mut healthy = Healthy::new(&s);
    let (c, _) = close_after(
        &s,
        &client_frame(0x81, b"{\"type\":\"ping\",\"id\":\"\xff\xfe\"}"),
    );
    assert_eq!(code(&c), 1007, "{c:?}");
    // Split over fragments, with the bad byte in the last one.
    let mut b = client_frame(0x01, b"{\"type\":\"pi");
    b.extend(client_frame(0x80, b"ng\xc3\x28\"}"));
    let (c, _) = close_after(&s, &b);
    assert_eq!(code(&c), 1007, "{c:?}");
    healthy.check(&s);
}

#[test]
fn random_bytes_after_the_upgrade_fail_the_connection_only() {
    let s = Server::start(&[]);
    let mut healthy = Healthy::new(&s);
    for seed in 1..=12u64 {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ seed);
        let mut ws = RawWs::subscribe(s.addr, STREAM);
        ws.set_timeout(Duration::from_secs(5));
        // Enough junk that any frame it starts is completed or runs past the
        // 64 KiB limit; writes fail once the server has closed, which is fine.
        for _ in 0..64 {
            if ws.send(&rng.bytes(4096)).is_err() {
                break;
            }
        }
        let c = ws.expect_close();
        assert!(
            matches!(code(&c), 1002 | 1007 | 1008 | 1009),
            "seed {seed}: random bytes got {c:?}"
        );
        assert!(
            ws.closed_within(Duration::from_secs(3)),
            "seed {seed}: TCP left open"
        );
    }
    healthy.check(&s);
    assert_serving(&s);
}

#[test]
fn more_than_ten_bad_messages_a_second_get_1008() {
    let s = Server::start(&[]);
    let mut healthy = Healthy::new(&s);
    let mut ws = RawWs::subscribe(s.addr, STREAM);
    let mut burst = Vec::new();
    for _ in 0..11 {
        burst.extend(client_frame(0x81, b"not json"));
    }
    ws.send(&burst).unwrap();
    let mut errors = 0;
    let close = loop {
        let f = ws.frame().unwrap().expect("a frame");
        if f.opcode == 8 {
            break f.close();
        }
        let m = f.json();
        assert_eq!(m["type"], "error", "{m}");
        assert_eq!(m["code"], "invalid_message");
        errors += 1;
    };
    assert_eq!(errors, 10, "ten error replies before the close");
    assert_eq!(code(&close), 1008, "{close:?}");

    // Ten in a second is allowed, and the connection stays usable.
    let mut ws = RawWs::subscribe(s.addr, STREAM);
    for _ in 0..10 {
        ws.send(&client_frame(0x81, b"[]")).unwrap();
        assert_eq!(ws.json()["type"], "error");
    }
    ws.send(&client_frame(0x81, br#"{"type":"ping","id":"ok"}"#))
        .unwrap();
    let pong = ws.json();
    assert_eq!(pong["type"], "pong", "{pong}");
    assert_eq!(pong["id"], "ok");
    healthy.check(&s);
}

#[test]
fn head_over_8_kib_gets_431() {
    let s = Server::start(&[]);
    let mut healthy = Healthy::new(&s);
    let pad = format!("X-Pad: {}\r\n", "a".repeat(9000));
    let (st, head, body) = http_raw(s.addr, upgrade_request(STREAM, &pad).as_bytes());
    assert_eq!(st, 431, "{head}{body}");
    assert!(head.contains("Connection: close"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(v["error"], "head_too_large", "{v}");
    // A head that never ends is cut at the limit too, without waiting for the end.
    let mut c = std::net::TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /ws/dashboard/loc-1 HTTP/1.1\r\nX-Pad: ")
        .unwrap();
    let _ = c.write_all(&[b'a'; 9000]);
    let (st, _, _) = read_response(&mut c);
    assert_eq!(st, 431);
    // Just under the limit is fine.
    let pad = format!("X-Pad: {}\r\n", "a".repeat(7000));
    let (st, _, _) = http_raw(
        s.addr,
        format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{pad}Connection: close\r\n\r\n").as_bytes(),
    );
    assert_eq!(st, 200);
    assert!(
        metric(
            &s.metrics(),
            "bistream_handshake_failures_total{status=\"431\"}"
        ) >= 2.0
    );
    healthy.check(&s);
}

#[test]
fn connection_limit_answers_503_with_json_and_frees_slots() {
    let s = Server::start(&["--max-connections", "4"]);
    let mut healthy = Healthy::new(&s);
    let mut held: Vec<Ws> = (0..3).map(|_| s.subscribe(STREAM).0).collect();
    // Four connections are open (the healthy one and three): the fifth upgrade is refused.
    let (st, head, body) = http_raw(s.addr, upgrade_request(STREAM, "").as_bytes());
    assert_eq!(st, 503, "{head}{body}");
    assert!(head.contains("Connection: close"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(v["error"], "unavailable", "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(
        metric(
            &s.metrics(),
            "bistream_handshake_failures_total{status=\"503\"}"
        ) >= 1.0
    );
    // The API still answers while the limit is reached, and everyone open is served.
    healthy.check(&s);
    // Closing one frees its slot for the next upgrade.
    let mut gone = held.pop().unwrap();
    gone.close(None).unwrap();
    let _ = expect_close(&mut gone);
    drop(gone);
    assert!(
        wait_until(Duration::from_secs(3), || {
            let (st, _, _) = http_raw(s.addr, upgrade_request(STREAM, "").as_bytes());
            st == 101
        }),
        "a freed slot was not reused"
    );
    healthy.check(&s);
}

#[test]
fn the_close_frame_comes_before_tcp_closes() {
    let s = Server::start(&[]);
    let mut healthy = Healthy::new(&s);

    // A client close answered with the same code, then TCP closes.
    let mut ws = RawWs::subscribe(s.addr, STREAM);
    ws.send(&client_frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']))
        .unwrap();
    let c = ws.expect_close();
    assert_eq!(code(&c), 1000, "{c:?}");
    assert!(ws.closed_within(Duration::from_secs(3)));

    // A client that sends its close and half-closes at once still gets the
    // server's close frame.
    let mut ws = RawWs::subscribe(s.addr, STREAM);
    ws.send(&client_frame(0x88, &[0x0f, 0xa0])).unwrap();
    ws.s.shutdown(std::net::Shutdown::Write).unwrap();
    let c = ws.expect_close();
    assert_eq!(code(&c), 4000, "close after half-close: {c:?}");

    // A violation followed by an immediate half-close: the 1002 is still sent.
    let mut ws = RawWs::subscribe(s.addr, STREAM);
    ws.send(&[0x81, 0x01, b'x']).unwrap();
    ws.s.shutdown(std::net::Shutdown::Write).unwrap();
    let c = ws.expect_close();
    assert_eq!(code(&c), 1002, "violation then half-close: {c:?}");

    // Invalid close payloads: a one-byte payload and a bad code get 1002.
    let (c, _) = close_after(&s, &client_frame(0x88, &[0x03]));
    assert_eq!(code(&c), 1002, "{c:?}");
    let (c, _) = close_after(&s, &client_frame(0x88, &1005u16.to_be_bytes()));
    assert_eq!(code(&c), 1002, "{c:?}");
    healthy.check(&s);
}

#[test]
fn a_connection_that_never_speaks_is_closed_at_the_handshake_timeout_and_counted() {
    let s = Server::start(&[
        "--handshake-timeout",
        "300ms",
        "--keepalive-timeout",
        "300ms",
    ]);
    let mut silent = std::net::TcpStream::connect(s.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // An idle keep-alive connection (one answered request) is closed too, but is
    // no failed handshake.
    let mut idle = std::net::TcpStream::connect(s.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(read_response(&mut idle).0, 200);
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    use std::io::Read;
    assert_eq!(
        silent.read(&mut buf).unwrap_or(0),
        0,
        "closed without a response"
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(idle.read(&mut buf).unwrap_or(0), 0);
    assert!(wait_until(Duration::from_secs(2), || {
        metric(
            &s.metrics(),
            "bistream_handshake_failures_total{status=\"408\"}",
        ) == 1.0
    }));
    assert_serving(&s);
}
