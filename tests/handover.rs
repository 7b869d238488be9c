//! Issue 14: the hand-over on SIGUSR2 (docs/protocol.md §11) with the real
//! binary, real sockets and real signals: the state carried over, clients
//! closed with 1012 and recovering completely, systemd told the new main pid,
//! a broken or silent new binary leaving the old process serving, a second
//! SIGUSR2 ignored, and a connection waiting in the accept queue served by
//! the new process.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A process the test did not spawn itself (the new process of a hand-over):
/// killed when the test ends, whatever happened.
struct Adopted(u32);

impl Drop for Adopted {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("bistream-ho-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The pid in "... pid N serves now".
fn new_pid(log: &Receiver<String>) -> u32 {
    let line = log_line(log, "serves now", Duration::from_secs(15)).expect("hand-over completed");
    line.split("pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line}"))
}

fn publish_ok(addr: std::net::SocketAddr, location: &str, key: &str, n: u64) {
    let body = json!({"channel": "dashboard", "location_id": location, "event_type": "E",
                      "key": key, "data": {"n": n}})
    .to_string();
    let req = format!(
        "POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, b) = http_raw(addr, req.as_bytes());
    assert_eq!(status, 202, "{b}");
}

fn ws_path(location: &str, query: &str) -> String {
    format!("/ws/dashboard/{location}{query}")
}

#[test]
fn the_state_carries_over_and_clients_recover_completely() {
    let dir = TempDir::new("state");
    let notify_path = dir.0.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut s = Server::start_with_env(
        &["--threads", "2", "--restart-spread", "1s"],
        &[("NOTIFY_SOCKET", notify_path.to_str().expect("utf-8"))],
    );
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1");

    for i in 1..=20 {
        publish_ok(s.addr, "loc-a", &format!("k{}", i % 4), i);
    }
    publish_ok(s.addr, "loc-b", "only", 100);
    // Clients that have seen everything so far.
    let mut clients = Vec::new();
    for _ in 0..6 {
        let mut ws = RawWs::open(s.addr, &ws_path("loc-a", ""));
        let hello = ws.json();
        assert_eq!(hello["last_seq"], 20);
        clients.push((ws, hello["epoch"].as_str().expect("epoch").to_string()));
    }
    let epoch_a = clients[0].1.clone();

    let t0 = Instant::now();
    s.signal("USR2");
    let pid = new_pid(&s.log);
    let _new = Adopted(pid);
    assert_ne!(pid, s.pid());
    // systemd follows the new process: MAINPID from the old one, then READY.
    let n = notify.recv(&mut buf).expect("MAINPID");
    assert_eq!(
        std::str::from_utf8(&buf[..n]),
        Ok(format!("MAINPID={pid}").as_str())
    );
    let n = notify.recv(&mut buf).expect("READY=1 from the new process");
    assert_eq!(&buf[..n], b"READY=1");

    // Every client is closed with 1012 within the spread; the old one exits 0.
    for (ws, _) in &mut clients {
        assert_eq!(
            ws.expect_close(),
            Some((1012, "service restart".to_string()))
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));

    // The new process answers on the same address with the same numbering.
    for (_, epoch) in &clients {
        let mut ws = RawWs::open(
            s.addr,
            &ws_path("loc-a", &format!("?since=20&epoch={epoch}")),
        );
        let hello = ws.json();
        assert_eq!(hello["epoch"], epoch_a);
        assert_eq!(hello["last_seq"], 20);
        let rec = ws.json();
        assert_eq!(rec["type"], "recovered");
        assert_eq!(rec["complete"], true, "{rec}");
    }
    // A client that missed the last five gets exactly those, complete.
    let mut ws = RawWs::open(
        s.addr,
        &ws_path("loc-a", &format!("?since=15&epoch={epoch_a}")),
    );
    ws.json();
    let seqs: Vec<u64> = (0..5)
        .map(|_| ws.json()["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![16, 17, 18, 19, 20]);
    assert_eq!(ws.json()["complete"], true);
    // Publishing goes on from 21: no gap, no reuse.
    publish_ok(s.addr, "loc-a", "k1", 21);
    let ev = ws.json();
    assert_eq!(
        (ev["seq"].as_u64(), ev["data"]["n"].as_u64()),
        (Some(21), Some(21))
    );
    // Last values came along: four keys, newest of each.
    let mut snap = RawWs::open(s.addr, &ws_path("loc-a", "?snapshot=1"));
    snap.json();
    let mut got = Vec::new();
    loop {
        let m = snap.json();
        if m["type"] == "snapshot" {
            assert_eq!(m["count"], 4);
            break;
        }
        got.push(m["seq"].as_u64().expect("seq"));
    }
    assert_eq!(got, vec![18, 19, 20, 21]);
    let (_, b) = RawWs::subscribe_hello(s.addr, &ws_path("loc-b", ""));
    assert_eq!(b["last_seq"], 1);
    // A stream new in this process gets an epoch of its own.
    let (_, c) = RawWs::subscribe_hello(s.addr, &ws_path("loc-c", ""));
    assert_ne!(
        c["epoch"].as_str().map(|e| e.split('-').next()),
        Some(epoch_a.split('-').next())
    );
    let m = metrics_of(s.addr);
    assert!(metric(&m, "bistream_handover_state_bytes") > 1000.0, "{m}");
    assert!(metric(&m, "bistream_handover_duration_seconds") > 0.0);
}

fn metrics_of(addr: std::net::SocketAddr) -> String {
    http_raw(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .2
}

trait Hello {
    fn subscribe_hello(addr: std::net::SocketAddr, path: &str) -> (RawWs, Value);
}

impl Hello for RawWs {
    fn subscribe_hello(addr: std::net::SocketAddr, path: &str) -> (RawWs, Value) {
        let mut ws = RawWs::open(addr, path);
        let hello = ws.json();
        (ws, hello)
    }
}

/// Starts the server from a copy of the binary at `bin`, as a deploy would
/// have it at a path of its own.
fn start_from(bin: &Path, args: &[&str]) -> Server {
    let mut full = vec!["--listen", "127.0.0.1:0"];
    full.extend_from_slice(args);
    Server::from_command(bistream_command_at(bin, &[], &full, &[]))
}

/// Writes an executable next to where it will be installed. All of them are
/// written before the server starts: a file written while other tests fork
/// may briefly be open for writing in their children, and executing it then
/// fails with ETXTBSY.
fn stage(dst: &Path, contents: &[u8]) {
    std::fs::write(dst, contents).expect("stage");
    std::fs::set_permissions(dst, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Puts a staged file at `dst`, as a deploy does: by rename (the running
/// binary itself cannot be written over).
fn install(staged: &Path, dst: &Path) {
    std::fs::hard_link(staged, dst.with_extension("new")).expect("link");
    std::fs::rename(dst.with_extension("new"), dst).expect("rename");
}

#[test]
fn a_broken_or_silent_new_binary_leaves_the_old_process_serving() {
    let dir = TempDir::new("broken");
    let bin = dir.0.join("bistream");
    let staged = |name: &str, contents: &[u8]| {
        let p = dir.0.join(name);
        stage(&p, contents);
        p
    };
    let real = staged(
        "real",
        &std::fs::read(env!("CARGO_BIN_EXE_bistream")).expect("read the binary"),
    );
    let exits = staged("exits", b"#!/bin/sh\nexit 3\n");
    let silent = staged("silent", b"#!/bin/sh\nexec sleep 30\n");
    let refuses = staged(
        "refuses",
        b"#!/bin/sh\necho 'bistream: no such option' >&2\nexit 2\n",
    );
    install(&real, &bin);
    let mut s = start_from(&bin, &["--threads", "2", "--handover-timeout", "1500ms"]);
    let mut ws = RawWs::open(s.addr, &ws_path("loc-1", ""));
    ws.json();
    publish_ok(s.addr, "loc-1", "k", 1);
    assert_eq!(ws.json()["seq"], 1);

    // 1. The new binary exits at once.
    install(&exits, &bin);
    s.signal("USR2");
    let line =
        log_line(&s.log, "hand-over FAILED", Duration::from_secs(10)).expect("failure logged");
    assert!(line.contains("goes on serving"), "{line}");
    assert_eq!(s.get("/readyz").0, 200);
    publish_ok(s.addr, "loc-1", "k", 2);
    assert_eq!(ws.json()["seq"], 2);

    // 2. The new binary never answers: the old one waits --handover-timeout,
    //    ignores a second SIGUSR2 meanwhile, and keeps publishing throughout
    //    (nothing is fenced before the new process says Hello).
    install(&silent, &bin);
    let t0 = Instant::now();
    s.signal("USR2");
    assert!(log_line(&s.log, "new process pid", Duration::from_secs(5)).is_some());
    s.signal("USR2");
    assert!(log_line(
        &s.log,
        "SIGUSR2 ignored: a hand-over is already under way",
        Duration::from_secs(5)
    )
    .is_some());
    publish_ok(s.addr, "loc-1", "k", 3);
    assert_eq!(ws.json()["seq"], 3);
    let line =
        log_line(&s.log, "hand-over FAILED", Duration::from_secs(10)).expect("timeout logged");
    assert!(line.contains("timed out"), "{line}");
    assert!(
        t0.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(s.get("/readyz").0, 200);
    publish_ok(s.addr, "loc-1", "k", 4);
    assert_eq!(ws.json()["seq"], 4);
    let m = s.metrics();
    assert_eq!(
        metric(&m, r#"bistream_handovers_total{outcome="failed"}"#),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"bistream_handovers_total{outcome="ignored"}"#),
        1.0
    );

    // 3. A binary that refuses the arguments: same.
    install(&refuses, &bin);
    s.signal("USR2");
    assert!(log_line(&s.log, "hand-over FAILED", Duration::from_secs(10)).is_some());

    // 4. The real binary again: the hand-over completes, the client gets 1012
    //    and recovers completely from the new process.
    install(&real, &bin);
    let epoch = {
        let (_, h) = RawWs::subscribe_hello(s.addr, &ws_path("loc-1", ""));
        h["epoch"].as_str().expect("epoch").to_string()
    };
    s.signal("USR2");
    let pid = new_pid(&s.log);
    let _new = Adopted(pid);
    assert_eq!(ws.expect_close().map(|c| c.0), Some(1012));
    assert_eq!(s.wait_exit(Duration::from_secs(15)), Some(0));
    let mut again = RawWs::open(
        s.addr,
        &ws_path("loc-1", &format!("?since=4&epoch={epoch}")),
    );
    again.json();
    assert_eq!(again.json()["complete"], true);
}

#[test]
fn a_connection_waiting_in_the_accept_queue_is_served_by_the_new_process() {
    let mut s = Server::start(&["--threads", "1", "--restart-spread", "200ms"]);
    s.signal("USR2");
    let pid = new_pid(&s.log);
    let new = Adopted(pid);
    // Hold the new process still: once the old one has exited, nobody accepts.
    signal_pid(pid, "STOP");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    let mut c = TcpStream::connect(s.addr).expect("the kernel still completes the handshake");
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("write");
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut b = [0u8; 1];
    let e = c
        .read(&mut b)
        .expect_err("nobody can answer while the new process is stopped");
    assert!(matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    // The connection sat in the queue of the socket the new process inherited.
    signal_pid(pid, "CONT");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let (status, _, body) = read_response(&mut c);
    assert_eq!(status, 200, "{body}");
    drop(new);
}

#[test]
fn publishes_during_the_window_are_answered_and_none_is_lost() {
    // A publisher hammering one stream while the hand-over happens: every
    // request gets an answer (202 or 503 `restarting`), and every 202 is in
    // the stream afterwards, once, in order.
    let mut s = Server::start(&[
        "--threads",
        "2",
        "--restart-spread",
        "300ms",
        "--history-size",
        "100000",
    ]);
    let addr = s.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let publisher = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut refused = 0;
        let mut n = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            n += 1;
            let body = json!({"channel": "dashboard", "location_id": "w", "event_type": "E",
                              "data": {"n": n}})
            .to_string();
            let req = format!(
                "POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let (status, head, b) = http_raw(addr, req.as_bytes());
            match status {
                202 => acked.push(n),
                503 => {
                    assert!(b.contains("restarting") || b.contains("draining"), "{b}");
                    assert!(head.contains("Retry-After: 1"), "{head}");
                    refused += 1;
                }
                other => panic!("unexpected {other}: {b}"),
            }
        }
        (acked, refused)
    });
    std::thread::sleep(Duration::from_millis(300));
    s.signal("USR2");
    let pid = new_pid(&s.log);
    let _new = Adopted(pid);
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, refused) = publisher.join().expect("publisher");
    let mut ws = RawWs::open(addr, &ws_path("w", "?since=0"));
    let hello = ws.json();
    let last = hello["last_seq"].as_u64().expect("last_seq");
    let mut ns = Vec::new();
    for want in 1..=last {
        let ev = ws.json();
        assert_eq!(ev["seq"].as_u64(), Some(want));
        ns.push(ev["data"]["n"].as_u64().expect("n"));
    }
    assert_eq!(ws.json()["complete"], true);
    assert_eq!(
        ns, acked,
        "the stream holds exactly the acknowledged publishes, in order"
    );
    eprintln!(
        "{} publishes acknowledged, {refused} refused with 503 during the hand-over",
        acked.len()
    );
    assert!(acked.len() > 20);
}
