//! Issue 4: authentication and authorisation (PROTOCOL.md §4 and the §1 refusals)
//! against the real server: every token case, the bearer header, expiry of open
//! connections, publisher scope, rotation, origins, paths, refusal precedence,
//! start-up refusals, `bistream token`, and that no token ever reaches a body or a log.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::Message;

const SECRET: &str = "current-secret-0123456789abcdef-0123456789";
const PREVIOUS: &str = "previous-secret-0123456789abcdef-012345678";
const OTHER: &str = "unrelated-secret-0123456789abcdef-01234567";

// ---------------------------------------------------------------------------
// Tokens

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn sign_with(alg: Algorithm, secret: &str, claims: &Value) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes()).expect("HMAC key");
    jsonwebtoken::encode(&Header::new(alg), claims, &key).expect("sign")
}

/// HS256 with the server's current secret.
fn sign(claims: &Value) -> String {
    sign_with(Algorithm::HS256, SECRET, claims)
}

/// A subscriber token for `locations`, valid for ten minutes.
fn sub_token(locations: &[&str]) -> String {
    sign(&json!({"sub": "test", "locations": locations, "exp": now() + 600}))
}

fn pub_token(extra: Value) -> String {
    let mut claims = json!({"sub": "backend", "scope": "publish", "exp": now() + 600});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    sign(&claims)
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// `alg: none`: a header and payload with an empty signature, as an attacker writes it.
fn alg_none(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

// ---------------------------------------------------------------------------
// Servers and requests

fn auth_server(args: &[&str]) -> Server {
    let mut all = vec!["--threads", "1"];
    all.extend_from_slice(args);
    Server::start_with_env(&all, &[("JWT_SECRET_KEY", SECRET)])
}

/// The answer to a raw upgrade request.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A raw upgrade of `path` with extra header lines (each ending in `\r\n`).
fn upgrade(s: &Server, path: &str, extra: &str) -> Answer {
    let (status, head, body) = http_raw(s.addr, upgrade_request(path, extra).as_bytes());
    Answer { status, head, body }
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// Asserts a refusal: status, `error` code, the contract's JSON body, `Connection: close`.
#[track_caller]
fn assert_refused(a: &Answer, status: u16, code: &str, what: &str) {
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
fn assert_upgraded(a: &Answer, what: &str) {
    assert_eq!(a.status, 101, "{what}: {} {}", a.head, a.body);
}

/// A full WebSocket connection sending `Authorization: Bearer <token>`.
fn connect_bearer(s: &Server, path: &str, token: &str) -> Ws {
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
fn read_close(ws: &mut Ws) -> (u16, String, u64) {
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
fn drain_log(s: &Server) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(300));
    let mut lines = Vec::new();
    while let Ok(l) = s.log.try_recv() {
        lines.push(l);
    }
    lines
}

/// Waits for a log line containing `needle`.
fn wait_for_log(s: &Server, needle: &str) -> Option<String> {
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

/// Runs the binary to completion (at most 10 s): (exit code, stdout, stderr).
/// `None` as the code means it was still running and had to be killed.
fn run(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = bare_command(args, env);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn bistream");
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (code, out, err)
}

fn bare_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bistream"));
    cmd.args(args)
        .env_remove("JWT_SECRET_KEY")
        .env_remove("JWT_SECRET_KEY_PREVIOUS")
        .env_remove("BISTREAM_JWT_SECRET_FILE")
        .env_remove("BISTREAM_JWT_SECRET_PREVIOUS_FILE")
        .env_remove("BISTREAM_LISTEN")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Starts the binary and collects its stderr lines, for listeners the harness
/// cannot parse (Unix sockets). Killed by the caller.
fn spawn_logged(args: &[&str], env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = bare_command(args, env);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn bistream");
    let rx = log_lines(&mut child);
    (child, rx)
}

/// (what, extra arguments, environment, what stderr must say).
type StartCase<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
type CliCase<'a> = (&'a str, Vec<&'a str>, &'a [(&'a str, &'a str)], &'a str);

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bistream-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

// ---------------------------------------------------------------------------
// §4: where tokens come from

#[test]
fn a_good_token_works_in_the_query_and_in_the_bearer_header() {
    let s = auth_server(&[]);
    let tok = sub_token(&["loc-1"]);

    let (mut ws, hello) = s.subscribe(&format!("/ws/dashboard/loc-1?token={tok}"));
    assert_eq!(hello["location_id"], "loc-1");
    let mut bws = connect_bearer(&s, "/ws/dashboard/loc-1", &tok);
    assert_eq!(recv_json(&mut bws)["type"], "BI_CONNECTION_ESTABLISHED");

    // Both connections stream with auth on.
    let (st, _) = s.publish_with(
        &event("dashboard", "loc-1", "E", json!(1)).to_string(),
        &[("Authorization", &format!("Bearer {}", pub_token(json!({}))))],
    );
    assert_eq!(st, 202);
    assert_eq!(recv_json(&mut ws)["seq"], 1);
    assert_eq!(recv_json(&mut bws)["seq"], 1);

    // The scheme is case-insensitive (RFC 7235).
    let a = upgrade(
        &s,
        "/ws/dashboard/loc-1",
        &format!("Authorization: bearer {tok}\r\n"),
    );
    assert_upgraded(&a, "lower-case bearer");
    // A percent-encoded token in the query is decoded.
    let enc = tok.replace('.', "%2E");
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={enc}"), ""),
        "encoded query",
    );
}

#[test]
fn the_header_wins_when_both_are_sent() {
    let s = auth_server(&[]);
    let good = sub_token(&["loc-1"]);
    let a = upgrade(&s, "/ws/dashboard/loc-1?token=garbage", &bearer(&good));
    assert_upgraded(&a, "good header, garbage query");
    let a = upgrade(
        &s,
        &format!("/ws/dashboard/loc-1?token={good}"),
        &bearer("garbage"),
    );
    assert_refused(&a, 401, "invalid_token", "garbage header, good query");
    let wrong_place = sub_token(&["loc-2"]);
    let a = upgrade(
        &s,
        &format!("/ws/dashboard/loc-1?token={good}"),
        &bearer(&wrong_place),
    );
    assert_refused(
        &a,
        403,
        "forbidden",
        "header for another location, good query",
    );
    // `Bearer` with nothing after it was still sent: it wins, and is missing.
    let a = upgrade(
        &s,
        &format!("/ws/dashboard/loc-1?token={good}"),
        "Authorization: Bearer\r\n",
    );
    assert_refused(&a, 401, "token_missing", "empty bearer, good query");
}

#[test]
fn a_non_bearer_authorization_header_is_not_a_token() {
    // nginx `auth_basic` in front forwards `Authorization: Basic ...`; a browser then
    // sends its JWT as `?token=`, which must still count.
    let s = auth_server(&[]);
    let good = sub_token(&["loc-1"]);
    let basic = "Authorization: Basic dXNlcjpwYXNz\r\n";
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={good}"), basic),
        "basic + query",
    );
    assert_refused(
        &upgrade(&s, "/ws/dashboard/loc-1", basic),
        401,
        "token_missing",
        "basic only",
    );
}

#[test]
fn a_missing_token_is_401() {
    let s = auth_server(&[]);
    for path in [
        "/ws/dashboard/loc-1",
        "/ws/dashboard/loc-1?token=",
        "/ws/dashboard/loc-1?events=A",
    ] {
        assert_refused(&upgrade(&s, path, ""), 401, "token_missing", path);
    }
    // Every channel needs one.
    for prefix in [
        "/ws/dashboard/",
        "/ws/bi/revenue-intelligence/",
        "/ws/bot-performance/",
        "/ws/business-intelligence/",
        "/ws/ai-concierge/",
        "/ws/analytics/advanced/",
    ] {
        let path = format!("{prefix}loc-1");
        assert_refused(&upgrade(&s, &path, ""), 401, "token_missing", &path);
    }
    let m = s.metrics();
    assert_eq!(
        metric(&m, "bistream_handshake_failures_total{status=\"401\"}"),
        9.0
    );
}

// ---------------------------------------------------------------------------
// §4: what a token must pass

#[test]
fn every_bad_token_is_401_with_a_precise_code() {
    let s = auth_server(&[]);
    let t = now();
    let claims = |extra: Value| {
        let mut c = json!({"sub": "test", "locations": ["loc-1"]});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let good = claims(json!({"exp": t + 600}));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong secret",
            sign_with(Algorithm::HS256, OTHER, &good),
            "invalid_signature",
        ),
        ("alg none", alg_none(&good), "unsupported_algorithm"),
        (
            "alg none with a signature",
            format!("{}sig", alg_none(&good)),
            "unsupported_algorithm",
        ),
        (
            "HS512 with the right secret",
            sign_with(Algorithm::HS512, SECRET, &good),
            "unsupported_algorithm",
        ),
        (
            "HS384 with the right secret",
            sign_with(Algorithm::HS384, SECRET, &good),
            "unsupported_algorithm",
        ),
        (
            "expired beyond the leeway",
            sign(&claims(json!({"exp": t - 30}))),
            "token_expired",
        ),
        (
            "nbf in the future",
            sign(&claims(json!({"exp": t + 600, "nbf": t + 60}))),
            "token_not_yet_valid",
        ),
        ("no exp", sign(&claims(json!({}))), "token_missing_exp"),
        (
            "exp null",
            sign(&claims(json!({"exp": null}))),
            "token_missing_exp",
        ),
        (
            "exp as a string",
            sign(&claims(json!({"exp": (t + 600).to_string()}))),
            "invalid_claims",
        ),
        ("garbage", "garbage".to_string(), "invalid_token"),
        (
            "three garbage segments",
            "a.b.c".to_string(),
            "invalid_token",
        ),
        (
            "a token cut short",
            sub_token(&["loc-1"])[..40].to_string(),
            "invalid_token",
        ),
        ("too long", "a".repeat(9000), "invalid_token"),
    ];
    for (what, tok, code) in &cases {
        if tok.len() < 6000 {
            let a = upgrade(&s, &format!("/ws/dashboard/loc-1?token={tok}"), "");
            assert_refused(&a, 401, code, &format!("{what} (query)"));
            assert!(
                !a.body.contains(tok.as_str()),
                "{what}: body echoes the token"
            );
            let a = upgrade(&s, "/ws/dashboard/loc-1", &bearer(tok));
            assert_refused(&a, 401, code, &format!("{what} (header)"));
        } else {
            // Longer than the server's 8 KiB head limit: the head itself is refused.
            let a = upgrade(&s, &format!("/ws/dashboard/loc-1?token={tok}"), "");
            assert_eq!(a.status, 431, "{what}");
        }
    }
    // A tampered payload under a good signature.
    let tok = sub_token(&["loc-1"]);
    let parts: Vec<&str> = tok.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims(json!({"exp": t + 600, "locations": ["*"]}))
            .to_string()
            .as_bytes()),
        parts[2]
    );
    let a = upgrade(&s, &format!("/ws/dashboard/loc-2?token={forged}"), "");
    assert_refused(&a, 401, "invalid_signature", "tampered payload");
}

