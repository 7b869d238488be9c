//! Servers and requests: an auth-enabled server, raw upgrades and their
//! answers, bearer connections, log reading, runs to completion.

use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::Message;

use crate::common::*;
use crate::tokens::{now_ms, SECRET};

pub fn auth_server(args: &[&str]) -> Server {
    let mut all = vec!["--threads", "1"];
    all.extend_from_slice(args);
    Server::start_with_env(&all, &[("JWT_SECRET_KEY", SECRET)])
}

/// The answer to a raw upgrade request.
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A raw upgrade of `path` with extra header lines (each ending in `\r\n`).
pub fn upgrade(s: &Server, path: &str, extra: &str) -> Answer {
    let (status, head, body) = http_raw(s.addr, upgrade_request(path, extra).as_bytes());
    Answer { status, head, body }
}

pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// Asserts a refusal: status, `error` code, the contract's JSON body, `Connection: close`.
#[track_caller]
pub fn assert_refused(a: &Answer, status: u16, code: &str, what: &str) {
    assert_eq!(a.status, status, "{what}: {}", a.body);
    assert_eq!(a.error(), code, "{what}: {}", a.body);
    assert!(
        a.json()["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        a.body
    );
    assert!(a.head.contains("Connection: close"), "{what}: {}", a.head);
}

#[track_caller]
pub fn assert_upgraded(a: &Answer, what: &str) {
    assert_eq!(a.status, 101, "{what}: {} {}", a.head, a.body);
}

/// A full WebSocket connection sending `Authorization: Bearer <token>`.
pub fn connect_bearer(s: &Server, path: &str, token: &str) -> Ws {
    let mut req = s.url(path).into_client_request().expect("request");
    req.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header value"),
    );
    let (mut ws, resp) = tungstenite::connect(req).expect("connect with bearer");
    assert_eq!(resp.status().as_u16(), 101);
    set_timeout(&mut ws, Duration::from_secs(10));
    ws
}

/// Reads until the server's close frame: (code, reason, wall-clock ms when it came).
pub fn read_close(ws: &mut Ws) -> (u16, String, u64) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => {
                return (u16::from(f.code), f.reason.as_str().to_string(), now_ms())
            }
            Ok(Message::Close(None)) => return (0, String::new(), now_ms()),
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

/// Everything the server logged so far (after a moment for the pipe to catch up).
pub fn drain_log(s: &Server) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(300));
    let mut lines = Vec::new();
    while let Ok(l) = s.log.try_recv() {
        lines.push(l);
    }
    lines
}

/// Waits for a log line containing `needle`.
pub fn wait_for_log(s: &Server, needle: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(l) = s
        .log
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if l.contains(needle) {
            return Some(l);
        }
    }
    None
}

/// `bistream args...` run to completion (common::run_bistream): (exit code,
/// stdout, stderr).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = run_bistream(args, env);
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// A file holding `contents`, in a folder of this run under the target
/// directory (cargo's `CARGO_TARGET_TMPDIR`), so that nothing is left in the
/// system's temporary directory and `cargo clean` takes it away.
pub fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bistream-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

/// `POST /api/events` with `Authorization: Bearer <token>` when given.
pub fn publish_as(s: &Server, token: Option<&str>, body: &Value) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    s.publish_with(&body.to_string(), &headers)
}
