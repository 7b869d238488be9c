//! The JSON messages of docs/protocol.md §2 that are not fan-out events: built per connection
//! (they are answers to one client), parsed from the client's text frames.

use serde_json::{json, Value};

use crate::channel::{valid_event_type, Channel};
use crate::http::upgrade::MAX_FILTER_TYPES;

pub struct Established<'a> {
    pub connection_id: &'a str,
    pub channel: Channel,
    pub location_id: &'a str,
    pub epoch: &'a str,
    pub last_seq: u64,
    pub server_time: u64,
    pub heartbeat_interval_ms: u64,
    /// The connection conflates (`conflate=1`): the hello says so (docs/protocol.md §9).
    pub conflate: bool,
}

pub fn established(e: &Established<'_>) -> Vec<u8> {
    let mut v = json!({
        "type": "BI_CONNECTION_ESTABLISHED",
        "connection_id": e.connection_id,
        "channel": e.channel.id(),
        "location_id": e.location_id,
        "epoch": e.epoch,
        "last_seq": e.last_seq,
        "server_time": e.server_time,
        "heartbeat_interval_ms": e.heartbeat_interval_ms,
    });
    if e.conflate {
        v["conflate"] = Value::Bool(true);
    }
    to_vec(&v)
}

/// The end of a snapshot (docs/protocol.md §9): how many last values it held, and the
/// `last_seq` they reach.
pub fn snapshot(count: usize, last_seq: u64) -> Vec<u8> {
    to_vec(&json!({"type": "snapshot", "count": count, "last_seq": last_seq}))
}

pub fn pong(server_time: u64, id: Option<&Value>) -> Vec<u8> {
    let mut v = json!({"type": "pong", "server_time": server_time});
    if let Some(id) = id {
        v["id"] = id.clone();
    }
    to_vec(&v)
}

pub fn error(code: &str, message: &str) -> Vec<u8> {
    to_vec(&json!({"type": "error", "code": code, "message": message}))
}

pub fn subscribed(event_types: &[Box<str>]) -> Vec<u8> {
    to_vec(&json!({"type": "subscribed", "event_types": event_types}))
}

pub fn recovered(complete: bool, from_seq: Option<u64>, to_seq: Option<u64>) -> Vec<u8> {
    to_vec(&json!({
        "type": "recovered",
        "complete": complete,
        "from_seq": from_seq,
        "to_seq": to_seq,
    }))
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A message the client may send.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Ping {
        id: Option<Value>,
    },
    /// Replaces the filter; empty = all event types.
    Subscribe {
        event_types: Vec<Box<str>>,
    },
}

/// Why a client message was refused: the `message` of the `error` reply.
pub type Invalid = &'static str;

const TOO_MANY_TYPES: Invalid = "a filter holds at most 256 distinct event types";

pub fn parse_client(text: &str) -> Result<ClientMessage, Invalid> {
    let v: Value = serde_json::from_str(text).map_err(|_| "not valid JSON")?;
    let Value::Object(mut obj) = v else {
        return Err("a message must be a JSON object");
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("ping") => Ok(ClientMessage::Ping {
            id: obj.remove("id"),
        }),
        Some("subscribe") => {
            let Some(Value::Array(items)) = obj.get("event_types") else {
                return Err("`subscribe` needs `event_types`, a list of event types");
            };
            // Linear in the message: a set for de-duplication, and a cap on
            // distinct types (the filter is checked for every event).
            let mut event_types: Vec<Box<str>> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for it in items {
                match it.as_str() {
                    Some(s) if valid_event_type(s) => {
                        if seen.insert(s) {
                            if event_types.len() == MAX_FILTER_TYPES {
                                return Err(TOO_MANY_TYPES);
                            }
                            event_types.push(s.into());
                        }
                    }
                    _ => return Err("each event type must match [A-Za-z0-9_.:-]{1,64}"),
                }
            }
            Ok(ClientMessage::Subscribe { event_types })
        }
        Some(_) => Err("unknown message type (expected `ping` or `subscribe`)"),
        None => Err("a message needs a string `type`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_client_messages() {
        assert_eq!(
            parse_client(r#"{"type":"ping","id":"abc"}"#),
            Ok(ClientMessage::Ping {
                id: Some(json!("abc"))
            })
        );
        assert_eq!(
            parse_client(r#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping { id: None })
        );
        assert_eq!(
            parse_client(r#"{"type":"subscribe","event_types":["A","B","A"]}"#),
            Ok(ClientMessage::Subscribe {
                event_types: vec!["A".into(), "B".into()]
            })
        );
        assert_eq!(
            parse_client(r#"{"type":"subscribe","event_types":[]}"#),
            Ok(ClientMessage::Subscribe {
                event_types: vec![]
            })
        );
        for bad in [
            "nope",
            "[]",
            r#"{"type":"shout"}"#,
            r#"{"kind":"ping"}"#,
            r#"{"type":7}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","event_types":"A"}"#,
            r#"{"type":"subscribe","event_types":[1]}"#,
        ] {
            assert!(parse_client(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn big_subscribes_are_capped_and_linear() {
        let types: Vec<String> = (0..10_900).map(|i| format!("\"T{i}\"")).collect();
        let msg = format!(
            r#"{{"type":"subscribe","event_types":[{}]}}"#,
            types.join(",")
        );
        let t0 = std::time::Instant::now();
        assert_eq!(parse_client(&msg), Err(TOO_MANY_TYPES));
        assert!(t0.elapsed() < std::time::Duration::from_millis(200));
        let dup = format!(
            r#"{{"type":"subscribe","event_types":[{}]}}"#,
            vec!["\"A\""; 10_000].join(",")
        );
        assert_eq!(
            parse_client(&dup),
            Ok(ClientMessage::Subscribe {
                event_types: vec!["A".into()]
            })
        );
        let max = format!(
            r#"{{"type":"subscribe","event_types":[{}]}}"#,
            types[..MAX_FILTER_TYPES].join(",")
        );
        assert!(parse_client(&max).is_ok());
        assert!(TOO_MANY_TYPES.contains(&MAX_FILTER_TYPES.to_string()));
    }

    #[test]
    fn builds_server_messages() {
        let v: Value = serde_json::from_slice(&pong(5, Some(&json!("abc")))).unwrap();
        assert_eq!(v, json!({"type":"pong","server_time":5,"id":"abc"}));
        let v: Value = serde_json::from_slice(&pong(5, None)).unwrap();
        assert_eq!(v, json!({"type":"pong","server_time":5}));
        let v: Value = serde_json::from_slice(&recovered(false, None, None)).unwrap();
        assert_eq!(
            v,
            json!({"type":"recovered","complete":false,"from_seq":null,"to_seq":null})
        );
        let v: Value = serde_json::from_slice(&established(&Established {
            connection_id: "c-1",
            channel: Channel::AnalyticsAdvanced,
            location_id: "loc-1",
            epoch: "e",
            last_seq: 41,
            server_time: 9,
            heartbeat_interval_ms: 25000,
            conflate: false,
        }))
        .unwrap();
        assert!(v.get("conflate").is_none());
        assert_eq!(v["type"], "BI_CONNECTION_ESTABLISHED");
        assert_eq!(v["channel"], "analytics-advanced");
        assert_eq!(v["last_seq"], 41);
        assert_eq!(v["heartbeat_interval_ms"], 25000);
        let v: Value = serde_json::from_slice(&snapshot(3, 41)).unwrap();
        assert_eq!(v, json!({"type":"snapshot","count":3,"last_seq":41}));
    }
}
