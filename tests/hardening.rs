//! Hardening, round two: request framing (no smuggling through bodies or
//! transfer codings), events larger than a queue, expensive valid messages,
//! HTTP details, and the HTTP-side answers of a drain and of backpressure
//! (`docs/protocol.md` §1, §5, §6; `docs/security.md`, "Request framing").

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Reads every response the server sends on `s` until it closes (or 3 s of
/// silence): (status, head, body) each. A `HEAD` answer must be read with
/// [`read_head_only`] instead.
fn responses_until_close(s: &mut TcpStream) -> Vec<(u16, String, String)> {
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut eof = false;
    let mut out = Vec::new();
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                break;
            }
            let status = head[9..12].parse().expect("status");
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
            buf.drain(..end + 4 + len);
            out.push((status, head, body));
        }
        if eof {
            assert!(
                buf.is_empty(),
                "trailing bytes: {:?}",
                String::from_utf8_lossy(&buf)
            );
            return out;
        }
        match s.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("the server did not close the connection: {e}; got {out:?}"),
        }
    }
}

fn send(s: &Server, bytes: &[u8]) -> Vec<(u16, String, String)> {
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.write_all(bytes).expect("write");
    responses_until_close(&mut c)
}

fn publish_request(body: &str) -> String {
    format!(
        "POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Nothing was published: a marker published now is seq 1 on the watched
/// stream, and the publish counter moved by exactly one.
fn assert_nothing_published(s: &Server, ws: &mut Ws, location: &str) {
    let before = metric(&s.metrics(), "bistream_events_published_total");
    let (st, _) = s.publish(&event("dashboard", location, "MARKER", json!(null)).to_string());
    assert_eq!(st, 202);
    let m = recv_json(ws);
    assert_eq!(
        (m["event_type"].as_str(), m["seq"].as_u64()),
        (Some("MARKER"), Some(1)),
        "{m}"
    );
    assert_eq!(
        metric(&s.metrics(), "bistream_events_published_total"),
        before + 1.0
    );
}

#[test]
fn a_body_on_a_request_that_takes_none_is_refused_never_parsed() {
    let s = Server::start(&[]);
    let (mut ws, _) = s.subscribe("/ws/dashboard/smuggled");
    let inner = publish_request(&event("dashboard", "smuggled", "SMUGGLED", json!(1)).to_string());
    for (target, method) in [
        ("/healthz", "GET"),
        ("/nope", "GET"),
        ("/metrics", "HEAD"),
        ("/readyz", "GET"),
    ] {
        // Content-Length framing: the body is a complete publish.
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{inner}",
            inner.len()
        );
        let got = send(&s, req.as_bytes());
        assert_eq!(got.len(), 1, "{method} {target}: {got:?}");
        assert_eq!(got[0].0, 400, "{got:?}");
        assert!(got[0].1.contains("Connection: close"), "{got:?}");
        if method == "GET" {
            let v: Value = serde_json::from_str(&got[0].2).expect("JSON body");
            assert_eq!(v["error"], "unexpected_body", "{v}");
        }
        // Chunked framing: the same publish inside one chunk.
        let req = format!(
            "{method} {target} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n",
            inner.len()
        );
        let got = send(&s, req.as_bytes());
        assert_eq!(
            got.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![400],
            "{got:?}"
        );
    }
    // An empty body is no body: the pipelined request after it is served.
    let ok = "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\nGET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_eq!(
        send(&s, ok.as_bytes())
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        vec![200, 200]
    );
    assert_nothing_published(&s, &mut ws, "smuggled");
}

