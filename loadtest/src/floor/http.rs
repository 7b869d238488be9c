//! The floor server's HTTP side, sans-io: classify a request head, parse a publish
//! body, and write canned responses.

use crate::contract::{
    valid_event_type, valid_key, valid_location_id, MAX_PUBLISH_BODY, MAX_PUBLISH_EVENTS,
};
use crate::streams::{channel_of_path, CHANNELS};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use tungstenite::handshake::derive_accept_key;

/// Largest request head (contract default: 8 KiB, else 431).
pub const MAX_HEAD: usize = 8 * 1024;

/// What a complete request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A valid WebSocket upgrade on a channel path.
    Upgrade {
        channel: &'static str,
        location: String,
        /// `Sec-WebSocket-Accept` value.
        accept: String,
    },
    /// `POST /api/events` with a body of `body_len` bytes after the head.
    Publish { body_len: usize },
    /// `GET /healthz` or `GET /readyz`.
    Health,
    /// Refused: answer `status` with `message` and close the connection.
    Refuse { status: u16, message: &'static str },
}

/// A parsed head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub request: Request,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
}

/// Parses the head at the start of `buf`; `None` when it is not complete yet.
pub fn parse_head(buf: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Some(refuse(buf.len(), 431, "request head too large"));
            }
            return None;
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Some(refuse(buf.len(), 431, "too many headers"))
        }
        Err(_) => return Some(refuse(buf.len(), 400, "malformed request")),
    };
    if len > MAX_HEAD {
        return Some(refuse(len, 431, "request head too large"));
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| {
            v.split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    let http10 = req.version == Some(0);
    let keep_alive = if http10 {
        has_token("connection", "keep-alive")
    } else {
        !has_token("connection", "close")
    };
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let path = target.split('?').next().unwrap_or("");

    if let Some(rest) = path.strip_prefix("/ws/") {
        let Some((chan_path, location)) = rest.rsplit_once('/') else {
            return Some(refuse(len, 404, "unknown path"));
        };
        let Some(channel) = channel_of_path(chan_path) else {
            return Some(refuse(len, 404, "unknown path"));
        };
        if method != "GET" {
            return Some(refuse(len, 405, "method not allowed"));
        }
        if !valid_location_id(location) {
            return Some(refuse(len, 400, "bad location_id"));
        }
        let key = header("sec-websocket-key");
        if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
            return Some(refuse(len, 400, "not a websocket upgrade"));
        }
        let Some(key) = key.filter(|k| k.len() == 24) else {
            return Some(refuse(len, 400, "missing or invalid Sec-WebSocket-Key"));
        };
        match header("sec-websocket-version") {
            None => return Some(refuse(len, 400, "missing Sec-WebSocket-Version")),
            Some(v) if v.trim_ascii() != b"13" => {
                return Some(refuse(len, 426, "unsupported Sec-WebSocket-Version"))
            }
            Some(_) => {}
        }
        return Some(Head {
            len,
            request: Request::Upgrade {
                channel,
                location: location.to_owned(),
                accept: derive_accept_key(key),
            },
            keep_alive: true,
        });
    }
    let request = match (method, path) {
        ("POST", "/api/events") => {
            let cl = header("content-length")
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.trim().parse::<usize>().ok());
            match cl {
                Some(n) if n > MAX_PUBLISH_BODY => {
                    return Some(refuse(len, 413, "body over 1 MiB"))
                }
                Some(n) => Request::Publish { body_len: n },
                None => return Some(refuse(len, 411, "Content-Length required")),
            }
        }
        (_, "/api/events") => return Some(refuse(len, 405, "method not allowed")),
        ("GET", "/healthz" | "/readyz") => Request::Health,
        _ => return Some(refuse(len, 404, "unknown path")),
    };
    Some(Head {
        len,
        request,
        keep_alive,
    })
}

