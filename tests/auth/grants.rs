//! What a valid token grants (docs/protocol.md §4): locations and channels,
//! compared exactly; a token that does not grant the stream is 403.

use serde_json::json;

use crate::common::*;
use crate::servers::*;
use crate::tokens::*;

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
