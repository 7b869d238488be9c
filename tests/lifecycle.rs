//! Connection lifecycle (docs/protocol.md §1, §6): slow consumers, handshake
//! deadlines, heartbeats, ping floods, accept back-off and the graceful drain.
//! Every test also checks that a healthy client alongside keeps receiving.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::Message;

const SLOW_METRIC: &str = "bistream_slow_consumer_disconnects_total";

/// Reads events of one stream until one of type `END`; asserts that the seqs
/// run 1, 2, 3… without a gap. Returns how many events came before `END`.
fn read_all_events(mut ws: Ws, progress: Arc<AtomicU64>) -> u64 {
    let mut last = 0u64;
    loop {
        let m = recv_json(&mut ws);
        if m["type"] != "event" {
            continue;
        }
        let seq = m["seq"].as_u64().expect("seq");
        assert_eq!(
            seq,
            last + 1,
            "a healthy reader skipped from {last} to {seq}"
        );
        last = seq;
        if m["event_type"] == "END" {
            return last - 1;
        }
        progress.store(last, Ordering::Release);
    }
}

#[test]
fn a_client_that_never_reads_gets_1013_and_the_others_get_everything() {
    let s = Server::start(&[]);
    let path = "/ws/dashboard/fast";
    let mut healthy = Healthy::new(&s);
    let mut readers = Vec::new();
    let mut progress = Vec::new();
    for _ in 0..3 {
        let (ws, _) = s.subscribe(path);
        let p = Arc::new(AtomicU64::new(0));
        progress.push(p.clone());
        readers.push(thread::spawn(move || read_all_events(ws, p)));
    }
    let mut lazy = Some(RawWs::subscribe(s.addr, path));
    let rss0 = s.rss_kib();
    let mut rss_max = rss0;

    // 4 KB events as fast as the healthy readers take them, until the lazy
    // client has been cut off, then as many again.
    let (batch, size) = (25usize, 4000usize);
    let body = event_batch("dashboard", "fast", batch, size);
    let mut published = 0u64;
    let mut cut_at = None;
    let mut lazy_reader = None;
    let t0 = Instant::now();
    while cut_at.is_none_or(|c| published < 2 * c) && published < 12_000 {
        let behind = progress
            .iter()
            .map(|p| published - p.load(Ordering::Acquire).min(published))
            .max();
        if behind.unwrap_or(0) > 200 {
            thread::sleep(Duration::from_millis(1));
            continue;
        }
        let (st, b) = s.publish(&body);
        assert_eq!(st, 202, "{b}");
        published += batch as u64;
        if cut_at.is_none() && published.is_multiple_of(100) && s.metric(SLOW_METRIC) >= 1.0 {
            cut_at = Some(published);
            // Read the lazy client now, within the close linger: it must see
            // whole frames in order, the half-written one finished, then 1013.
            let mut ws = lazy.take().expect("read once");
            lazy_reader = Some(thread::spawn(move || {
                let mut last = 0u64;
                loop {
                    let f = ws
                        .frame()
                        .expect("read the lazy client")
                        .expect("a close before EOF");
                    match f.opcode {
                        1 => {
                            let seq = f.json()["seq"].as_u64().expect("seq");
                            assert_eq!(seq, last + 1, "torn or reordered stream");
                            last = seq;
                        }
                        8 => return (f.close(), last, ws.closed_within(Duration::from_secs(3))),
                        _ => {}
                    }
                }
            }));
        }
        rss_max = rss_max.max(s.rss_kib());
    }
    let cut_at = cut_at.expect("the client that never reads was never cut off");
    let (st, _) =
        s.publish(&event("dashboard", "fast", "END", serde_json::Value::Null).to_string());
    assert_eq!(st, 202);
    for r in readers {
        assert_eq!(
            r.join().expect("healthy reader"),
            published,
            "a healthy reader missed events"
        );
    }
    let (close, got, tcp_closed) = lazy_reader.unwrap().join().expect("lazy reader");
    assert_eq!(close, Some((1013, "slow consumer".to_string())));
    assert!(
        got > 0 && got < cut_at,
        "the lazy client got {got} of {cut_at} events"
    );
    assert!(tcp_closed, "TCP still open after the 1013");
    assert_eq!(
        s.metric(SLOW_METRIC),
        1.0,
        "only the lazy client is a slow consumer"
    );
    // Memory: the lazy client held at most its queue bound, the history is bounded.
    assert!(
        rss_max < rss0 + 64 * 1024,
        "RSS grew from {rss0} KiB to {rss_max} KiB"
    );
    healthy.check(&s);
    eprintln!(
        "slow consumer: {published} events of {size} B in {:?}, cut after {cut_at}, it got {got}; RSS {rss0}→{rss_max} KiB",
        t0.elapsed()
    );
}