#[test]
fn transfer_codings_other_than_chunked_are_refused_and_close() {
    let s = Server::start(&[]);
    let (mut ws, _) = s.subscribe("/ws/dashboard/te");
    let body = event("dashboard", "te", "SMUGGLED", json!(1)).to_string();
    let next = publish_request(&body);
    let cases = [
        // (Transfer-Encoding, with Content-Length, status)
        ("gzip", true, 400),
        ("identity", true, 400),
        ("xchunked", true, 400),
        ("chunked", true, 400),
        ("gzip", false, 400),
        ("identity", false, 400),
        ("xchunked", false, 400),
        ("chunked, gzip", false, 400),
        ("gzip, chunked", false, 501),
    ];
    for (te, with_cl, status) in cases {
        let cl = if with_cl {
            format!("Content-Length: {}\r\n", body.len())
        } else {
            String::new()
        };
        // Whatever follows the head must never be read as a request.
        let req = format!(
            "POST /api/events HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: {te}\r\n{cl}\r\n{body}{next}"
        );
        let got = send(&s, req.as_bytes());
        assert_eq!(got.len(), 1, "TE {te}, CL {with_cl}: {got:?}");
        assert_eq!(got[0].0, status, "TE {te}, CL {with_cl}: {got:?}");
        assert!(got[0].1.contains("Connection: close"), "{got:?}");
    }
    // HTTP/1.0 has no transfer codings.
    let req =
        format!("POST /api/events HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{next}");
    assert_eq!(
        send(&s, req.as_bytes())
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        vec![400]
    );
    assert_nothing_published(&s, &mut ws, "te");
}

#[test]
fn chunked_publishes_are_accepted_and_bad_chunks_refused() {
    let s = Server::start(&[]);
    let (mut ws, _) = s.subscribe("/ws/dashboard/chunked");
    let body = event("dashboard", "chunked", "CHUNKED", json!({"x": 1})).to_string();
    let (a, b) = body.split_at(10);
    let req = format!(
        "POST /api/events HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{a}\r\n{:x};note=split\r\n{b}\r\n0\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        a.len(),
        b.len()
    );
    let got = send(&s, req.as_bytes());
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![202, 200],
        "{got:?}"
    );
    let m = recv_json(&mut ws);
    assert_eq!(
        (m["event_type"].as_str(), m["data"]["x"].as_i64()),
        (Some("CHUNKED"), Some(1))
    );

    for bad in [
        "zz\r\n",
        "5\r\nab\r\n0\r\n\r\n",
        "2\nab\r\n0\r\n\r\n",
        "100001\r\n",
    ] {
        let req = format!(
            "POST /api/events HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{bad}"
        );
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(req.as_bytes()).unwrap();
        // A chunk that never completes is not answered until the deadline; a
        // malformed one is answered at once.
        let _ = c.shutdown(std::net::Shutdown::Write);
        let got = responses_until_close(&mut c);
        assert!(
            got.len() == 1 && matches!(got[0].0, 400 | 413),
            "{bad:?}: {got:?}"
        );
    }
}

#[test]
fn an_event_larger_than_the_queue_bound_is_refused_and_replay_streams() {
    let s = Server::start(&["--max-queue-bytes", "64KiB"]);
    let (mut ws, hello) = s.subscribe("/ws/dashboard/big");
    let epoch = hello["epoch"].as_str().unwrap().to_string();

    // One event whose frame cannot fit in any subscriber's queue: 413 naming
    // the limit; the subscriber is not touched.
    let (st, v) =
        s.publish(&event("dashboard", "big", "HUGE", json!("x".repeat(70_000))).to_string());
    assert_eq!(st, 413, "{v}");
    assert_eq!(v["error"], "event_too_large", "{v}");
    assert!(v["message"].as_str().unwrap().contains("65536"), "{v}");
    // In a batch, the whole request is refused and names the event.
    let batch = json!([
        event("dashboard", "big", "OK", json!(1)),
        event("dashboard", "*", "HUGE", json!("x".repeat(70_000)))
    ]);
    let (st, v) = s.publish(&batch.to_string());
    assert_eq!((st, v["error"].as_str()), (413, Some("event_too_large")));
    assert!(
        v["message"].as_str().unwrap().starts_with("events[1]"),
        "{v}"
    );

    // Twenty events of 30 KB (600 KB of history, far over the 64 KiB bound)
    // reach the live subscriber, which keeps up.
    for i in 0..20 {
        let (st, v) = s.publish(
            &event(
                "dashboard",
                "big",
                "E",
                json!({"i": i, "pad": "x".repeat(30_000)}),
            )
            .to_string(),
        );
        assert_eq!(st, 202, "{v}");
        let m = recv_json(&mut ws);
        assert_eq!(m["seq"], i + 1, "{m}");
    }
    // A resume from the start gets the whole replay, fed as it reads: no 1013.
    let before = metric(&s.metrics(), "bistream_slow_consumer_disconnects_total");
    let (mut ws2, _) = s.subscribe(&format!("/ws/dashboard/big?since=0&epoch={epoch}"));
    for want in 1..=20 {
        let m = recv_json(&mut ws2);
        assert_eq!(
            (m["type"].as_str(), m["seq"].as_u64()),
            (Some("event"), Some(want)),
            "{m}"
        );
    }
    let rec = recv_json(&mut ws2);
    assert_eq!(
        rec,
        json!({"type":"recovered","complete":true,"from_seq":1,"to_seq":20})
    );
    // And live events follow the replay in order.
    s.publish(&event("dashboard", "big", "AFTER", json!(1)).to_string());
    assert_eq!(recv_json(&mut ws2)["seq"], 21);
    assert_eq!(recv_json(&mut ws)["seq"], 21);
    assert_eq!(
        metric(&s.metrics(), "bistream_slow_consumer_disconnects_total"),
        before
    );
}

