//! Where tokens come from (docs/protocol.md §4): the query, the bearer
//! header, which wins when both are sent, and what is not a token.

use serde_json::json;

use crate::common::*;
use crate::servers::*;
use crate::tokens::*;

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