#[test]
fn a_client_that_never_reads_is_disconnected_within_about_a_second() {
    let s = Server::start(&[]);
    let mut healthy = Healthy::new(&s);
    let mut lazy = RawWs::subscribe(s.addr, "/ws/dashboard/lazy");
    let body = event_batch("dashboard", "lazy", 25, 4000);
    let fds0 = s.fd_count();
    let mut sent = 0;
    while s.metric(SLOW_METRIC) < 1.0 {
        assert!(sent < 4000, "never cut off");
        for _ in 0..4 {
            assert_eq!(s.publish(&body).0, 202);
            sent += 25;
        }
    }
    let cut = Instant::now();
    // Its socket leaves the server's descriptor table after the linger,
    // although the client has not read a byte.
    assert!(
        wait_until(Duration::from_secs(3), || s.fd_count() < fds0),
        "server still holds the socket of the client that never reads"
    );
    let took = cut.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "closed {took:?} after the cut"
    );
    // What the kernel had is still delivered, then the stream ends.
    lazy.set_timeout(Duration::from_secs(5));
    let mut chunk = vec![0u8; 1 << 16];
    let mut total = 0usize;
    loop {
        match lazy.s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    assert!(total > 0);
    healthy.check(&s);
    eprintln!("never-reader: closed {took:?} after the cut; {total} bytes were in the kernel");
}

#[test]
fn three_thousand_half_open_connections_are_closed_at_the_handshake_timeout() {
    let s = Server::start(&["--handshake-timeout", "1s"]);
    let mut healthy = Healthy::new(&s);
    let fds0 = s.fd_count();
    let t0 = Instant::now();
    let mut socks = Vec::with_capacity(3000);
    for i in 0..3000 {
        let mut c = TcpStream::connect(s.addr).expect("connect");
        if i % 2 == 0 {
            // Half of them start a head and never finish it.
            c.write_all(b"GET /ws/dashboard/loc-1 HTTP/1.1\r\nHost: t\r\n")
                .unwrap();
        }
        socks.push(c);
    }
    let connected = t0.elapsed();
    // A valid client is served during the flood.
    let t = Instant::now();
    assert_serving(&s);
    healthy.check(&s);
    let served = t.elapsed();
    assert!(
        served < Duration::from_secs(2),
        "serving took {served:?} during the flood"
    );
    // The last connections are younger than the timeout: still open.
    if t0.elapsed() < Duration::from_millis(900) {
        let last = socks.last_mut().unwrap();
        last.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(last.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "closed before its deadline"
        );
        last.set_nonblocking(false).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(5), || s.fd_count() <= fds0 + 2),
        "server still holds {} descriptors (had {fds0})",
        s.fd_count()
    );
    let all_closed = t0.elapsed();
    let (mut timeouts, mut eofs) = (0, 0);
    for (i, mut c) in socks.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = Vec::new();
        match c.read_to_end(&mut got) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connection {i} not closed: {e}"),
        }
        if got.starts_with(b"HTTP/1.1 408") {
            timeouts += 1;
        } else {
            assert!(
                got.is_empty(),
                "unexpected answer {:?}",
                String::from_utf8_lossy(&got)
            );
            eofs += 1;
        }
    }
    assert_eq!(timeouts + eofs, 3000);
    assert!(timeouts >= 1400, "a started head gets 408 (got {timeouts})");
    healthy.check(&s);
    eprintln!(
        "half-open flood: connected in {connected:?}, served in {served:?}, all closed after {all_closed:?} \
         ({timeouts} answered 408, {eofs} closed silently)"
    );
}

