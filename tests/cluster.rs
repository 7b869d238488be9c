//! Several nodes as one service (`docs/protocol.md` §10): bistream nodes on
//! the Redis engine, against real `redis-server` processes on loopback,
//! through every failure the contract names.

mod common;
use common::redis_server::{Persistence, RedisServer};
use common::*;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A node on the given Redis instances, with a short probe so that failures
/// are seen quickly.
fn node(redis: &[&RedisServer], extra: &[&str]) -> Server {
    let mut args = vec![
        "--engine",
        "redis",
        "--engine-probe-interval",
        "300ms",
        "--redis-timeout",
        "500ms",
    ];
    let urls: Vec<String> = redis.iter().map(|r| r.url()).collect();
    for u in &urls {
        args.push("--redis-url");
        args.push(u);
    }
    args.extend_from_slice(extra);
    let s = Server::start(&args);
    assert!(
        wait_until(Duration::from_secs(10), || s.get("/readyz").0 == 200),
        "the node never became ready"
    );
    s
}

fn ev(location: &str, n: u64) -> String {
    event("dashboard", location, "TICK", json!({ "n": n })).to_string()
}

/// Reads events until `n` of them came, skipping nothing: their seqs.
fn read_events(ws: &mut Ws, n: usize) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = recv_json(ws);
        assert_eq!(m["type"], "event", "{m}");
        out.push((m["seq"].as_u64().unwrap(), m["data"]["n"].as_u64().unwrap()));
    }
    out
}

#[test]
fn three_nodes_deliver_every_event_once_in_order() {
    let redis = RedisServer::start(Persistence::None);
    let nodes: Vec<Server> = (0..3).map(|_| node(&[&redis], &[])).collect();
    // 300 subscribers over ten streams, spread over the three nodes.
    let mut subs = Vec::new();
    for i in 0..300 {
        let loc = format!("loc-{}", i % 10);
        let (ws, hello) = nodes[i % 3].subscribe(&format!("/ws/dashboard/{loc}"));
        subs.push((loc, ws, hello["epoch"].as_str().unwrap().to_string()));
    }
    // Every node names the same epoch for a stream.
    let mut epochs: HashMap<String, String> = HashMap::new();
    for (loc, _, epoch) in &subs {
        let e = epochs.entry(loc.clone()).or_insert_with(|| epoch.clone());
        assert_eq!(e, epoch, "{loc}");
    }
    // 600 events, to random nodes, from three concurrent publishers.
    let counts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let addrs: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    std::thread::scope(|scope| {
        for p in 0..3u64 {
            let addrs = &addrs;
            let counts = counts.clone();
            scope.spawn(move || {
                let mut rng = XorShift(0x9e37_79b9 + p);
                let mut pubs: Vec<KeepAlivePublisher> = addrs
                    .iter()
                    .map(|a| KeepAlivePublisher::connect(*a))
                    .collect();
                for i in 0..200 {
                    let loc = format!("loc-{}", rng.next_u64() % 10);
                    let target = (rng.next_u64() % 3) as usize;
                    let (st, body) = pubs[target].post(&ev(&loc, p * 1000 + i));
                    assert_eq!(st, 202, "{body}");
                    *counts.lock().unwrap().entry(loc).or_default() += 1;
                }
            });
        }
    });
    let counts = counts.lock().unwrap().clone();
    for (loc, ws, _) in subs.iter_mut() {
        let want = counts.get(loc.as_str()).copied().unwrap_or(0) as usize;
        let got = read_events(ws, want);
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=want as u64).collect::<Vec<_>>(), "{loc}");
    }
    // And nothing more arrives.
    for (_, ws, _) in subs.iter_mut().take(30) {
        set_timeout(ws, Duration::from_millis(200));
        assert!(ws.read().is_err(), "an extra message arrived");
    }
}