#[test]
fn expiry_and_nbf_respect_the_leeway() {
    // Default leeway: 5 s.
    let s = auth_server(&[]);
    let t = now();
    let tok = |c: Value| sign(&c);
    let within = tok(json!({"locations": ["loc-1"], "exp": t - 2}));
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={within}"), ""),
        "expired 2 s ago, leeway 5 s",
    );
    let nbf_soon = tok(json!({"locations": ["loc-1"], "exp": t + 600, "nbf": t + 2}));
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={nbf_soon}"), ""),
        "nbf in 2 s, leeway 5 s",
    );
    let nbf_past = tok(json!({"locations": ["loc-1"], "exp": t + 600, "nbf": t - 60}));
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={nbf_past}"), ""),
        "nbf in the past",
    );
    let beyond = tok(json!({"locations": ["loc-1"], "exp": t - 10}));
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={beyond}"), ""),
        401,
        "token_expired",
        "expired 10 s ago",
    );

    // --jwt-leeway 0s: strict.
    let strict = auth_server(&["--jwt-leeway", "0s"]);
    assert_refused(
        &upgrade(&strict, &format!("/ws/dashboard/loc-1?token={within}"), ""),
        401,
        "token_expired",
        "leeway 0",
    );
    assert_refused(
        &upgrade(
            &strict,
            &format!("/ws/dashboard/loc-1?token={nbf_soon}"),
            "",
        ),
        401,
        "token_not_yet_valid",
        "leeway 0",
    );
    // --jwt-leeway 60s: generous.
    let loose = auth_server(&["--jwt-leeway", "60s"]);
    let thirty = tok(json!({"locations": ["loc-1"], "exp": t - 30}));
    assert_upgraded(
        &upgrade(&loose, &format!("/ws/dashboard/loc-1?token={thirty}"), ""),
        "leeway 60 s",
    );
}