#[test]
fn a_client_that_reads_nothing_during_a_replay_is_still_a_slow_consumer() {
    let s = Server::start(&["--max-queue-bytes", "64KiB"]);
    let epoch = Server::subscribe(&s, "/ws/dashboard/r").1["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..10 {
        assert_eq!(s.publish(&event_batch("dashboard", "r", 20, 1000)).0, 202);
    }
    let before = metric(&s.metrics(), "bistream_slow_consumer_disconnects_total");
    // A tiny receive buffer and no reads: the replay stalls, then live events
    // pile up past the bound and the connection is closed.
    let small = tcp_small_rcvbuf(s.addr, 4096);
    let mut raw = RawWs::upgrade(small, &format!("/ws/dashboard/r?since=0&epoch={epoch}"));
    // Enough to fill the kernel's send buffer (loopback autotunes it to a few
    // MiB) and then the bound.
    let mut published = 0;
    while metric(&s.metrics(), "bistream_slow_consumer_disconnects_total") <= before {
        assert!(
            published < 200,
            "no 1013 after {published} batches of 100 KB"
        );
        assert_eq!(s.publish(&event_batch("dashboard", "r", 100, 1000)).0, 202);
        published += 1;
    }
    assert_eq!(raw.expect_close().map(|c| c.0), Some(1013));
}

/// ~10,900 distinct short event types in one message of at most 64 KiB.
fn fat_subscribe() -> String {
    let digits = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut types = Vec::new();
    'outer: for a in digits {
        for b in digits {
            for c in digits.iter().take(9) {
                types.push(format!("\"{}{}{}\"", *a as char, *b as char, *c as char));
                if types.len() == 10_900 {
                    break 'outer;
                }
            }
        }
    }
    let msg = format!(
        r#"{{"type":"subscribe","event_types":[{}]}}"#,
        types.join(",")
    );
    assert!(msg.len() <= 64 * 1024, "{}", msg.len());
    msg
}

