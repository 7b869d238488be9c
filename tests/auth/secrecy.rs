//! No token in any body or log line.

use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::common::*;
use crate::servers::*;
use crate::tokens::*;

#[test]
fn no_token_reaches_a_body_or_a_log_line() {
    let s = Server::start_with_env(
        &["--threads", "1", "--allowed-origins", "https://app.example"],
        &[("JWT_SECRET_KEY", SECRET), ("RUST_LOG", "trace")],
    );
    let t = now();
    let tokens = [
        sub_token(&["loc-1"]),
        sub_token(&["loc-2"]),
        sign_with(
            Algorithm::HS256,
            OTHER,
            &json!({"locations": ["loc-1"], "exp": t + 60}),
        ),
        sign_with(
            Algorithm::HS512,
            SECRET,
            &json!({"locations": ["loc-1"], "exp": t + 60}),
        ),
        alg_none(&json!({"locations": ["loc-1"], "exp": t + 60})),
        sign(&json!({"locations": ["loc-1"], "exp": t - 60})),
        sign(&json!({"locations": ["loc-1"]})),
        pub_token(json!({"locations": ["loc-1"]})),
        "not-a-jwt-but-secret-looking-string".to_string(),
    ];
    let mut bodies = Vec::new();
    for tok in &tokens {
        for path in [
            "/ws/dashboard/loc-1",
            "/ws/dashboard/loc-2",
            "/ws/dashboard/a%2F..",
            "/ws/nope/x",
        ] {
            bodies.push(upgrade(&s, &format!("{path}?token={tok}&since=1"), "").body);
            bodies.push(upgrade(&s, path, &bearer(tok)).body);
            bodies.push(
                upgrade(
                    &s,
                    path,
                    &format!("{}Origin: https://evil.example\r\n", bearer(tok)),
                )
                .body,
            );
        }
        let ev = event("dashboard", "loc-2", "E", json!(1));
        bodies.push(publish_as(&s, Some(tok), &ev).1.to_string());
        bodies.push(
            publish_as(&s, Some(tok), &json!({"channel": "nope"}))
                .1
                .to_string(),
        );
    }
    let log = drain_log(&s);
    // The log level really was trace: refusals were logged.
    assert!(
        log.iter().any(|l| l.contains("refused handshake")),
        "no debug lines captured: {log:?}"
    );
    for tok in &tokens {
        // Any of the token's segments would be a leak (the signature alone is enough
        // to replay nothing, but the payload names tenants).
        let pieces: Vec<&str> = tok.split('.').filter(|p| p.len() >= 16).collect();
        for b in &bodies {
            for p in &pieces {
                assert!(!b.contains(p), "a body contains part of a token: {b}");
            }
        }
        for l in &log {
            for p in &pieces {
                assert!(!l.contains(p), "a log line contains part of a token: {l}");
            }
            assert!(!l.contains(SECRET), "a log line contains the secret: {l}");
        }
    }
}
