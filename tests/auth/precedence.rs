//! Refusal precedence where auth is involved (docs/protocol.md §1).

use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;

use crate::common::*;
use crate::servers::*;
use crate::tokens::*;

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
