//! Issue 2: fan-out at scale — order, seq and completeness across many clients.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[test]
fn a_thousand_event_batch_reaches_fifty_clients_in_seq_order() {
    let s = Server::start(&["--threads", "2"]);
    let mut clients: Vec<Ws> = (0..50)
        .map(|_| s.subscribe("/ws/business-intelligence/batch").0)
        .collect();
    let batch: Vec<Value> = (0..1000)
        .map(|i| {
            event(
                "business-intelligence",
                "batch",
                "COMMISSION_UPDATE",
                json!({"i": i}),
            )
        })
        .collect();
    let (st, body) = s.publish(&Value::Array(batch).to_string());
    assert_eq!((st, body), (202, json!({"accepted": 1000})));
    for ws in clients.iter_mut() {
        for want in 1..=1000u64 {
            let ev = recv_json(ws);
            assert_eq!(ev["seq"], want);
            assert_eq!(ev["data"]["i"], want - 1, "publish order is seq order");
        }
    }
}

#[test]
fn two_thousand_connections_all_receive_one_broadcast() {
    let s = Server::start(&["--threads", "2"]);
    let t0 = Instant::now();
    let mut clients = Vec::with_capacity(2000);
    for i in 0..2000 {
        let loc = format!("site-{}", i % 20);
        let (ws, _) = s.subscribe(&format!("/ws/dashboard/{loc}"));
        clients.push(ws);
    }
    let connect_time = t0.elapsed();
    let m = s.metrics();
    assert_eq!(
        metric(&m, "bistream_connections{channel=\"dashboard\"}"),
        2000.0
    );
    let (st, _) = s.publish(
        &json!({"channel":"dashboard","location_id":"*","event_type":"BROADCAST","data":{"n":1}})
            .to_string(),
    );
    assert_eq!(st, 202);
    for ws in clients.iter_mut() {
        set_timeout(ws, Duration::from_secs(20));
        let ev = recv_json(ws);
        assert_eq!(ev["event_type"], "BROADCAST");
        assert_eq!(ev["seq"], 1);
    }
    eprintln!("2000 connections in {connect_time:?}, broadcast received by all");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        metric(&s.metrics(), "bistream_messages_delivered_total"),
        2000.0
    );
}

#[test]
fn concurrent_publishers_keep_per_stream_order_without_gaps() {
    let s = Server::start(&["--threads", "2"]);
    let (mut ws, _) = s.subscribe("/ws/analytics/advanced/many");
    let addr = s.addr;
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            std::thread::spawn(move || {
                for i in 0..50 {
                    let body = Value::Array(
                        (0..20)
                            .map(|j| event("analytics-advanced", "many", "E", json!({"p": p, "i": i * 20 + j})))
                            .collect(),
                    )
                    .to_string();
                    let req = format!(
                        "POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    assert_eq!(http_raw(addr, req.as_bytes()).0, 202);
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    let mut last_i = [-1i64; 4];
    for want in 1..=4000u64 {
        let ev = recv_json(&mut ws);
        assert_eq!(ev["seq"], want);
        let p = ev["data"]["p"].as_u64().unwrap() as usize;
        let i = ev["data"]["i"].as_i64().unwrap();
        assert!(i > last_i[p], "each publisher's own order is kept");
        last_i[p] = i;
    }
}