#[test]
fn a_slowloris_head_is_cut_at_the_deadline_from_accept() {
    let s = Server::start(&["--handshake-timeout", "1s"]);
    let mut healthy = Healthy::new(&s);
    let mut c = TcpStream::connect(s.addr).unwrap();
    let t0 = Instant::now();
    let mut w = c.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = thread::spawn(move || {
        let mut n = 0;
        for b in upgrade_request("/ws/dashboard/loc-1", "").bytes() {
            if stop2.load(Ordering::Relaxed) || w.write_all(&[b]).is_err() {
                break;
            }
            n += 1;
            thread::sleep(Duration::from_millis(200));
        }
        n
    });
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    let took = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = writer.join().unwrap();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(1600),
        "cut after {took:?} ({sent} bytes sent), not at the 1 s deadline"
    );
    assert!(
        got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    healthy.check(&s);
    eprintln!("slowloris: cut after {took:?} having sent {sent} bytes");
}

#[test]
fn heartbeats_ping_and_a_silent_client_gets_1008() {
    let s = Server::start(&["--heartbeat-interval", "300ms"]);
    // A healthy client answers pings (tungstenite does while it reads).
    let (mut ok, hello) = s.subscribe("/ws/dashboard/hb-ok");
    assert_eq!(hello["heartbeat_interval_ms"], 300);
    set_timeout(&mut ok, Duration::from_secs(5));
    let healthy = thread::spawn(move || {
        let mut pings = 0;
        loop {
            match ok.read().expect("healthy client stays open") {
                Message::Ping(_) => pings += 1,
                Message::Text(t) if t.as_str().contains("\"STOP\"") => return pings,
                Message::Close(c) => panic!("healthy client closed: {c:?}"),
                _ => {}
            }
        }
    });

    let t0 = Instant::now();
    let mut silent = RawWs::subscribe(s.addr, "/ws/dashboard/hb-silent");
    let mut pings = 0;
    let close = loop {
        let f = silent.frame().unwrap().expect("a frame before EOF");
        match f.opcode {
            9 => pings += 1,
            8 => break f.close(),
            _ => {}
        }
    };
    let took = t0.elapsed();
    assert_eq!(close, Some((1008, "heartbeat timeout".to_string())));
    assert!(pings >= 1, "no ping before the timeout");
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_millis(1300),
        "closed after {took:?}, not after two intervals"
    );
    assert!(silent.closed_within(Duration::from_secs(3)));

    // Any frame counts as life: a client that only sends data frames stays.
    let mut chatty = RawWs::subscribe(s.addr, "/ws/dashboard/hb-chatty");
    for _ in 0..6 {
        chatty
            .send(&client_frame(0x81, br#"{"type":"ping"}"#))
            .unwrap();
        thread::sleep(Duration::from_millis(200));
    }
    loop {
        let f = chatty.frame().unwrap().expect("open");
        assert_ne!(
            f.opcode,
            8,
            "a client that talks was closed: {:?}",
            f.close()
        );
        if f.opcode == 1 && f.json()["type"] == "pong" {
            break;
        }
    }
    thread::sleep(Duration::from_millis(500));
    let (st, _) =
        s.publish(&event("dashboard", "hb-ok", "STOP", serde_json::Value::Null).to_string());
    assert_eq!(st, 202);
    let healthy_pings = healthy.join().expect("healthy client");
    assert!(
        healthy_pings >= 5,
        "the healthy client saw {healthy_pings} pings in ~2.5 s"
    );
    eprintln!("heartbeat: silent client closed after {took:?} ({pings} pings)");
}

#[test]
fn ping_floods_are_answered_and_a_flooder_that_never_reads_gets_1013() {
    let s = Server::start(&[]);
    let mut healthy = Healthy::new(&s);

    // Answered: every ping gets its pong, in order.
    let mut ws = RawWs::subscribe(s.addr, "/ws/dashboard/loc-1");
    let mut burst = Vec::new();
    for i in 0..2000u32 {
        burst.extend(client_frame(0x89, i.to_string().as_bytes()));
    }
    ws.send(&burst).unwrap();
    for i in 0..2000u32 {
        let f = ws.frame().unwrap().expect("a pong");
        assert_eq!(f.opcode, 10, "expected a pong, got {f:?}");
        assert_eq!(f.payload, i.to_string().as_bytes());
    }
    healthy.check(&s);

    // Flooded without reading: the pongs pile up to the bound, then 1013.
    let rss0 = s.rss_kib();
    let flood = RawWs::subscribe(s.addr, "/ws/dashboard/loc-1");
    let mut w = flood.s.try_clone().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = thread::spawn(move || {
        let mut sent = 0u64;
        while !stop2.load(Ordering::Relaxed) {
            let mut b = Vec::with_capacity(1000 * 131);
            for _ in 0..1000 {
                let mut p = [b'.'; 125];
                p[..8].copy_from_slice(&sent.to_be_bytes());
                b.extend(client_frame(0x89, &p));
                sent += 1;
            }
            if w.write_all(&b).is_err() {
                break;
            }
        }
        sent
    });
    let mut flood = flood;
    assert!(
        wait_until(Duration::from_secs(30), || s.metric(SLOW_METRIC) >= 1.0),
        "a ping flood that never reads was not cut off"
    );
    stop.store(true, Ordering::Relaxed);
    let mut next = 0u64;
    let close = loop {
        let f = flood.frame().unwrap().expect("a close before EOF");
        match f.opcode {
            10 => {
                let n = u64::from_be_bytes(f.payload[..8].try_into().unwrap());
                assert_eq!(n, next, "pongs out of order or torn");
                next += 1;
            }
            8 => break f.close(),
            op => panic!("unexpected opcode {op}"),
        }
    };
    assert_eq!(close, Some((1013, "slow consumer".to_string())));
    let sent = writer.join().unwrap();
    let rss = s.rss_kib();
    assert!(rss < rss0 + 64 * 1024, "RSS grew from {rss0} to {rss} KiB");
    healthy.check(&s);
    assert_serving(&s);
    eprintln!(
        "ping flood: {sent} pings sent, {next} pongs read before the 1013; RSS {rss0}→{rss} KiB"
    );
}

#[test]
fn accept_errors_back_off_instead_of_spinning() {
    // 40 descriptors: the server runs out of them (EMFILE) long before its
    // connection limit.
    let s = Server::start_via(
        &["prlimit", "--nofile=40:40"],
        &["--max-connections", "1000"],
    );
    let _ = s.take_log();
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(TcpStream::connect(s.addr).expect("the kernel still queues connections"));
    }
    thread::sleep(Duration::from_millis(300));
    let cpu0 = s.cpu_ticks();
    thread::sleep(Duration::from_secs(2));
    let cpu = s.cpu_ticks() - cpu0;
    // 100 ticks a second: a spinning loop would burn about 200.
    assert!(
        cpu < 40,
        "the server burned {cpu} ticks in 2 s while out of descriptors"
    );
    let warnings = s
        .take_log()
        .iter()
        .filter(|l| l.contains("accept failed"))
        .count();
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} accept warnings (want one per loop at most)"
    );
    // Descriptors come back: everyone waiting is served.
    drop(idle);
    assert!(
        wait_until(Duration::from_secs(5), || {
            TcpStream::connect(s.addr)
                .and_then(|mut c| {
                    c.set_read_timeout(Some(Duration::from_millis(500)))?;
                    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
                    let mut b = [0u8; 12];
                    c.read_exact(&mut b)?;
                    Ok(&b == b"HTTP/1.1 200")
                })
                .unwrap_or(false)
        }),
        "not serving after descriptors were freed"
    );
    assert_serving(&s);
}

