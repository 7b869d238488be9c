//! An event, encoded once: the JSON text and its WebSocket frame in one buffer,
//! shared by every recipient, by the stream's history and by its last values.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::channel::Channel;
use crate::ws::frame;

/// The publisher's id for a (channel, location) stream. Never reused within a
/// process, so a late message about a forgotten stream cannot hit a new one.
pub type StreamId = u64;

/// One encoded stream event on its way to a loop.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub stream: StreamId,
    pub seq: u64,
    /// For the connection's `events=` filter.
    pub event_type: Arc<str>,
    /// The last-value key (the event type when none was published): what a
    /// conflating connection keeps one event of (docs/protocol.md §9).
    pub key: Arc<str>,
    /// The complete text frame.
    pub frame: Bytes,
    /// Monotonic ns at which the publisher accepted the event.
    pub stamp: u64,
}

/// The longest channel id (`business-intelligence`).
const MAX_CHANNEL_LEN: usize = 21;

/// What the JSON of [`encode_event`] opens with; the snapshot marker goes right after it.
const EVENT_PREFIX: &[u8] = br#"{"type":"event","#;
const SNAPSHOT_MARK: &[u8] = br#""snapshot":true,"#;

/// An upper bound of the frame [`encode_event`] makes, from the lengths of
/// its variable parts: what a publish is checked against before it is
/// accepted. It holds for the snapshot variant of the frame too.
pub fn frame_len_bound(location: usize, event_type: usize, key: usize, data: usize) -> usize {
    // The fixed JSON text with the `key` and `snapshot` fields, two numbers of
    // at most 20 digits, and the largest frame header (10 bytes).
    const ENVELOPE: usize = 128 + 8 + 16;
    let json = ENVELOPE + MAX_CHANNEL_LEN + location + event_type + key + 2 * 20 + data;
    json + 10
}

/// The parts of one event message.
pub struct EventParts<'a> {
    pub channel: Channel,
    pub location: &'a str,
    pub event_type: &'a str,
    /// Written only when the event was published with a key.
    pub key: Option<&'a str>,
    pub seq: u64,
    pub published_at_ms: u64,
    pub data: &'a RawValue,
}