// ---------------------------------------------------------------------------
// §4: what a valid token grants

#[test]
fn a_valid_token_that_does_not_grant_the_stream_is_403() {
    let s = auth_server(&[]);
    let t = now() + 600;
    let loc1 = sub_token(&["loc-1"]);
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-2?token={loc1}"), ""),
        403,
        "forbidden",
        "wrong location",
    );
    // Location ids are compared exactly.
    for other in ["LOC-1", "loc-10", "loc-", "loc-1."] {
        let path = format!("/ws/dashboard/{other}?token={loc1}");
        assert_refused(&upgrade(&s, &path, ""), 403, "forbidden", other);
    }

    let dash = sign(&json!({"locations": ["loc-1"], "channels": ["dashboard"], "exp": t}));
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={dash}"), ""),
        "granted channel",
    );
    assert_refused(
        &upgrade(&s, &format!("/ws/bot-performance/loc-1?token={dash}"), ""),
        403,
        "forbidden",
        "wrong channel",
    );
    assert_refused(
        &upgrade(
            &s,
            &format!("/ws/analytics/advanced/loc-1?token={dash}"),
            "",
        ),
        403,
        "forbidden",
        "wrong channel",
    );

    // `["*"]` grants every location; absent channels grant all six.
    let star = sub_token(&["*"]);
    for path in [
        "/ws/dashboard/anything",
        "/ws/ai-concierge/loc-9",
        "/ws/bi/revenue-intelligence/x:y",
    ] {
        assert_upgraded(&upgrade(&s, &format!("{path}?token={star}"), ""), path);
    }
    let all_channels = sign(&json!({"locations": ["loc-1"], "channels": ["*"], "exp": t}));
    assert_upgraded(
        &upgrade(
            &s,
            &format!("/ws/business-intelligence/loc-1?token={all_channels}"),
            "",
        ),
        "channels *",
    );

    // Tokens that grant nothing.
    let no_locations = sign(&json!({"sub": "x", "exp": t}));
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={no_locations}"), ""),
        403,
        "forbidden",
        "no locations claim",
    );
    let empty = sign(&json!({"locations": [], "exp": t}));
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={empty}"), ""),
        403,
        "forbidden",
        "locations []",
    );
    let publisher = pub_token(json!({}));
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={publisher}"), ""),
        403,
        "forbidden",
        "publisher without locations",
    );

    let m = s.metrics();
    assert_eq!(
        metric(&m, "bistream_handshake_failures_total{status=\"403\"}"),
        10.0
    );
}

// ---------------------------------------------------------------------------
// §4: expiry of open connections

#[test]
fn an_open_connection_is_closed_1008_when_its_token_expires() {
    // Heartbeats every second interleave with the expiry deadline in the loop's timers.
    let s = auth_server(&["--jwt-leeway", "1s", "--heartbeat-interval", "1s"]);
    let exp = now() + 2;
    let short = sign(&json!({"locations": ["loc-1"], "exp": exp}));
    let long = sign(&json!({"locations": ["loc-1"], "exp": exp + 3}));
    let (mut a, _) = s.subscribe(&format!("/ws/dashboard/loc-1?token={short}"));
    let mut b = connect_bearer(&s, "/ws/dashboard/loc-1", &long);
    assert_eq!(recv_json(&mut b)["type"], "BI_CONNECTION_ESTABLISHED");

    // Both clients keep reading, so they answer the heartbeat pings.
    let later = std::thread::spawn(move || read_close(&mut b));

    let (code, reason, at) = read_close(&mut a);
    let due = (exp + 1) * 1000;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    assert!(at + 50 >= due, "closed {} ms before exp + leeway", due - at);
    assert!(
        at <= due + 1000,
        "closed {} ms after exp + leeway",
        at - due
    );
    // The other connection, with a later exp, was open all along (it survived the
    // heartbeats and the first expiry) and is closed at its own exp + leeway.
    let (code, reason, at) = later.join().unwrap();
    let due = (exp + 4) * 1000;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    assert!(
        at + 50 >= due && at <= due + 1000,
        "closed at {at}, due {due}"
    );

    std::thread::sleep(Duration::from_millis(100));
    let m = s.metrics();
    assert_eq!(
        metric(&m, "bistream_connections{channel=\"dashboard\"}"),
        0.0
    );
}

#[test]
fn a_token_accepted_within_the_leeway_is_closed_at_exp_plus_leeway() {
    let s = auth_server(&["--jwt-leeway", "2s"]);
    let exp = now();
    let tok = sign(&json!({"locations": ["loc-1"], "exp": exp}));
    let (mut ws, _) = s.subscribe(&format!("/ws/dashboard/loc-1?token={tok}"));
    let (code, reason, at) = read_close(&mut ws);
    let due = (exp + 2) * 1000;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    assert!(
        at + 50 >= due && at <= due + 1000,
        "closed at {at}, due {due}"
    );
}

// ---------------------------------------------------------------------------
// §4/§5: publishing

fn publish_as(s: &Server, token: Option<&str>, body: &Value) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    s.publish_with(&body.to_string(), &headers)
}

#[test]
fn publishing_needs_a_publisher_token() {
    let s = auth_server(&[]);
    let ev = event("dashboard", "loc-1", "E", json!(1));
    let (st, body) = publish_as(&s, None, &ev);
    assert_eq!((st, body["error"].as_str()), (401, Some("token_missing")));
    let (st, body) = publish_as(&s, Some("garbage"), &ev);
    assert_eq!((st, body["error"].as_str()), (401, Some("invalid_token")));
    let expired = sign(&json!({"scope": "publish", "exp": now() - 60}));
    let (st, body) = publish_as(&s, Some(&expired), &ev);
    assert_eq!((st, body["error"].as_str()), (401, Some("token_expired")));
    let hs512 = sign_with(
        Algorithm::HS512,
        SECRET,
        &json!({"scope": "publish", "exp": now() + 60}),
    );
    assert_eq!(publish_as(&s, Some(&hs512), &ev).0, 401);

    // A subscriber token, even for this very stream, may not publish.
    let (st, body) = publish_as(&s, Some(&sub_token(&["*"])), &ev);
    assert_eq!((st, body["error"].as_str()), (403, Some("forbidden")));
    for scope in ["publisher", "PUBLISH", "read,publish", ""] {
        let tok = sign(&json!({"scope": scope, "exp": now() + 60}));
        assert_eq!(publish_as(&s, Some(&tok), &ev).0, 403, "scope {scope:?}");
    }

    // A publisher token: 202, and the event reaches an authorised subscriber.
    let (mut ws, _) = s.subscribe(&format!(
        "/ws/dashboard/loc-1?token={}",
        sub_token(&["loc-1"])
    ));
    let publisher = pub_token(json!({}));
    let (st, body) = publish_as(&s, Some(&publisher), &ev);
    assert_eq!((st, body), (202, json!({"accepted": 1})));
    assert_eq!(recv_json(&mut ws)["data"], 1);
    let multi = sign(&json!({"scope": "read publish", "exp": now() + 60}));
    assert_eq!(publish_as(&s, Some(&multi), &ev).0, 202);
    // ?token= works for the API too.
    let (st, _, _) = http_raw(
        s.addr,
        format!(
            "POST /api/events?token={publisher} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{ev}",
            ev.to_string().len()
        )
        .as_bytes(),
    );
    assert_eq!(st, 202);
}

