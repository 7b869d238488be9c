//! Server-to-client messages as the subscriber loop needs them: `type`, `last_seq`,
//! `seq`, the event's key (`key`, else its `event_type`), the snapshot marker and
//! flag (docs/protocol.md §9), and the send time and value the publisher put in `data`.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;

/// Key of the publisher's send time (ns since the Unix epoch) in an event's `data`.
pub const SEND_TIME_KEY: &str = "t_ns";
/// Key marking warm-up events in `data` (present = warm-up, not recorded as latency).
pub const WARMUP_KEY: &str = "w";
/// Key of the publisher's value in `data`: a number unique to the event within its
/// stream and key, so the last value a conflating client holds can be checked.
pub const VALUE_KEY: &str = "v";

/// An `event` message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event<'a> {
    pub seq: u64,
    /// The publisher's send time, when a load-test publisher sent it.
    pub t_ns: Option<u64>,
    /// A warm-up event (not recorded as latency).
    pub warm: bool,
    /// Its key for last values and conflation: `key`, or `event_type` without one.
    pub key: Cow<'a, str>,
    /// The publisher's value (`data.v`).
    pub value: Option<u64>,
    /// Part of the snapshot on connect (`"snapshot":true`), not a live event.
    pub snapshot: bool,
}

/// What a text message from the server means to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg<'a> {
    /// `BI_CONNECTION_ESTABLISHED` with the stream's `last_seq`.
    Established {
        last_seq: u64,
    },
    Event(Event<'a>),
    /// The end of the snapshot: `count` events were sent, as of `last_seq`.
    Snapshot {
        count: u64,
        last_seq: u64,
    },
    /// Anything else (`pong`, `error`, `recovered`, ...).
    Other,
}

/// A message that cannot be understood (counted, the connection goes on).
#[derive(Debug, thiserror::Error)]
#[error("bad server message: {0}")]
pub struct MessageError(#[from] serde_json::Error);

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    last_seq: Option<u64>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    count: Option<u64>,
    #[serde(default, borrow)]
    key: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    event_type: Option<Cow<'a, str>>,
    #[serde(default)]
    snapshot: Option<bool>,
    #[serde(default)]
    data: Probe,
}

/// The keys of `data` the harness reads; any other shape of `data` is fine.
#[derive(Default)]
struct Probe {
    t_ns: Option<u64>,
    warm: bool,
    value: Option<u64>,
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ProbeVisitor)
    }
}

struct ProbeVisitor;

impl<'de> Visitor<'de> for ProbeVisitor {
    type Value = Probe;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
        let mut probe = Probe::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == SEND_TIME_KEY {
                probe.t_ns = map.next_value::<Option<u64>>().ok().flatten();
            } else if key == VALUE_KEY {
                probe.value = map.next_value::<Option<u64>>().ok().flatten();
            } else if key == WARMUP_KEY {
                map.next_value::<IgnoredAny>()?;
                probe.warm = true;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(probe)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Probe, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Probe::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Probe, E> {
        Ok(Probe::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Probe, E> {
        Ok(Probe::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Probe, E> {
        Ok(Probe::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Probe, E> {
        Ok(Probe::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Probe, E> {
        Ok(Probe::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<Probe, E> {
        Ok(Probe::default())
    }
}

/// Parses one text message.
pub fn parse(text: &[u8]) -> Result<ServerMsg<'_>, MessageError> {
    let raw: Raw = serde_json::from_slice(text)?;
    Ok(match (raw.kind.as_ref(), raw.last_seq, raw.seq) {
        ("BI_CONNECTION_ESTABLISHED", Some(last_seq), _) => ServerMsg::Established { last_seq },
        // An established message without last_seq: a stream never published to.
        ("BI_CONNECTION_ESTABLISHED", None, _) => ServerMsg::Established { last_seq: 0 },
        ("event", _, Some(seq)) => ServerMsg::Event(Event {
            seq,
            t_ns: raw.data.t_ns,
            warm: raw.data.warm,
            key: raw.key.or(raw.event_type).unwrap_or_default(),
            value: raw.data.value,
            snapshot: raw.snapshot == Some(true),
        }),
        ("snapshot", Some(last_seq), _) => ServerMsg::Snapshot {
            count: raw.count.unwrap_or(0),
            last_seq,
        },
        _ => ServerMsg::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, t_ns: Option<u64>, warm: bool, key: &str) -> ServerMsg<'static> {
        ServerMsg::Event(Event {
            seq,
            t_ns,
            warm,
            key: Cow::Owned(key.to_owned()),
            ..Default::default()
        })
    }

    #[test]
    fn parses_the_contract_messages() {
        let est = br#"{"type":"BI_CONNECTION_ESTABLISHED","connection_id":"c-7f3a","channel":"dashboard","location_id":"loc-1","epoch":"k3j9","last_seq":41,"server_time":1764190000123,"heartbeat_interval_ms":25000}"#;
        assert_eq!(parse(est).unwrap(), ServerMsg::Established { last_seq: 41 });
        let ev = br#"{"type":"event","channel":"dashboard","location_id":"loc-1","event_type":"LOADTEST","seq":42,"published_at":1,"data":{"pad":"xx","t_ns":1764190000456000000}}"#;
        assert_eq!(
            parse(ev).unwrap(),
            event(42, Some(1_764_190_000_456_000_000), false, "LOADTEST")
        );
        let warm = br#"{"type":"event","seq":1,"data":{"t_ns":5,"w":1}}"#;
        assert_eq!(parse(warm).unwrap(), event(1, Some(5), true, ""));
        for data in ["null", "[1,2]", "\"x\"", "{\"commission\":1250.5}", "3.5"] {
            let m = format!(r#"{{"type":"event","seq":7,"data":{data}}}"#);
            assert_eq!(parse(m.as_bytes()).unwrap(), event(7, None, false, ""));
        }
        assert_eq!(
            parse(br#"{"type":"pong","server_time":1}"#).unwrap(),
            ServerMsg::Other
        );
        assert!(parse(b"not json").is_err());
    }

    #[test]
    fn parses_keys_values_and_snapshots() {
        let ev = br#"{"type":"event","event_type":"REVENUE","key":"k7","seq":9,"snapshot":true,"data":{"v":123,"t_ns":4}}"#;
        let ServerMsg::Event(e) = parse(ev).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(
            (e.key.as_ref(), e.value, e.snapshot),
            ("k7", Some(123), true)
        );
        let ev = br#"{"type":"event","event_type":"REVENUE","seq":9,"data":{"v":"x"}}"#;
        let ServerMsg::Event(e) = parse(ev).unwrap() else {
            panic!("not an event")
        };
        assert_eq!(
            (e.key.as_ref(), e.value, e.snapshot),
            ("REVENUE", None, false)
        );
        assert_eq!(
            parse(br#"{"type":"snapshot","count":20,"last_seq":57}"#).unwrap(),
            ServerMsg::Snapshot {
                count: 20,
                last_seq: 57
            }
        );
    }
}
