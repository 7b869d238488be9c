//! Fail closed at start-up (docs/protocol.md §4): short, empty, unreadable
//! or ambiguous secrets, and no secret on a network address.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::*;
use crate::servers::*;
use crate::tokens::*;

/// (what, extra arguments, environment, what stderr must say).
type StartCase<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

#[test]
fn start_up_refuses_a_short_or_empty_secret() {
    let long_enough = "x".repeat(32);
    let cases: Vec<StartCase> = vec![
        (
            "31-byte secret",
            vec![],
            vec![("JWT_SECRET_KEY", &long_enough[..31])],
            "at least 32",
        ),
        (
            "empty JWT_SECRET_KEY",
            vec![],
            vec![("JWT_SECRET_KEY", "")],
            "0 bytes",
        ),
        (
            "empty --jwt-secret",
            vec!["--jwt-secret", ""],
            vec![],
            "0 bytes",
        ),
        (
            "short previous secret",
            vec![],
            vec![
                ("JWT_SECRET_KEY", SECRET),
                ("JWT_SECRET_KEY_PREVIOUS", "short"),
            ],
            "JWT_SECRET_KEY_PREVIOUS",
        ),
        (
            "empty previous secret",
            vec![],
            vec![("JWT_SECRET_KEY", SECRET), ("JWT_SECRET_KEY_PREVIOUS", "")],
            "JWT_SECRET_KEY_PREVIOUS",
        ),
        (
            "leeway over an hour",
            vec!["--jwt-leeway", "2h"],
            vec![("JWT_SECRET_KEY", SECRET)],
            "leeway",
        ),
    ];
    for (what, args, env, needle) in cases {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend(args);
        let (code, _, err) = run(&all, &env);
        assert!(
            code.is_some_and(|c| c != 0),
            "{what}: exit {code:?}, stderr {err}"
        );
        assert!(err.contains(needle), "{what}: stderr {err:?}");
        assert!(!err.contains("listening on"), "{what}: it started: {err}");
        if let Some((_, v)) = env.iter().find(|(k, _)| *k == "JWT_SECRET_KEY") {
            if v.len() > 8 {
                assert!(!err.contains(v), "{what}: the secret is printed");
            }
        }
    }
    // Exactly 32 bytes is enough.
    let s = Server::start_with_env(&["--threads", "1"], &[("JWT_SECRET_KEY", &long_enough)]);
    assert_refused(
        &upgrade(&s, "/ws/dashboard/loc-1", ""),
        401,
        "token_missing",
        "32-byte secret",
    );
}

#[test]
fn start_up_refuses_unreadable_or_ambiguous_secret_sources() {
    let empty = temp_file("empty", "");
    let newline_only = temp_file("newline", "\n");
    let short = temp_file("short", "short\n");
    let good = temp_file("good", SECRET);
    let missing = std::env::temp_dir().join("bistream-auth-no-such-file");
    let cases: Vec<StartCase> = vec![
        (
            "missing file",
            vec!["--jwt-secret-file", missing.to_str().unwrap()],
            vec![],
            "cannot read",
        ),
        (
            "empty file",
            vec!["--jwt-secret-file", empty.to_str().unwrap()],
            vec![],
            "0 bytes",
        ),
        (
            "newline-only file",
            vec!["--jwt-secret-file", newline_only.to_str().unwrap()],
            vec![],
            "0 bytes",
        ),
        (
            "short file",
            vec!["--jwt-secret-file", short.to_str().unwrap()],
            vec![],
            "at least 32",
        ),
        (
            "missing previous file",
            vec!["--jwt-secret-previous-file", missing.to_str().unwrap()],
            vec![("JWT_SECRET_KEY", SECRET)],
            "cannot read",
        ),
        (
            "short previous file",
            vec!["--jwt-secret-previous-file", short.to_str().unwrap()],
            vec![("JWT_SECRET_KEY", SECRET)],
            "JWT_SECRET_KEY_PREVIOUS",
        ),
        // A previous secret without a current one is a rotation gone wrong, not "open".
        (
            "previous without current",
            vec![],
            vec![("JWT_SECRET_KEY_PREVIOUS", PREVIOUS)],
            "JWT_SECRET_KEY_PREVIOUS",
        ),
        (
            "previous file without current",
            vec!["--jwt-secret-previous-file", good.to_str().unwrap()],
            vec![],
            "JWT_SECRET_KEY_PREVIOUS",
        ),
        // Two sources for one secret: refuse rather than pick one silently.
        (
            "env and file",
            vec!["--jwt-secret-file", good.to_str().unwrap()],
            vec![("JWT_SECRET_KEY", OTHER)],
            "--jwt-secret-file",
        ),
        (
            "previous env and file",
            vec!["--jwt-secret-previous-file", good.to_str().unwrap()],
            vec![
                ("JWT_SECRET_KEY", OTHER),
                ("JWT_SECRET_KEY_PREVIOUS", PREVIOUS),
            ],
            "--jwt-secret-previous-file",
        ),
    ];
    for (what, args, env, needle) in cases {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend(args);
        let (code, _, err) = run(&all, &env);
        assert!(
            code.is_some_and(|c| c != 0),
            "{what}: exit {code:?}, stderr {err}"
        );
        assert!(err.contains(needle), "{what}: stderr {err:?}");
        assert!(
            !err.contains(SECRET) && !err.contains(PREVIOUS) && !err.contains(OTHER),
            "{what}: {err}"
        );
    }
}