#[test]
fn a_restricted_publisher_token_publishes_only_where_it_may() {
    let s = auth_server(&[]);
    let loc1 = pub_token(json!({"locations": ["loc-1"]}));
    let dash = pub_token(json!({"channels": ["dashboard"]}));
    let both =
        pub_token(json!({"locations": ["loc-1"], "channels": ["dashboard", "ai-concierge"]}));
    let stars = pub_token(json!({"locations": ["*"], "channels": ["*"]}));
    let ev = |c: Value, l: &str| json!({"channel": c, "location_id": l, "event_type": "E"});
    let cases = [
        (&loc1, ev(json!("dashboard"), "loc-1"), 202),
        (&loc1, ev(json!("bot-performance"), "loc-1"), 202),
        (&loc1, ev(json!("dashboard"), "loc-2"), 403),
        (&loc1, ev(json!("dashboard"), "*"), 403),
        (&loc1, ev(json!("*"), "loc-1"), 202),
        (&dash, ev(json!("dashboard"), "loc-7"), 202),
        (&dash, ev(json!("dashboard"), "*"), 202),
        (&dash, ev(json!("bot-performance"), "loc-1"), 403),
        (&dash, ev(json!("*"), "loc-1"), 403),
        (
            &dash,
            ev(json!(["dashboard", "bot-performance"]), "loc-1"),
            403,
        ),
        (
            &both,
            ev(json!(["dashboard", "ai-concierge"]), "loc-1"),
            202,
        ),
        (
            &both,
            ev(json!(["dashboard", "ai-concierge"]), "loc-2"),
            403,
        ),
        (&both, ev(json!("*"), "loc-1"), 403),
        (&stars, ev(json!("*"), "*"), 202),
    ];
    for (i, (tok, body, want)) in cases.iter().enumerate() {
        let (st, resp) = publish_as(&s, Some(tok), body);
        assert_eq!(st, *want, "case {i}: {body} → {resp}");
        if *want == 403 {
            assert_eq!(resp["error"], "forbidden", "case {i}");
        }
    }
    // One event outside the grant refuses the whole batch: nothing is published.
    std::thread::sleep(Duration::from_millis(200));
    let before = metric(&s.metrics(), "bistream_events_published_total");
    let batch = json!([
        ev(json!("dashboard"), "loc-1"),
        ev(json!("dashboard"), "loc-2")
    ]);
    assert_eq!(publish_as(&s, Some(&loc1), &batch).0, 403);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        metric(&s.metrics(), "bistream_events_published_total"),
        before
    );
}

#[test]
fn an_unauthorised_publish_is_refused_before_its_body_is_read() {
    let s = auth_server(&[]);
    // No 100 Continue for a request without a token: the client never sends the body.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(
        &mut c,
        b"POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Length: 500000\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let (st, _, body) = read_response(&mut c);
    assert_eq!(st, 401, "{body}");
    // A 1 MiB body announced without a token is 401, not buffered.
    let (st, _, _) = http_raw(
        s.addr,
        b"POST /api/events HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n",
    );
    assert_eq!(st, 401);
    // A client that sends its whole body anyway still reads its 401.
    let body = format!(
        "[{}]",
        vec![event("dashboard", "loc-1", "E", json!("x".repeat(900))).to_string(); 1000].join(",")
    );
    assert!(body.len() < 1 << 20);
    let (st, resp) = s.publish(&body);
    assert_eq!((st, resp["error"].as_str()), (401, Some("token_missing")));
    // With a token, the body limits apply as before.
    let tok = pub_token(json!({}));
    let req = format!("POST /api/events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\nContent-Length: 99999999\r\n\r\n");
    assert_eq!(http_raw(s.addr, req.as_bytes()).0, 413);
}

// ---------------------------------------------------------------------------
// §4: rotation and secret files

#[test]
fn the_previous_secret_verifies_during_a_rotation() {
    let s = Server::start_with_env(
        &["--threads", "1"],
        &[
            ("JWT_SECRET_KEY", SECRET),
            ("JWT_SECRET_KEY_PREVIOUS", PREVIOUS),
        ],
    );
    let claims = json!({"locations": ["loc-1"], "exp": now() + 600});
    let current = sign_with(Algorithm::HS256, SECRET, &claims);
    let previous = sign_with(Algorithm::HS256, PREVIOUS, &claims);
    let third = sign_with(Algorithm::HS256, OTHER, &claims);
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={current}"), ""),
        "current secret",
    );
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={previous}"), ""),
        "previous secret",
    );
    assert_upgraded(
        &upgrade(&s, "/ws/dashboard/loc-1", &bearer(&previous)),
        "previous secret, header",
    );
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={third}"), ""),
        401,
        "invalid_signature",
        "a third secret",
    );
    // An expired token signed with the previous key stays `token_expired`.
    let old = sign_with(
        Algorithm::HS256,
        PREVIOUS,
        &json!({"locations": ["loc-1"], "exp": now() - 60}),
    );
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={old}"), ""),
        401,
        "token_expired",
        "expired, previous",
    );
    // A publisher token from before the rotation still publishes.
    let p = sign_with(
        Algorithm::HS256,
        PREVIOUS,
        &json!({"scope": "publish", "exp": now() + 60}),
    );
    assert_eq!(
        publish_as(&s, Some(&p), &event("dashboard", "loc-1", "E", json!(1))).0,
        202
    );
}

