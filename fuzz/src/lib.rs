//! The fuzz targets' bodies, shared by the libFuzzer binaries in
//! `fuzz_targets/` and by `tests/fuzz_smoke.rs`. Each feeds untrusted bytes to a parser the way the event
//! loop does and checks more than "no panic": the properties the server
//! relies on.

#[path = "http_sequence.rs"]
pub mod http_sequence;

use bistream::http::head::{has_head_end, parse_head, HeadStatus, RequestHead};
use bistream::http::response::Refusal;
use bistream::http::router::{route, Route};
use bistream::http::upgrade::{check_upgrade, parse_query, Target, UpgradeContext};
use bistream::proxy_protocol::{
    self, Addresses, Command, ProxyError, ProxyStatus, Version, DEFAULT_MAX_LEN,
    PP2_TYPE_AUTHORITY, V1_MAX_LEN, V2_FIXED_LEN,
};
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

type ProxyResult = Result<ProxyStatus, ProxyError>;

/// The PROXY protocol header parser, under the default limit and a small one
/// (so that "past the limit" is reached too).
pub fn proxy(data: &[u8]) {
    for max in [DEFAULT_MAX_LEN, 40] {
        proxy_with(data, max);
    }
}

fn proxy_with(data: &[u8], max: usize) {
    let whole = proxy_protocol::parse(data, max);
    match &whole {
        Ok(ProxyStatus::Complete { header, len }) => {
            let len = *len;
            assert!(len <= data.len(), "header of {len} bytes in {}", data.len());
            match header.version {
                Version::V1 => {
                    assert!(len <= V1_MAX_LEN && data[..len].ends_with(b"\r\n"));
                    assert_eq!(header.tlv_range, 0..0);
                    assert!(header.authority.is_none());
                    assert_ne!(header.command, Command::Local);
                }
                Version::V2 => {
                    assert!((V2_FIXED_LEN..=max).contains(&len), "v2 header of {len}");
                    let declared = u16::from_be_bytes([data[14], data[15]]);
                    assert_eq!(len, V2_FIXED_LEN + usize::from(declared));
                    assert_ne!(header.command, Command::Unknown);
                }
            }
            // The TLVs tile their range, which lies within the header.
            let range = header.tlv_range.clone();
            assert!(
                range.start <= range.end && range.end <= len,
                "{range:?} of {len}"
            );
            let walked: usize = header.tlvs(data).map(|t| 3 + t.value.len()).sum();
            assert_eq!(walked, range.len(), "TLVs do not tile {range:?}");
            if let Some(name) = &header.authority {
                assert!(header
                    .tlvs(data)
                    .any(|t| t.kind == PP2_TYPE_AUTHORITY && t.value == name.as_bytes()));
            }
            match header.addresses {
                Addresses::Tcp { source, .. } => assert_eq!(header.client(), Some(source)),
                _ => assert_eq!(header.client(), None),
            }
            if header.command != Command::Proxy {
                assert_eq!(header.addresses, Addresses::Unspecified);
            }
            // The header alone is the same header.
            assert_eq!(proxy_protocol::parse(&data[..len], max), whole);
        }
        Ok(ProxyStatus::Partial { at_most }) => {
            assert!(*at_most >= 1, "partial with nothing more to wait for");
            // At most `at_most` more bytes decide it, whatever they are.
            for fill in [0u8, b'\n', 0xff] {
                let mut more = data.to_vec();
                more.resize(data.len() + at_most, fill);
                let r = proxy_protocol::parse(&more, max);
                assert!(
                    !matches!(r, Ok(ProxyStatus::Partial { .. })),
                    "still partial after {at_most} more"
                );
            }
        }
        Err(_) => {}
    }
    // A decided answer does not change with what follows it.
    if !matches!(whole, Ok(ProxyStatus::Partial { .. })) {
        for tail in [&b"GET / HTTP/1.1\r\n\r\n"[..], data, b"\r\n"] {
            let more = [data, tail].concat();
            assert_eq!(
                proxy_protocol::parse(&more, max),
                whole,
                "changed by appending"
            );
        }
    }
    // However the bytes are cut into reads, the first decided answer is the
    // whole input's.
    for step in [1usize, 2, 7, 64] {
        let (seen, waits) = feed_proxy(data, max, step);
        assert_eq!(seen, whole, "read size {step}");
        if step == 1 {
            // Each prefix's bound reaches the prefix that decides (all of
            // them waited on, one byte at a time), or past the input.
            let decided_at = match seen {
                Ok(ProxyStatus::Partial { .. }) => data.len() + 1,
                _ => waits.len(),
            };
            for (k, at_most) in waits {
                assert!(
                    k + at_most >= decided_at,
                    "prefix {k}: at_most {at_most}, decided at {decided_at}"
                );
            }
        }
    }
}

/// What a connection does: append each read, parse everything so far, stop
/// at the first decided answer. Returns that answer (or the last `Partial`)
/// and every `(prefix length, at_most)` it waited on.
fn feed_proxy(data: &[u8], max: usize, step: usize) -> (ProxyResult, Vec<(usize, usize)>) {
    let mut waits = Vec::new();
    let mut last = proxy_protocol::parse(&[], max);
    let mut end = 0;
    loop {
        match last {
            Ok(ProxyStatus::Partial { at_most }) => waits.push((end, at_most)),
            decided => return (decided, waits),
        }
        if end == data.len() {
            return (last, waits);
        }
        end = (end + step).min(data.len());
        last = proxy_protocol::parse(&data[..end], max);
    }
}