#[test]
fn a_client_resumes_on_another_node_without_gap_or_duplicate() {
    let redis = RedisServer::start(Persistence::None);
    let a = node(&[&redis], &[]);
    let b = node(&[&redis], &[]);
    // A subscriber on each node keeps the stream watched on both.
    let (_wa, hello) = a.subscribe("/ws/dashboard/resume");
    let (_wb, _) = b.subscribe("/ws/dashboard/resume");
    let epoch = hello["epoch"].as_str().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (stop, published) = (stop.clone(), published.clone());
        let addrs = [a.addr, b.addr];
        std::thread::spawn(move || {
            let mut pubs: Vec<KeepAlivePublisher> = addrs
                .iter()
                .map(|a| KeepAlivePublisher::connect(*a))
                .collect();
            let t0 = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // 2,000 events a second in batches of 10, alternating nodes.
                let batch: Vec<Value> = (0..10)
                    .map(|i| event("dashboard", "resume", "TICK", json!({ "n": n + i })))
                    .collect();
                let (st, body) = pubs[(n / 10 % 2) as usize].post(&Value::Array(batch).to_string());
                assert_eq!(st, 202, "{body}");
                n += 10;
                published.store(n, Ordering::Relaxed);
                let due = t0 + Duration::from_micros(n * 500);
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
            }
        })
    };
    let nodes = [&a, &b];
    let (mut ws, hello) = a.subscribe("/ws/dashboard/resume");
    let mut last = hello["last_seq"].as_u64().unwrap();
    let mut rng = XorShift(7);
    for round in 0..50 {
        // Read a few events, then drop the connection mid-stream.
        for _ in 0..(5 + rng.next_u64() % 40) {
            let m = recv_json(&mut ws);
            assert_eq!(m["seq"].as_u64(), Some(last + 1), "round {round}: {m}");
            last += 1;
        }
        drop(ws);
        let other = nodes[(round + 1) % 2];
        let (mut next, hello) =
            other.subscribe(&format!("/ws/dashboard/resume?since={last}&epoch={epoch}"));
        assert_eq!(hello["epoch"], epoch.as_str());
        // The replay, then `recovered` complete, then live: one sequence.
        loop {
            let m = recv_json(&mut next);
            if m["type"] == "recovered" {
                assert_eq!(m["complete"], true, "round {round}: {m}");
                break;
            }
            assert_eq!(
                m["seq"].as_u64(),
                Some(last + 1),
                "round {round} replay: {m}"
            );
            last += 1;
        }
        ws = next;
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    assert!(published.load(Ordering::Relaxed) > 1000);
}

/// Waits for the node's engine to count as down (true) or up (false).
fn wait_engine(s: &Server, down: bool, within: Duration) -> bool {
    let want = if down { 503 } else { 200 };
    wait_until(within, || s.get("/readyz").0 == want)
}

