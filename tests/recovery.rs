//! Issue 5: stream history and recovery (docs/protocol.md §3) against the real server over real
//! sockets — replay on reconnect, `recovered`, the seam between replay and the
//! live stream under load, and the bounds on history (size, bytes, TTL).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Publishes `n` events of `event_type` to one dashboard stream in one request;
/// `data` of event i is `{"i": first_i + i}`.
fn publish_n(s: &Server, location: &str, event_type: &str, n: usize, first_i: usize) {
    let body: Vec<Value> = (0..n)
        .map(|i| event("dashboard", location, event_type, json!({"i": first_i + i})))
        .collect();
    let (st, resp) = s.publish(&Value::Array(body).to_string());
    assert_eq!((st, &resp), (202, &json!({"accepted": n})));
}

/// The replayed events up to `recovered`, and the `recovered` message.
fn read_recovery(ws: &mut Ws) -> (Vec<Value>, Value) {
    let mut events = Vec::new();
    loop {
        let m = recv_json(ws);
        match m["type"].as_str() {
            Some("event") => events.push(m),
            Some("recovered") => return (events, m),
            _ => panic!("unexpected message during recovery: {m}"),
        }
    }
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

fn recovered(complete: bool, from: Option<u64>, to: Option<u64>) -> Value {
    json!({"type": "recovered", "complete": complete, "from_seq": from, "to_seq": to})
}

/// The epoch a client of `path` is told.
fn epoch_of(s: &Server, path: &str) -> String {
    let (_ws, hello) = s.subscribe(path);
    hello["epoch"].as_str().expect("epoch").to_string()
}

/// Polls /metrics until `name` satisfies `ok`, or panics after `within`.
fn wait_metric(s: &Server, name: &str, within: Duration, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let v = metric(&s.metrics(), name);
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{name} stayed at {v}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reconnect_after_missing_15_events_replays_them_exactly() {
    let s = Server::start(&[]);
    let (mut ws, hello) = s.subscribe("/ws/dashboard/loc-1");
    let epoch = hello["epoch"].as_str().unwrap().to_string();
    assert_eq!(hello["last_seq"], 0);
    publish_n(&s, "loc-1", "REVENUE_UPDATE", 10, 1);
    for want in 1..=10u64 {
        assert_eq!(recv_json(&mut ws)["seq"], want);
    }
    drop(ws);

    publish_n(&s, "loc-1", "REVENUE_UPDATE", 15, 11);
    let (mut ws, hello) = s.subscribe(&format!("/ws/dashboard/loc-1?since=10&epoch={epoch}"));
    assert_eq!(hello["last_seq"], 25);
    assert_eq!(hello["epoch"], epoch.as_str());
    let (events, rec) = read_recovery(&mut ws);
    assert_eq!(seqs(&events), (11..=25).collect::<Vec<u64>>());
    for (e, i) in events.iter().zip(11..) {
        assert_eq!(e["type"], "event");
        assert_eq!(e["channel"], "dashboard");
        assert_eq!(e["location_id"], "loc-1");
        assert_eq!(e["event_type"], "REVENUE_UPDATE");
        assert_eq!(e["data"], json!({"i": i}));
        assert!(e["published_at"].as_u64().is_some());
    }
    assert_eq!(rec, recovered(true, Some(11), Some(25)));

    publish_n(&s, "loc-1", "REVENUE_UPDATE", 1, 26);
    let live = recv_json(&mut ws);
    assert_eq!(
        (live["seq"].as_u64(), &live["data"]),
        (Some(26), &json!({"i": 26}))
    );

    let m = s.metrics();
    assert_eq!(
        metric(&m, r#"bistream_recoveries_total{complete="true"}"#),
        1.0
    );
    assert_eq!(
        metric(&m, r#"bistream_recoveries_total{complete="false"}"#),
        0.0
    );
}

#[test]
fn since_equal_to_the_current_seq_replays_nothing_and_is_complete() {
    let s = Server::start(&[]);
    let epoch = epoch_of(&s, "/ws/dashboard/loc-1");
    publish_n(&s, "loc-1", "E", 5, 1);
    let (mut ws, hello) = s.subscribe(&format!("/ws/dashboard/loc-1?since=5&epoch={epoch}"));
    assert_eq!(hello["last_seq"], 5);
    assert_eq!(recv_json(&mut ws), recovered(true, None, None));
    publish_n(&s, "loc-1", "E", 1, 6);
    assert_eq!(recv_json(&mut ws)["seq"], 6);

    // A client that saw nothing yet of an empty stream: since=0 is complete too.
    let (mut ws, hello) = s.subscribe("/ws/dashboard/fresh?since=0");
    assert_eq!(hello["last_seq"], 0);
    assert_eq!(recv_json(&mut ws), recovered(true, None, None));
}

#[test]
fn a_gap_larger_than_the_history_replays_what_is_left_and_is_incomplete() {
    let s = Server::start(&["--history-size", "10"]);
    let epoch = epoch_of(&s, "/ws/dashboard/loc-1");
    publish_n(&s, "loc-1", "E", 50, 1);
    let (mut ws, hello) = s.subscribe(&format!("/ws/dashboard/loc-1?since=5&epoch={epoch}"));
    assert_eq!(hello["last_seq"], 50);
    let (events, rec) = read_recovery(&mut ws);
    assert_eq!(seqs(&events), (41..=50).collect::<Vec<u64>>());
    assert_eq!(rec, recovered(false, Some(41), Some(50)));
    publish_n(&s, "loc-1", "E", 1, 51);
    assert_eq!(recv_json(&mut ws)["seq"], 51);

    // Just inside the history: complete.
    let (mut ws, _) = s.subscribe(&format!("/ws/dashboard/loc-1?since=41&epoch={epoch}"));
    let (events, rec) = read_recovery(&mut ws);
    assert_eq!(seqs(&events), (42..=51).collect::<Vec<u64>>());
    assert_eq!(rec, recovered(true, Some(42), Some(51)));
}

#[test]
fn a_wrong_epoch_replays_nothing_and_is_incomplete() {
    let s = Server::start(&[]);
    publish_n(&s, "loc-1", "E", 5, 1);
    let (mut ws, hello) = s.subscribe("/ws/dashboard/loc-1?since=2&epoch=not-this-one");
    assert_eq!(hello["last_seq"], 5);
    assert_ne!(hello["epoch"], "not-this-one");
    assert_eq!(recv_json(&mut ws), recovered(false, None, None));
    publish_n(&s, "loc-1", "E", 1, 6);
    assert_eq!(recv_json(&mut ws)["seq"], 6);
}

#[test]
fn an_absent_epoch_means_the_current_one() {
    let s = Server::start(&[]);
    publish_n(&s, "loc-1", "E", 5, 1);
    let (mut ws, _) = s.subscribe("/ws/dashboard/loc-1?since=2");
    let (events, rec) = read_recovery(&mut ws);
    assert_eq!(seqs(&events), vec![3, 4, 5]);
    assert_eq!(rec, recovered(true, Some(3), Some(5)));
    // An empty `epoch=` is the same as none.
    let (mut ws, _) = s.subscribe("/ws/dashboard/loc-1?since=4&epoch=");
    let (events, rec) = read_recovery(&mut ws);
    assert_eq!(seqs(&events), vec![5]);
    assert_eq!(rec, recovered(true, Some(5), Some(5)));
}

#[test]
fn since_beyond_the_current_seq_replays_nothing_and_is_incomplete() {
    let s = Server::start(&[]);
    let epoch = epoch_of(&s, "/ws/dashboard/loc-1");
    publish_n(&s, "loc-1", "E", 5, 1);
    let (mut ws, hello) = s.subscribe(&format!("/ws/dashboard/loc-1?since=9&epoch={epoch}"));
    assert_eq!(hello["last_seq"], 5);
    assert_eq!(recv_json(&mut ws), recovered(false, None, None));
    publish_n(&s, "loc-1", "E", 1, 6);
    assert_eq!(recv_json(&mut ws)["seq"], 6);
}

#[test]
fn a_malformed_since_is_a_400_with_a_json_body() {
    let s = Server::start(&[]);
    for since in ["abc", "-1", "1.5", "", "+3", "1e3", "0x10", "%20"] {
        let req = upgrade_request(&format!("/ws/dashboard/loc-1?since={since}"), "");
        let (st, head, body) = http_raw(s.addr, req.as_bytes());
        assert_eq!(st, 400, "since={since:?}: {head}{body}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        let v: Value = serde_json::from_str(&body).expect("a JSON body");
        assert_eq!(v["error"], "invalid_since", "since={since:?}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains("since")),
            "{v}"
        );
    }
    // The server serves everyone else meanwhile.
    let (_ws, hello) = s.subscribe("/ws/dashboard/loc-1?since=0");
    assert_eq!(hello["last_seq"], 0);
}

#[test]
fn the_events_filter_applies_to_the_replay() {
    let s = Server::start(&[]);
    let epoch = epoch_of(&s, "/ws/dashboard/loc-1");
    // seq 1..=10, odd seqs are A, even seqs are B.
    for i in 1..=10 {
        publish_n(&s, "loc-1", if i % 2 == 1 { "A" } else { "B" }, 1, i);
    }
    let (mut ws, hello) = s.subscribe(&format!(
        "/ws/dashboard/loc-1?since=2&epoch={epoch}&events=B"
    ));
    assert_eq!(hello["last_seq"], 10);
    let (events, rec) = read_recovery(&mut ws);
    assert_eq!(seqs(&events), vec![4, 6, 8, 10]);
    assert!(events.iter().all(|e| e["event_type"] == "B"));
    assert_eq!(rec, recovered(true, Some(4), Some(10)));
    // Live events are filtered the same way.
    publish_n(&s, "loc-1", "A", 1, 11);
    publish_n(&s, "loc-1", "B", 1, 12);
    assert_eq!(recv_json(&mut ws)["seq"], 12);

    // Everything missed was filtered out: nothing replayed, yet nothing missed.
    let (mut ws, _) = s.subscribe(&format!(
        "/ws/dashboard/loc-1?since=10&epoch={epoch}&events=A,C"
    ));
    let (events, rec) = read_recovery(&mut ws);
    assert_eq!(seqs(&events), vec![11]);
    assert_eq!(rec, recovered(true, Some(11), Some(11)));
    let (mut ws, _) = s.subscribe(&format!(
        "/ws/dashboard/loc-1?since=11&epoch={epoch}&events=A"
    ));
    assert_eq!(recv_json(&mut ws), recovered(true, None, None));
}

#[test]
fn history_size_zero_disables_recovery() {
    // Last values off too: they would keep the unwatched stream (and its
    // numbering) alive for snapshots (docs/protocol.md §9).
    let s = Server::start(&["--history-size", "0", "--last-values", "0"]);
    // A client that stays, so that the stream is remembered (seq keeps counting).
    let (mut stay, hello) = s.subscribe("/ws/dashboard/loc-1");
    let epoch = hello["epoch"].as_str().unwrap().to_string();
    publish_n(&s, "loc-1", "E", 5, 1);
    for want in 1..=5u64 {
        assert_eq!(recv_json(&mut stay)["seq"], want);
    }
    let (mut late, hello) = s.subscribe(&format!("/ws/dashboard/loc-1?since=2&epoch={epoch}"));
    // seq still counts, so the client can tell that it missed something.
    assert_eq!(hello["last_seq"], 5);
    assert_eq!(recv_json(&mut late), recovered(false, None, None));
    publish_n(&s, "loc-1", "E", 1, 6);
    assert_eq!(recv_json(&mut late)["seq"], 6);
    // Nothing missed needs no history: still complete.
    let (mut caught_up, _) = s.subscribe(&format!("/ws/dashboard/loc-1?since=6&epoch={epoch}"));
    assert_eq!(recv_json(&mut caught_up), recovered(true, None, None));
    assert_eq!(metric(&s.metrics(), "bistream_history_bytes"), 0.0);
    assert_eq!(
        metric(
            &s.metrics(),
            r#"bistream_recoveries_total{complete="false"}"#
        ),
        1.0
    );

    // With nothing to replay, a stream nobody watches is not kept: the next
    // publish numbers a new stream, under a new epoch.
    drop((stay, late, caught_up));
    wait_metric(
        &s,
        r#"bistream_connections{channel="dashboard"}"#,
        Duration::from_secs(5),
        |v| v == 0.0,
    );
    publish_n(&s, "loc-1", "E", 1, 7);
    wait_metric(
        &s,
        "bistream_events_published_total",
        Duration::from_secs(5),
        |v| v == 7.0,
    );
    let (mut ws, hello) = s.subscribe(&format!("/ws/dashboard/loc-1?since=6&epoch={epoch}"));
    assert_eq!(hello["last_seq"], 0);
    assert_ne!(hello["epoch"], epoch.as_str());
    assert_eq!(recv_json(&mut ws), recovered(false, None, None));
}

#[test]
fn last_seq_in_established_is_the_current_seq_of_that_stream() {
    let s = Server::start(&[]);
    publish_n(&s, "a", "E", 7, 1);
    publish_n(&s, "b", "E", 3, 1);
    assert_eq!(s.subscribe("/ws/dashboard/a").1["last_seq"], 7);
    assert_eq!(s.subscribe("/ws/dashboard/b").1["last_seq"], 3);
    assert_eq!(s.subscribe("/ws/dashboard/c").1["last_seq"], 0);
    // Another channel with the same location is another stream.
    assert_eq!(s.subscribe("/ws/ai-concierge/a").1["last_seq"], 0);
    // With `since`, too.
    let (mut ws, hello) = s.subscribe("/ws/dashboard/a?since=7");
    assert_eq!(hello["last_seq"], 7);
    assert_eq!(recv_json(&mut ws), recovered(true, None, None));
}

/// Posts batches of `batch` events to dashboard/`location` at `rate` events a
/// second over one keep-alive connection until `stop`: (events sent, time taken).
fn spawn_publisher(
    addr: std::net::SocketAddr,
    location: &'static str,
    batch: usize,
    rate: f64,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(usize, Duration)> {
    thread::spawn(move || {
        let body = Value::Array(
            (0..batch)
                .map(|i| {
                    event(
                        "dashboard",
                        location,
                        "TICK",
                        json!({"i": i, "pad": "x".repeat(40)}),
                    )
                })
                .collect(),
        )
        .to_string();
        let mut p = KeepAlivePublisher::connect(addr);
        let start = Instant::now();
        let mut sent = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let (st, resp) = p.post(&body);
            assert_eq!((st, &resp), (202, &json!({"accepted": batch})));
            sent += batch;
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        (sent, start.elapsed())
    })
}

/// A subscriber that stays connected all along and checks its own seqs; it
/// keeps live batches of the stream flowing into its loop while others reconnect.
fn spawn_witness(url: String, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut ws = connect(&url);
        let hello = recv_json(&mut ws);
        let first = hello["last_seq"].as_u64().unwrap();
        let mut last = first;
        set_timeout(&mut ws, Duration::from_millis(200));
        while !stop.load(Ordering::Relaxed) {
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    let e: Value = serde_json::from_str(t.as_str()).unwrap();
                    assert_eq!(
                        e["seq"].as_u64(),
                        Some(last + 1),
                        "witness after seq {last}"
                    );
                    last += 1;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("witness: {e}"),
            }
        }
        last - first
    })
}

/// The hard part (docs/protocol.md §3): reconnects while ~5,000 events a second go to the same
/// stream; across every seam the client sees each seq exactly once, in order.
///
/// Two publishers (batches of 20 and single events) interleave finely with the
/// subscriptions in the publisher's inbox; four witnesses keep the stream live
/// on the loops, so the ack really is cut into a flow of live batches; every
/// third round the new connection opens before the old one is dropped.
#[test]
fn seqs_are_consecutive_across_the_seam_under_load() {
    const ROUNDS: usize = 50;
    let s = Server::start(&["--threads", "2"]);
    let stop = Arc::new(AtomicBool::new(false));
    let witnesses: Vec<_> = (0..4)
        .map(|_| spawn_witness(s.url("/ws/dashboard/hot"), stop.clone()))
        .collect();
    let publishers = [
        spawn_publisher(s.addr, "hot", 20, 4000.0, stop.clone()),
        spawn_publisher(s.addr, "hot", 1, 1000.0, stop.clone()),
    ];

    // Reads `n` live events, each the successor of `last`.
    let read_live = |ws: &mut Ws, last: &mut u64, n: usize, round: usize| {
        for _ in 0..n {
            let e = recv_json(ws);
            assert_eq!(e["type"], "event", "{e}");
            assert_eq!(
                e["seq"].as_u64(),
                Some(*last + 1),
                "round {round}: live event after seq {last}"
            );
            *last += 1;
        }
    };

    let (mut ws, hello) = s.subscribe("/ws/dashboard/hot");
    let epoch = hello["epoch"].as_str().unwrap().to_string();
    let mut last = hello["last_seq"].as_u64().unwrap();
    read_live(&mut ws, &mut last, 50, 0);
    let (mut replayed_total, mut empty_replays) = (0u64, 0usize);
    let t0 = Instant::now();
    for round in 0..ROUNDS {
        let overlap = round % 3 == 2;
        let old = if overlap {
            Some(ws)
        } else {
            drop(ws);
            // Miss between none and ~200 events.
            thread::sleep(Duration::from_millis((round as u64 * 7) % 40));
            None
        };
        let since = last;
        let (mut w, hello) = s.subscribe(&format!("/ws/dashboard/hot?since={since}&epoch={epoch}"));
        drop(old);
        assert_eq!(hello["epoch"], epoch.as_str());
        let cut = hello["last_seq"].as_u64().unwrap();
        assert!(
            cut >= since,
            "round {round}: last_seq {cut} < since {since}"
        );
        let (events, rec) = read_recovery(&mut w);
        for e in &events {
            assert_eq!(
                e["seq"].as_u64(),
                Some(last + 1),
                "round {round}: replay after seq {last}"
            );
            last += 1;
        }
        // The replay ends exactly at the cut-over point named in the hello.
        assert_eq!(last, cut, "round {round}: replay stopped short of last_seq");
        let n = events.len() as u64;
        replayed_total += n;
        if n == 0 {
            empty_replays += 1;
            assert_eq!(rec, recovered(true, None, None), "round {round}");
        } else {
            assert_eq!(
                rec,
                recovered(true, Some(since + 1), Some(cut)),
                "round {round}"
            );
        }
        // Live picks up at the next seq.
        read_live(&mut w, &mut last, 20 + (round * 13) % 100, round);
        ws = w;
    }
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut published = 0;
    for p in publishers {
        let (sent, t) = p.join().expect("publisher thread");
        published += sent;
        eprintln!(
            "seam: a publisher sent {sent} at {:.0}/s",
            sent as f64 / t.as_secs_f64()
        );
    }
    let seen: Vec<u64> = witnesses
        .into_iter()
        .map(|w| w.join().expect("witness thread"))
        .collect();
    let rate = published as f64 / took.as_secs_f64();
    eprintln!(
        "seam: {ROUNDS} reconnects in {took:?}, {replayed_total} events replayed \
         ({empty_replays} empty replays), {published} published (~{rate:.0}/s), witnesses saw {seen:?}"
    );
    assert!(
        rate > 3000.0,
        "the publishers managed only {rate:.0} events/s"
    );
    assert!(
        replayed_total > 0,
        "no reconnect missed anything: the test proved nothing"
    );
    assert!(
        seen.iter().all(|n| *n > 0),
        "a witness saw nothing: {seen:?}"
    );
    let m = s.metrics();
    assert_eq!(
        metric(&m, r#"bistream_recoveries_total{complete="true"}"#),
        ROUNDS as f64
    );
    assert_eq!(
        metric(&m, r#"bistream_recoveries_total{complete="false"}"#),
        0.0
    );
}

#[test]
fn a_replay_larger_than_the_queue_bound_reaches_a_client_that_reads() {
    let s = Server::start(&["--max-queue-bytes", "64KiB"]);
    let epoch = epoch_of(&s, "/ws/dashboard/big");
    // 400 events of ~1 KiB: ~400 KiB of history, far over the 64 KiB bound.
    for chunk in 0..4 {
        let body: Vec<Value> = (0..100)
            .map(|i| {
                event(
                    "dashboard",
                    "big",
                    "E",
                    json!({"i": chunk * 100 + i, "pad": "x".repeat(1000)}),
                )
            })
            .collect();
        assert_eq!(s.publish(&Value::Array(body).to_string()).0, 202);
    }
    let before = metric(&s.metrics(), "bistream_slow_consumer_disconnects_total");
    // The replay is fed into the socket as the client reads: never more than
    // the bound of it queued, and all of it delivered (docs/protocol.md §6).
    let (mut ws, hello) = s.subscribe(&format!("/ws/dashboard/big?since=0&epoch={epoch}"));
    assert_eq!(hello["last_seq"], 400);
    let (events, rec) = read_recovery(&mut ws);
    assert_eq!(seqs(&events), (1..=400).collect::<Vec<u64>>());
    assert_eq!(rec, recovered(true, Some(1), Some(400)));
    assert_eq!(
        metric(&s.metrics(), "bistream_slow_consumer_disconnects_total"),
        before
    );

    // A replay that fits is served too, and the stream stays usable.
    let (mut ws, _) = s.subscribe(&format!("/ws/dashboard/big?since=380&epoch={epoch}"));
    let (events, rec) = read_recovery(&mut ws);
    assert_eq!(seqs(&events), (381..=400).collect::<Vec<u64>>());
    assert_eq!(rec, recovered(true, Some(381), Some(400)));
}

/// `n_posts` requests of 1000 events, event j of request r going to
/// dashboard/`loc-{f(r, j)}` with ~60 bytes of data.
fn publish_spread(s: &Server, n_posts: usize, loc: impl Fn(usize, usize) -> usize) {
    let mut p = KeepAlivePublisher::connect(s.addr);
    for r in 0..n_posts {
        let body: Vec<Value> = (0..1000)
            .map(|j| {
                let location = format!("loc-{}", loc(r, j));
                event(
                    "dashboard",
                    &location,
                    "E",
                    json!({"r": r, "pad": "y".repeat(60)}),
                )
            })
            .collect();
        let (st, resp) = p.post(&Value::Array(body).to_string());
        assert_eq!((st, &resp), (202, &json!({"accepted": 1000})));
    }
    // A 202 means the publisher has the batch, not that it has numbered it yet.
    let want = (n_posts * 1000) as f64;
    let name = "bistream_events_published_total";
    wait_metric(s, name, Duration::from_secs(20), |v| v >= want);
}

#[test]
fn history_memory_is_bounded_under_ten_thousand_streams() {
    const CAP: f64 = 1024.0 * 1024.0;
    // Last values get a cap of the same size: they too keep streams alive.
    let s = Server::start(&[
        "--history-max-bytes",
        "1MiB",
        "--last-values-max-bytes",
        "1MiB",
    ]);
    let rss_start = s.rss_kib();
    // One of the streams has a subscriber all along.
    let (mut watch, hello) = s.subscribe("/ws/dashboard/loc-0");
    let epoch = hello["epoch"].as_str().unwrap().to_string();
    // 10,000 locations x 10 events of ~190 bytes: ~19 MB through a 1 MiB cap.
    // Ten requests in a row go to the same 1000 locations.
    publish_spread(&s, 100, |r, j| (r / 10) * 1000 + j);
    let m = s.metrics();
    let bytes = metric(&m, "bistream_history_bytes");
    assert!(bytes <= CAP, "history bytes {bytes} over the 1 MiB cap");
    assert!(
        bytes > CAP / 2.0,
        "history bytes {bytes}: the cap should be nearly used"
    );
    // Only the streams that still have history (the newest events) or a
    // subscriber are remembered.
    let streams = metric(&m, "bistream_history_streams");
    assert!((1000.0..10_000.0).contains(&streams), "{streams} streams");
    let rss = s.rss_kib();
    eprintln!(
        "rss: {rss_start} KiB at start, {rss} KiB after 10,000 streams; {streams} streams kept"
    );
    assert!(
        rss < rss_start + 64 * 1024,
        "RSS grew from {rss_start} to {rss} KiB"
    );
    for want in 1..=10u64 {
        assert_eq!(recv_json(&mut watch)["seq"], want);
    }

    // Recovery on an evicted stream is honest. The watched one kept its seq
    // and epoch, its history is gone:
    let (mut ws, hello) = s.subscribe(&format!("/ws/dashboard/loc-0?since=1&epoch={epoch}"));
    assert_eq!(hello["last_seq"], 10);
    assert_eq!(hello["epoch"], epoch.as_str());
    assert_eq!(recv_json(&mut ws), recovered(false, None, None));
    // an unwatched one with no history left was forgotten: a new stream.
    let (mut ws, hello) = s.subscribe("/ws/dashboard/loc-1?since=1");
    assert_eq!(hello["last_seq"], 0);
    assert_eq!(recv_json(&mut ws), recovered(false, None, None));
    // The newest events are still there (the oldest went first).
    let (mut ws, hello) = s.subscribe("/ws/dashboard/loc-9999?since=8");
    assert_eq!(hello["last_seq"], 10);
    let (events, rec) = read_recovery(&mut ws);
    assert_eq!(seqs(&events), vec![9, 10]);
    assert_eq!(rec, recovered(true, Some(9), Some(10)));
}

/// Publishers that invent a new location for every event must not grow the
/// server: the streams themselves (not only their frames) stay bounded.
#[test]
fn invented_locations_do_not_grow_memory() {
    let s = Server::start(&[
        "--history-max-bytes",
        "1MiB",
        "--last-values-max-bytes",
        "1MiB",
    ]);
    let rss_start = s.rss_kib();
    publish_spread(&s, 200, |r, j| r * 1000 + j);
    let m = s.metrics();
    let streams = metric(&m, "bistream_history_streams");
    let bytes = metric(&m, "bistream_history_bytes");
    let rss = s.rss_kib();
    eprintln!("invented: 200,000 locations; {streams} streams and {bytes} bytes kept; rss {rss_start} -> {rss} KiB");
    assert!(bytes <= 1024.0 * 1024.0);
    // 1 MiB holds ~5,500 of these frames, one stream each.
    assert!(streams <= 10_000.0, "{streams} streams kept");
    assert!(
        rss < rss_start + 48 * 1024,
        "RSS grew from {rss_start} to {rss} KiB"
    );
}

#[test]
fn an_idle_stream_without_subscribers_is_forgotten_after_the_ttl() {
    let s = Server::start(&["--history-ttl", "2s"]);
    let (ws, hello) = s.subscribe("/ws/dashboard/gone");
    let old_epoch = hello["epoch"].as_str().unwrap().to_string();
    drop(ws);
    publish_n(&s, "gone", "E", 3, 1);
    // A stream with a subscriber stays, however idle.
    let (mut kept, _) = s.subscribe("/ws/dashboard/kept");
    publish_n(&s, "kept", "E", 2, 1);
    assert_eq!(recv_json(&mut kept)["seq"], 1);
    assert_eq!(recv_json(&mut kept)["seq"], 2);
    wait_metric(
        &s,
        "bistream_history_streams",
        Duration::from_secs(5),
        |v| v == 2.0,
    );
    assert!(metric(&s.metrics(), "bistream_history_bytes") > 0.0);

    let t0 = Instant::now();
    wait_metric(
        &s,
        "bistream_history_streams",
        Duration::from_secs(8),
        |v| v == 1.0,
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "forgotten before its TTL"
    );

    // The forgotten stream starts again at seq 1...
    let (mut ws, hello) = s.subscribe("/ws/dashboard/gone");
    assert_eq!(hello["last_seq"], 0);
    // ...under a new epoch, so that an old client's `since` cannot be taken
    // for a seq of the new numbering.
    let new_epoch = hello["epoch"].as_str().unwrap().to_string();
    assert_ne!(new_epoch, old_epoch, "a forgotten stream kept its epoch");
    publish_n(&s, "gone", "E", 5, 1);
    for want in 1..=5u64 {
        assert_eq!(recv_json(&mut ws)["seq"], want);
    }
    // The client that saw seq 2 before the stream was forgotten is told it
    // missed something, not handed seqs 3..5 of the new numbering.
    let (mut old, _) = s.subscribe(&format!("/ws/dashboard/gone?since=2&epoch={old_epoch}"));
    assert_eq!(recv_json(&mut old), recovered(false, None, None));
    let (mut cur, _) = s.subscribe(&format!("/ws/dashboard/gone?since=2&epoch={new_epoch}"));
    let (events, rec) = read_recovery(&mut cur);
    assert_eq!(seqs(&events), vec![3, 4, 5]);
    assert_eq!(rec, recovered(true, Some(3), Some(5)));

    // The subscribed stream kept its numbering and its history.
    publish_n(&s, "kept", "E", 1, 3);
    assert_eq!(recv_json(&mut kept)["seq"], 3);
    let (mut again, _) = s.subscribe("/ws/dashboard/kept?since=0");
    let (events, _) = read_recovery(&mut again);
    assert_eq!(seqs(&events), vec![1, 2, 3]);
}

#[test]
fn recovery_metrics_count_complete_and_incomplete() {
    let s = Server::start(&["--history-size", "5"]);
    let name_t = r#"bistream_recoveries_total{complete="true"}"#;
    let name_f = r#"bistream_recoveries_total{complete="false"}"#;
    let epoch = epoch_of(&s, "/ws/dashboard/m");
    publish_n(&s, "m", "E", 20, 1);
    // A 202 means the publisher has the batch, not that it has numbered it yet.
    wait_metric(
        &s,
        "bistream_events_published_total",
        Duration::from_secs(5),
        |v| v == 20.0,
    );
    let m = s.metrics();
    assert_eq!((metric(&m, name_t), metric(&m, name_f)), (0.0, 0.0));
    assert!(metric(&m, "bistream_history_bytes") > 0.0);
    assert_eq!(metric(&m, "bistream_history_streams"), 1.0);

    let connect = |q: &str| {
        let (mut ws, _) = s.subscribe(&format!("/ws/dashboard/m?{q}"));
        read_recovery(&mut ws).1["complete"].as_bool().unwrap()
    };
    assert!(connect(&format!("since=18&epoch={epoch}")));
    assert!(connect("since=20"));
    assert!(!connect(&format!("since=1&epoch={epoch}")));
    assert!(!connect("since=5&epoch=other"));
    assert!(!connect("since=99"));
    // No `since`: not a recovery, not counted.
    let (_ws, _) = s.subscribe("/ws/dashboard/m");
    let m = s.metrics();
    assert_eq!((metric(&m, name_t), metric(&m, name_f)), (2.0, 3.0));
}

/// docs/protocol.md §5: `location_id: "*"` reaches the streams that have subscribers at that
/// moment. A stream whose only client is between two connections is not one
/// of them: the event is not numbered for it, so there is nothing to recover
/// (documented in docs/recovery.md).
#[test]
fn a_star_publish_numbers_only_streams_with_subscribers() {
    let s = Server::start(&[]);
    let (mut a, _) = s.subscribe("/ws/dashboard/a");
    let (b, hello) = s.subscribe("/ws/dashboard/b");
    let epoch_b = hello["epoch"].as_str().unwrap().to_string();
    drop(b);
    let gauge = r#"bistream_connections{channel="dashboard"}"#;
    wait_metric(&s, gauge, Duration::from_secs(5), |v| v == 1.0);
    let star = event("dashboard", "*", "BROADCAST", json!(null));
    assert_eq!(s.publish(&star.to_string()).0, 202);
    let got = recv_json(&mut a);
    assert_eq!(
        (got["location_id"].as_str(), got["seq"].as_u64()),
        (Some("a"), Some(1))
    );
    let (mut b, hello) = s.subscribe(&format!("/ws/dashboard/b?since=0&epoch={epoch_b}"));
    assert_eq!(hello["last_seq"], 0);
    assert_eq!(recv_json(&mut b), recovered(true, None, None));
}