#[test]
fn expensive_valid_messages_do_not_stall_other_clients() {
    let s = Server::start(&["--threads", "1"]);
    let fat = client_frame(0x81, fat_subscribe().as_bytes());
    let (mut probe, _) = s.subscribe("/ws/dashboard/probe");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut abusers = Vec::new();
    for i in 0..4 {
        let mut raw = RawWs::subscribe(s.addr, &format!("/ws/dashboard/abuse-{i}"));
        let fat = fat.clone();
        let stop = stop.clone();
        abusers.push(std::thread::spawn(move || {
            let mut errors = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..4 {
                    raw.send(&fat).expect("send");
                }
                for _ in 0..4 {
                    let m = raw.json();
                    assert_eq!(m["type"], "error", "{m}");
                    assert!(m["message"].as_str().unwrap().contains("256"), "{m}");
                    errors += 1;
                }
                // Stay under the abuse limit (10 bad messages a second).
                std::thread::sleep(Duration::from_millis(450));
            }
            errors
        }));
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut worst = Duration::ZERO;
    for i in 0..30 {
        let t0 = Instant::now();
        probe
            .send(tungstenite::Message::text(
                json!({"type":"ping","id":i}).to_string(),
            ))
            .unwrap();
        loop {
            let m = recv_json(&mut probe);
            if m["type"] == "pong" {
                assert_eq!(m["id"], i);
                break;
            }
        }
        worst = worst.max(t0.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let errors: usize = abusers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(errors >= 16, "the abusers got {errors} answers");
    eprintln!("worst ping round trip beside four abusers: {worst:?}");
    assert!(worst < Duration::from_millis(50), "ping took {worst:?}");
}

#[test]
fn subscribe_filters_are_capped_and_deduplicated() {
    let s = Server::start(&[]);
    let (mut ws, _) = s.subscribe("/ws/dashboard/f");
    let types: Vec<String> = (0..300).map(|i| format!("T{i}")).collect();
    ws.send(tungstenite::Message::text(
        json!({"type":"subscribe","event_types": types}).to_string(),
    ))
    .unwrap();
    let m = recv_json(&mut ws);
    assert_eq!(
        (m["type"].as_str(), m["code"].as_str()),
        (Some("error"), Some("invalid_message"))
    );
    let mut dup: Vec<&str> = types[..256].iter().map(String::as_str).collect();
    dup.extend(types[..256].iter().map(String::as_str));
    ws.send(tungstenite::Message::text(
        json!({"type":"subscribe","event_types": dup}).to_string(),
    ))
    .unwrap();
    let m = recv_json(&mut ws);
    assert_eq!(m["type"], "subscribed");
    assert_eq!(m["event_types"].as_array().unwrap().len(), 256);
    // The same cap holds for `events=` at connect.
    let many = types.join(",");
    let (st, _, body) = http_raw(
        s.addr,
        upgrade_request(&format!("/ws/dashboard/f?events={many}"), "").as_bytes(),
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("invalid_events"), "{body}");
}

/// The head of one response (a `HEAD` answer has no body to read).
fn read_head_only(s: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
            buf.drain(..end + 4);
            return head;
        }
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "closed early");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn http_details_host_absolute_form_head_and_keys() {
    let s = Server::start(&[]);
    let status = |req: &str| http_raw(s.addr, req.as_bytes()).0;
    // Host: exactly one on HTTP/1.1; none needed on HTTP/1.0.
    assert_eq!(status("GET /healthz HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(
        status("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        400
    );
    assert_eq!(status("GET /healthz HTTP/1.0\r\n\r\n"), 200);
    let (st, _, body) = http_raw(
        s.addr,
        b"GET /ws/dashboard/a HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(st, 400, "{body}");
    // Absolute-form targets, as sent to proxies.
    assert_eq!(
        status("GET http://bi.example:8000/healthz HTTP/1.1\r\nHost: bi.example\r\n\r\n"),
        200
    );
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(upgrade_request("http://bi.example/ws/dashboard/abs", "").as_bytes())
        .unwrap();
    let mut buf = Vec::new();
    let head = read_head_only(&mut c, &mut buf);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Two Sec-WebSocket-Key headers.
    let two = upgrade_request(
        "/ws/dashboard/a",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    );
    let (st, _, body) = http_raw(s.addr, two.as_bytes());
    assert_eq!(st, 400, "{body}");

    // HEAD on the probes and metrics: the GET's head, no body, and the
    // connection goes on (the next pipelined answer is intact).
    for path in ["/healthz", "/readyz", "/metrics"] {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(
            format!("HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut buf = Vec::new();
        let head = read_head_only(&mut c, &mut buf);
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert!(!head.contains("Content-Length: 0\r\n"), "{path}: {head}");
        let (st, _, body) = read_response_buffered(&mut c, &mut buf);
        assert_eq!((st, body.as_str()), (200, r#"{"status":"ok"}"#), "{path}");
    }
    let (st, head, _) = http_raw(s.addr, b"HEAD /ws/dashboard/a HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(st, 405);
    assert!(head.contains("Allow: GET\r\n"), "{head}");
    let (st, head, _) = http_raw(s.addr, b"POST /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(st, 405);
    assert!(head.contains("Allow: GET, HEAD\r\n"), "{head}");
}

#[test]
fn a_token_expiring_at_the_end_of_time_is_fine() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let secret = "hardening-secret-0123456789-0123456789";
    let s = Server::start_with_env(&[], &[("JWT_SECRET_KEY", secret)]);
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    let tok = encode(
        &Header::default(),
        &json!({"sub": "forever", "locations": ["*"], "exp": u64::MAX}),
        &key,
    )
    .unwrap();
    let (mut ws, hello) = s.subscribe(&format!("/ws/dashboard/a?token={tok}"));
    assert_eq!(hello["type"], "BI_CONNECTION_ESTABLISHED");
    std::thread::sleep(Duration::from_millis(1500));
    ws.send(tungstenite::Message::text(r#"{"type":"ping"}"#))
        .unwrap();
    assert_eq!(recv_json(&mut ws)["type"], "pong");
    // Past 2^64-1 the number is no longer an integer claim: 401, no panic.
    let tok = encode(
        &Header::default(),
        &json!({"locations": ["*"], "exp": 18446744073709551616.0_f64}),
        &key,
    )
    .unwrap();
    let (st, _, body) = http_raw(
        s.addr,
        upgrade_request(&format!("/ws/dashboard/a?token={tok}"), "").as_bytes(),
    );
    assert_eq!(st, 401, "{body}");
    ws.send(tungstenite::Message::text(r#"{"type":"ping"}"#))
        .unwrap();
    assert_eq!(recv_json(&mut ws)["type"], "pong");
}

#[test]
fn every_503_of_a_drain_says_draining() {
    let s = Server::start(&["--drain-timeout", "3s", "--threads", "1"]);
    // An open stream keeps the drain (and the listener) going while we knock.
    let (mut keep, _) = s.subscribe("/ws/dashboard/keep");
    // Upgrades in flight when the signal lands (some are still being
    // subscribed when the drain starts), and some sent after it.
    let mut early = Vec::new();
    for i in 0..100 {
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.write_all(upgrade_request(&format!("/ws/dashboard/d{i}"), "").as_bytes())
            .unwrap();
        early.push(c);
    }
    s.signal("TERM");
    assert_eq!(expect_close(&mut keep), Some(1001));
    let mut seen_503 = 0;
    for c in early.iter_mut() {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let (st, head, body) = read_response_buffered(c, &mut buf);
        if st == 503 {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"], "draining", "{v}");
            seen_503 += 1;
        } else {
            assert_eq!(st, 101, "{head}");
        }
    }
    for path in ["/ws/dashboard/late", "/ws/bot-performance/late"] {
        let (st, _, body) = http_raw(s.addr, upgrade_request(path, "").as_bytes());
        if st == 0 {
            break; // the listener may already be gone
        }
        assert_eq!(st, 503, "{body}");
        assert!(body.contains(r#""error":"draining""#), "{body}");
        seen_503 += 1;
    }
    let (st, v) = s.publish(&event("dashboard", "keep", "E", json!(1)).to_string());
    if st != 0 {
        assert_eq!((st, v["error"].as_str()), (503, Some("draining")));
    }
    eprintln!("{seen_503} upgrades refused with 503 draining");
}

#[test]
fn a_publisher_pipelining_past_the_bound_is_paused_not_closed() {
    let s = Server::start(&["--max-queue-bytes", "16KiB", "--threads", "1"]);
    let before = s.metrics();
    // 300 pipelined GET /metrics (each answer several KiB) from a client
    // that does not read at first: its answers pass the bound many times over.
    let mut c = tcp_small_rcvbuf(s.addr, 4096);
    let n = 300;
    let req = "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".repeat(n - 1)
        + "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let writer = {
        let mut w = c.try_clone().unwrap();
        std::thread::spawn(move || w.write_all(req.as_bytes()))
    };
    std::thread::sleep(Duration::from_millis(1500));
    let got = responses_until_close(&mut c);
    writer.join().unwrap().unwrap();
    assert_eq!(got.len(), n, "answers");
    assert!(got.iter().all(|r| r.0 == 200));
    let after = s.metrics();
    for m in [
        "bistream_slow_consumer_disconnects_total",
        "bistream_disconnects_total{code=\"1013\"}",
    ] {
        assert_eq!(metric(&before, m), metric(&after, m), "{m}");
    }
}
