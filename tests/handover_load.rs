//! Issue 14: a hand-over under load (docs/protocol.md §11). 1,000 WebSocket
//! clients on ten streams, a publisher sending 500 events a second through
//! the restart (retrying 503s), SIGUSR2 in the middle. Every client is closed
//! with 1012, reconnects at once with `since`/`epoch` (as bistream-client
//! does) and is told `complete:true`; across all clients no event is missing
//! or doubled, every publish answered 202 is in its stream exactly once, the
//! reconnects are spread over `--restart-spread`, and the old process exits 0.
//!
//! The clients are non-blocking sockets on a few threads (mio), each a small
//! state machine: connect, upgrade, read frames, reconnect after a close.

mod common;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::Value;

const CLIENTS: usize = 1000;
const STREAMS: usize = 10;
const THREADS: usize = 4;
const RATE: u64 = 500;
const SPREAD: Duration = Duration::from_secs(2);

fn location(stream: usize) -> String {
    format!("load-{stream}")
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    stream: usize,
    /// (seq, n) of every event, in arrival order.
    events: Vec<(u64, u64)>,
    /// Every epoch it was told.
    epochs: Vec<String>,
    /// `complete` of every `recovered`.
    recovered: Vec<bool>,
    /// Close frames: (code, reason, when).
    closes: Vec<(u16, String, Instant)>,
    /// Transport ends without a close frame, and refused upgrades.
    errors: Vec<String>,
}

struct Client {
    seen: Seen,
    sock: Option<TcpStream>,
    buf: Vec<u8>,
    out: Vec<u8>,
    upgraded: bool,
}

impl Client {
    fn last_seq(&self) -> Option<u64> {
        self.seen.events.last().map(|e| e.0)
    }

    fn path(&self) -> String {
        let loc = location(self.seen.stream);
        match (self.last_seq(), self.seen.epochs.last()) {
            (Some(s), Some(e)) => format!("/ws/dashboard/{loc}?since={s}&epoch={e}"),
            (None, Some(e)) => format!("/ws/dashboard/{loc}?since=0&epoch={e}"),
            _ => format!("/ws/dashboard/{loc}"),
        }
    }
}

fn connect(c: &mut Client, addr: SocketAddr, poll: &Poll, token: Token) {
    let mut sock = TcpStream::connect(addr).expect("connect");
    poll.registry()
        .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
        .expect("register");
    c.out = upgrade_request(&c.path(), "").into_bytes();
    c.buf.clear();
    c.upgraded = false;
    c.sock = Some(sock);
}

fn flush(c: &mut Client) {
    let Some(sock) = c.sock.as_mut() else {
        return;
    };
    while !c.out.is_empty() {
        match sock.write(&c.out) {
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // Not connected yet: the writable event comes later.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
            Err(_) => return,
        }
    }
}

/// Parses what is buffered; true when the connection ended (close or refusal).
fn parse(c: &mut Client) -> bool {
    if !c.upgraded {
        let Some(end) = find(&c.buf, b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&c.buf[..end]).to_string();
        if !head.starts_with("HTTP/1.1 101") {
            c.seen.errors.push(format!("upgrade refused: {head}"));
            return true;
        }
        c.buf.drain(..end + 4);
        c.upgraded = true;
    }
    loop {
        if c.buf.len() < 2 {
            return false;
        }
        let op = c.buf[0] & 0x0f;
        let (hlen, len) = match c.buf[1] & 0x7f {
            126 if c.buf.len() >= 4 => (4, u16::from_be_bytes([c.buf[2], c.buf[3]]) as usize),
            127 if c.buf.len() >= 10 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&c.buf[2..10]);
                (10, u64::from_be_bytes(l) as usize)
            }
            126 | 127 => return false,
            n => (2, n as usize),
        };
        if c.buf.len() < hlen + len {
            return false;
        }
        let payload: Vec<u8> = c.buf[hlen..hlen + len].to_vec();
        c.buf.drain(..hlen + len);
        match op {
            1 => {
                let v: Value = serde_json::from_slice(&payload).expect("JSON");
                match v["type"].as_str() {
                    Some("BI_CONNECTION_ESTABLISHED") => c
                        .seen
                        .epochs
                        .push(v["epoch"].as_str().unwrap_or("").to_string()),
                    Some("event") => c.seen.events.push((
                        v["seq"].as_u64().expect("seq"),
                        v["data"]["n"].as_u64().expect("n"),
                    )),
                    Some("recovered") => c.seen.recovered.push(v["complete"] == true),
                    other => c.seen.errors.push(format!("unexpected message {other:?}")),
                }
            }
            8 => {
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    0
                };
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).to_string();
                c.seen.closes.push((code, reason, Instant::now()));
                return true;
            }
            _ => {}
        }
    }
}

