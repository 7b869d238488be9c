//! `POST /api/events` bodies → validated events (docs/protocol.md §5). Pure: the loop thread runs
//! it, so validation work is spread over the loops, not done by the publisher.
//!
//! `data` is kept as the raw JSON text the publisher sent (validated by
//! serde_json), so the encoder embeds it without re-serialising it.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::channel::{valid_event_type, valid_key, valid_location_id, Channel};
use crate::config::MAX_PUBLISH_EVENTS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSel {
    All,
    List(Vec<Channel>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationSel {
    /// Every location that has subscribers on the channel.
    All,
    One(Box<str>),
}

#[derive(Debug, Clone)]
pub struct PublishEvent {
    pub channels: ChannelSel,
    pub location: LocationSel,
    pub event_type: Box<str>,
    /// The last-value key (docs/protocol.md §9); `None`: the event type is the key, and the
    /// event message carries no `key` field.
    pub key: Option<Box<str>>,
    /// Raw JSON text; `null` when absent.
    pub data: Box<RawValue>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// 400, naming the bad field.
    #[error("{0}")]
    Invalid(String),
    /// 413.
    #[error("at most {MAX_PUBLISH_EVENTS} events per request (got {0})")]
    TooManyEvents(usize),
    /// 413: the event's frame would not fit in a subscriber's outbound queue
    /// (`--max-queue-bytes`), so no subscriber could ever receive it.
    #[error(
        "{at}the event is too large: its frame would be {frame} bytes, over the \
         outbound queue bound of {limit} bytes (--max-queue-bytes)"
    )]
    EventTooLarge {
        at: String,
        frame: usize,
        limit: usize,
    },
}

impl PublishError {
    pub fn status(&self) -> u16 {
        match self {
            PublishError::Invalid(_) => 400,
            PublishError::TooManyEvents(_) | PublishError::EventTooLarge { .. } => 413,
        }
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    channel: Option<&'a RawValue>,
    #[serde(borrow)]
    location_id: Option<&'a RawValue>,
    #[serde(borrow)]
    event_type: Option<&'a RawValue>,
    #[serde(borrow)]
    key: Option<&'a RawValue>,
    data: Option<Box<RawValue>>,
}

fn field(at: &str, name: &str, msg: &str) -> PublishError {
    PublishError::Invalid(format!("{at}`{name}` {msg}"))
}

fn parse_channel(raw: Option<&RawValue>, at: &str) -> Result<ChannelSel, PublishError> {
    let bad = || {
        field(
            at,
            "channel",
            "must be a channel id, a list of them, or \"*\" (ids: dashboard, revenue-intelligence, \
             bot-performance, business-intelligence, ai-concierge, analytics-advanced)",
        )
    };
    let Some(raw) = raw else {
        return Err(field(at, "channel", "is required"));
    };
    let v: Value = serde_json::from_str(raw.get()).map_err(|_| bad())?;
    match v {
        Value::String(s) if s == "*" => Ok(ChannelSel::All),
        Value::String(s) => Channel::from_id(&s)
            .map(|c| ChannelSel::List(vec![c]))
            .ok_or_else(bad),
        Value::Array(items) if !items.is_empty() => {
            let mut list = Vec::with_capacity(items.len());
            for it in items {
                let c = it.as_str().and_then(Channel::from_id).ok_or_else(bad)?;
                if !list.contains(&c) {
                    list.push(c);
                }
            }
            Ok(ChannelSel::List(list))
        }
        _ => Err(bad()),
    }
}

fn parse_location(raw: Option<&RawValue>, at: &str) -> Result<LocationSel, PublishError> {
    let bad = || {
        field(
            at,
            "location_id",
            "must be a location id ([A-Za-z0-9_.:-]{1,128}) or \"*\"",
        )
    };
    let Some(raw) = raw else {
        return Err(field(at, "location_id", "is required"));
    };
    match serde_json::from_str::<Value>(raw.get()).map_err(|_| bad())? {
        Value::String(s) if s == "*" => Ok(LocationSel::All),
        Value::String(s) if valid_location_id(&s) => Ok(LocationSel::One(s.into_boxed_str())),
        _ => Err(bad()),
    }
}

fn parse_event_type(raw: Option<&RawValue>, at: &str) -> Result<Box<str>, PublishError> {
    let Some(raw) = raw else {
        return Err(field(at, "event_type", "is required"));
    };
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(s)) if valid_event_type(&s) => Ok(s.into_boxed_str()),
        _ => Err(field(at, "event_type", "must match [A-Za-z0-9_.:-]{1,64}")),
    }
}