#[test]
fn redis_stopped_then_back_loses_nothing_acknowledged() {
    // An append-only file synced on every write: what Redis acknowledged
    // survives its restart, and so every 202 must reach every subscriber.
    let mut redis = RedisServer::start(Persistence::AofAlways);
    let a = node(&[&redis], &[]);
    let b = node(&[&redis], &[]);
    let (mut wa, _) = a.subscribe("/ws/dashboard/stop");
    let (mut wb, _) = b.subscribe("/ws/dashboard/stop");
    let mut acked = Vec::new();
    for n in 0..20 {
        assert_eq!(a.publish(&ev("stop", n)).0, 202);
        acked.push(n);
    }
    redis.kill();
    let t0 = Instant::now();
    assert!(
        wait_engine(&a, true, Duration::from_secs(1)),
        "readyz still 200 a second after Redis died"
    );
    eprintln!("/readyz turned 503 {:?} after Redis died", t0.elapsed());
    let (st, v) = b.publish(&ev("stop", 999));
    assert_eq!(
        (st, v["error"].as_str()),
        (503, Some("engine_unavailable")),
        "{v}"
    );
    let (st, _, body) = http_raw(a.addr, upgrade_request("/ws/dashboard/stop", "").as_bytes());
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("engine_unavailable"), "{body}");
    // Open connections stay open (events still on their way may come first).
    wa.send(tungstenite::Message::text(r#"{"type":"ping"}"#))
        .unwrap();
    let mut seen_a = Vec::new();
    loop {
        let m = recv_json(&mut wa);
        if m["type"] == "pong" {
            break;
        }
        seen_a.push((m["seq"].as_u64().unwrap(), m["data"]["n"].as_u64().unwrap()));
    }

    redis.restart();
    assert!(wait_engine(&a, false, Duration::from_secs(10)));
    assert!(wait_engine(&b, false, Duration::from_secs(10)));
    for n in 20..40 {
        let node = if n % 2 == 0 { &a } else { &b };
        let mut tries = 0;
        loop {
            let (st, _) = node.publish(&ev("stop", n));
            if st == 202 {
                break;
            }
            tries += 1;
            assert!(tries < 50, "publishing did not resume");
            std::thread::sleep(Duration::from_millis(100));
        }
        acked.push(n);
    }
    let more = 40 - seen_a.len();
    seen_a.extend(read_events(&mut wa, more));
    let seen_b = read_events(&mut wb, 40);
    for seen in [&seen_a, &seen_b] {
        let ns: Vec<u64> = seen.iter().map(|(_, n)| *n).collect();
        assert_eq!(ns, acked, "every acknowledged event, once, in order");
        let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
    }
}

#[test]
fn redis_restarted_empty_starts_a_new_epoch() {
    let mut redis = RedisServer::start(Persistence::None);
    let a = node(&[&redis], &[]);
    let b = node(&[&redis], &[]);
    let (mut wa, hello) = a.subscribe("/ws/dashboard/empty");
    let old = hello["epoch"].as_str().unwrap().to_string();
    for n in 0..5 {
        assert_eq!(a.publish(&ev("empty", n)).0, 202);
    }
    read_events(&mut wa, 5);
    redis.restart();
    assert!(wait_engine(&a, false, Duration::from_secs(10)));
    // The node finds a new epoch: its clients are told to resume (4010).
    assert_eq!(expect_close(&mut wa), Some(4010));
    assert!(wait_engine(&b, false, Duration::from_secs(10)));
    let (mut wb, hello) = b.subscribe(&format!("/ws/dashboard/empty?since=5&epoch={old}"));
    assert_ne!(hello["epoch"], old.as_str());
    let rec = recv_json(&mut wb);
    assert_eq!(rec["type"], "recovered");
    assert_eq!(rec["complete"], false, "{rec}");
    assert!(
        metric(
            &a.metrics(),
            r#"bistream_engine_resyncs_total{outcome="new_epoch"}"#
        ) >= 1.0
    );
}

#[test]
fn redis_restored_from_an_older_snapshot_never_claims_a_complete_resume() {
    let mut redis = RedisServer::start(Persistence::SnapshotOnly);
    let a = node(&[&redis], &[]);
    let b = node(&[&redis], &[]);
    let (mut wa, hello) = a.subscribe("/ws/dashboard/old");
    let epoch = hello["epoch"].as_str().unwrap().to_string();
    for n in 0..10 {
        assert_eq!(a.publish(&ev("old", n)).0, 202);
    }
    read_events(&mut wa, 10);
    let rdb = redis.save_copy();
    for n in 10..20 {
        assert_eq!(b.publish(&ev("old", n)).0, 202);
    }
    read_events(&mut wa, 10);
    // Redis comes back with seq 10 of the epoch; the node has delivered 20.
    redis.restore(&rdb);
    assert!(wait_engine(&a, false, Duration::from_secs(10)));
    assert_eq!(expect_close(&mut wa), Some(4010));
    // Publishing on: the numbering of the new epoch, never a reused seq of the old.
    assert!(wait_until(Duration::from_secs(5), || a
        .publish(&ev("old", 100))
        .0
        == 202));
    for (node, since) in [(&a, 20), (&b, 15), (&b, 10), (&a, 0)] {
        let (mut ws, hello) =
            node.subscribe(&format!("/ws/dashboard/old?since={since}&epoch={epoch}"));
        assert_ne!(
            hello["epoch"],
            epoch.as_str(),
            "the old epoch must not come back"
        );
        loop {
            let m = recv_json(&mut ws);
            if m["type"] == "recovered" {
                assert_eq!(m["complete"], false, "since={since}: {m}");
                break;
            }
        }
    }
}

#[test]
fn a_paused_redis_is_noticed_and_clients_see_every_event_or_a_4010() {
    let redis = RedisServer::start(Persistence::None);
    let a = node(&[&redis], &[]);
    let b = node(&[&redis], &[]);
    let (mut wa, _) = a.subscribe("/ws/dashboard/pause");
    for n in 0..5 {
        assert_eq!(b.publish(&ev("pause", n)).0, 202);
    }
    let mut seen = read_events(&mut wa, 5);
    redis.pause();
    // Longer than two probe intervals (2 × 300 ms): the nodes notice.
    assert!(
        wait_engine(&a, true, Duration::from_secs(3)),
        "the silent link was not noticed"
    );
    redis.resume();
    assert!(wait_engine(&a, false, Duration::from_secs(10)));
    assert!(wait_engine(&b, false, Duration::from_secs(10)));
    let mut acked = (0..5).collect::<Vec<u64>>();
    for n in 5..15 {
        if b.publish(&ev("pause", n)).0 == 202 {
            acked.push(n);
        }
    }
    // Every event, in order, or a 4010 (and then a resume tells the truth).
    set_timeout(&mut wa, Duration::from_secs(5));
    loop {
        match wa.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let m: Value = serde_json::from_str(t.as_str()).unwrap();
                seen.push((m["seq"].as_u64().unwrap(), m["data"]["n"].as_u64().unwrap()));
                if seen.len() == acked.len() {
                    let ns: Vec<u64> = seen.iter().map(|(_, n)| *n).collect();
                    assert_eq!(ns, acked);
                    break;
                }
            }
            Ok(tungstenite::Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 4010);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("neither every event nor a 4010: {e}; saw {seen:?}"),
        }
    }
}

