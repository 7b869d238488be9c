//! Publishing (docs/protocol.md §4, §5): a publisher token, its scope,
//! and refusals before the body is read.

use std::net::TcpStream;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use crate::common::*;
use crate::servers::*;
use crate::tokens::*;

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
