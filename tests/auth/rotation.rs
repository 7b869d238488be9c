//! Secret rotation and secret files (docs/protocol.md §4).

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::common::*;
use crate::servers::*;
use crate::tokens::*;

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
