//! What a token must pass (docs/protocol.md §4): signature, algorithm,
//! `exp`/`nbf` with the leeway, shape; each failure is 401 with its own code.

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};

use crate::servers::*;
use crate::tokens::*;

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