#[test]
fn two_redis_instances_share_the_streams() {
    let r1 = RedisServer::start(Persistence::None);
    let r2 = RedisServer::start(Persistence::None);
    let a = node(&[&r1, &r2], &[]);
    let b = node(&[&r2, &r1], &[]);
    let mut subs = Vec::new();
    for i in 0..20 {
        let loc = format!("shard-{i}");
        let (ws, _) = b.subscribe(&format!("/ws/dashboard/{loc}"));
        subs.push((loc, ws));
    }
    for (loc, _) in &subs {
        assert_eq!(a.publish(&ev(loc, 1)).0, 202);
        assert_eq!(b.publish(&ev(loc, 2)).0, 202);
    }
    for (loc, ws) in subs.iter_mut() {
        let got = read_events(ws, 2);
        assert_eq!(got, vec![(1, 1), (2, 2)], "{loc}");
    }
    // The streams landed on both instances.
    let (d1, d2) = (r1.dbsize(), r2.dbsize());
    eprintln!("keys: {d1} on one instance, {d2} on the other");
    assert!(d1 > 0 && d2 > 0, "{d1} / {d2}");
}

#[test]
fn a_star_publish_reaches_every_watched_location_on_every_node() {
    let redis = RedisServer::start(Persistence::None);
    let a = node(&[&redis], &[]);
    let b = node(&[&redis], &[]);
    let (mut w1, _) = a.subscribe("/ws/dashboard/star-1");
    let (mut w2, _) = b.subscribe("/ws/dashboard/star-2");
    // The live sets are renewed every probe interval.
    std::thread::sleep(Duration::from_millis(700));
    let (st, v) = a.publish(&event("dashboard", "*", "ALL", json!({ "n": 7 })).to_string());
    assert_eq!(st, 202, "{v}");
    for ws in [&mut w1, &mut w2] {
        let m = recv_json(ws);
        assert_eq!(
            (m["event_type"].as_str(), m["seq"].as_u64()),
            (Some("ALL"), Some(1))
        );
    }
}

#[test]
fn snapshot_and_conflation_work_on_every_node() {
    let redis = RedisServer::start(Persistence::None);
    let a = node(&[&redis], &[]);
    let b = node(&[&redis], &[]);
    for k in 0..5 {
        for round in 0..2 {
            let body = json!({"channel":"dashboard","location_id":"snap","event_type":"KPI","key":format!("k{k}"),"data":{"round": round}});
            assert_eq!(a.publish(&body.to_string()).0, 202);
        }
    }
    let (mut ws, hello) = b.subscribe("/ws/dashboard/snap?snapshot=1&conflate=1");
    assert_eq!(hello["last_seq"], 10);
    assert_eq!(hello["conflate"], true);
    let mut keys = Vec::new();
    loop {
        let m = recv_json(&mut ws);
        if m["type"] == "snapshot" {
            assert_eq!(m, json!({"type":"snapshot","count":5,"last_seq":10}));
            break;
        }
        assert_eq!(m["snapshot"], true);
        assert_eq!(m["data"]["round"], 1);
        keys.push(m["key"].as_str().unwrap().to_string());
    }
    assert_eq!(keys, vec!["k0", "k1", "k2", "k3", "k4"]);
}

