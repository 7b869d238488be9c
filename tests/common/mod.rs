//! Shared harness for the integration tests: a real `bistream` process on
//! 127.0.0.1:0, real sockets, tungstenite's blocking client.
#![allow(dead_code)]

pub mod redis_server;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
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

    // The child is waited for in Drop; clippy cannot see that across the struct.
    #[allow(clippy::zombie_processes)]
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(&[], args, env)
    }

    /// Runs `wrapper... bistream args...` (wrapper may be empty), adding
    /// `--listen 127.0.0.1:0` unless given, and waits for the TCP banner.
    pub fn launch(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut full: Vec<&str> = Vec::new();
        if !args.contains(&"--listen") {
            full.extend(["--listen", "127.0.0.1:0"]);
        }
        full.extend_from_slice(args);
        Server::from_command(bistream_command(wrapper, &full, env))
    }

    /// Spawns `cmd` (a [`bistream_command`], or one a test built by hand) and
    /// waits for its TCP banner.
    // The child is waited for in Drop; clippy cannot see that across the struct.
    #[allow(clippy::zombie_processes)]
    pub fn from_command(mut cmd: Command) -> Server {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn bistream");
        let rx = log_lines(&mut child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("bistream printed its banner");
            if let Some(rest) = line.split("listening on ").nth(1) {
                if let Ok(addr) = rest.trim().parse::<SocketAddr>() {
                    return Server {
                        child,
                        addr,
                        log: rx,
                    };
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
        signal_pid(self.pid(), sig);
    }

    /// Waits for the process to exit; its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        wait_child(&mut self.child, timeout)
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
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(req).expect("write");
    read_response(&mut s)
}

/// Reads one HTTP response (Content-Length framed) from `s`.
pub fn read_response<S: Read>(s: &mut S) -> (u16, String, String) {
    let mut leftover = Vec::new();
    read_response_buffered(s, &mut leftover)
}

/// Like [`read_response`], keeping bytes of later (pipelined) responses in `buf`.
pub fn read_response_buffered<S: Read>(s: &mut S, buf: &mut Vec<u8>) -> (u16, String, String) {
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("read response");
        assert!(
            n > 0,
            "connection closed before a response: {:?}",
            String::from_utf8_lossy(buf)
        );
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
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).expect("read body");
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    buf.drain(..head_end + len);
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

/// A publisher on one keep-alive HTTP connection, as a back-end service would
/// hold it (`Server::publish` opens a fresh connection per request).
pub struct KeepAlivePublisher {
    stream: TcpStream,
}

impl KeepAlivePublisher {
    pub fn connect(addr: SocketAddr) -> KeepAlivePublisher {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        KeepAlivePublisher { stream }
    }

    /// One `POST /api/events` on the held connection: (status, body).
    pub fn post(&mut self, body: &str) -> (u16, Value) {
        let req = format!(
            "POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(req.as_bytes()).expect("write");
        let (status, _, body) = read_response(&mut self.stream);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

// ---------------------------------------------------------------------------
// Lifecycle and limits helpers (tests/lifecycle.rs, tests/limits.rs).
// ---------------------------------------------------------------------------

/// A server frame read off a raw socket, parsed strictly: a torn or corrupt
/// frame shows up as a bad opcode, a set mask bit or reserved bits.
#[derive(Debug, Clone)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// `(code, reason)` of a close frame.
    pub fn close(&self) -> Option<(u16, String)> {
        (self.opcode == 8 && self.payload.len() >= 2).then(|| {
            let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
            (
                code,
                String::from_utf8_lossy(&self.payload[2..]).to_string(),
            )
        })
    }

    pub fn json(&self) -> Value {
        assert_eq!(self.opcode, 1, "expected a text frame, got {self:?}");
        serde_json::from_slice(&self.payload).expect("JSON text frame")
    }
}

/// An upgraded connection driven by hand: the test writes raw client bytes and
/// reads the server's frames one by one (no automatic pongs, no buffering
/// beyond what it asks for).
pub struct RawWs {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    /// Upgrades `path` on a fresh connection; panics unless the answer is 101.
    pub fn open(addr: SocketAddr, path: &str) -> RawWs {
        RawWs::upgrade(TcpStream::connect(addr).expect("connect"), path)
    }

    /// Upgrades on an existing stream (one with small socket buffers, say).
    pub fn upgrade(mut s: TcpStream, path: &str) -> RawWs {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(upgrade_request(path, "").as_bytes())
            .expect("write upgrade");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).expect("read 101");
            assert!(
                n > 0,
                "closed before the 101: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        buf.drain(..end);
        RawWs { s, buf }
    }

    /// Upgrades a stream path and reads `BI_CONNECTION_ESTABLISHED`.
    pub fn subscribe(addr: SocketAddr, path: &str) -> RawWs {
        let mut ws = RawWs::open(addr, path);
        let hello = ws.frame().expect("read hello").expect("hello frame").json();
        assert_eq!(hello["type"], "BI_CONNECTION_ESTABLISHED", "{hello}");
        ws
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.s.set_read_timeout(Some(t)).expect("timeout");
    }

    fn fill(&mut self, want: usize) -> std::io::Result<bool> {
        let mut chunk = [0u8; 65536];
        while self.buf.len() < want {
            let n = self.s.read(&mut chunk)?;
            if n == 0 {
                return Ok(false);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        Ok(true)
    }

    /// The next server frame; `Ok(None)` at EOF. Panics on a frame no server
    /// may send (masked, reserved bits or opcode), which is what a torn frame
    /// looks like.
    pub fn frame(&mut self) -> std::io::Result<Option<RawFrame>> {
        if !self.fill(2)? {
            assert!(
                self.buf.is_empty(),
                "EOF inside a frame header: {:?}",
                self.buf
            );
            return Ok(None);
        }
        let (b0, b1) = (self.buf[0], self.buf[1]);
        assert_eq!(b0 & 0x70, 0, "reserved bits in a server frame: {b0:#x}");
        assert_eq!(b1 & 0x80, 0, "masked server frame");
        let opcode = b0 & 0x0f;
        assert!(
            matches!(opcode, 0 | 1 | 2 | 8 | 9 | 10),
            "bad opcode {opcode}"
        );
        let (hlen, len) = match b1 & 0x7f {
            126 => {
                if !self.fill(4)? {
                    panic!("EOF inside a frame header");
                }
                (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize)
            }
            127 => {
                if !self.fill(10)? {
                    panic!("EOF inside a frame header");
                }
                let mut l = [0u8; 8];
                l.copy_from_slice(&self.buf[2..10]);
                (10, u64::from_be_bytes(l) as usize)
            }
            n => (2, n as usize),
        };
        assert!(len < 64 << 20, "absurd server frame length {len}");
        if !self.fill(hlen + len)? {
            panic!(
                "EOF inside a frame (a torn frame): {} of {} bytes",
                self.buf.len(),
                hlen + len
            );
        }
        let payload = self.buf[hlen..hlen + len].to_vec();
        self.buf.drain(..hlen + len);
        Ok(Some(RawFrame {
            fin: b0 & 0x80 != 0,
            opcode,
            payload,
        }))
    }

    /// The next text frame as JSON, skipping pings and pongs.
    pub fn json(&mut self) -> Value {
        loop {
            let f = self.frame().expect("read").expect("a frame, not EOF");
            match f.opcode {
                9 | 10 => continue,
                _ => return f.json(),
            }
        }
    }

    /// Reads until the server's close frame: `(code, reason)`, or `None` when
    /// the transport ended (or errored) without one.
    pub fn expect_close(&mut self) -> Option<(u16, String)> {
        loop {
            match self.frame() {
                Ok(Some(f)) if f.opcode == 8 => return f.close(),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// After the close frame: true when the server closes TCP (EOF or reset)
    /// within `t`.
    pub fn closed_within(&mut self, t: Duration) -> bool {
        let _ = self.s.set_read_timeout(Some(t));
        let mut chunk = [0u8; 4096];
        let until = Instant::now() + t;
        while Instant::now() < until {
            match self.s.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
        false
    }
}

/// A masked client frame with a length field of the test's choosing and no
/// payload (for lengths no test wants to send).
pub fn client_header(first_byte: u8, declared_len: u64) -> Vec<u8> {
    let mut out = vec![first_byte, 0x80 | 127];
    out.extend_from_slice(&declared_len.to_be_bytes());
    out.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    out
}

static HEALTHY_N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A well-behaved subscriber on a stream of its own: whatever a test does to
/// other connections, `check` must still see its next event arrive.
pub struct Healthy {
    pub ws: Ws,
    pub location: String,
    pub seen: u64,
}

impl Healthy {
    pub fn new(s: &Server) -> Healthy {
        let n = HEALTHY_N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let location = format!("healthy-{n}");
        let (ws, _) = s.subscribe(&format!("/ws/dashboard/{location}"));
        Healthy {
            ws,
            location,
            seen: 0,
        }
    }

    /// Publishes one event to this client's stream and asserts it arrives.
    pub fn check(&mut self, s: &Server) {
        let (st, body) =
            s.publish(&event("dashboard", &self.location, "HEALTH", Value::Null).to_string());
        assert_eq!(st, 202, "publish while checking health: {body}");
        loop {
            let m = recv_json(&mut self.ws);
            if m["type"] == "event" {
                self.seen += 1;
                assert_eq!(m["seq"], self.seen, "healthy client saw {m}");
                return;
            }
        }
    }
}

/// A fresh connection upgrades, gets its hello and one event: the server serves.
pub fn assert_serving(s: &Server) {
    let mut h = Healthy::new(s);
    h.check(s);
}

impl Server {
    /// Open file descriptors of the server process (sockets included).
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// CPU time (user + system) of the server so far, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the `(comm)`; utime and stime are fields 14 and 15 of the line.
        let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        n(11) + n(12)
    }

    /// A counter or gauge from `/metrics` (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        metric(&self.metrics(), name)
    }

    /// Log lines that arrived so far (consumed from `log`).
    pub fn take_log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

/// Polls `cond` every 20 ms until it holds or `t` passes.
pub fn wait_until(t: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + t;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` events of about `size` bytes of data each, for one stream, as one body.
pub fn event_batch(channel: &str, location: &str, n: usize, size: usize) -> String {
    let pad = "x".repeat(size);
    let evs: Vec<Value> = (0..n)
        .map(|_| event(channel, location, "BULK", serde_json::json!({ "pad": pad })))
        .collect();
    Value::Array(evs).to_string()
}

/// A TCP connection whose receive buffer is set small before the handshake,
/// so that a client that reads slowly fills up quickly.
pub fn tcp_small_rcvbuf(addr: SocketAddr, bytes: usize) -> TcpStream {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    s.connect(&addr.into()).expect("connect");
    s.into()
}

/// A small deterministic generator for the tests' random bytes.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

impl Server {
    /// Like [`Server::start`], with the binary run under `wrapper` (which
    /// must exec it, so the pid stays the server's), e.g. `prlimit --nofile=40:40`.
    // The child is waited for in Drop; clippy cannot see that across the struct.
    #[allow(clippy::zombie_processes)]
    pub fn start_via(wrapper: &[&str], args: &[&str]) -> Server {
        Server::launch(wrapper, args, &[])
    }
}

// ---------------------------------------------------------------------------
// Edge helpers (tests/edge.rs): servers that listen on Unix sockets only.
// ---------------------------------------------------------------------------

/// A running server whose only listeners are Unix sockets: its banner says
/// `listening on unix:/path`, which [`Server::start`] (waiting for a TCP
/// address) would never accept. Killed when dropped.
pub struct UnixServer {
    pub child: Child,
    /// Log lines after the banner (stderr).
    pub log: mpsc::Receiver<String>,
}

impl UnixServer {
    /// `bistream <args>` (which must hold `--listen unix:...`), waiting until
    /// every Unix listener has printed its banner.
    #[allow(clippy::zombie_processes)]
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> UnixServer {
        let want = args.iter().filter(|a| a.starts_with("unix:")).count();
        assert!(want > 0, "UnixServer needs a --listen unix:/path");
        let (child, rx) = spawn_bistream(&[], args, env);
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = 0;
        while seen < want {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("bistream printed its unix: banner");
            if line.contains("listening on unix:") {
                seen += 1;
            }
        }
        UnixServer { child, log: rx }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name ("TERM", "INT").
    pub fn signal(&self, sig: &str) {
        signal_pid(self.pid(), sig);
    }

    /// Waits for the process to exit; its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        wait_child(&mut self.child, timeout)
    }
}

impl Drop for UnixServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kill -SIG pid`, asserting it was delivered.
pub fn signal_pid(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig}");
}

/// Waits up to `timeout` for `child` to exit; its status code.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Every environment variable the server reads: the `env = "..."` of its
/// flags in src/config.rs, and env_logger's (src/main.rs). [`bistream_command`]
/// removes them all, so that nothing exported in the shell that runs the tests
/// (a `JWT_SECRET_KEY` or `BISTREAM_JWT_SECRET_FILE` would turn auth on in
/// every suite) reaches a server; a test passes what it wants in `env`.
/// `RUST_LOG` is then set to `info`: tests read the info log lines.
/// tests/auth/environment.rs fails when src/ reads a variable missing here.
pub const SERVER_ENV: &[&str] = &[
    "BISTREAM_LISTEN",
    "BISTREAM_THREADS",
    "BISTREAM_MAX_CONNECTIONS",
    "BISTREAM_MAX_QUEUE_BYTES",
    "BISTREAM_MAX_MESSAGE_SIZE",
    "BISTREAM_MAX_HEAD_SIZE",
    "BISTREAM_HEARTBEAT_INTERVAL",
    "BISTREAM_HANDSHAKE_TIMEOUT",
    "BISTREAM_KEEPALIVE_TIMEOUT",
    "BISTREAM_DRAIN_TIMEOUT",
    "BISTREAM_HISTORY_SIZE",
    "BISTREAM_HISTORY_MAX_BYTES",
    "BISTREAM_HISTORY_TTL",
    "BISTREAM_LAST_VALUES",
    "BISTREAM_LAST_VALUES_MAX_BYTES",
    "BISTREAM_CONSOLE",
    "BISTREAM_ENGINE",
    "BISTREAM_REDIS_URL",
    "BISTREAM_ENGINE_PROBE_INTERVAL",
    "BISTREAM_REDIS_TIMEOUT",
    "JWT_SECRET_KEY",
    "BISTREAM_JWT_SECRET_FILE",
    "JWT_SECRET_KEY_PREVIOUS",
    "BISTREAM_JWT_SECRET_PREVIOUS_FILE",
    "BISTREAM_JWT_LEEWAY",
    "BISTREAM_ALLOW_ANONYMOUS",
    "BISTREAM_ALLOWED_ORIGINS",
    "BISTREAM_ENABLE_ECHO",
    "BISTREAM_DEMO",
    "BISTREAM_UNIX_SOCKET_MODE",
    "BISTREAM_TRUSTED_PROXIES",
    "BISTREAM_MAX_CONNECTIONS_PER_IP",
    "BISTREAM_RESTART_SPREAD",
    "BISTREAM_HANDOVER_TIMEOUT",
    "BISTREAM_PROXY_PROTOCOL",
    "BISTREAM_LOG_LEVEL",
    // Inherited sockets (systemd socket activation, a hand-over) and systemd's
    // readiness socket: a shell running under systemd may have them.
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "BISTREAM_HANDOVER",
    "NOTIFY_SOCKET",
    "RUST_LOG",
    "RUST_LOG_STYLE",
];

/// Removes every variable of [`SERVER_ENV`] from `cmd`'s environment and sets
/// `RUST_LOG=info`.
pub fn clear_server_env(cmd: &mut Command) -> &mut Command {
    for var in SERVER_ENV {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info")
}

/// The one way tests start the real binary: `wrapper... bistream args...`
/// (`wrapper`, e.g. `prlimit ...`, may be empty) with a clean environment
/// ([`SERVER_ENV`]) plus `env`, and no stdin. The caller picks stdout/stderr.
pub fn bistream_command(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Command {
    bistream_command_at(
        std::path::Path::new(env!("CARGO_BIN_EXE_bistream")),
        wrapper,
        args,
        env,
    )
}

/// [`bistream_command`] with the binary at `bin` (a copy the test may replace,
/// for a hand-over to another binary).
pub fn bistream_command_at(
    bin: &std::path::Path,
    wrapper: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((prog, rest)) => {
            let mut c = Command::new(prog);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(args);
    clear_server_env(&mut cmd).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts the real binary ([`bistream_command`]); its stderr lines arrive on
/// the receiver. The caller owns (and must kill) the child.
pub fn spawn_bistream(
    wrapper: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = bistream_command(wrapper, args, env);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn bistream");
    let rx = log_lines(&mut child);
    (child, rx)
}

/// `bistream args...` to completion ([`bistream_command`]), for runs that must
/// exit by themselves: start-up refusals, `bistream token`, `--check-config`.
/// A run still going after 10 s (it serves instead) is killed and fails the test.
pub fn run_bistream(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = bistream_command(&[], args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bistream");
    // Reading the pipes only after the exit is fine: these runs print little.
    let exited = wait_until(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("bistream output");
    assert!(
        exited,
        "bistream {args:?} did not exit by itself: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The child's stderr, line by line, on a channel (read by a thread of its own).
/// The first log line containing `needle` within `t` (lines before it are consumed).
pub fn log_line(log: &mpsc::Receiver<String>, needle: &str, t: Duration) -> Option<String> {
    let until = Instant::now() + t;
    while let Ok(line) = log.recv_timeout(until.saturating_duration_since(Instant::now())) {
        if line.contains(needle) {
            return Some(line);
        }
        eprintln!("(log) {line}");
    }
    None
}

pub fn log_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}