/// Everything of the event's JSON before its `seq` number.
fn write_before_seq(e: &EventParts<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(EVENT_PREFIX);
    out.extend_from_slice(br#""channel":""#);
    out.extend_from_slice(e.channel.id().as_bytes());
    out.extend_from_slice(br#"","location_id":""#);
    out.extend_from_slice(e.location.as_bytes());
    out.extend_from_slice(br#"","event_type":""#);
    out.extend_from_slice(e.event_type.as_bytes());
    if let Some(key) = e.key {
        out.extend_from_slice(br#"","key":""#);
        out.extend_from_slice(key.as_bytes());
    }
    out.extend_from_slice(br#"","seq":"#);
}

/// Everything of the event's JSON after its `seq` number.
fn write_after_seq(e: &EventParts<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(br#","published_at":"#);
    out.extend_from_slice(itoa::Buffer::new().format(e.published_at_ms).as_bytes());
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(e.data.get().as_bytes());
    out.push(b'}');
}

/// The event's JSON around its `seq`: everything before the number and
/// everything after it. The Redis engine's publish script puts the `seq` it
/// assigns between them; [`write_event_json`] is the same layout with the
/// number in place, so the layout is written once.
pub fn json_around_seq(e: &EventParts<'_>) -> (Vec<u8>, Vec<u8>) {
    let key_len = e.key.map_or(0, |k| k.len() + 9);
    let mut prefix = Vec::with_capacity(100 + e.location.len() + e.event_type.len() + key_len);
    write_before_seq(e, &mut prefix);
    let mut suffix = Vec::with_capacity(40 + e.data.get().len());
    write_after_seq(e, &mut suffix);
    (prefix, suffix)
}

/// Appends the event message's JSON, `seq` and all, to `out`.
pub fn write_event_json(e: &EventParts<'_>, out: &mut Vec<u8>) {
    write_before_seq(e, out);
    out.extend_from_slice(itoa::Buffer::new().format(e.seq).as_bytes());
    write_after_seq(e, out);
}

/// `location_id`, `event_type` and `key` are validated to `[A-Za-z0-9_.:-]`,
/// so they need no JSON escaping; `data` is JSON already.
pub fn encode_event(e: &EventParts<'_>) -> Bytes {
    let key_len = e.key.map_or(0, |k| k.len() + 9);
    let mut json = Vec::with_capacity(
        160 + e.location.len() + e.event_type.len() + key_len + e.data.get().len(),
    );
    write_event_json(e, &mut json);
    Bytes::from(frame::text(&json))
}

/// The same event as a snapshot message (docs/protocol.md §9): `"snapshot":true` added to the
/// frame the event was published as. Built once per last value, when a
/// snapshot first needs it, not per subscriber. `None` when `frame` is not an
/// event frame of [`encode_event`].
pub fn snapshot_frame(frame: &[u8]) -> Option<Bytes> {
    let (_, payload) = frame::split_server_frame(frame)?;
    let rest = payload.strip_prefix(EVENT_PREFIX)?;
    let mut json = Vec::with_capacity(payload.len() + SNAPSHOT_MARK.len());
    json.extend_from_slice(EVENT_PREFIX);
    json.extend_from_slice(SNAPSHOT_MARK);
    json.extend_from_slice(rest);
    Some(Bytes::from(frame::text(&json)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(f: &[u8]) -> serde_json::Value {
        assert_eq!(f[0], 0x81);
        let (len, payload) = match f[1] {
            126 => (u16::from_be_bytes([f[2], f[3]]) as usize, &f[4..]),
            127 => (
                u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
                &f[10..],
            ),
            n => (n as usize, &f[2..]),
        };
        assert_eq!(len, payload.len());
        serde_json::from_slice(payload).unwrap()
    }

    #[test]
    fn encodes_valid_json_in_a_text_frame() {
        let data = RawValue::from_string(r#"{"commission": 1250.5}"#.into()).unwrap();
        let parts = EventParts {
            channel: Channel::Dashboard,
            location: "loc-1",
            event_type: "REVENUE_UPDATE",
            key: None,
            seq: 42,
            published_at_ms: 1764190000456,
            data: &data,
        };
        let f = encode_event(&parts);
        let v = payload(&f);
        assert_eq!(v["type"], "event");
        assert_eq!(v["channel"], "dashboard");
        assert_eq!(v["location_id"], "loc-1");
        assert_eq!(v["event_type"], "REVENUE_UPDATE");
        assert!(v.get("key").is_none());
        assert_eq!(v["seq"], 42);
        assert_eq!(v["published_at"], 1764190000456u64);
        assert_eq!(v["data"]["commission"], 1250.5);
        assert!(f.len() <= frame_len_bound(5, 14, 0, data.get().len()));

        let keyed = encode_event(&EventParts {
            key: Some("revenue:today"),
            ..parts
        });
        let v = payload(&keyed);
        assert_eq!(v["key"], "revenue:today");
        let snap = snapshot_frame(&keyed).unwrap();
        let s = payload(&snap);
        assert_eq!(s["snapshot"], true);
        assert_eq!(s["seq"], 42);
        assert_eq!(s["key"], "revenue:today");
        assert!(snap.len() <= frame_len_bound(5, 14, 13, data.get().len()));
        assert!(snapshot_frame(b"\x81\x02{}").is_none());
    }

    #[test]
    fn the_bound_holds_for_the_longest_ids_and_numbers() {
        let data = RawValue::from_string("1".repeat(70_000)).unwrap();
        let loc = "l".repeat(128);
        let ty = "t".repeat(64);
        let key = "k".repeat(128);
        let f = encode_event(&EventParts {
            channel: Channel::BusinessIntelligence,
            location: &loc,
            event_type: &ty,
            key: Some(&key),
            seq: u64::MAX,
            published_at_ms: u64::MAX,
            data: &data,
        });
        let snap = snapshot_frame(&f).unwrap();
        let bound = frame_len_bound(128, 64, 128, 70_000);
        assert!(snap.len() <= bound);
        assert!(bound - snap.len() < 200);
    }
}
