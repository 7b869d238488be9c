//! The floor server (and the harness) restate part of the wire contract instead of
//! importing it from the server (see the crate documentation for why). This test holds
//! the two equal, so that they cannot drift apart: the same table of location ids,
//! event types, body sizes and batch sizes goes to the floor's request parsers and to
//! the `bistream` library's, and both must answer the same.

use bistream::channel::{valid_event_type, valid_location_id, Channel};
use bistream::config::{MAX_PUBLISH_BODY, MAX_PUBLISH_EVENTS};
use bistream_loadtest::contract;
use bistream_loadtest::floor::http::{parse_head, parse_publish, Request};
use bistream_loadtest::streams::CHANNELS;

/// Location ids on both sides of every rule: length, alphabet, dots, encodings.
fn location_examples() -> Vec<String> {
    let mut v: Vec<String> = [
        "loc-1",
        "A",
        "0",
        "a.b",
        "a:b",
        "a_b",
        "a-b",
        "A.b:c_d-9",
        ".",
        "..",
        "...",
        ".a",
        "a.",
        "-",
        "_",
        ":",
        "%41",
        "a%2Fb",
        "a b",
        "a/b",
        "a?b",
        "a#b",
        "é",
        "a+b",
        "a~b",
        "a!b",
        "a@b",
        "a,b",
        "a;b",
        "a=b",
        "a*b",
        "*",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for n in [1, 63, 64, 65, 127, 128, 129, 300] {
        v.push("x".repeat(n));
    }
    v
}

/// Event types: the same alphabet, 64 bytes at most.
fn event_type_examples() -> Vec<String> {
    let mut v: Vec<String> = ["LOADTEST", "a.b:c_d-9", ".", "..", "a b", "a/b", "é", ""]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for n in [1, 63, 64, 65, 128, 129] {
        v.push("E".repeat(n));
    }
    v
}

/// Whether a location id can stand in a request line as one path segment at all.
fn path_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"/?#".contains(&b))
}

fn upgrade_status(location: &str) -> Option<u16> {
    let head = format!(
        "GET /ws/dashboard/{location} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    );
    match parse_head(head.as_bytes())?.request {
        Request::Upgrade { .. } => Some(101),
        Request::Refuse { status, .. } => Some(status),
        _ => None,
    }
}

fn publish_ok(location: &str, event_type: &str) -> bool {
    let body = serde_json::json!({
        "channel": "dashboard", "location_id": location, "event_type": event_type
    });
    parse_publish(body.to_string().as_bytes()).is_ok()
}

#[test]
fn location_syntax_is_the_servers() {
    for loc in location_examples() {
        let server = valid_location_id(&loc);
        assert_eq!(
            contract::valid_location_id(&loc),
            server,
            "location {loc:?}"
        );
        // `"*"` in a publish body means every location (docs/protocol.md §5).
        let published = server || loc == "*";
        assert_eq!(
            publish_ok(&loc, "A"),
            published,
            "published location {loc:?}"
        );
        if path_safe(&loc) {
            let want = if server { 101 } else { 400 };
            assert_eq!(upgrade_status(&loc), Some(want), "path location {loc:?}");
        }
    }
}

#[test]
fn event_type_syntax_is_the_servers() {
    for et in event_type_examples() {
        let server = valid_event_type(&et);
        assert_eq!(contract::valid_event_type(&et), server, "event type {et:?}");
        assert_eq!(
            publish_ok("loc-1", &et),
            server,
            "published event type {et:?}"
        );
    }
}

#[test]
fn body_limit_is_the_servers() {
    assert_eq!(contract::MAX_PUBLISH_BODY, MAX_PUBLISH_BODY);
    for len in [
        0,
        1,
        MAX_PUBLISH_BODY - 1,
        MAX_PUBLISH_BODY,
        MAX_PUBLISH_BODY + 1,
        2 * MAX_PUBLISH_BODY,
    ] {
        let head = format!("POST /api/events HTTP/1.1\r\nContent-Length: {len}\r\n\r\n");
        let got = parse_head(head.as_bytes()).map(|h| h.request);
        if len <= MAX_PUBLISH_BODY {
            assert_eq!(got, Some(Request::Publish { body_len: len }), "{len}");
        } else {
            assert!(
                matches!(got, Some(Request::Refuse { status: 413, .. })),
                "{len}: {got:?}"
            );
        }
    }
}

#[test]
fn batch_limit_is_the_servers() {
    assert_eq!(contract::MAX_PUBLISH_EVENTS, MAX_PUBLISH_EVENTS);
    let event = r#"{"channel":"dashboard","location_id":"l","event_type":"A"}"#;
    for n in [
        1,
        MAX_PUBLISH_EVENTS - 1,
        MAX_PUBLISH_EVENTS,
        MAX_PUBLISH_EVENTS + 1,
    ] {
        let body = format!("[{}]", vec![event; n].join(","));
        match parse_publish(body.as_bytes()) {
            Ok(events) => {
                assert!(n <= MAX_PUBLISH_EVENTS, "{n} accepted");
                assert_eq!(events.len(), n);
            }
            Err((status, _)) => {
                assert!(n > MAX_PUBLISH_EVENTS, "{n} refused");
                assert_eq!(status, 413);
            }
        }
    }
}

#[test]
fn channels_and_paths_are_the_servers() {
    let ours: Vec<(String, String)> = CHANNELS
        .iter()
        .map(|(id, path)| (id.to_string(), format!("/ws/{path}/")))
        .collect();
    let theirs: Vec<(String, String)> = Channel::ALL
        .iter()
        .map(|c| (c.id().to_string(), c.path_prefix().to_string()))
        .collect();
    assert_eq!(ours, theirs);
}