#[test]
fn a_rotation_step_by_step_as_docs_security_describes_it() {
    let claims = json!({"locations": ["loc-1"], "exp": now() + 600});
    let old_tok = sign_with(Algorithm::HS256, SECRET, &claims);
    let new_tok = sign_with(Algorithm::HS256, OTHER, &claims);
    // 1. Running with the old secret.
    let s = Server::start_with_env(&["--threads", "1"], &[("JWT_SECRET_KEY", SECRET)]);
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={old_tok}"), ""),
        "step 1, old",
    );
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={new_tok}"), ""),
        401,
        "invalid_signature",
        "step 1, new",
    );
    drop(s);
    // 2. Restart with the new secret current and the old one previous: both work.
    let s = Server::start_with_env(
        &["--threads", "1"],
        &[
            ("JWT_SECRET_KEY", OTHER),
            ("JWT_SECRET_KEY_PREVIOUS", SECRET),
        ],
    );
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={old_tok}"), ""),
        "step 2, old",
    );
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={new_tok}"), ""),
        "step 2, new",
    );
    drop(s);
    // 3. Once every old token has expired, drop the previous secret.
    let s = Server::start_with_env(&["--threads", "1"], &[("JWT_SECRET_KEY", OTHER)]);
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={old_tok}"), ""),
        401,
        "invalid_signature",
        "step 3, old",
    );
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={new_tok}"), ""),
        "step 3, new",
    );
}

#[test]
fn secrets_can_come_from_files() {
    // A trailing newline (`echo secret > file`) is not part of the secret.
    let current = temp_file("current", &format!("{SECRET}\n"));
    let previous = temp_file("previous", PREVIOUS);
    let claims = json!({"locations": ["loc-1"], "exp": now() + 600});
    let s = Server::start(&[
        "--threads",
        "1",
        "--jwt-secret-file",
        current.to_str().unwrap(),
        "--jwt-secret-previous-file",
        previous.to_str().unwrap(),
    ]);
    for (what, secret) in [("current file", SECRET), ("previous file", PREVIOUS)] {
        let tok = sign_with(Algorithm::HS256, secret, &claims);
        assert_upgraded(
            &upgrade(&s, &format!("/ws/dashboard/loc-1?token={tok}"), ""),
            what,
        );
    }
    let third = sign_with(Algorithm::HS256, OTHER, &claims);
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={third}"), ""),
        401,
        "invalid_signature",
        "third",
    );
    assert_refused(
        &upgrade(&s, "/ws/dashboard/loc-1", ""),
        401,
        "token_missing",
        "auth is on",
    );
    drop(s);

    // The environment twins of the file flags.
    let s = Server::start_with_env(
        &["--threads", "1"],
        &[
            ("BISTREAM_JWT_SECRET_FILE", current.to_str().unwrap()),
            (
                "BISTREAM_JWT_SECRET_PREVIOUS_FILE",
                previous.to_str().unwrap(),
            ),
        ],
    );
    let tok = sign_with(Algorithm::HS256, PREVIOUS, &claims);
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={tok}"), ""),
        "previous via env file",
    );
    assert_refused(
        &upgrade(&s, "/ws/dashboard/loc-1", ""),
        401,
        "token_missing",
        "auth is on (env file)",
    );
}

// ---------------------------------------------------------------------------
// §4: origins

#[test]
fn allowed_origins_are_exact_matches_and_no_origin_is_allowed() {
    let s = auth_server(&[
        "--allowed-origins",
        "https://app.example,https://admin.example:8443",
    ]);
    let tok = sub_token(&["loc-1"]);
    let path = format!("/ws/dashboard/loc-1?token={tok}");
    for ok in ["https://app.example", "https://admin.example:8443"] {
        assert_upgraded(&upgrade(&s, &path, &format!("Origin: {ok}\r\n")), ok);
    }
    assert_upgraded(&upgrade(&s, &path, ""), "no Origin header");
    for bad in [
        "https://evil.example",
        "http://app.example",
        "https://app.example.evil.example",
        "https://app.example/",
        "https://APP.example",
        "https://admin.example",
        "null",
        "",
    ] {
        let a = upgrade(&s, &path, &format!("Origin: {bad}\r\n"));
        assert_refused(&a, 403, "origin_not_allowed", bad);
    }
    // Without --allowed-origins, any origin.
    let open = auth_server(&[]);
    assert_upgraded(
        &upgrade(&open, &path, "Origin: https://anything.example\r\n"),
        "no list",
    );
}

// ---------------------------------------------------------------------------
// §1 item 7: paths are authorised on exactly the location that is streamed

#[test]
fn odd_paths_are_400_and_never_authorised_elsewhere() {
    let s = auth_server(&[]);
    // Tokens for `b` and for every location: neither makes an odd path acceptable.
    let b = sub_token(&["b"]);
    let star = sub_token(&["*"]);
    let paths = [
        "/ws/dashboard/a/../b",
        "/ws/dashboard/../b",
        "/ws/dashboard/./b",
        "/ws/dashboard/..",
        "/ws/dashboard/.",
        "/ws/dashboard/a%2Fb",
        "/ws/dashboard/a%2fb",
        "/ws/dashboard/%2E%2E/b",
        "/ws/dashboard/%62",
        "/ws/dashboard/%41",
        "/ws/dashboard/b%00",
        "/ws/dashboard/b/",
        "/ws/dashboard//b",
        "/ws/dashboard/b;x",
        "/ws/dashboard/b%20",
        "/ws/dashboard/b#frag",
        "/ws/dashboard/b\\c",
        "/ws/dashboard/",
        "/ws/dashboard/*",
        "/ws/bi/revenue-intelligence/../../dashboard/b",
    ];
    for p in paths {
        for (what, tok) in [("b", &b), ("*", &star)] {
            let a = upgrade(&s, &format!("{p}?token={tok}"), "");
            assert_refused(
                &a,
                400,
                "invalid_location",
                &format!("{p} with a token for {what}"),
            );
        }
        // 400 comes before 401.
        assert_refused(
            &upgrade(&s, p, ""),
            400,
            "invalid_location",
            &format!("{p} without a token"),
        );
    }
    // Paths that do not name an endpoint are 404, whatever the token.
    for p in [
        "/ws/./dashboard/b",
        "/ws//dashboard/b",
        "/ws/Dashboard/b",
        "/WS/dashboard/b",
        "/ws/dashboard%2Fb",
    ] {
        let a = upgrade(&s, &format!("{p}?token={star}"), "");
        assert_eq!(a.status, 404, "{p}: {}", a.body);
    }
    // The id as written is the id authorised and the id streamed.
    let dotted = sub_token(&["a.b:c_d-1"]);
    let (_ws, hello) = s.subscribe(&format!("/ws/dashboard/a.b:c_d-1?token={dotted}"));
    assert_eq!(hello["location_id"], "a.b:c_d-1");
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/a.b:c_d-2?token={dotted}"), ""),
        403,
        "forbidden",
        "neighbour",
    );
}

