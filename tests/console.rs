//! `--console`: the embedded page and `GET /api/stats` against the real binary.
//! (The page itself is driven in Chromium by clients/js/test/browser.)

mod common;

use std::time::Duration;

use bistream::auth::{mint, MintRequest};
use common::{event, Server};
use serde_json::Value;

const SECRET: &str = "console-integration-test-secret-0123456789";

fn token(publisher: bool) -> String {
    mint(
        SECRET.as_bytes(),
        &MintRequest {
            sub: "console-test".into(),
            locations: if publisher {
                vec![]
            } else {
                vec!["loc-1".into()]
            },
            channels: None,
            publisher,
            ttl: Duration::from_secs(300),
            now_unix: bistream::clock::wall_secs(),
        },
    )
    .expect("mint")
}

fn get_with(s: &Server, path: &str, auth: Option<&str>) -> (u16, String, String) {
    let header = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{header}Connection: close\r\n\r\n");
    common::http_raw(s.addr, req.as_bytes())
}

#[test]
fn off_by_default() {
    let s = Server::start(&[]);
    assert_eq!(s.get("/console").0, 404);
    assert_eq!(s.get("/api/stats").0, 404);
}

#[test]
fn page_assets_and_headers() {
    let s = Server::start(&["--console"]);
    let (status, head, body) = s.get("/console");
    assert_eq!(status, 200);
    assert!(
        head.contains("Content-Type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains(&format!(
            "Content-Security-Policy: {}",
            bistream::console::CSP
        )),
        "{head}"
    );
    assert!(head.contains("X-Content-Type-Options: nosniff"), "{head}");
    assert!(body.contains("<script type=\"module\" src=\"/console/app.js\">"));
    let (status, head, js) = s.get("/console/app.js");
    assert_eq!(status, 200);
    assert!(head.contains("text/javascript"));
    assert!(js.contains("BI_CONNECTION_ESTABLISHED"));
    assert_eq!(s.get("/console/app.css").0, 200);
    assert_eq!(s.get("/console/missing.js").0, 404);
    assert_eq!(s.get("/console/../Cargo.toml").0, 404);
    let (status, _, _) = common::http_raw(
        s.addr,
        b"POST /api/stats HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405);
}

#[test]
fn stats_count_connections_deliveries_and_latency() {
    let s = Server::start(&["--console"]);
    let (_ws1, _) = s.subscribe("/ws/dashboard/loc-1");
    let (_ws2, _) = s.subscribe("/ws/ai-concierge/loc-1");
    // The first read starts a window; the second covers the publishes below.
    let (status, _, _) = s.get("/api/stats");
    assert_eq!(status, 200);
    for i in 0..20 {
        let body = event("dashboard", "loc-1", "TICK", serde_json::json!(i)).to_string();
        assert_eq!(s.publish(&body).0, 202);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let (status, head, body) = s.get("/api/stats");
    assert_eq!(status, 200);
    assert!(head.contains("application/json"));
    let v: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["connections"], 2, "{v}");
    assert_eq!(v["connections_by_channel"]["dashboard"], 1);
    assert_eq!(v["connections_by_channel"]["ai-concierge"], 1);
    assert_eq!(v["events_published_total"], 20);
    assert_eq!(v["messages_delivered_total"], 20);
    let window = v["window_seconds"].as_f64().unwrap();
    assert!((0.9..3.0).contains(&window), "{v}");
    let rate = v["deliveries_per_second"].as_f64().unwrap();
    assert!((rate - 20.0 / window).abs() < 0.5, "{v}");
    let p99 = v["delivery_latency_p99_ms"].as_f64().unwrap();
    assert!(p99 > 0.0 && p99 < 1000.0, "{v}");
}

#[test]
fn stats_need_a_valid_token_when_auth_is_on() {
    let s = Server::start_with_env(&["--console"], &[("JWT_SECRET_KEY", SECRET)]);
    let (status, head, body) = s.get("/api/stats");
    assert_eq!(status, 401);
    assert!(head.contains("WWW-Authenticate: Bearer"));
    assert!(body.contains("\"error\""));
    assert_eq!(get_with(&s, "/api/stats", Some("not-a-jwt")).0, 401);
    assert_eq!(get_with(&s, "/api/stats", Some(&token(false))).0, 200);
    assert_eq!(get_with(&s, "/api/stats", Some(&token(true))).0, 200);
    // The page itself is public: it holds no data, and asks for the token.
    assert_eq!(s.get("/console").0, 200);
}
