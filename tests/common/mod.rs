//! Shared harness for the integration tests: a real `bistream` process on
//! 127.0.0.1:0, real sockets, tungstenite's blocking client.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

pub type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// Log lines after the banner (stderr), for tests that look at logs.
    pub log: mpsc::Receiver<String>,
}

impl Server {
    /// `bistream --listen 127.0.0.1:0 <args>`, waiting for its banner.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bistream"));
        if !args.iter().any(|a| *a == "--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args(args)
            .env_remove("JWT_SECRET_KEY")
            .env_remove("JWT_SECRET_KEY_PREVIOUS")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn bistream");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("bistream printed its banner");
            if let Some(rest) = line.split("listening on ").nth(1) {
                if let Ok(addr) = rest.trim().parse::<SocketAddr>() {
                    return Server { child, addr, log: rx };
                }
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn connect(&self, path: &str) -> Ws {
        connect(&self.url(path))
    }

    /// Connects and reads `BI_CONNECTION_ESTABLISHED`.
    pub fn subscribe(&self, path: &str) -> (Ws, Value) {
        let mut ws = self.connect(path);
        let hello = recv_json(&mut ws);
        assert_eq!(hello["type"], "BI_CONNECTION_ESTABLISHED", "{hello}");
        (ws, hello)
    }

    /// POST /api/events on a fresh connection: (status, body).
    pub fn publish(&self, body: &str) -> (u16, Value) {
        self.publish_with(body, &[])
    }

    pub fn publish_with(&self, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut extra = String::new();
        for (k, v) in headers {
            extra.push_str(&format!("{k}: {v}\r\n"));
        }
        let req = format!(
            "POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        );
        let (status, _, body) = http_raw(self.addr, req.as_bytes());
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// GET on a fresh connection: (status, headers, body).
    pub fn get(&self, path: &str) -> (u16, String, String) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        http_raw(self.addr, req.as_bytes())
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").2
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name ("TERM", "INT").
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit; its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// VmRSS of the server in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn connect(url: &str) -> Ws {
    let (mut ws, resp) = tungstenite::connect(url).unwrap_or_else(|e| panic!("connect {url}: {e}"));
    assert_eq!(resp.status().as_u16(), 101);
    set_timeout(&mut ws, Duration::from_secs(10));
    ws
}

pub fn set_timeout(ws: &mut Ws, t: Duration) {
    if let MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(t)).expect("timeout");
    }
}

/// The next text message as JSON (control frames are skipped).
pub fn recv_json(ws: &mut Ws) -> Value {
    loop {
        match ws.read().expect("read a message") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("JSON text"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Reads until the server closes; the close code it sent (None: no close frame).
pub fn expect_close(ws: &mut Ws) -> Option<u16> {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return Some(u16::from(f.code)),
            Ok(Message::Close(None)) => return None,
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// One HTTP exchange over a fresh TCP connection: (status, head, body).
pub fn http_raw(addr: SocketAddr, req: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(req).expect("write");
    read_response(&mut s)
}

/// Reads one HTTP response (Content-Length framed) from `s`.
pub fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("read response");
        assert!(n > 0, "connection closed before a response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).expect("read body");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    (status, head, body)
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A raw upgrade request for `path` with extra header lines.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A masked client frame, as a browser would send it.
pub fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    bistream::ws::frame::client_frame(first_byte, payload, [0x12, 0x34, 0x56, 0x78])
}

/// The value of metric line `name` (with labels as written), or 0.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// An event body for `POST /api/events`.
pub fn event(channel: &str, location: &str, event_type: &str, data: Value) -> Value {
    serde_json::json!({"channel": channel, "location_id": location, "event_type": event_type, "data": data})
}
