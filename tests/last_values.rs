//! Last values and conflation (`docs/protocol.md` §9) against the real server:
//! snapshots on connect (with filters, under load, with recovery), conflating
//! slow clients, the memory bounds, and the refusals.

mod common;
use common::*;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn keyed(location: &str, event_type: &str, key: &str, data: Value) -> Value {
    json!({"channel": "dashboard", "location_id": location, "event_type": event_type, "key": key, "data": data})
}

/// Reads the snapshot after the hello: the snapshot events, then the marker.
fn read_snapshot(ws: &mut Ws) -> (Vec<Value>, Value) {
    let mut events = Vec::new();
    loop {
        let m = recv_json(ws);
        match m["type"].as_str() {
            Some("event") => {
                assert_eq!(m["snapshot"], true, "{m}");
                events.push(m);
            }
            Some("snapshot") => return (events, m),
            _ => panic!("unexpected message in a snapshot: {m}"),
        }
    }
}

#[test]
fn snapshot_holds_the_last_value_of_every_key_in_seq_order() {
    let s = Server::start(&[]);
    // 20 keys over 3 event types, each key published three times; key k3's
    // newest event is of type C while its older ones were A.
    let mut last: HashMap<String, (String, i64)> = HashMap::new();
    let mut n = 0;
    for round in 0..3 {
        let batch: Vec<Value> = (0..20)
            .map(|k| {
                n += 1;
                let ty = if k == 3 && round == 2 {
                    "C"
                } else {
                    ["A", "B", "C"][k % 3]
                };
                let key = format!("k{k}");
                last.insert(key.clone(), (ty.to_string(), n));
                keyed("snap", ty, &key, json!({"n": n}))
            })
            .collect();
        assert_eq!(s.publish(&Value::Array(batch).to_string()).0, 202);
    }
    // An event without a key: its event type is its key, and its message has no `key`.
    assert_eq!(
        s.publish(&event("dashboard", "snap", "PLAIN", json!({"n": 61})).to_string())
            .0,
        202
    );

    let (mut ws, hello) = s.subscribe("/ws/dashboard/snap?snapshot=1");
    assert_eq!(hello["last_seq"], 61);
    assert!(hello.get("conflate").is_none());
    let (events, marker) = read_snapshot(&mut ws);
    assert_eq!(marker, json!({"type":"snapshot","count":21,"last_seq":61}));
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (41..=61).collect::<Vec<_>>(),
        "ascending, the newest of each key"
    );
    for e in &events[..20] {
        let key = e["key"].as_str().unwrap();
        assert_eq!(e["event_type"], last[key].0, "{e}");
        assert_eq!(e["data"]["n"], last[key].1, "{e}");
        assert!(e["published_at"].as_u64().is_some());
    }
    assert!(events[20].get("key").is_none(), "{}", events[20]);
    assert_eq!(events[20]["event_type"], "PLAIN");
    // Live events follow, above last_seq.
    s.publish(&keyed("snap", "A", "k0", json!(0)).to_string());
    let live = recv_json(&mut ws);
    assert_eq!(
        (live["seq"].as_u64(), live.get("snapshot")),
        (Some(62), None)
    );

    // With a filter: only keys whose newest event passes (k3's newest is C).
    let (mut ws, _) = s.subscribe("/ws/dashboard/snap?snapshot=1&events=A");
    let (events, marker) = read_snapshot(&mut ws);
    let keys: Vec<&str> = events.iter().map(|e| e["key"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..20)
        .filter(|k| k % 3 == 0 && *k != 3)
        .map(|k| format!("k{k}"))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    let mut want_sorted: Vec<&str> = want.iter().map(String::as_str).collect();
    want_sorted.sort();
    // k0 was republished (seq 62): its newest value still passes.
    assert_eq!(sorted, want_sorted);
    assert_eq!(marker["count"], events.len());
    assert_eq!(marker["last_seq"], 62);
    assert!(events.iter().all(|e| e["event_type"] == "A"));

    // Without snapshot=1 (or with 0): nothing but live events.
    for q in ["", "?snapshot=0"] {
        let (mut ws, _) = s.subscribe(&format!("/ws/dashboard/snap{q}"));
        s.publish(&keyed("snap", "A", "k1", json!(1)).to_string());
        let m = recv_json(&mut ws);
        assert_eq!(m["type"], "event", "{m}");
        assert!(m.get("snapshot").is_none());
    }
}