/// `key` is optional; when sent it must be a valid key (`null` counts as absent).
fn parse_key(raw: Option<&RawValue>, at: &str) -> Result<Option<Box<str>>, PublishError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Null) => Ok(None),
        Ok(Value::String(s)) if valid_key(&s) => Ok(Some(s.into_boxed_str())),
        _ => Err(field(at, "key", "must match [A-Za-z0-9_.:-]{1,128}")),
    }
}

fn null() -> Box<RawValue> {
    RawValue::from_string("null".to_string()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

fn parse_one(raw: &RawValue, at: &str) -> Result<PublishEvent, PublishError> {
    if !raw.get().trim_start().starts_with('{') {
        return Err(PublishError::Invalid(format!(
            "{}an event must be a JSON object",
            at
        )));
    }
    let w: Wire<'_> = serde_json::from_str(raw.get())
        .map_err(|e| PublishError::Invalid(format!("{at}invalid event: {e}")))?;
    Ok(PublishEvent {
        channels: parse_channel(w.channel, at)?,
        location: parse_location(w.location_id, at)?,
        event_type: parse_event_type(w.event_type, at)?,
        key: parse_key(w.key, at)?,
        data: w.data.unwrap_or_else(null),
    })
}

/// The first event whose frame, for any stream it may go to, would be larger
/// than `limit` bytes (`docs/protocol.md` §5: such a publish is refused whole).
pub fn oversized(events: &[PublishEvent], limit: usize) -> Option<PublishError> {
    events.iter().enumerate().find_map(|(i, e)| {
        let location = match &e.location {
            LocationSel::One(l) => l.len(),
            LocationSel::All => crate::channel::MAX_LOCATION_ID_LEN,
        };
        let frame = crate::hub::event::frame_len_bound(
            location,
            e.event_type.len(),
            e.key.as_deref().map_or(0, str::len),
            e.data.get().len(),
        );
        (frame > limit).then(|| PublishError::EventTooLarge {
            at: if events.len() > 1 {
                format!("events[{i}]: ")
            } else {
                String::new()
            },
            frame,
            limit,
        })
    })
}

/// One event object or an array of up to [`MAX_PUBLISH_EVENTS`].
pub fn parse_body(body: &[u8]) -> Result<Vec<PublishEvent>, PublishError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| PublishError::Invalid("the body is not UTF-8 JSON".into()))?;
    let first = text.trim_start().as_bytes().first().copied();
    match first {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text)
                .map_err(|e| PublishError::Invalid(format!("the body is not valid JSON: {e}")))?;
            if items.len() > MAX_PUBLISH_EVENTS {
                return Err(PublishError::TooManyEvents(items.len()));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, raw)| parse_one(raw, &format!("events[{i}]: ")))
                .collect()
        }
        Some(b'{') => {
            let raw: &RawValue = serde_json::from_str(text)
                .map_err(|e| PublishError::Invalid(format!("the body is not valid JSON: {e}")))?;
            Ok(vec![parse_one(raw, "")?])
        }
        _ => Err(PublishError::Invalid(
            "the body must be a JSON event object or an array of them".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        match parse_body(body.as_bytes()) {
            Err(PublishError::Invalid(m)) => m,
            other => panic!("expected Invalid for {body}, got {other:?}"),
        }
    }

    #[test]
    fn one_event() {
        let v = parse_body(
            br#"{"channel":"dashboard","location_id":"loc-1","event_type":"REVENUE_UPDATE","data":{"commission": 1250.5}}"#,
        )
        .unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].channels, ChannelSel::List(vec![Channel::Dashboard]));
        assert_eq!(v[0].location, LocationSel::One("loc-1".into()));
        assert_eq!(&*v[0].event_type, "REVENUE_UPDATE");
        assert_eq!(v[0].data.get(), r#"{"commission": 1250.5}"#);
    }

    #[test]
    fn lists_stars_and_default_data() {
        let v = parse_body(
            br#"[{"channel":"*","location_id":"*","event_type":"A"},
                 {"channel":["dashboard","ai-concierge","dashboard"],"location_id":"x","event_type":"B","data":[1,2]}]"#,
        )
        .unwrap();
        assert_eq!(v[0].channels, ChannelSel::All);
        assert_eq!(v[0].location, LocationSel::All);
        assert_eq!(v[0].data.get(), "null");
        assert_eq!(
            v[1].channels,
            ChannelSel::List(vec![Channel::Dashboard, Channel::AiConcierge])
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err(r#"{"location_id":"l","event_type":"A"}"#).contains("`channel`"));
        assert!(
            err(r#"{"channel":"nope","location_id":"l","event_type":"A"}"#).contains("`channel`")
        );
        assert!(err(r#"{"channel":[],"location_id":"l","event_type":"A"}"#).contains("`channel`"));
        assert!(err(r#"{"channel":"dashboard","event_type":"A"}"#).contains("`location_id`"));
        assert!(
            err(r#"{"channel":"dashboard","location_id":"a/b","event_type":"A"}"#)
                .contains("`location_id`")
        );
        assert!(
            err(r#"{"channel":"dashboard","location_id":7,"event_type":"A"}"#)
                .contains("`location_id`")
        );
        assert!(err(r#"{"channel":"dashboard","location_id":"l"}"#).contains("`event_type`"));
        assert!(
            err(r#"{"channel":"dashboard","location_id":"l","event_type":"a b"}"#)
                .contains("`event_type`")
        );
        let m = err(r#"[{"channel":"dashboard","location_id":"l","event_type":"A"}, 5]"#);
        assert!(m.starts_with("events[1]"), "{m}");
        assert!(err("not json").contains("JSON"));
        assert!(err("{").contains("JSON"));
        assert!(err("\"x\"").contains("object"));
        assert!(err("").contains("object"));
    }

    #[test]
    fn keys() {
        let v = parse_body(
            br#"[{"channel":"dashboard","location_id":"l","event_type":"A","key":"revenue:today"},
                {"channel":"dashboard","location_id":"l","event_type":"A","key":null},
                {"channel":"dashboard","location_id":"l","event_type":"A"}]"#,
        )
        .unwrap();
        assert_eq!(v[0].key.as_deref(), Some("revenue:today"));
        assert_eq!(v[1].key, None);
        assert_eq!(v[2].key, None);
        for bad in [
            r#""""#,
            r#""a b""#,
            "7",
            r#"["a"]"#,
            &format!("{:?}", "k".repeat(129)),
        ] {
            let body = format!(
                r#"{{"channel":"dashboard","location_id":"l","event_type":"A","key":{bad}}}"#
            );
            assert!(err(&body).contains("`key`"), "{bad}");
        }
    }

    #[test]
    fn too_many() {
        let one = r#"{"channel":"dashboard","location_id":"l","event_type":"A"}"#;
        let body = format!("[{}]", vec![one; 1001].join(","));
        assert_eq!(
            parse_body(body.as_bytes()).unwrap_err(),
            PublishError::TooManyEvents(1001)
        );
        let body = format!("[{}]", vec![one; 1000].join(","));
        assert_eq!(parse_body(body.as_bytes()).unwrap().len(), 1000);
    }
}