/// Runs `clients` until `stop`; each reconnects as soon as it is closed.
fn run_clients(
    addr: SocketAddr,
    streams: Vec<usize>,
    established: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> Vec<Seen> {
    let mut poll = Poll::new().expect("poll");
    let mut clients: Vec<Client> = streams
        .into_iter()
        .map(|stream| Client {
            seen: Seen {
                stream,
                ..Seen::default()
            },
            sock: None,
            buf: Vec::new(),
            out: Vec::new(),
            upgraded: false,
        })
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        connect(c, addr, &poll, Token(i));
    }
    let mut counted = vec![false; clients.len()];
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .expect("poll");
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut clients[i];
            if ev.is_writable() {
                flush(c);
            }
            let mut ended = false;
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                while let Some(sock) = c.sock.as_mut() {
                    match sock.read(&mut chunk) {
                        Ok(0) => {
                            ended = true;
                            break;
                        }
                        Ok(n) => {
                            c.buf.extend_from_slice(&chunk[..n]);
                            if parse(c) {
                                ended = true;
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            c.seen.errors.push(format!("read: {e}"));
                            ended = true;
                            break;
                        }
                    }
                }
            }
            if !counted[i] && !c.seen.epochs.is_empty() {
                counted[i] = true;
                established.fetch_add(1, Ordering::Relaxed);
            }
            if ended {
                // A close without a close frame is an error; after a close
                // frame the client reconnects at once, resuming.
                let framed = c
                    .seen
                    .closes
                    .last()
                    .is_some_and(|(_, _, at)| at.elapsed() < Duration::from_secs(1));
                if !framed {
                    c.seen
                        .errors
                        .push("transport ended without a close frame".into());
                }
                if let Some(mut s) = c.sock.take() {
                    let _ = poll.registry().deregister(&mut s);
                }
                connect(c, addr, &poll, Token(i));
            }
        }
    }
    clients.into_iter().map(|c| c.seen).collect()
}

