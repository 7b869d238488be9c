//! `bistream token`: mints tokens the server accepts, refuses clearly.

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::*;
use crate::servers::*;
use crate::tokens::*;

/// (what, arguments, environment, what stderr must say).
type CliCase<'a> = (&'a str, Vec<&'a str>, &'a [(&'a str, &'a str)], &'a str);

fn cli_token(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let (code, out, err) = run(&all, env);
    assert_eq!(code, Some(0), "bistream {all:?}: {err}");
    let tok = out.trim().to_string();
    assert_eq!(tok.split('.').count(), 3, "{out:?}");
    assert!(!tok.contains(char::is_whitespace));
    tok
}

#[test]
fn bistream_token_mints_tokens_the_server_accepts() {
    let env = [("JWT_SECRET_KEY", SECRET)];
    let s = auth_server(&[]);

    let tok = cli_token(&["--location", "loc-1", "--ttl", "1h"], &env);
    let (mut ws, _) = s.subscribe(&format!("/ws/dashboard/loc-1?token={tok}"));
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-2?token={tok}"), ""),
        403,
        "forbidden",
        "other location",
    );
    assert_eq!(
        publish_as(&s, Some(&tok), &event("dashboard", "loc-1", "E", json!(1))).0,
        403
    );

    let two = cli_token(
        &[
            "--location",
            "loc-1",
            "--location",
            "loc-2",
            "--channel",
            "dashboard",
        ],
        &env,
    );
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-2?token={two}"), ""),
        "second location",
    );
    assert_refused(
        &upgrade(&s, &format!("/ws/ai-concierge/loc-1?token={two}"), ""),
        403,
        "forbidden",
        "other channel",
    );

    let star = cli_token(&["--location", "*"], &env);
    assert_upgraded(
        &upgrade(
            &s,
            &format!("/ws/bot-performance/anywhere?token={star}"),
            "",
        ),
        "*",
    );

    let publisher = cli_token(&["--publisher"], &env);
    let (st, _) = publish_as(
        &s,
        Some(&publisher),
        &event("dashboard", "loc-1", "CLI", json!(2)),
    );
    assert_eq!(st, 202);
    assert_eq!(recv_json(&mut ws)["event_type"], "CLI");
    let scoped = cli_token(
        &[
            "--publisher",
            "--location",
            "loc-1",
            "--channel",
            "dashboard",
        ],
        &env,
    );
    assert_eq!(
        publish_as(
            &s,
            Some(&scoped),
            &event("dashboard", "loc-1", "E", json!(3))
        )
        .0,
        202
    );
    assert_eq!(
        publish_as(
            &s,
            Some(&scoped),
            &event("dashboard", "loc-2", "E", json!(3))
        )
        .0,
        403
    );

    // The ttl is honoured: exp = now + ttl.
    let short = cli_token(&["--location", "loc-1", "--ttl", "90s"], &env);
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(short.split('.').nth(1).unwrap())
        .unwrap();
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp.abs_diff(now() + 90) <= 2, "{claims}");

    // The secret may come from a file too (server options go before `token`).
    let file = temp_file("cli-secret", &format!("{SECRET}\n"));
    let (code, out, err) = run(
        &[
            "--jwt-secret-file",
            file.to_str().unwrap(),
            "token",
            "--location",
            "loc-1",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let from_file = out.trim();
    assert_upgraded(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={from_file}"), ""),
        "file secret",
    );

    // A token minted with another secret is not accepted.
    let other = cli_token(&["--location", "loc-1"], &[("JWT_SECRET_KEY", OTHER)]);
    assert_refused(
        &upgrade(&s, &format!("/ws/dashboard/loc-1?token={other}"), ""),
        401,
        "invalid_signature",
        "other secret",
    );
}

#[test]
fn bistream_token_refuses_clearly() {
    let env = [("JWT_SECRET_KEY", SECRET)];
    let cases: Vec<CliCase> = vec![
        (
            "no secret",
            vec!["token", "--location", "loc-1"],
            &[],
            "no secret",
        ),
        (
            "short secret",
            vec!["token", "--location", "loc-1"],
            &[("JWT_SECRET_KEY", "short")],
            "at least 32",
        ),
        ("no location", vec!["token"], &env, "location"),
        (
            "unknown channel",
            vec!["token", "--location", "loc-1", "--channel", "nope"],
            &env,
            "nope",
        ),
        (
            "zero ttl",
            vec!["token", "--location", "loc-1", "--ttl", "0s"],
            &env,
            "1s",
        ),
        (
            "bad ttl",
            vec!["token", "--location", "loc-1", "--ttl", "soon"],
            &env,
            "duration",
        ),
    ];
    for (what, args, env, needle) in cases {
        let (code, out, err) = run(&args, env);
        assert!(code.is_some_and(|c| c != 0), "{what}: exit {code:?}");
        assert!(out.trim().is_empty(), "{what}: printed {out:?}");
        assert!(err.contains(needle), "{what}: stderr {err:?}");
    }
}