// ---------------------------------------------------------------------------
// §1: refusal precedence where auth is involved

#[test]
fn refusal_precedence_around_auth() {
    let s = auth_server(&["--allowed-origins", "https://app.example"]);
    let good = sub_token(&["loc-1"]);
    let wrong_loc = sub_token(&["loc-2"]);
    let expired = sign(&json!({"locations": ["loc-2"], "exp": now() - 60}));

    // 404 and 405 before 401.
    assert_eq!(upgrade(&s, "/ws/unknown/loc-1", "").status, 404);
    let req = upgrade_request("/ws/dashboard/loc-1", "").replacen("GET", "POST", 1);
    assert_eq!(http_raw(s.addr, req.as_bytes()).0, 405);
    // 400 (bad since, bad events, not an upgrade) before 401, even with a bad token.
    let a = upgrade(&s, "/ws/dashboard/loc-1?since=x&token=garbage", "");
    assert_refused(&a, 400, "invalid_since", "bad since + bad token");
    let a = upgrade(&s, "/ws/dashboard/loc-1?events=a%20b", "");
    assert_refused(&a, 400, "invalid_events", "bad events + no token");
    let req = upgrade_request("/ws/dashboard/loc-1?token=garbage", "")
        .replace("Sec-WebSocket-Version: 13\r\n", "");
    assert_eq!(http_raw(s.addr, req.as_bytes()).0, 400);
    // 426 before 401.
    let req = upgrade_request("/ws/dashboard/loc-1", "").replace("Version: 13", "Version: 8");
    assert_eq!(http_raw(s.addr, req.as_bytes()).0, 426);
    // Origin 403 before 401, and before the grant's 403.
    let a = upgrade(
        &s,
        "/ws/dashboard/loc-1",
        "Origin: https://evil.example\r\n",
    );
    assert_refused(&a, 403, "origin_not_allowed", "bad origin + no token");
    let a = upgrade(
        &s,
        &format!("/ws/dashboard/loc-1?token={good}"),
        "Origin: https://evil.example\r\n",
    );
    assert_refused(&a, 403, "origin_not_allowed", "bad origin + good token");
    // 401 before the grant's 403: an expired token for the wrong location.
    let a = upgrade(
        &s,
        &format!("/ws/dashboard/loc-1?token={expired}"),
        "Origin: https://app.example\r\n",
    );
    assert_refused(&a, 401, "token_expired", "expired + wrong location");
    let a = upgrade(&s, &format!("/ws/dashboard/loc-1?token={wrong_loc}"), "");
    assert_refused(&a, 403, "forbidden", "valid, wrong location");
}