#[test]
fn no_gap_and_no_duplicate_between_snapshot_and_live_under_load() {
    let s = Server::start(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let addr = s.addr;
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut p = KeepAlivePublisher::connect(addr);
            let mut n = 0u64;
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                // 2,000 events a second in batches of 20, over 10 keys.
                let batch: Vec<Value> = (0..20)
                    .map(|i| {
                        n += 1;
                        keyed("load", "TICK", &format!("k{}", i % 10), json!(n))
                    })
                    .collect();
                assert_eq!(p.post(&Value::Array(batch).to_string()).0, 202);
                let due = t0 + Duration::from_micros(n * 500);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..50 {
        let (mut ws, hello) = s.subscribe("/ws/dashboard/load?snapshot=1");
        let (events, marker) = read_snapshot(&mut ws);
        let last_seq = marker["last_seq"].as_u64().unwrap();
        assert_eq!(hello["last_seq"], last_seq);
        assert_eq!(marker["count"], events.len());
        assert!(events.len() <= 10);
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert!(seqs.iter().all(|&q| q <= last_seq));
        if last_seq >= 10 {
            // The ten newest events are the ten keys' last values.
            assert_eq!(seqs, (last_seq - 9..=last_seq).collect::<Vec<_>>());
        }
        // Live: exactly last_seq + 1, + 2, ... with no gap and no repeat.
        for want in last_seq + 1..=last_seq + 40 {
            let m = recv_json(&mut ws);
            assert_eq!(m["type"], "event");
            assert!(m.get("snapshot").is_none());
            assert_eq!(m["seq"], want, "after a snapshot up to {last_seq}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let n = publisher.join().unwrap();
    assert!(n > 1000, "published only {n}");
}

#[test]
fn snapshot_with_recovery() {
    let s = Server::start(&["--history-size", "5"]);
    let (_, hello) = s.subscribe("/ws/dashboard/rec");
    let epoch = hello["epoch"].as_str().unwrap().to_string();
    // Keys a..e at seq 1..5, then f..j at 6..10: history keeps 6..10.
    let batch: Vec<Value> = "abcdefghij"
        .chars()
        .map(|k| keyed("rec", "E", &k.to_string(), json!(k.to_string())))
        .collect();
    assert_eq!(s.publish(&Value::Array(batch).to_string()).0, 202);

    // Complete recovery: the replay carries every change; no snapshot at all.
    let (mut ws, _) = s.subscribe(&format!(
        "/ws/dashboard/rec?since=8&epoch={epoch}&snapshot=1"
    ));
    assert_eq!(recv_json(&mut ws)["seq"], 9);
    assert_eq!(recv_json(&mut ws)["seq"], 10);
    let rec = recv_json(&mut ws);
    assert_eq!(
        rec,
        json!({"type":"recovered","complete":true,"from_seq":9,"to_seq":10})
    );
    s.publish(&keyed("rec", "E", "a", json!("live")).to_string());
    let live = recv_json(&mut ws);
    assert_eq!(
        (live["type"].as_str(), live["seq"].as_u64()),
        (Some("event"), Some(11))
    );

    // Incomplete: the replay (6..11 is history now: 7..11), `recovered`, then
    // the last values the replay does not carry (b..f: seq 2..6; a's newest
    // is 11, in the replay), then the marker.
    let (mut ws, _) = s.subscribe(&format!(
        "/ws/dashboard/rec?since=1&epoch={epoch}&snapshot=1"
    ));
    let mut replay = Vec::new();
    let rec = loop {
        let m = recv_json(&mut ws);
        if m["type"] == "recovered" {
            break m;
        }
        assert!(m.get("snapshot").is_none());
        replay.push(m["seq"].as_u64().unwrap());
    };
    assert_eq!(replay, (7..=11).collect::<Vec<_>>());
    assert_eq!(rec["complete"], false);
    let (events, marker) = read_snapshot(&mut ws);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5, 6]);
    assert_eq!(marker, json!({"type":"snapshot","count":5,"last_seq":11}));

    // A wrong epoch: nothing replayed, the whole snapshot.
    let (mut ws, _) = s.subscribe("/ws/dashboard/rec?since=3&epoch=other&snapshot=1");
    let rec = recv_json(&mut ws);
    assert_eq!(rec["complete"], false);
    let (events, marker) = read_snapshot(&mut ws);
    assert_eq!(events.len(), 10);
    assert_eq!(marker["count"], 10);
}

#[test]
fn last_values_off_yields_just_the_marker() {
    let s = Server::start(&["--last-values", "0"]);
    assert_eq!(
        s.publish(&keyed("off", "E", "a", json!(1)).to_string()).0,
        202
    );
    let (mut ws, _) = s.subscribe("/ws/dashboard/off?snapshot=1");
    assert_eq!(
        recv_json(&mut ws),
        json!({"type":"snapshot","count":0,"last_seq":1})
    );
}

#[test]
fn bad_snapshot_conflate_and_key_values_are_refused() {
    let s = Server::start(&[]);
    for (q, code) in [
        ("snapshot=true", "invalid_snapshot"),
        ("snapshot=", "invalid_snapshot"),
        ("conflate=yes", "invalid_conflate"),
        ("conflate=2", "invalid_conflate"),
    ] {
        let (st, _, body) = http_raw(
            s.addr,
            upgrade_request(&format!("/ws/dashboard/x?{q}"), "").as_bytes(),
        );
        assert_eq!(st, 400, "{q}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], code, "{q}");
    }
    for key in [json!(""), json!("a b"), json!(7), json!("k".repeat(129))] {
        let (st, v) = s.publish(
            &keyed("x", "E", "placeholder", json!(1))
                .to_string()
                .replace("\"placeholder\"", &key.to_string()),
        );
        assert_eq!(st, 400, "{key}: {v}");
        assert!(v["message"].as_str().unwrap().contains("`key`"), "{v}");
    }
}

/// A conflating client on a small receive buffer that reads one message every
/// 100 ms, and the same client without conflation, while 5,000 events a second
/// over 10 keys are published for 10 s.
#[test]
fn a_slow_conflating_client_keeps_up_and_ends_with_every_last_value() {
    let s = Server::start(&["--max-queue-bytes", "64KiB"]);
    let open = |q: &str| {
        let mut raw = RawWs::upgrade(
            tcp_small_rcvbuf(s.addr, 4096),
            &format!("/ws/dashboard/conf{q}"),
        );
        let hello = raw.json();
        assert_eq!(hello["type"], "BI_CONNECTION_ESTABLISHED");
        (raw, hello)
    };
    let (mut slow, hello) = open("?conflate=1");
    assert_eq!(hello["conflate"], true);
    let (mut plain, _) = open("");
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let addr = s.addr;
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut p = KeepAlivePublisher::connect(addr);
            let mut last: HashMap<String, u64> = HashMap::new();
            let t0 = Instant::now();
            let mut n = 0u64;
            while t0.elapsed() < Duration::from_secs(10) {
                let batch: Vec<Value> = (0..50)
                    .map(|i| {
                        n += 1;
                        let key = format!("k{}", i % 10);
                        last.insert(key.clone(), n);
                        keyed("conf", "KPI", &key, json!({"n": n, "pad": "x".repeat(60)}))
                    })
                    .collect();
                assert_eq!(p.post(&Value::Array(batch).to_string()).0, 202);
                let due = t0 + Duration::from_micros(n * 200);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            stop.store(true, Ordering::Relaxed);
            (n, last)
        })
    };
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut prev = 0u64;
    let mut read = 0;
    while !stop.load(Ordering::Relaxed) {
        let m = slow.json();
        read += 1;
        let seq = m["seq"].as_u64().unwrap();
        assert!(seq > prev, "seq {seq} after {prev}");
        prev = seq;
        seen.insert(
            m["key"].as_str().unwrap().to_string(),
            m["data"]["n"].as_u64().unwrap(),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (published, last) = publisher.join().unwrap();
    assert!(published >= 40_000, "published {published}");
    // Publishing stopped: read on until every key shows its last value.
    slow.set_timeout(Duration::from_secs(5));
    while seen != last {
        let m = slow.json();
        let seq = m["seq"].as_u64().unwrap();
        assert!(seq > prev, "seq {seq} after {prev}");
        prev = seq;
        seen.insert(
            m["key"].as_str().unwrap().to_string(),
            m["data"]["n"].as_u64().unwrap(),
        );
        read += 1;
    }
    eprintln!("the conflating client read {read} of {published} events and ends current");
    let metrics = s.metrics();
    assert!(metric(&metrics, "bistream_events_conflated_total") > 1000.0);
    // It was never closed; the plain client was, as a slow consumer (it reads
    // nothing, so it may never see the close frame: its connection just ends).
    assert_eq!(
        metric(&metrics, "bistream_slow_consumer_disconnects_total"),
        1.0
    );
    assert_eq!(
        metric(&metrics, "bistream_disconnects_total{code=\"1013\"}"),
        1.0
    );
    assert!(plain.closed_within(Duration::from_secs(5)));
    s.publish(&keyed("conf", "KPI", "k0", json!({"n": 0})).to_string());
    assert_eq!(slow.json()["seq"], published + 1);
}

/// Publishes 100 batches of 1,000 events (keys from `key`) and returns the
/// server's RSS growth in KiB.
fn publish_keys(s: &Server, key: impl Fn(usize, usize) -> String) -> u64 {
    let rss0 = s.rss_kib();
    let mut p = KeepAlivePublisher::connect(s.addr);
    for b in 0..100 {
        let batch: Vec<Value> = (0..1000)
            .map(|i| keyed("many", "KPI", &key(b, i), json!({"pad": "x".repeat(100)})))
            .collect();
        assert_eq!(p.post(&Value::Array(batch).to_string()).0, 202);
    }
    assert!(wait_until(Duration::from_secs(5), || {
        metric(&s.metrics(), "bistream_events_published_total") == 100_000.0
    }));
    s.rss_kib().saturating_sub(rss0)
}

#[test]
fn a_hundred_thousand_keys_stay_within_the_byte_cap() {
    let args = [
        "--last-values",
        "1000000",
        "--last-values-max-bytes",
        "4MiB",
        "--history-size",
        "0",
        "--threads",
        "1",
    ];
    // The same traffic with one key: what publishing itself costs in RSS.
    let control = Server::start(&args);
    let base = publish_keys(&control, |_, _| "same".to_string());
    let s = Server::start(&args);
    let grown = publish_keys(&s, |b, i| format!("key-{b}-{i}"));
    let m = s.metrics();
    let bytes = metric(&m, "bistream_last_values_bytes");
    let count = metric(&m, "bistream_last_values");
    eprintln!(
        "100,000 keys: {count} last values, {bytes} bytes counted; RSS +{grown} KiB \
         (+{base} KiB with one key)"
    );
    assert!(bytes <= 4.0 * 1024.0 * 1024.0, "{bytes}");
    assert!(count > 5_000.0 && count < 100_000.0, "{count}");
    // The cap counts frames, keys and a per-value bookkeeping estimate; what
    // the process holds beyond the control stays within the cap plus the
    // allocator's slack, stated as at most half the cap again (docs/last-values.md).
    assert!(
        grown <= base + 4 * 1024 * 3 / 2,
        "RSS grew by {grown} KiB, {base} KiB with one key"
    );
    let (mut ws, _) = s.subscribe("/ws/dashboard/many?snapshot=1");
    let (events, marker) = read_snapshot(&mut ws);
    assert_eq!(marker["count"], events.len());
    assert_eq!(events.last().unwrap()["key"], "key-99-999");
    assert!(metric(&s.metrics(), "bistream_last_values_bytes") <= 4.0 * 1024.0 * 1024.0);
}
