//! The fuzz targets' bodies, shared by the libFuzzer binaries in
//! `fuzz_targets/`. Each feeds untrusted bytes to a parser the way the event
//! loop does and checks more than "no panic": the properties the server
//! relies on.

#[path = "http_sequence.rs"]
pub mod http_sequence;

use bistream::http::head::{has_head_end, parse_head, HeadStatus, RequestHead};
use bistream::http::response::Refusal;
use bistream::http::router::{route, Route};
use bistream::http::upgrade::{check_upgrade, parse_query, Target, UpgradeContext};
use bistream::ws::close::{code_allowed_on_wire, ClientClose, CloseCode};
use bistream::ws::frame::{client_frame, read_frame, FrameError, MAX_CONTROL_PAYLOAD};
use bistream::ws::reader::{Inbound, MessageReader};

/// The request-head parser, the end-of-head scan, the router and the upgrade
/// checks behind them.
pub fn head(data: &[u8]) {
    for max in [1024usize, 8192] {
        match parse_head(data, max) {
            Ok(HeadStatus::Complete { head, len }) => {
                assert!(len <= data.len() && len <= max, "head of {len} bytes");
                // The loop parses only once `has_head_end` saw the end: a head the
                // parser completes must be one the scan finds, or it would hang.
                assert!(has_head_end(data, 0), "complete head the scan does not see");
                match parse_head(&data[..len], max) {
                    Ok(HeadStatus::Complete {
                        head: again,
                        len: l2,
                    }) => {
                        assert_eq!(l2, len);
                        assert_eq!(again, head);
                    }
                    other => panic!("the head alone parses as {other:?}"),
                }
                upgrade(&head);
            }
            Ok(HeadStatus::Partial) => assert!(data.len() <= max, "partial past the limit"),
            Err(_) => {}
        }
    }
    // The scan over bytes as they arrive finds the end exactly when a scan of
    // the whole buffer does, whatever the read sizes.
    let whole = has_head_end(data, 0);
    for step in [1usize, 3, 64] {
        let (mut scanned, mut end, mut found) = (0, 0, false);
        while end < data.len() {
            end = (end + step).min(data.len());
            if has_head_end(&data[..end], scanned) {
                found = true;
                break;
            }
            scanned = end;
        }
        assert_eq!(found, whole, "read size {step}");
    }
}

fn upgrade(head: &RequestHead) {
    let _ = head.keep_alive();
    let _ = parse_query(head.query.as_deref());
    let target = match route(&head.path, true) {
        Route::Stream {
            channel,
            location: Ok(location),
        } => Target::Stream {
            channel,
            location: location.into(),
        },
        Route::Echo => Target::Echo,
        _ => return,
    };
    let origins = ["https://bi.example".to_string()];
    for (busy, allowed) in [(false, &origins[..0]), (true, &origins[..])] {
        let ctx = UpgradeContext {
            busy: busy.then(Refusal::draining),
            allowed_origins: allowed,
            verifier: None,
        };
        match check_upgrade(head, target.clone(), &ctx) {
            Ok(up) => {
                assert!(!busy, "accepted while busy");
                assert_eq!(
                    up.accept_key.len(),
                    28,
                    "Sec-WebSocket-Accept is a base64 SHA-1"
                );
                assert_eq!(up.target, target);
            }
            Err(r) => assert!((400..600).contains(&r.status), "status {}", r.status),
        }
    }
}

/// The client-frame reader: the first byte picks the message limit and the
/// read size, the rest is what the client sent after the 101.
pub fn frames(data: &[u8]) {
    let Some((&cfg, stream)) = data.split_first() else {
        return;
    };
    let max = 125 + usize::from(cfg & 0x3f) * 509;
    let step = [1usize, 2, 7, 61][usize::from(cfg >> 6)];
    // However the bytes are cut into reads, the same messages come out and
    // the same error ends them.
    let whole = read_stream(stream, max, stream.len().max(1));
    let cut = read_stream(stream, max, step);
    assert_eq!(whole, cut, "read size {step} changed the outcome");
    for m in &whole.0 {
        roundtrip(m, max);
    }

    let mut buf = stream.to_vec();
    if let Ok(Some((f, used))) = read_frame(&mut buf, max) {
        assert!(used <= stream.len());
        assert_eq!(f.payload.end, used);
        assert!(f.payload.start <= f.payload.end);
    }
}

type Outcome = (Vec<Inbound>, Option<FrameError>);

/// What `ws_conn::on_input` does: append each read to the input buffer, take
/// messages until more bytes are needed, drop what was consumed.
fn read_stream(stream: &[u8], max: usize, step: usize) -> Outcome {
    let mut reader = MessageReader::default();
    let mut inbuf = Vec::new();
    let mut out = Vec::new();
    for piece in stream.chunks(step) {
        inbuf.extend_from_slice(piece);
        let mut pos = 0;
        loop {
            match reader.next(&mut inbuf, max, &mut pos) {
                Ok(Some(m)) => {
                    check(&m, max);
                    let close = matches!(m, Inbound::Close(_));
                    out.push(m);
                    // The server reads nothing after a close.
                    if close {
                        return (out, None);
                    }
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
            assert!(pos <= inbuf.len());
        }
        assert!(pos <= inbuf.len(), "consumed {pos} of {}", inbuf.len());
        inbuf.drain(..pos);
    }
    (out, None)
}

fn check(m: &Inbound, max: usize) {
    match m {
        Inbound::Text(t) => assert!(t.len() <= max),
        Inbound::Binary(b) => assert!(b.len() <= max),
        Inbound::Ping(p) => assert!(p.len() <= MAX_CONTROL_PAYLOAD),
        Inbound::Pong => {}
        Inbound::Close(ClientClose::Valid(CloseCode::Other(c))) => {
            assert!(code_allowed_on_wire(*c), "close code {c} accepted")
        }
        Inbound::Close(ClientClose::Valid(c)) => assert_eq!(*c, CloseCode::Normal),
        Inbound::Close(ClientClose::Invalid(c, _)) => {
            assert!(matches!(c, CloseCode::Protocol | CloseCode::BadData))
        }
    }
}

/// A message the reader produced, sent again as one frame, reads back the same.
fn roundtrip(m: &Inbound, max: usize) {
    let (first, payload): (u8, &[u8]) = match m {
        Inbound::Text(t) => (0x81, t.as_bytes()),
        Inbound::Binary(b) => (0x82, b),
        Inbound::Ping(p) => (0x89, p),
        _ => return,
    };
    let mut f = client_frame(first, payload, [0xa5, 0x5a, 0x3c, 0xc3]);
    let mut pos = 0;
    let again = MessageReader::default().next(&mut f, max, &mut pos);
    assert_eq!(again.as_ref().ok().and_then(|o| o.as_ref()), Some(m));
    assert_eq!(pos, f.len());
}