#[test]
fn a_stream_whose_counter_was_evicted_starts_a_clean_epoch() {
    // An eviction policy (volatile-lru: every key has a TTL) may take one key
    // of a stream and leave the others. A new epoch must not inherit the old
    // one's history or last values under its own numbering.
    let redis = RedisServer::start(Persistence::None);
    let a = node(&[&redis], &[]);
    for k in 0..5 {
        let body = json!({"channel":"dashboard","location_id":"evict","event_type":"KPI","key":format!("k{k}"),"data":{"old": k}});
        assert_eq!(a.publish(&body.to_string()).0, 202);
    }
    redis
        .query(&["DEL", "bistream:{dashboard:evict}:meta"])
        .expect("DEL");
    let body = json!({"channel":"dashboard","location_id":"evict","event_type":"KPI","key":"new","data":{"new": 1}});
    assert_eq!(a.publish(&body.to_string()).0, 202);
    let (mut ws, hello) = a.subscribe("/ws/dashboard/evict?snapshot=1&since=0");
    assert_eq!(hello["last_seq"], 1, "{hello}");
    // The replay holds the new epoch's one event; the snapshot adds nothing.
    let m = recv_json(&mut ws);
    assert_eq!(
        (m["seq"].as_u64(), &m["data"]),
        (Some(1), &json!({"new": 1})),
        "{m}"
    );
    let m = recv_json(&mut ws);
    assert_eq!(m["type"], "recovered", "{m}");
    assert_eq!(
        (m["complete"].as_bool(), m["to_seq"].as_u64()),
        (Some(true), Some(1))
    );
    let (mut ws, _) = a.subscribe("/ws/dashboard/evict?snapshot=1");
    let mut snap = Vec::new();
    loop {
        let m = recv_json(&mut ws);
        if m["type"] == "snapshot" {
            assert_eq!(m["count"], 1, "{m}: old last values came back: {snap:?}");
            break;
        }
        snap.push(m);
    }
}

/// One request of 600 events is numbered in runs of the publish script (256
/// events at most each): every event arrives once and in order on the other
/// node, history holds the newest `--history-size`, and each key's last value
/// is its newest event, with the oldest keys past the cap evicted.
#[test]
fn a_large_batch_is_numbered_in_runs_with_history_and_last_values_capped() {
    let redis = RedisServer::start(Persistence::None);
    let caps = ["--history-size", "50", "--last-values", "8"];
    let a = node(&[&redis], &caps);
    let b = node(&[&redis], &caps);
    let (mut live, hello) = b.subscribe("/ws/dashboard/runs");
    let epoch = hello["epoch"].as_str().unwrap().to_string();
    let batch: Vec<Value> = (0..600u64)
        .map(|n| {
            json!({"channel":"dashboard","location_id":"runs","event_type":"KPI",
                   "key": format!("k{}", n % 20), "data": {"n": n}})
        })
        .collect();
    let (st, body) = a.publish(&Value::Array(batch).to_string());
    assert_eq!(st, 202, "{body}");
    let got = read_events(&mut live, 600);
    let want: Vec<(u64, u64)> = (0..600).map(|n| (n + 1, n)).collect();
    assert_eq!(got, want);

    // History: the newest 50 only (551..=600), so a resume from 550 is
    // complete and one from 500 is not.
    let (mut ws, _) = a.subscribe(&format!("/ws/dashboard/runs?since=550&epoch={epoch}"));
    for seq in 551..=600u64 {
        let m = recv_json(&mut ws);
        assert_eq!(m["seq"].as_u64(), Some(seq), "{m}");
    }
    let m = recv_json(&mut ws);
    assert_eq!(m["type"], "recovered", "{m}");
    assert_eq!(m["complete"], true, "{m}");
    let (mut ws, _) = b.subscribe(&format!("/ws/dashboard/runs?since=500&epoch={epoch}"));
    let rec = loop {
        let m = recv_json(&mut ws);
        if m["type"] == "recovered" {
            break m;
        }
    };
    assert_eq!(rec["complete"], false, "{rec}");

    // Last values: keys k12..k19 (events 592..599) are the newest 8.
    let (mut ws, hello) = a.subscribe("/ws/dashboard/runs?snapshot=1");
    assert_eq!(hello["last_seq"], 600);
    let mut values = Vec::new();
    loop {
        let m = recv_json(&mut ws);
        if m["type"] == "snapshot" {
            assert_eq!(m["count"], 8, "{m}");
            break;
        }
        values.push((
            m["key"].as_str().unwrap().to_string(),
            m["data"]["n"].as_u64().unwrap(),
        ));
    }
    let want: Vec<(String, u64)> = (592..600u64).map(|n| (format!("k{}", n % 20), n)).collect();
    assert_eq!(values, want);

    // One publisher, no race: the batch went through the transaction, and
    // Redis holds what the script would have left.
    assert_eq!(batches(&a, "transaction"), 1.0);
    assert_eq!(batches(&a, "script"), 0.0);
    let keys = "bistream:{dashboard:runs}";
    assert_eq!(int(&redis, &["LLEN", &format!("{keys}:hist")]), 50);
    assert_eq!(int(&redis, &["HLEN", &format!("{keys}:last")]), 8);
    assert_eq!(int(&redis, &["ZCARD", &format!("{keys}:order")]), 8);
    assert_eq!(
        text(&redis, &["HGET", &format!("{keys}:meta"), "seq"]),
        "600"
    );
    assert_eq!(
        text(&redis, &["HGET", &format!("{keys}:meta"), "epoch"]),
        epoch
    );
    for k in ["meta", "hist", "last", "order"] {
        let ttl = int(&redis, &["PTTL", &format!("{keys}:{k}")]);
        assert!(ttl > 0, "{k} has no TTL ({ttl})");
    }
}