#[test]
fn no_secret_on_the_network_refuses_unless_anonymous() {
    for listen in [
        vec!["--listen", "0.0.0.0:0"],
        vec!["--listen", "127.0.0.1:0", "--listen", "0.0.0.0:0"],
    ] {
        let (code, _, err) = run(&listen, &[]);
        assert!(code.is_some_and(|c| c != 0), "{listen:?}: exit {code:?}");
        assert!(
            err.contains("--allow-anonymous") && err.contains("JWT_SECRET_KEY"),
            "{err}"
        );
        assert!(!err.contains("listening on"), "{err}");
    }
    // Comma-separated in the environment is the same.
    let (code, _, _) = run(&[], &[("BISTREAM_LISTEN", "127.0.0.1:0,0.0.0.0:0")]);
    assert!(code.is_some_and(|c| c != 0));

    // --allow-anonymous: runs open, and says so loudly.
    let s = Server::start(&[
        "--listen",
        "0.0.0.0:0",
        "--allow-anonymous",
        "--threads",
        "1",
    ]);
    assert!(
        wait_for_log(&s, "OPEN").is_some(),
        "no warning about running open"
    );
    drop(s);
    // With a secret, any address is fine.
    let s = Server::start_with_env(
        &["--listen", "0.0.0.0:0", "--threads", "1"],
        &[("JWT_SECRET_KEY", SECRET)],
    );
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], s.addr.port()));
    let (st, _, _) = http_raw(local, upgrade_request("/ws/dashboard/loc-1", "").as_bytes());
    assert_eq!(st, 401);
}

#[test]
fn no_secret_on_loopback_runs_open_with_a_loud_warning() {
    let s = Server::start(&["--threads", "1"]);
    let warn = wait_for_log(&s, "NO JWT_SECRET_KEY").expect("a warning about running open");
    assert!(warn.contains("WARN"), "{warn}");
    // Open: no token needed to subscribe or publish.
    let (mut ws, _) = s.subscribe("/ws/dashboard/loc-1");
    assert_eq!(
        s.publish(&event("dashboard", "loc-1", "E", json!(1)).to_string())
            .0,
        202
    );
    assert_eq!(recv_json(&mut ws)["seq"], 1);
    drop(s);

    // A Unix socket counts as loopback.
    let sock = std::env::temp_dir().join(format!("bistream-auth-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let listen = format!("unix:{}", sock.display());
    let (mut child, log) = spawn_bistream(&[], &["--listen", &listen, "--threads", "1"], &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut saw = (false, false);
    while let Ok(l) = log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        saw.0 |= l.contains("listening on unix:");
        saw.1 |= l.contains("NO JWT_SECRET_KEY");
        if saw == (true, true) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&sock);
    assert_eq!(saw, (true, true), "unix listener runs open with a warning");
}
