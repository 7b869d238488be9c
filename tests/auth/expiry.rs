//! Expiry of open connections (docs/protocol.md §4): closed 1008 at
//! `exp` + leeway.

use std::time::Duration;

use serde_json::json;

use crate::common::*;
use crate::servers::*;
use crate::tokens::*;

#[test]
fn an_open_connection_is_closed_1008_when_its_token_expires() {
    // Heartbeats every second interleave with the expiry deadline in the loop's timers.
    let s = auth_server(&["--jwt-leeway", "1s", "--heartbeat-interval", "1s"]);
    let exp = now() + 2;
    let short = sign(&json!({"locations": ["loc-1"], "exp": exp}));
    let long = sign(&json!({"locations": ["loc-1"], "exp": exp + 3}));
    let (mut a, _) = s.subscribe(&format!("/ws/dashboard/loc-1?token={short}"));
    let mut b = connect_bearer(&s, "/ws/dashboard/loc-1", &long);
    assert_eq!(recv_json(&mut b)["type"], "BI_CONNECTION_ESTABLISHED");

    // Both clients keep reading, so they answer the heartbeat pings.
    let later = std::thread::spawn(move || read_close(&mut b));

    let (code, reason, at) = read_close(&mut a);
    let due = (exp + 1) * 1000;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    assert!(at + 50 >= due, "closed {} ms before exp + leeway", due - at);
    assert!(
        at <= due + 1000,
        "closed {} ms after exp + leeway",
        at - due
    );
    // The other connection, with a later exp, was open all along (it survived the
    // heartbeats and the first expiry) and is closed at its own exp + leeway.
    let (code, reason, at) = later.join().unwrap();
    let due = (exp + 4) * 1000;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    assert!(
        at + 50 >= due && at <= due + 1000,
        "closed at {at}, due {due}"
    );

    std::thread::sleep(Duration::from_millis(100));
    let m = s.metrics();
    assert_eq!(
        metric(&m, "bistream_connections{channel=\"dashboard\"}"),
        0.0
    );
}

#[test]
fn a_token_accepted_within_the_leeway_is_closed_at_exp_plus_leeway() {
    let s = auth_server(&["--jwt-leeway", "2s"]);
    let exp = now();
    let tok = sign(&json!({"locations": ["loc-1"], "exp": exp}));
    let (mut ws, _) = s.subscribe(&format!("/ws/dashboard/loc-1?token={tok}"));
    let (code, reason, at) = read_close(&mut ws);
    let due = (exp + 2) * 1000;
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    assert!(
        at + 50 >= due && at <= due + 1000,
        "closed at {at}, due {due}"
    );
}
