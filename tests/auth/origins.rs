//! Allowed origins (docs/protocol.md §4): exact matches; no `Origin` is allowed.

use crate::servers::*;
use crate::tokens::*;

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