#[test]
fn sigterm_drains_200_clients_with_1001_and_exits_0() {
    let drain = Duration::from_secs(5);
    let mut s = Server::start(&["--drain-timeout", "5s"]);
    let path = "/ws/dashboard/drain";
    let mut clients: Vec<Ws> = (0..200).map(|_| s.subscribe(path).0).collect();
    // A client that reads slowly: its small receive buffer keeps bytes queued
    // in the server, so the drain has something to flush.
    let mut slow = RawWs::upgrade(tcp_small_rcvbuf(s.addr, 4096), path);
    assert_eq!(slow.json()["type"], "BI_CONNECTION_ESTABLISHED");
    let n_events = 40u64;
    for _ in 0..n_events / 20 {
        assert_eq!(
            s.publish(&event_batch("dashboard", "drain", 20, 4000)).0,
            202
        );
    }
    // The events are in the loops' queues before the signal (clients on both loops read them).
    for c in clients.iter_mut().take(10) {
        for _ in 0..n_events {
            assert_eq!(recv_json(c)["type"], "event");
        }
    }
    thread::sleep(Duration::from_millis(100));

    let t0 = Instant::now();
    s.signal("TERM");
    // Draining: /readyz is 503 and upgrades are refused while the slow client
    // still has its events queued.
    assert!(
        wait_until(Duration::from_secs(2), || s.get("/readyz").0 == 503),
        "/readyz did not turn 503"
    );
    assert_eq!(s.get("/healthz").0, 200);
    let (st, _, body) = http_raw(s.addr, upgrade_request(path, "").as_bytes());
    assert_eq!(st, 503, "{body}");
    // A publish would reach nobody here: the publisher is told to go elsewhere.
    let (st, body) =
        s.publish(&event("dashboard", "drain", "LATE", serde_json::json!(1)).to_string());
    assert_eq!((st, body["error"].as_str()), (503, Some("draining")));

    for (i, c) in clients.iter_mut().enumerate() {
        let mut events = 0;
        let code = loop {
            match c.read() {
                Ok(Message::Text(_)) => events += 1,
                Ok(Message::Close(f)) => {
                    break f.map(|f| (u16::from(f.code), f.reason.to_string()))
                }
                Ok(_) => {}
                Err(e) => panic!("client {i}: {e} before a close frame"),
            }
        };
        assert_eq!(code, Some((1001, "going away".to_string())), "client {i}");
        let want = if i < 10 { 0 } else { n_events };
        assert_eq!(events, want, "client {i} lost queued events");
    }
    drop(clients);
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "exited before the slow client was flushed"
    );
    // Every loop keeps answering until the last one is done, also the loop
    // whose clients have all gone: none closes its listener early (which
    // would reset the connections queued on it).
    for _ in 0..50 {
        assert_eq!(s.get("/readyz").0, 503);
    }

    // The slow client gets everything it was sent, then 1001.
    let mut seq = 0;
    let close = loop {
        let f = slow.frame().unwrap().expect("a close before EOF");
        match f.opcode {
            1 => {
                seq += 1;
                assert_eq!(f.json()["seq"], seq);
            }
            8 => break f.close(),
            _ => {}
        }
    };
    assert_eq!(seq, n_events);
    assert_eq!(close, Some((1001, "going away".to_string())));
    drop(slow);
    let code = s.wait_exit(drain + Duration::from_secs(1));
    let took = t0.elapsed();
    assert_eq!(code, Some(0), "exit status after the drain");
    assert!(
        took < drain,
        "drain took {took:?}, over the {drain:?} timeout"
    );
    eprintln!("drain: 201 clients flushed and closed, exit 0 after {took:?}");
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut s = Server::start(&["--drain-timeout", "30s"]);
    let mut healthy = Healthy::new(&s);
    healthy.check(&s);
    // A client that never answers the close keeps the drain going.
    let _stuck = RawWs::subscribe(s.addr, "/ws/dashboard/stuck");
    s.signal("TERM");
    thread::sleep(Duration::from_millis(500));
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "the drain ended early"
    );
    assert_eq!(s.get("/readyz").0, 503);
    let t = Instant::now();
    s.signal("INT");
    let code = s.wait_exit(Duration::from_secs(3));
    let took = t.elapsed();
    assert!(code.is_some(), "still running after the second signal");
    assert!(
        took < Duration::from_secs(1),
        "took {took:?} to exit after the second signal"
    );
}