#[test]
fn the_connection_limit_503_comes_before_401() {
    let s = auth_server(&["--max-connections", "1"]);
    // A connection that has not sent its head yet counts toward the limit.
    let _holder = TcpStream::connect(s.addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let a = upgrade(&s, "/ws/dashboard/loc-1?token=garbage", "");
    assert_refused(&a, 503, "unavailable", "over the limit + bad token");
    let a = upgrade(&s, "/ws/dashboard/loc-1", "");
    assert_refused(&a, 503, "unavailable", "over the limit + no token");
}

#[test]
fn draining_503_comes_before_401() {
    let s = auth_server(&["--drain-timeout", "5s"]);
    // An open stream keeps the drain (and the listener) going while we knock.
    let tok = sub_token(&["loc-1"]);
    let (mut ws, _) = s.subscribe(&format!("/ws/dashboard/loc-1?token={tok}"));
    s.signal("TERM");
    // The stream is told the server is going away; it does not answer, so the drain lingers.
    assert_eq!(read_close(&mut ws).0, 1001);
    let a = upgrade(&s, "/ws/dashboard/loc-1?token=garbage", "");
    assert_eq!(a.status, 503, "{}", a.body);
    let a = upgrade(&s, "/ws/dashboard/loc-1", "");
    assert_eq!(a.status, 503, "{}", a.body);
}

// ---------------------------------------------------------------------------
// No token in any body or log line

#[test]
fn no_token_reaches_a_body_or_a_log_line() {
    let s = Server::start_with_env(
        &["--threads", "1", "--allowed-origins", "https://app.example"],
        &[("JWT_SECRET_KEY", SECRET), ("RUST_LOG", "trace")],
    );
    let t = now();
    let tokens = [
        sub_token(&["loc-1"]),
        sub_token(&["loc-2"]),
        sign_with(
            Algorithm::HS256,
            OTHER,
            &json!({"locations": ["loc-1"], "exp": t + 60}),
        ),
        sign_with(
            Algorithm::HS512,
            SECRET,
            &json!({"locations": ["loc-1"], "exp": t + 60}),
        ),
        alg_none(&json!({"locations": ["loc-1"], "exp": t + 60})),
        sign(&json!({"locations": ["loc-1"], "exp": t - 60})),
        sign(&json!({"locations": ["loc-1"]})),
        pub_token(json!({"locations": ["loc-1"]})),
        "not-a-jwt-but-secret-looking-string".to_string(),
    ];
    let mut bodies = Vec::new();
    for tok in &tokens {
        for path in [
            "/ws/dashboard/loc-1",
            "/ws/dashboard/loc-2",
            "/ws/dashboard/a%2F..",
            "/ws/nope/x",
        ] {
            bodies.push(upgrade(&s, &format!("{path}?token={tok}&since=1"), "").body);
            bodies.push(upgrade(&s, path, &bearer(tok)).body);
            bodies.push(
                upgrade(
                    &s,
                    path,
                    &format!("{}Origin: https://evil.example\r\n", bearer(tok)),
                )
                .body,
            );
        }
        let ev = event("dashboard", "loc-2", "E", json!(1));
        bodies.push(publish_as(&s, Some(tok), &ev).1.to_string());
        bodies.push(
            publish_as(&s, Some(tok), &json!({"channel": "nope"}))
                .1
                .to_string(),
        );
    }
    let log = drain_log(&s);
    // The log level really was trace: refusals were logged.
    assert!(
        log.iter().any(|l| l.contains("refused handshake")),
        "no debug lines captured: {log:?}"
    );
    for tok in &tokens {
        // Any of the token's segments would be a leak (the signature alone is enough
        // to replay nothing, but the payload names tenants).
        let pieces: Vec<&str> = tok.split('.').filter(|p| p.len() >= 16).collect();
        for b in &bodies {
            for p in &pieces {
                assert!(!b.contains(p), "a body contains part of a token: {b}");
            }
        }
        for l in &log {
            for p in &pieces {
                assert!(!l.contains(p), "a log line contains part of a token: {l}");
            }
            assert!(!l.contains(SECRET), "a log line contains the secret: {l}");
        }
    }
}

// ---------------------------------------------------------------------------
// §4: fail closed at start-up

#[test]
fn start_up_refuses_a_short_or_empty_secret() {
    let long_enough = "x".repeat(32);
    let cases: Vec<StartCase> = vec![
        (
            "31-byte secret",
            vec![],
            vec![("JWT_SECRET_KEY", &long_enough[..31])],
            "at least 32",
        ),
        (
            "empty JWT_SECRET_KEY",
            vec![],
            vec![("JWT_SECRET_KEY", "")],
            "0 bytes",
        ),
        (
            "empty --jwt-secret",
            vec!["--jwt-secret", ""],
            vec![],
            "0 bytes",
        ),
        (
            "short previous secret",
            vec![],
            vec![
                ("JWT_SECRET_KEY", SECRET),
                ("JWT_SECRET_KEY_PREVIOUS", "short"),
            ],
            "JWT_SECRET_KEY_PREVIOUS",
        ),
        (
            "empty previous secret",
            vec![],
            vec![("JWT_SECRET_KEY", SECRET), ("JWT_SECRET_KEY_PREVIOUS", "")],
            "JWT_SECRET_KEY_PREVIOUS",
        ),
        (
            "leeway over an hour",
            vec!["--jwt-leeway", "2h"],
            vec![("JWT_SECRET_KEY", SECRET)],
            "leeway",
        ),
    ];
    for (what, args, env, needle) in cases {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend(args);
        let (code, _, err) = run(&all, &env);
        assert!(
            code.is_some_and(|c| c != 0),
            "{what}: exit {code:?}, stderr {err}"
        );
        assert!(err.contains(needle), "{what}: stderr {err:?}");
        assert!(!err.contains("listening on"), "{what}: it started: {err}");
        if let Some((_, v)) = env.iter().find(|(k, _)| *k == "JWT_SECRET_KEY") {
            if v.len() > 8 {
                assert!(!err.contains(v), "{what}: the secret is printed");
            }
        }
    }
    // Exactly 32 bytes is enough.
    let s = Server::start_with_env(&["--threads", "1"], &[("JWT_SECRET_KEY", &long_enough)]);
    assert_refused(
        &upgrade(&s, "/ws/dashboard/loc-1", ""),
        401,
        "token_missing",
        "32-byte secret",
    );
}

#[test]
fn start_up_refuses_unreadable_or_ambiguous_secret_sources() {
    let empty = temp_file("empty", "");
    let newline_only = temp_file("newline", "\n");
    let short = temp_file("short", "short\n");
    let good = temp_file("good", SECRET);
    let missing = std::env::temp_dir().join("bistream-auth-no-such-file");
    let cases: Vec<StartCase> = vec![
        (
            "missing file",
            vec!["--jwt-secret-file", missing.to_str().unwrap()],
            vec![],
            "cannot read",
        ),
        (
            "empty file",
            vec!["--jwt-secret-file", empty.to_str().unwrap()],
            vec![],
            "0 bytes",
        ),
        (
            "newline-only file",
            vec!["--jwt-secret-file", newline_only.to_str().unwrap()],
            vec![],
            "0 bytes",
        ),
        (
            "short file",
            vec!["--jwt-secret-file", short.to_str().unwrap()],
            vec![],
            "at least 32",
        ),
        (
            "missing previous file",
            vec!["--jwt-secret-previous-file", missing.to_str().unwrap()],
            vec![("JWT_SECRET_KEY", SECRET)],
            "cannot read",
        ),
        (
            "short previous file",
            vec!["--jwt-secret-previous-file", short.to_str().unwrap()],
            vec![("JWT_SECRET_KEY", SECRET)],
            "JWT_SECRET_KEY_PREVIOUS",
        ),
        // A previous secret without a current one is a rotation gone wrong, not "open".
        (
            "previous without current",
            vec![],
            vec![("JWT_SECRET_KEY_PREVIOUS", PREVIOUS)],
            "JWT_SECRET_KEY_PREVIOUS",
        ),
        (
            "previous file without current",
            vec!["--jwt-secret-previous-file", good.to_str().unwrap()],
            vec![],
            "JWT_SECRET_KEY_PREVIOUS",
        ),
        // Two sources for one secret: refuse rather than pick one silently.
        (
            "env and file",
            vec!["--jwt-secret-file", good.to_str().unwrap()],
            vec![("JWT_SECRET_KEY", OTHER)],
            "--jwt-secret-file",
        ),
        (
            "previous env and file",
            vec!["--jwt-secret-previous-file", good.to_str().unwrap()],
            vec![
                ("JWT_SECRET_KEY", OTHER),
                ("JWT_SECRET_KEY_PREVIOUS", PREVIOUS),
            ],
            "--jwt-secret-previous-file",
        ),
    ];
    for (what, args, env, needle) in cases {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend(args);
        let (code, _, err) = run(&all, &env);
        assert!(
            code.is_some_and(|c| c != 0),
            "{what}: exit {code:?}, stderr {err}"
        );
        assert!(err.contains(needle), "{what}: stderr {err:?}");
        assert!(
            !err.contains(SECRET) && !err.contains(PREVIOUS) && !err.contains(OTHER),
            "{what}: {err}"
        );
    }
}

#[test]
fn no_secret_on_the_network_refuses_unless_anonymous() {
    for listen in [
        vec!["--listen", "0.0.0.0:0"],
        vec!["--listen", "127.0.0.1:0", "--listen", "0.0.0.0:0"],
    ] {
        let (code, _, err) = run(&listen, &[]);
        assert!(code.is_some_and(|c| c != 0), "{listen:?}: exit {code:?}");
        assert!(
            err.contains("--allow-anonymous") && err.contains("JWT_SECRET_KEY"),
            "{err}"
        );
        assert!(!err.contains("listening on"), "{err}");
    }
    // Comma-separated in the environment is the same.
    let (code, _, _) = run(&[], &[("BISTREAM_LISTEN", "127.0.0.1:0,0.0.0.0:0")]);
    assert!(code.is_some_and(|c| c != 0));

    // --allow-anonymous: runs open, and says so loudly.
    let s = Server::start(&[
        "--listen",
        "0.0.0.0:0",
        "--allow-anonymous",
        "--threads",
        "1",
    ]);
    assert!(
        wait_for_log(&s, "OPEN").is_some(),
        "no warning about running open"
    );
    drop(s);
    // With a secret, any address is fine.
    let s = Server::start_with_env(
        &["--listen", "0.0.0.0:0", "--threads", "1"],
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], s.addr.port()));
    let (st, _, _) = http_raw(local, upgrade_request("/ws/dashboard/loc-1", "").as_bytes());
    assert_eq!(st, 401);
}