fn refuse(len: usize, status: u16, message: &'static str) -> Head {
    Head {
        len,
        request: Request::Refuse { status, message },
        keep_alive: false,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// A complete response with a JSON body.
pub fn response(status: u16, body: &str, keep_alive: bool) -> Vec<u8> {
    let extra = if status == 426 {
        "Sec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: {}\r\n\r\n{body}",
        reason(status),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    )
    .into_bytes()
}

/// A JSON error response (`{"error":..,"message":..}`).
pub fn error_response(status: u16, message: &str, keep_alive: bool) -> Vec<u8> {
    let code = match status {
        400 => "bad_request",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "too_large",
        426 => "upgrade_required",
        431 => "head_too_large",
        _ => "error",
    };
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    response(status, &body, keep_alive)
}

/// The `101 Switching Protocols` head.
pub fn switching(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// `channel` of a published event: one id, a list, or `"*"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ChannelField<'a> {
    One(#[serde(borrow)] Cow<'a, str>),
    Many(#[serde(borrow)] Vec<Cow<'a, str>>),
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    channel: ChannelField<'a>,
    #[serde(borrow)]
    location_id: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow, default)]
    key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// A validated published event, borrowing the request body.
#[derive(Debug, PartialEq, Eq)]
pub struct PubEvent<'a> {
    /// Channel ids the event goes to (already expanded from `"*"`).
    pub channels: Vec<&'static str>,
    /// One location id, or `None` for `"*"` (every location with subscribers).
    pub location: Option<Cow<'a, str>>,
    pub event_type: Cow<'a, str>,
    /// `key`, when given (docs/protocol.md §9); passed through to the frame.
    pub key: Option<Cow<'a, str>>,
    /// `data` as it stood in the body (`null` when absent).
    pub data: &'a str,
}

/// Parses and validates a publish body; `Err((status, message))` to answer.
pub fn parse_publish(body: &[u8]) -> Result<Vec<PubEvent<'_>>, (u16, String)> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let raws: Vec<RawEvent> = match first {
        Some(b'[') => serde_json::from_slice(body).map_err(|e| (400, format!("body: {e}")))?,
        Some(b'{') => vec![serde_json::from_slice(body).map_err(|e| (400, format!("body: {e}")))?],
        _ => return Err((400, "body must be a JSON object or array".into())),
    };
    if raws.len() > MAX_PUBLISH_EVENTS {
        return Err((413, format!("more than {MAX_PUBLISH_EVENTS} events")));
    }
    raws.into_iter()
        .map(|r| {
            let names: Vec<Cow<str>> = match r.channel {
                ChannelField::One(c) => vec![c],
                ChannelField::Many(v) => v,
            };
            let mut channels = Vec::new();
            for c in &names {
                if c == "*" {
                    channels = CHANNELS.iter().map(|(id, _)| *id).collect();
                    break;
                }
                let id = CHANNELS
                    .iter()
                    .map(|(id, _)| *id)
                    .find(|id| *id == c.as_ref())
                    .ok_or_else(|| (400, format!("channel: unknown channel `{c}`")))?;
                if !channels.contains(&id) {
                    channels.push(id);
                }
            }
            if channels.is_empty() {
                return Err((400, "channel: empty list".into()));
            }
            let location = if r.location_id == "*" {
                None
            } else if valid_location_id(&r.location_id) {
                Some(r.location_id)
            } else {
                return Err((400, "location_id: invalid".into()));
            };
            if !valid_event_type(&r.event_type) {
                return Err((400, "event_type: invalid".into()));
            }
            if r.key.as_ref().is_some_and(|k| !valid_key(k)) {
                return Err((400, "key: invalid".into()));
            }
            Ok(PubEvent {
                channels,
                location,
                event_type: r.event_type,
                key: r.key,
                data: r.data.map_or("null", RawValue::get),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(path: &str, extra: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n")
    }

    #[test]
    fn upgrades_on_every_channel_path() {
        let r = upgrade(
            "/ws/analytics/advanced/loc-1?token=x",
            "Sec-WebSocket-Version: 13\r\n",
        );
        let h = parse_head(r.as_bytes()).unwrap();
        assert_eq!(h.len, r.len());
        assert_eq!(
            h.request,
            Request::Upgrade {
                channel: "analytics-advanced",
                location: "loc-1".into(),
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into()
            }
        );
        assert!(parse_head(&r.as_bytes()[..r.len() - 2]).is_none());
    }

    #[test]
    fn refusals_follow_the_contract() {
        let status = |r: &str| match parse_head(r.as_bytes()).unwrap().request {
            Request::Refuse { status, .. } => status,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            status(&upgrade("/ws/nope/loc-1", "Sec-WebSocket-Version: 13\r\n")),
            404
        );
        assert_eq!(
            status(&upgrade(
                "/ws/dashboard/a%41",
                "Sec-WebSocket-Version: 13\r\n"
            )),
            400
        );
        assert_eq!(
            status(&upgrade(
                "/ws/dashboard/..",
                "Sec-WebSocket-Version: 13\r\n"
            )),
            400
        );
        assert_eq!(
            status(&upgrade(
                "/ws/dashboard/loc-1",
                "Sec-WebSocket-Version: 8\r\n"
            )),
            426
        );
        assert_eq!(status(&upgrade("/ws/dashboard/loc-1", "")), 400);
        assert_eq!(status("POST /ws/dashboard/l HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status("GET /api/events HTTP/1.1\r\n\r\n"), 405);
        assert_eq!(status("POST /api/events HTTP/1.1\r\n\r\n"), 411);
        assert_eq!(
            status("POST /api/events HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n"),
            413
        );
        let big = format!("GET /healthz HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        assert_eq!(status(&big), 431);
    }

    #[test]
    fn publish_heads_and_keep_alive() {
        let h = parse_head(b"POST /api/events HTTP/1.1\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!(h.request, Request::Publish { body_len: 12 });
        assert!(h.keep_alive);
        let h = parse_head(
            b"POST /api/events HTTP/1.1\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
        )
        .unwrap();
        assert!(!h.keep_alive);
        let h = parse_head(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(h.request, Request::Health);
        assert!(!h.keep_alive);
    }

    #[test]
    fn publish_bodies() {
        let one = br#"{"channel":"dashboard","location_id":"loc-1","event_type":"LOADTEST","data":{"t_ns":5}}"#;
        let ev = parse_publish(one).unwrap();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].channels, vec!["dashboard"]);
        assert_eq!(ev[0].data, r#"{"t_ns":5}"#);
        let many =
            br#"[{"channel":["bot-performance","dashboard"],"location_id":"*","event_type":"A"},
                        {"channel":"*","location_id":"l","event_type":"B","data":null}]"#;
        let ev = parse_publish(many).unwrap();
        assert_eq!(ev[0].channels, vec!["bot-performance", "dashboard"]);
        assert_eq!(ev[0].location, None);
        assert_eq!(ev[0].data, "null");
        assert_eq!(ev[1].channels.len(), 6);
        for bad in [
            &br#"{"channel":"x","location_id":"l","event_type":"A"}"#[..],
            br#"{"channel":"dashboard","location_id":"a/b","event_type":"A"}"#,
            br#"{"channel":"dashboard","location_id":"l","event_type":"A B"}"#,
            br#"{"channel":"dashboard","location_id":"l","event_type":"A","key":"a b"}"#,
            br#"{"location_id":"l","event_type":"A"}"#,
            b"3",
            b"{",
        ] {
            assert_eq!(parse_publish(bad).unwrap_err().0, 400);
        }
        let too_many = format!(
            "[{}]",
            vec![r#"{"channel":"dashboard","location_id":"l","event_type":"A"}"#; 1001].join(",")
        );
        assert_eq!(parse_publish(too_many.as_bytes()).unwrap_err().0, 413);
    }

    #[test]
    fn responses_are_well_formed() {
        let r = String::from_utf8(response(202, r#"{"accepted":1}"#, true)).unwrap();
        assert!(r.starts_with("HTTP/1.1 202 Accepted\r\n"));
        assert!(r.contains("Content-Length: 14\r\n"));
        assert!(r.ends_with("\r\n\r\n{\"accepted\":1}"));
        let r = String::from_utf8(error_response(426, "v", false)).unwrap();
        assert!(r.contains("Sec-WebSocket-Version: 13\r\n"));
        assert!(r.contains("Connection: close\r\n"));
    }
}
