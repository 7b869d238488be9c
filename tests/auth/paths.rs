//! Paths are authorised on exactly the location that is streamed
//! (docs/protocol.md §1 item 7).

use crate::servers::*;
use crate::tokens::*;

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