#[test]
fn no_secret_on_loopback_runs_open_with_a_loud_warning() {
    let s = Server::start(&["--threads", "1"]);
    let warn = wait_for_log(&s, "NO JWT_SECRET_KEY").expect("a warning about running open");
    assert!(warn.contains("WARN"), "{warn}");
    // Open: no token needed to subscribe or publish.
    let (mut ws, _) = s.subscribe("/ws/dashboard/loc-1");
    assert_eq!(
        s.publish(&event("dashboard", "loc-1", "E", json!(1)).to_string())
            .0,
        202
    );
    assert_eq!(recv_json(&mut ws)["seq"], 1);
    drop(s);

    // A Unix socket counts as loopback.
    let sock = std::env::temp_dir().join(format!("bistream-auth-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let listen = format!("unix:{}", sock.display());
    let (mut child, log) = spawn_logged(&["--listen", &listen, "--threads", "1"], &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw = (false, false);
    while let Ok(l) = log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        saw.0 |= l.contains("listening on unix:");
        saw.1 |= l.contains("NO JWT_SECRET_KEY");
        if saw == (true, true) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&sock);
    assert_eq!(saw, (true, true), "unix listener runs open with a warning");
}

// ---------------------------------------------------------------------------
// `bistream token`

fn cli_token(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all, env);
    assert_eq!(code, Some(0), "bistream {all:?}: {err}");
    let tok = out.trim().to_string();
    assert_eq!(tok.split('.').count(), 3, "{out:?}");
    assert!(!tok.contains(char::is_whitespace));
    tok
}

#[test]
fn bistream_token_mints_tokens_the_server_accepts() {
    let env = [("JWT_SECRET_KEY", SECRET)];
    let s = auth_server(&[]);

    let tok = cli_token(&["--location", "loc-1", "--ttl", "1h"], &env);
    let (mut ws, _) = s.subscribe(&format!("/ws/dashboard/loc-1?token={tok}"));
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-2?token={tok}"), ""),
        403,
        "forbidden",
        "other location",
    );
    assert_eq!(
        publish_as(&s, Some(&tok), &event("dashboard", "loc-1", "E", json!(1))).0,
        403
    );

    let two = cli_token(
        &[
            "--location",
            "loc-1",
            "--location",
            "loc-2",
            "--channel",
            "dashboard",
        ],
        &env,
    );
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-2?token={two}"), ""),
        "second location",
    );
    assert_refused(
        &upgrade(&s, &format!("/ws/ai-concierge/loc-1?token={two}"), ""),
        403,
        "forbidden",
        "other channel",
    );

    let star = cli_token(&["--location", "*"], &env);
    assert_upgraded(
        &upgrade(
            &s,
            &format!("/ws/bot-performance/anywhere?token={star}"),
            "",
        ),
        "*",
    );

    let publisher = cli_token(&["--publisher"], &env);
    let (st, _) = publish_as(
        &s,
        Some(&publisher),
        &event("dashboard", "loc-1", "CLI", json!(2)),
    );
    assert_eq!(st, 202);
    assert_eq!(recv_json(&mut ws)["event_type"], "CLI");
    let scoped = cli_token(
        &[
            "--publisher",
            "--location",
            "loc-1",
            "--channel",
            "dashboard",
        ],
        &env,
    );
    assert_eq!(
        publish_as(
            &s,
            Some(&scoped),
            &event("dashboard", "loc-1", "E", json!(3))
        )
        .0,
        202
    );
    assert_eq!(
        publish_as(
            &s,
            Some(&scoped),
            &event("dashboard", "loc-2", "E", json!(3))
        )
        .0,
        403
    );

    // The ttl is honoured: exp = now + ttl.
    let short = cli_token(&["--location", "loc-1", "--ttl", "90s"], &env);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(short.split('.').nth(1).unwrap())
        .unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp.abs_diff(now() + 90) <= 2, "{claims}");

    // The secret may come from a file too (server options go before `token`).
    let file = temp_file("cli-secret", &format!("{SECRET}\n"));
    let (code, out, err) = run(
        &[
            "--jwt-secret-file",
            file.to_str().unwrap(),
            "token",
            "--location",
            "loc-1",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let from_file = out.trim();
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={from_file}"), ""),
        "file secret",
    );

    // A token minted with another secret is not accepted.
    let other = cli_token(&["--location", "loc-1"], &[("JWT_SECRET_KEY", OTHER)]);
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={other}"), ""),
        401,
        "invalid_signature",
        "other secret",
    );
}

#[test]
fn bistream_token_refuses_clearly() {
    let env = [("JWT_SECRET_KEY", SECRET)];
    let cases: Vec<CliCase> = vec![
        (
            "no secret",
            vec!["token", "--location", "loc-1"],
            &[],
            "no secret",
        ),
        (
            "short secret",
            vec!["token", "--location", "loc-1"],
            &[("JWT_SECRET_KEY", "short")],
            "at least 32",
        ),
        ("no location", vec!["token"], &env, "location"),
        (
            "unknown channel",
            vec!["token", "--location", "loc-1", "--channel", "nope"],
            &env,
            "nope",
        ),
        (
            "zero ttl",
            vec!["token", "--location", "loc-1", "--ttl", "0s"],
            &env,
            "1s",
        ),
        (
            "bad ttl",
            vec!["token", "--location", "loc-1", "--ttl", "soon"],
            &env,
            "duration",
        ),
    ];
    for (what, args, env, needle) in cases {
        let (code, out, err) = run(&args, env);
        assert!(code.is_some_and(|c| c != 0), "{what}: exit {code:?}");
        assert!(out.trim().is_empty(), "{what}: printed {out:?}");
        assert!(err.contains(needle), "{what}: stderr {err:?}");
    }
}
