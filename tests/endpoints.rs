//! Issue 2: every endpoint, message and refusal of the contract (docs/protocol.md §1, §2, §5, §7)
//! against the real server over real sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

const ENDPOINTS: [(&str, &str); 6] = [
    ("/ws/dashboard/", "dashboard"),
    ("/ws/bi/revenue-intelligence/", "revenue-intelligence"),
    ("/ws/bot-performance/", "bot-performance"),
    ("/ws/business-intelligence/", "business-intelligence"),
    ("/ws/ai-concierge/", "ai-concierge"),
    ("/ws/analytics/advanced/", "analytics-advanced"),
];

#[test]
fn every_endpoint_streams_its_channel() {
    let s = Server::start(&[]);
    for (prefix, channel) in ENDPOINTS {
        let (mut ws, hello) = s.subscribe(&format!("{prefix}loc-7"));
        assert_eq!(hello["channel"], channel);
        assert_eq!(hello["location_id"], "loc-7");
        assert_eq!(hello["last_seq"], 0);
        assert_eq!(hello["heartbeat_interval_ms"], 25000);
        assert!(hello["epoch"].as_str().is_some_and(|e| !e.is_empty()));
        assert!(hello["connection_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("c-")));
        assert!(hello["server_time"].as_u64().unwrap() > 1_700_000_000_000);
        let (st, body) = s.publish(
            &event(
                channel,
                "loc-7",
                "REVENUE_UPDATE",
                json!({"commission": 1250.5}),
            )
            .to_string(),
        );
        assert_eq!((st, &body), (202, &json!({"accepted": 1})));
        let ev = recv_json(&mut ws);
        assert_eq!(ev["type"], "event");
        assert_eq!(ev["channel"], channel);
        assert_eq!(ev["location_id"], "loc-7");
        assert_eq!(ev["event_type"], "REVENUE_UPDATE");
        assert_eq!(ev["seq"], 1);
        assert_eq!(ev["data"], json!({"commission": 1250.5}));
        assert!(ev["published_at"].as_u64().unwrap() >= hello["server_time"].as_u64().unwrap());
    }
}

#[test]
fn established_is_the_first_message_and_names_the_current_seq() {
    let s = Server::start(&[]);
    for i in 0..3 {
        let (st, _) = s.publish(&event("dashboard", "loc-1", "E", json!(i)).to_string());
        assert_eq!(st, 202);
    }
    let (_ws, hello) = s.subscribe("/ws/dashboard/loc-1");
    assert_eq!(hello["last_seq"], 3);
}

#[test]
fn ping_pong_errors_and_control_frames() {
    let s = Server::start(&[]);
    let (mut ws, _) = s.subscribe("/ws/dashboard/loc-1");
    ws.send(Message::text(r#"{"type":"ping","id":"abc"}"#))
        .unwrap();
    let pong = recv_json(&mut ws);
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["id"], "abc");
    assert!(pong["server_time"].as_u64().is_some());
    ws.send(Message::text(r#"{"type":"ping"}"#)).unwrap();
    let pong = recv_json(&mut ws);
    assert_eq!(pong["type"], "pong");
    assert!(pong.get("id").is_none());

    for bad in [
        "not json",
        "[1,2]",
        r#"{"type":"dance"}"#,
        r#"{"no":"type"}"#,
        r#"{"type":"subscribe","event_types":"X"}"#,
    ] {
        ws.send(Message::text(bad)).unwrap();
        let e = recv_json(&mut ws);
        assert_eq!(e["type"], "error", "{bad}");
        assert_eq!(e["code"], "invalid_message");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(recv_json(&mut ws)["type"], "error");

    // A WebSocket ping control frame gets a pong control frame with the same payload.
    ws.send(Message::Ping(b"hb".to_vec().into())).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"hb");
                break;
            }
            Message::Ping(_) => continue,
            other => panic!("expected pong, got {other:?}"),
        }
    }
    // Still open and streaming after all that.
    s.publish(&event("dashboard", "loc-1", "E", json!(null)).to_string());
    assert_eq!(recv_json(&mut ws)["seq"], 1);
}

#[test]
fn more_than_ten_bad_messages_a_second_close_with_1008() {
    let s = Server::start(&[]);
    let (mut ws, _) = s.subscribe("/ws/dashboard/loc-1");
    for _ in 0..11 {
        ws.send(Message::text("nope")).unwrap();
    }
    let mut errors = 0;
    let code = loop {
        match ws.read() {
            Ok(Message::Text(_)) => errors += 1,
            Ok(Message::Close(f)) => break f.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(errors, 10);
    assert_eq!(code, Some(1008));
}

#[test]
fn events_filter_and_subscribe_replace_it() {
    let s = Server::start(&[]);
    let (mut ws, _) = s.subscribe("/ws/dashboard/loc-1?events=A,B");
    let batch = json!([
        event("dashboard", "loc-1", "A", json!(1)),
        event("dashboard", "loc-1", "C", json!(2)),
        event("dashboard", "loc-1", "B", json!(3)),
    ]);
    s.publish(&batch.to_string());
    assert_eq!(recv_json(&mut ws)["event_type"], "A");
    assert_eq!(recv_json(&mut ws)["event_type"], "B");

    ws.send(Message::text(r#"{"type":"subscribe","event_types":["C"]}"#))
        .unwrap();
    assert_eq!(
        recv_json(&mut ws),
        json!({"type":"subscribed","event_types":["C"]})
    );
    s.publish(&batch.to_string());
    let ev = recv_json(&mut ws);
    assert_eq!(
        (ev["event_type"].clone(), ev["seq"].clone()),
        (json!("C"), json!(5))
    );

    ws.send(Message::text(r#"{"type":"subscribe","event_types":[]}"#))
        .unwrap();
    assert_eq!(
        recv_json(&mut ws),
        json!({"type":"subscribed","event_types":[]})
    );
    s.publish(&batch.to_string());
    let seqs: Vec<Value> = (0..3).map(|_| recv_json(&mut ws)["seq"].clone()).collect();
    assert_eq!(seqs, vec![json!(7), json!(8), json!(9)]);
}

#[test]
fn star_and_list_publishes_expand_per_stream() {
    let s = Server::start(&[]);
    let (mut d1, _) = s.subscribe("/ws/dashboard/loc-1");
    let (mut d2, _) = s.subscribe("/ws/dashboard/loc-2");
    let (mut ai, _) = s.subscribe("/ws/ai-concierge/loc-1");
    let (mut bot, _) = s.subscribe("/ws/bot-performance/loc-9");

    // A list of channels, one location.
    let (st, body) = s.publish(
        &json!({"channel":["dashboard","ai-concierge"],"location_id":"loc-1","event_type":"L"})
            .to_string(),
    );
    assert_eq!((st, body), (202, json!({"accepted": 1})));
    assert_eq!(recv_json(&mut d1)["event_type"], "L");
    let e = recv_json(&mut ai);
    assert_eq!(
        (e["event_type"].clone(), e["data"].clone()),
        (json!("L"), Value::Null)
    );

    // Every channel, every location with subscribers: each stream numbers its own seq.
    let (st, _) =
        s.publish(&json!({"channel":"*","location_id":"*","event_type":"ALL"}).to_string());
    assert_eq!(st, 202);
    let e = recv_json(&mut d1);
    assert_eq!(
        (e["event_type"].clone(), e["seq"].clone()),
        (json!("ALL"), json!(2))
    );
    let e = recv_json(&mut d2);
    assert_eq!(
        (
            e["event_type"].clone(),
            e["seq"].clone(),
            e["location_id"].clone()
        ),
        (json!("ALL"), json!(1), json!("loc-2"))
    );
    assert_eq!(recv_json(&mut ai)["seq"], 2);
    assert_eq!(recv_json(&mut bot)["channel"], "bot-performance");

    // One channel, every location.
    s.publish(&json!({"channel":"dashboard","location_id":"*","event_type":"D"}).to_string());
    assert_eq!(recv_json(&mut d1)["event_type"], "D");
    assert_eq!(recv_json(&mut d2)["event_type"], "D");
    let m = s.metrics();
    // 1 list event → 2 streams, `*`/`*` → 4 live streams, dashboard/`*` → 2.
    assert_eq!(metric(&m, "bistream_events_published_total"), 8.0);
}

#[test]
fn publish_validation_names_the_field() {
    let s = Server::start(&[]);
    let cases = [
        (
            json!({"location_id":"l","event_type":"A"}).to_string(),
            "channel",
        ),
        (
            json!({"channel":"nope","location_id":"l","event_type":"A"}).to_string(),
            "channel",
        ),
        (
            json!({"channel":"dashboard","event_type":"A"}).to_string(),
            "location_id",
        ),
        (
            json!({"channel":"dashboard","location_id":"a/b","event_type":"A"}).to_string(),
            "location_id",
        ),
        (
            json!({"channel":"dashboard","location_id":"l"}).to_string(),
            "event_type",
        ),
        (
            json!({"channel":"dashboard","location_id":"l","event_type":"has space"}).to_string(),
            "event_type",
        ),
        (
            json!([event("dashboard","l","A",json!(1)), {"channel":"dashboard"}]).to_string(),
            "events[1]",
        ),
    ];
    for (body, field) in cases {
        let (st, resp) = s.publish(&body);
        assert_eq!(st, 400, "{body}");
        let msg = resp["message"].as_str().unwrap_or_default();
        assert!(msg.contains(field), "{body}: {resp}");
        assert!(resp["error"].as_str().is_some());
    }
    let (st, resp) = s.publish("{not json");
    assert_eq!(st, 400);
    assert!(resp["message"].as_str().unwrap().contains("JSON"));
    let (st, _) = s.publish("");
    assert_eq!(st, 400);

    // 1000 events are fine, 1001 are too many; over 1 MiB is too large.
    let one = event("dashboard", "l", "A", json!(1));
    let body = Value::Array(vec![one.clone(); 1000]).to_string();
    assert_eq!(s.publish(&body), (202, json!({"accepted": 1000})));
    let body = Value::Array(vec![one.clone(); 1001]).to_string();
    assert_eq!(s.publish(&body).0, 413);
    let big = event("dashboard", "l", "A", json!("x".repeat(1 << 20))).to_string();
    assert_eq!(s.publish(&big).0, 413);
    // The server is fine afterwards.
    assert_eq!(s.publish(&one.to_string()).0, 202);
}

#[test]
fn keep_alive_publishing_of_ten_thousand_requests_on_one_connection() {
    let s = Server::start(&[]);
    let (mut ws, _) = s.subscribe("/ws/dashboard/loc-ka");
    let mut conn = TcpStream::connect(s.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.set_nodelay(true).unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = 0u64;
        while seen < 10_000 {
            let ev = recv_json(&mut ws);
            seen += 1;
            assert_eq!(ev["seq"], seen);
        }
        seen
    });
    // Pipelined in windows of 100, so it also proves requests are answered in order.
    let mut pending = Vec::new();
    for chunk in 0..100 {
        let mut out = Vec::new();
        for i in 0..100 {
            let body = event("dashboard", "loc-ka", "KA", json!(chunk * 100 + i)).to_string();
            out.extend_from_slice(
                format!(
                    "POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
        conn.write_all(&out).unwrap();
        for _ in 0..100 {
            let (st, head, body) = read_response_buffered(&mut conn, &mut pending);
            assert_eq!(st, 202, "{body}");
            assert!(head.contains("keep-alive"));
        }
    }
    assert_eq!(reader.join().unwrap(), 10_000);
}

#[test]
fn expect_100_continue_is_honoured() {
    let s = Server::start(&[]);
    let body = event("dashboard", "l", "A", json!(1)).to_string();
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(format!("POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n", body.len()).as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"));
    c.write_all(body.as_bytes()).unwrap();
    assert_eq!(read_response(&mut c).0, 202);
}

#[test]
fn health_ready_and_metrics() {
    let s = Server::start(&[]);
    let (st, head, body) = s.get("/healthz");
    assert_eq!(st, 200);
    assert!(head.contains("application/json"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ok"
    );
    assert_eq!(s.get("/readyz").0, 200);
    let (st, head, body) = s.get("/metrics");
    assert_eq!(st, 200);
    assert!(head.contains("text/plain; version=0.0.4"));
    for name in [
        "bistream_connections{channel=\"dashboard\"}",
        "bistream_connections_total",
        "bistream_events_published_total",
        "bistream_messages_delivered_total",
        "bistream_slow_consumer_disconnects_total",
        "bistream_delivery_latency_seconds_bucket{le=\"0.0001\"}",
        "bistream_delivery_latency_seconds_bucket{le=\"10\"}",
        "bistream_delivery_latency_seconds_count",
    ] {
        assert!(body.lines().any(|l| l.starts_with(name)), "missing {name}");
    }
    assert!(body.contains("# TYPE bistream_delivery_latency_seconds histogram"));
    assert!(body.contains("# TYPE bistream_connections gauge"));
    assert!(body.contains("# TYPE bistream_connections_total counter"));
}

#[test]
fn counters_move() {
    let s = Server::start(&[]);
    let (mut a, _) = s.subscribe("/ws/dashboard/m");
    let (mut b, _) = s.subscribe("/ws/bot-performance/m");
    let _ = http_raw(s.addr, upgrade_request("/ws/nope/m", "").as_bytes());
    let _ = http_raw(
        s.addr,
        upgrade_request("/ws/dashboard/m", "")
            .replace("Version: 13", "Version: 8")
            .as_bytes(),
    );
    s.publish(
        &json!({"channel":["dashboard","bot-performance"],"location_id":"m","event_type":"E"})
            .to_string(),
    );
    recv_json(&mut a);
    recv_json(&mut b);
    // Deliveries are counted once the bytes are in the kernel; give the loop a moment to fold its counters.
    std::thread::sleep(Duration::from_millis(100));
    let m = s.metrics();
    assert_eq!(
        metric(&m, "bistream_connections{channel=\"dashboard\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "bistream_connections{channel=\"bot-performance\"}"),
        1.0
    );
    assert_eq!(metric(&m, "bistream_connections_total"), 2.0);
    assert_eq!(metric(&m, "bistream_events_published_total"), 2.0);
    assert_eq!(metric(&m, "bistream_messages_delivered_total"), 2.0);
    assert_eq!(metric(&m, "bistream_delivery_latency_seconds_count"), 2.0);
    assert_eq!(
        metric(&m, "bistream_handshake_failures_total{status=\"404\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "bistream_handshake_failures_total{status=\"426\"}"),
        1.0
    );
    drop(a);
    std::thread::sleep(Duration::from_millis(200));
    let m = s.metrics();
    assert_eq!(
        metric(&m, "bistream_connections{channel=\"dashboard\"}"),
        0.0
    );
}

fn refusal(s: &Server, req: &str) -> (u16, String, Value) {
    let (st, head, body) = http_raw(s.addr, req.as_bytes());
    let v: Value =
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON body for {st}: {body:?}"));
    assert!(
        v["error"].as_str().is_some() && v["message"].as_str().is_some(),
        "{v}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    (st, head, v)
}

#[test]
fn every_handshake_refusal_is_a_real_response() {
    let s = Server::start(&[]);
    let ok = upgrade_request("/ws/dashboard/loc-1", "");
    // 400: not an upgrade, bad key, no version, bad location, bad since.
    let cases = [
        "GET /ws/dashboard/loc-1 HTTP/1.1\r\nHost: t\r\n\r\n".to_string(),
        ok.replace("Upgrade: websocket\r\n", ""),
        ok.replace("Connection: Upgrade\r\n", "Connection: keep-alive\r\n"),
        ok.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
        ok.replace("dGhlIHNhbXBsZSBub25jZQ==", "tooshort"),
        ok.replace("Sec-WebSocket-Version: 13\r\n", ""),
        upgrade_request("/ws/dashboard/", ""),
        upgrade_request("/ws/dashboard/a/b", ""),
        upgrade_request("/ws/dashboard/%41", ""),
        upgrade_request("/ws/dashboard/..", ""),
        upgrade_request(&format!("/ws/dashboard/{}", "x".repeat(129)), ""),
        upgrade_request("/ws/dashboard/loc-1?since=abc", ""),
        upgrade_request("/ws/dashboard/loc-1?since=-1", ""),
    ];
    for req in &cases {
        assert_eq!(refusal(&s, req).0, 400, "{req}");
    }
    // 426 with the version we speak.
    let (st, head, _) = refusal(&s, &ok.replace("Version: 13", "Version: 8"));
    assert_eq!(st, 426);
    assert!(head.contains("Sec-WebSocket-Version: 13"));
    // 404, 405.
    assert_eq!(
        refusal(&s, &upgrade_request("/ws/unknown/loc-1", "")).0,
        404
    );
    assert_eq!(
        refusal(&s, &upgrade_request("/ws/echo", "")).0,
        404,
        "echo is off by default"
    );
    let (st, head, _) = refusal(&s, &ok.replacen("GET", "POST", 1));
    assert_eq!(st, 405);
    assert!(head.contains("Allow: GET"));
    // 431.
    let big = ok.replace(
        "Host: t\r\n",
        &format!("Host: t\r\nX-Pad: {}\r\n", "a".repeat(9000)),
    );
    assert_eq!(refusal(&s, &big).0, 431);
    // Precedence: 404 beats 405 beats 400 beats 426.
    assert_eq!(
        refusal(
            &s,
            &upgrade_request("/ws/unknown/x", "").replacen("GET", "PUT", 1)
        )
        .0,
        404
    );
    assert_eq!(
        refusal(&s, "PUT /ws/dashboard/%41 HTTP/1.1\r\nHost: t\r\n\r\n").0,
        405
    );
    assert_eq!(
        refusal(
            &s,
            &upgrade_request("/ws/dashboard/loc-1?since=x", "")
                .replace("Version: 13", "Version: 8")
        )
        .0,
        400
    );
    // Not HTTP at all.
    assert_eq!(refusal(&s, "\x16\x03\x01\x00\x05hello\r\n\r\n").0, 400);
    // And the server still serves everyone.
    let (mut ws, _) = s.subscribe("/ws/dashboard/loc-1");
    s.publish(&event("dashboard", "loc-1", "E", json!(1)).to_string());
    assert_eq!(recv_json(&mut ws)["seq"], 1);
}

#[test]
fn connection_limit_answers_503() {
    let s = Server::start(&["--max-connections", "2"]);
    let (_a, _) = s.subscribe("/ws/dashboard/l");
    let (_b, _) = s.subscribe("/ws/dashboard/l");
    let (st, _, v) = refusal(&s, &upgrade_request("/ws/dashboard/l", ""));
    assert_eq!(st, 503);
    assert_eq!(v["error"], "unavailable");
}

#[test]
fn a_head_split_over_many_segments_with_the_first_frame_in_the_last() {
    let s = Server::start(&[]);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_nodelay(true).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut bytes = upgrade_request("/ws/dashboard/split", "").into_bytes();
    // The client's first frame (a ping message) rides in the same segment as the head's end.
    bytes.extend(client_frame(0x81, br#"{"type":"ping","id":7}"#));
    for piece in bytes.chunks(7) {
        c.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !(find(&got, b"\"pong\"").is_some() && got.ends_with(b"}")) {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    let established = text.find("BI_CONNECTION_ESTABLISHED").unwrap();
    let pong = text.find("\"pong\"").unwrap();
    assert!(established < pong);
    assert!(text.contains("\"id\":7"));
}

#[test]
fn unknown_api_paths_and_methods() {
    let s = Server::start(&[]);
    assert_eq!(s.get("/nope").0, 404);
    assert_eq!(s.get("/api/events").0, 405);
    let (st, _, _) = http_raw(
        s.addr,
        b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(st, 405);
    // A chunked body is read like any other: this one is empty.
    let (st, _, body) = http_raw(
        s.addr,
        b"POST /api/events HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(st, 400);
    assert!(body.contains("invalid_body"), "{body}");
    let (st, _, _) = http_raw(
        s.addr,
        b"POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n",
    );
    assert_eq!(st, 413);
}