fn batches(s: &Server, path: &str) -> f64 {
    metric(
        &s.metrics(),
        &format!(r#"bistream_engine_publish_batches_total{{path="{path}"}}"#),
    )
}

fn int(redis: &RedisServer, args: &[&str]) -> i64 {
    match redis.query(args) {
        Ok(redis::Value::Int(n)) => n,
        other => panic!("{args:?}: {other:?}"),
    }
}

fn text(redis: &RedisServer, args: &[&str]) -> String {
    match redis.query(args) {
        Ok(redis::Value::BulkString(b)) => String::from_utf8(b).expect("UTF-8"),
        other => panic!("{args:?}: {other:?}"),
    }
}

fn texts(redis: &RedisServer, args: &[&str]) -> Vec<String> {
    match redis.query(args) {
        Ok(redis::Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                redis::Value::BulkString(b) => String::from_utf8(b).expect("UTF-8"),
                other => panic!("{args:?}: {other:?}"),
            })
            .collect(),
        other => panic!("{args:?}: {other:?}"),
    }
}

/// Two nodes publishing to one stream at once: a node's transaction loses the
/// race when the other moved the counter between its read and its `EXEC`,
/// and that batch goes through the script. Whichever way each batch went,
/// every subscriber gets every event once, numbered without a gap, each
/// publisher's events in the order it sent them, and Redis's history, last
/// values and counter agree with what the clients got.
#[test]
fn nodes_racing_for_one_stream_lose_nothing_and_keep_every_order() {
    let redis = RedisServer::start(Persistence::None);
    // Four keys and room for two: both ways trim the last values.
    let caps = ["--history-size", "5000", "--last-values", "2"];
    let nodes = [node(&[&redis], &caps), node(&[&redis], &caps)];
    let mut subs: Vec<Ws> = nodes
        .iter()
        .map(|n| n.subscribe("/ws/dashboard/race").0)
        .collect();
    let stop = AtomicBool::new(false);
    let sent: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
    let conflicts = |nodes: &[Server]| -> f64 {
        nodes
            .iter()
            .map(|n| metric(&n.metrics(), "bistream_engine_publish_conflicts_total"))
            .sum()
    };
    std::thread::scope(|scope| {
        for (t, count) in sent.iter().enumerate() {
            let addr = nodes[t % 2].addr;
            let stop = &stop;
            scope.spawn(move || {
                let mut p = KeepAlivePublisher::connect(addr);
                for i in 0..1500u64 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = json!({"channel":"dashboard","location_id":"race",
                        "event_type":"KPI","key":format!("k{t}"),"data":{"t":t,"i":i}});
                    let (st, b) = p.post(&body.to_string());
                    assert_eq!(st, 202, "{b}");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        // Enough to be sure both ways ran: stop soon after a few races lost.
        let until = Instant::now() + Duration::from_secs(30);
        while conflicts(&nodes) < 5.0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
    });
    let total: u64 = sent.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    assert!(
        conflicts(&nodes) >= 1.0,
        "no transaction ever lost the race"
    );
    assert!(nodes.iter().map(|n| batches(n, "script")).sum::<f64>() >= 1.0);
    for n in &nodes {
        assert!(batches(n, "transaction") >= 1.0);
    }

    let mut delivered = Vec::new();
    for ws in &mut subs {
        let mut got = Vec::new();
        while got.len() < total as usize {
            let m = recv_json(ws);
            assert_eq!(m["type"], "event", "{m}");
            got.push(m);
        }
        let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
        for t in 0..4u64 {
            let mine: Vec<u64> = got
                .iter()
                .filter(|m| m["data"]["t"] == t)
                .map(|m| m["data"]["i"].as_u64().unwrap())
                .collect();
            let want = sent[t as usize].load(Ordering::Relaxed);
            assert_eq!(mine, (0..want).collect::<Vec<_>>(), "publisher {t}");
        }
        delivered = got;
    }

    // Redis agrees: history holds every event as the clients got it, the
    // counter is the last seq, and the last values are the newest keys'.
    let keys = "bistream:{dashboard:race}";
    let hist = texts(&redis, &["LRANGE", &format!("{keys}:hist"), "0", "-1"]);
    assert_eq!(hist.len() as u64, total);
    for (stored, m) in hist.iter().zip(&delivered) {
        let json = stored.splitn(4, '\n').nth(3).expect("stored form");
        assert_eq!(&serde_json::from_str::<Value>(json).unwrap(), m);
    }
    assert_eq!(
        text(&redis, &["HGET", &format!("{keys}:meta"), "seq"]),
        total.to_string()
    );
    // The two keys published last hold their newest event; the other two
    // were forgotten.
    let mut newest: Vec<&Value> = (0..4u64)
        .map(|t| {
            delivered
                .iter()
                .rev()
                .find(|m| m["data"]["t"] == t)
                .expect("an event of each publisher")
        })
        .collect();
    newest.sort_by_key(|m| std::cmp::Reverse(m["seq"].as_u64()));
    assert_eq!(int(&redis, &["HLEN", &format!("{keys}:last")]), 2);
    assert_eq!(int(&redis, &["ZCARD", &format!("{keys}:order")]), 2);
    for m in &newest[..2] {
        let key = format!("k{}", m["data"]["t"]);
        let last = text(&redis, &["HGET", &format!("{keys}:last"), &key]);
        let json = last.splitn(4, '\n').nth(3).expect("stored form");
        assert_eq!(&serde_json::from_str::<Value>(json).unwrap(), *m);
        let score = text(&redis, &["ZSCORE", &format!("{keys}:order"), &key]);
        assert_eq!(score, m["seq"].to_string());
    }
}

/// Redis out of memory (`maxmemory` with `noeviction`): it refuses the
/// publish transaction as a whole, so nothing of the refused requests is
/// applied; their publishers get 503, the node says why in its log, and stays
/// ready (the link is fine). With room again, publishing goes on where it was.
#[test]
fn a_full_redis_refuses_publishes_with_503_and_says_why() {
    let redis = RedisServer::start(Persistence::None);
    let a = node(&[&redis], &[]);
    for (k, v) in [("maxmemory-policy", "noeviction"), ("maxmemory", "3mb")] {
        redis.query(&["CONFIG", "SET", k, v]).expect("CONFIG SET");
    }
    let pad = "x".repeat(10_000);
    let body = json!({"channel":"dashboard","location_id":"full","event_type":"KPI",
                      "data":{"pad": pad}})
    .to_string();
    let mut p = KeepAlivePublisher::connect(a.addr);
    let mut accepted = 0u64;
    let refused = loop {
        let (st, b) = p.post(&body);
        if st != 202 {
            break (st, b);
        }
        accepted += 1;
        assert!(accepted < 2_000, "Redis never filled up");
    };
    assert_eq!(refused.0, 503, "{}", refused.1);
    assert_eq!(refused.1["error"], "engine_unavailable");
    assert!(
        log_line(&a.log, "OOM", Duration::from_secs(5)).is_some(),
        "no log line says Redis is out of memory"
    );
    assert_eq!(a.get("/readyz").0, 200);
    let keys = "bistream:{dashboard:full}";
    assert_eq!(
        text(&redis, &["HGET", &format!("{keys}:meta"), "seq"]),
        accepted.to_string()
    );

    redis
        .query(&["CONFIG", "SET", "maxmemory", "0"])
        .expect("CONFIG SET");
    assert_eq!(p.post(&body).0, 202);
    assert_eq!(
        text(&redis, &["HGET", &format!("{keys}:meta"), "seq"]),
        (accepted + 1).to_string()
    );
}
