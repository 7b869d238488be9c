//! Issue 14: systemd socket activation (docs/protocol.md §11). The test plays
//! systemd: it binds the sockets, passes them as descriptors 3 and 4 with
//! `LISTEN_FDS`, `LISTEN_FDNAMES`, and `LISTEN_PID` set to the server's pid
//! (a shell that sets it to its own pid and execs the server, which keeps the
//! pid, as systemd's own fork does).

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use common::*;

/// Sets `LISTEN_PID` to the pid the server will have, then becomes the server.
const AS_SYSTEMD: [&str; 3] = ["sh", "-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""];

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("bistream-act-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("dir");
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unix_get(sock: &std::path::Path, path: &str) -> u16 {
    let mut s = UnixStream::connect(sock).expect("connect unix");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("write");
    read_response(&mut s).0
}

fn log_has(log: &std::sync::mpsc::Receiver<String>, needle: &str) -> Option<String> {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while let Ok(line) =
        log.recv_timeout(until.saturating_duration_since(std::time::Instant::now()))
    {
        if line.contains(needle) {
            return Some(line);
        }
        eprintln!("(log) {line}");
    }
    None
}

#[test]
fn inherited_sockets_are_served_instead_of_listen_and_survive_a_handover() {
    let dir = Dir::new("serve");
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let addr = tcp.local_addr().expect("addr");
    let sock_path = dir.0.join("bistream.sock");
    let unix = UnixListener::bind(&sock_path).expect("bind unix");
    // --listen names an address that is never bound: activation wins.
    let mut cmd = bistream_command(
        &AS_SYSTEMD,
        &[
            "--listen",
            "127.0.0.1:1",
            "--threads",
            "2",
            "--restart-spread",
            "200ms",
        ],
        &[("LISTEN_FDS", "2"), ("LISTEN_FDNAMES", "web:local")],
    );
    cmd.fd_mappings(vec![
        FdMapping {
            parent_fd: tcp.try_clone().expect("dup").into(),
            child_fd: 3,
        },
        FdMapping {
            parent_fd: unix.try_clone().expect("dup").into(),
            child_fd: 4,
        },
    ])
    .expect("fd mappings");
    let mut s = Server::from_command(cmd);
    assert_eq!(s.addr, addr, "the banner names the inherited socket");
    assert!(log_has(
        &s.log,
        &format!("listening on unix:{}", sock_path.display())
    )
    .is_some());
    let (status, _, _) = s.get("/readyz");
    assert_eq!(status, 200);
    assert_eq!(unix_get(&sock_path, "/healthz"), 200);
    let (_, hello) = s.subscribe("/ws/dashboard/act");
    let epoch = hello["epoch"].as_str().expect("epoch").to_string();
    assert_eq!(
        s.publish(&event("dashboard", "act", "E", serde_json::json!(1)).to_string())
            .0,
        202
    );

    // A hand-over from a socket-activated process passes the same sockets on.
    s.signal("USR2");
    let line = log_has(&s.log, "serves now").expect("hand-over completed");
    let pid: u32 = line
        .split("pid ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("pid");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(unix_get(&sock_path, "/readyz"), 200);
    let mut ws = RawWs::open(addr, &format!("/ws/dashboard/act?since=0&epoch={epoch}"));
    ws.json();
    assert_eq!(ws.json()["seq"], 1);
    assert_eq!(ws.json()["complete"], true);
    // The socket file is systemd's: neither process removes it at exit.
    drop(ws);
    signal_pid(pid, "TERM");
    let gone = wait_until(Duration::from_secs(15), || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| st.contains(") Z "))
    });
    assert!(
        gone,
        "pid {pid} still runs: {:?}",
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
    );
    assert!(
        sock_path.exists(),
        "the activated socket's file was removed"
    );
    drop((tcp, unix));
}

#[test]
fn sockets_meant_for_another_pid_are_left_alone() {
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
    let theirs = tcp.local_addr().expect("addr");
    let mut cmd = bistream_command(
        &[],
        &["--listen", "127.0.0.1:0", "--threads", "1"],
        &[("LISTEN_FDS", "1"), ("LISTEN_PID", "1")],
    );
    cmd.fd_mappings(vec![FdMapping {
        parent_fd: tcp.try_clone().expect("dup").into(),
        child_fd: 3,
    }])
    .expect("fd mappings");
    let s = Server::from_command(cmd);
    assert_ne!(s.addr, theirs, "bound --listen instead");
    assert_eq!(s.get("/healthz").0, 200);
}

#[test]
fn a_descriptor_that_is_not_a_listener_stops_start_up() {
    let (a, _b) = UnixStream::pair().expect("pair");
    let mut cmd = bistream_command(&AS_SYSTEMD, &["--threads", "1"], &[("LISTEN_FDS", "1")]);
    cmd.fd_mappings(vec![FdMapping {
        parent_fd: a.into(),
        child_fd: 3,
    }])
    .expect("fd mappings");
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("descriptor 3 is not a listening"), "{err}");

    // The hand-over marker alone is refused too.
    let out = run_bistream(&["--threads", "1"], &[("BISTREAM_HANDOVER", "1")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("BISTREAM_HANDOVER is set without LISTEN_FDS"),
        "{err}"
    );
}