/// 500 events a second round-robin over the streams, each with a unique `n`;
/// a 503 or a lost connection is retried. Returns the acknowledged (stream, n)
/// and the number of 503s.
fn run_publisher(addr: SocketAddr, stop: Arc<AtomicBool>) -> (Vec<(usize, u64)>, usize) {
    let mut acked = Vec::new();
    let mut refused = 0;
    let mut conn: Option<std::net::TcpStream> = None;
    let mut n = 0u64;
    let every = Duration::from_nanos(1_000_000_000 / RATE);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let stream = (n as usize) % STREAMS;
        let body = serde_json::json!({"channel": "dashboard", "location_id": location(stream),
                                      "event_type": "LOAD", "data": {"n": n}})
        .to_string();
        let req = format!(
            "POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        loop {
            let s = conn.get_or_insert_with(|| {
                let s = std::net::TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                s.set_nodelay(true).expect("nodelay");
                s
            });
            if s.write_all(req.as_bytes()).is_err() {
                conn = None;
                continue;
            }
            let Ok((status, head)) = try_response(s) else {
                // Closed before an answer (a kept-alive connection the old
                // process closed): nothing was read, so it is safe to resend.
                conn = None;
                continue;
            };
            if head.to_ascii_lowercase().contains("connection: close") {
                conn = None;
            }
            match status {
                202 => {
                    acked.push((stream, n));
                    break;
                }
                503 => {
                    refused += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => panic!("publish answered {other}"),
            }
        }
        next += every;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    (acked, refused)
}

#[test]
fn a_handover_under_load_loses_and_doubles_nothing() {
    let t_start = Instant::now();
    let mut s = Server::start(&[
        "--threads",
        "2",
        "--restart-spread",
        "2s",
        "--max-queue-bytes",
        "4MiB",
    ]);
    let addr = s.addr;
    let stop_clients = Arc::new(AtomicBool::new(false));
    let established = Arc::new(AtomicUsize::new(0));
    let mut client_threads = Vec::new();
    for t in 0..THREADS {
        let streams: Vec<usize> = (0..CLIENTS)
            .filter(|i| i % THREADS == t)
            .map(|i| i % STREAMS)
            .collect();
        let (est, stop) = (established.clone(), stop_clients.clone());
        client_threads.push(std::thread::spawn(move || {
            run_clients(addr, streams, est, stop)
        }));
    }
    assert!(
        wait_until(Duration::from_secs(20), || established
            .load(Ordering::Relaxed)
            == CLIENTS),
        "only {} of {CLIENTS} clients connected",
        established.load(Ordering::Relaxed)
    );
    let stop_pub = Arc::new(AtomicBool::new(false));
    let sp = stop_pub.clone();
    let publisher = std::thread::spawn(move || run_publisher(addr, sp));

    std::thread::sleep(Duration::from_millis(1500));
    let t_signal = Instant::now();
    s.signal("USR2");
    let mut new_pid = None;
    let until = Instant::now() + Duration::from_secs(15);
    while let Ok(line) = s
        .log
        .recv_timeout(until.saturating_duration_since(Instant::now()))
    {
        if let Some(rest) = line
            .split("serves now")
            .next()
            .and_then(|l| l.split("pid ").nth(1))
        {
            if line.contains("serves now") {
                new_pid = rest.trim().trim_end_matches(':').parse::<u32>().ok();
                break;
            }
        }
    }
    let new_pid = new_pid.expect("the hand-over completed");
    let _kill_new = KillOnDrop(new_pid);
    assert_eq!(
        s.wait_exit(Duration::from_secs(15)),
        Some(0),
        "the old process exits 0"
    );
    let t_old_exit = t_signal.elapsed();
    std::thread::sleep(Duration::from_millis(1000));
    stop_pub.store(true, Ordering::Relaxed);
    let (acked, refused) = publisher.join().expect("publisher");

    // Where each stream ended, from the new process.
    let mut final_seq = [0u64; STREAMS];
    for (st, f) in final_seq.iter_mut().enumerate() {
        let mut ws = RawWs::open(addr, &format!("/ws/dashboard/{}", location(st)));
        *f = ws.json()["last_seq"].as_u64().expect("last_seq");
    }
    // Let every client catch up, then stop them.
    std::thread::sleep(Duration::from_millis(1500));
    stop_clients.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = client_threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    assert_eq!(seen.len(), CLIENTS);

    // Per stream, what every client must agree on: seq → n.
    let mut by_stream: Vec<HashMap<u64, u64>> = vec![HashMap::new(); STREAMS];
    let mut close_times = Vec::new();
    for (i, c) in seen.iter().enumerate() {
        assert!(c.errors.is_empty(), "client {i}: {:?}", c.errors);
        assert_eq!(c.closes.len(), 1, "client {i} closes: {:?}", c.closes);
        let (code, reason, at) = &c.closes[0];
        assert_eq!(
            (*code, reason.as_str()),
            (1012, "service restart"),
            "client {i}"
        );
        close_times.push(*at);
        assert_eq!(
            c.epochs.len(),
            2,
            "client {i}: one connection before, one after"
        );
        assert_eq!(
            c.epochs[0], c.epochs[1],
            "client {i}: the epoch survives the hand-over"
        );
        assert_eq!(
            c.recovered,
            vec![true],
            "client {i}: the resume is complete"
        );
        let seqs: Vec<u64> = c.events.iter().map(|e| e.0).collect();
        let want: Vec<u64> = (1..=final_seq[c.stream]).collect();
        assert!(
            seqs == want,
            "client {i} (stream {}): {} events, first gap or repeat at {:?}",
            c.stream,
            seqs.len(),
            seqs.iter().zip(&want).position(|(a, b)| a != b)
        );
        for &(seq, n) in &c.events {
            let prev = by_stream[c.stream].insert(seq, n);
            assert!(
                prev.is_none_or(|p| p == n),
                "stream {} seq {seq}: n {prev:?} and {n}",
                c.stream
            );
        }
    }
    // Every acknowledged publish is in its stream exactly once, and nothing else is.
    for (st, map) in by_stream.iter().enumerate() {
        let mut ns: Vec<u64> = map.values().copied().collect();
        ns.sort_unstable();
        let mut want: Vec<u64> = acked.iter().filter(|a| a.0 == st).map(|a| a.1).collect();
        want.sort_unstable();
        assert_eq!(
            ns, want,
            "stream {st}: delivered events vs acknowledged publishes"
        );
    }
    // The 1012s are spread over the window: every quarter of it has its share.
    close_times.sort();
    let first = close_times[0];
    let span = close_times[CLIENTS - 1] - first;
    assert!(
        span >= SPREAD.mul_f64(0.8) && span <= SPREAD + Duration::from_millis(500),
        "{span:?}"
    );
    let mut quarters = [0usize; 4];
    for t in &close_times {
        let q = ((*t - first).as_secs_f64() / SPREAD.as_secs_f64() * 4.0) as usize;
        quarters[q.min(3)] += 1;
    }
    for q in quarters {
        assert!(
            q >= CLIENTS / 8,
            "reconnects by quarter of the window: {quarters:?}"
        );
    }
    let total: usize = acked.len();
    eprintln!(
        "{CLIENTS} clients, {total} events acknowledged ({refused} publishes refused with 503 \
         and retried), old process exited {t_old_exit:?} after SIGUSR2, 1012s spread over \
         {span:?} by quarter {quarters:?}, whole test {:?}",
        t_start.elapsed()
    );
}

/// One response on a kept-alive connection; an error when the connection
/// ends first.
fn try_response(s: &mut std::net::TcpStream) -> io::Result<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < end + len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, head))
}

struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}
