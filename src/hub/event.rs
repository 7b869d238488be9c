//! An event, encoded once: the JSON text and its WebSocket frame in one buffer,
//! shared by every recipient and by the stream's history.

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
    /// The complete text frame.
    pub frame: Bytes,
    /// Monotonic ns at which the publisher accepted the event.
    pub stamp: u64,
}

/// The longest channel id (`business-intelligence`).
const MAX_CHANNEL_LEN: usize = 21;

/// An upper bound of the frame [`encode_event`] makes, from the lengths of
/// its variable parts: what a publish is checked against before it is accepted.
pub fn frame_len_bound(location: usize, event_type: usize, data: usize) -> usize {
    // The fixed JSON text, two numbers of at most 20 digits, room for the
    // fields later sections add, and the largest frame header (10 bytes).
    const ENVELOPE: usize = 128;
    let json = ENVELOPE + MAX_CHANNEL_LEN + location + event_type + 2 * 20 + data;
    json + 10
}

/// `location_id` and `event_type` are validated to `[A-Za-z0-9_.:-]`, so they
/// need no JSON escaping; `data` is JSON already.
pub fn encode_event(
    channel: Channel,
    location: &str,
    event_type: &str,
    seq: u64,
    published_at_ms: u64,
    data: &RawValue,
) -> Bytes {
    let mut json = Vec::with_capacity(120 + location.len() + event_type.len() + data.get().len());
    json.extend_from_slice(br#"{"type":"event","channel":""#);
    json.extend_from_slice(channel.id().as_bytes());
    json.extend_from_slice(br#"","location_id":""#);
    json.extend_from_slice(location.as_bytes());
    json.extend_from_slice(br#"","event_type":""#);
    json.extend_from_slice(event_type.as_bytes());
    json.extend_from_slice(br#"","seq":"#);
    json.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    json.extend_from_slice(br#","published_at":"#);
    json.extend_from_slice(itoa::Buffer::new().format(published_at_ms).as_bytes());
    json.extend_from_slice(br#","data":"#);
    json.extend_from_slice(data.get().as_bytes());
    json.push(b'}');
    Bytes::from(frame::text(&json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_valid_json_in_a_text_frame() {
        let data = RawValue::from_string(r#"{"commission": 1250.5}"#.into()).unwrap();
        let f = encode_event(
            Channel::Dashboard,
            "loc-1",
            "REVENUE_UPDATE",
            42,
            1764190000456,
            &data,
        );
        assert_eq!(f[0], 0x81);
        let (len, payload) = if f[1] == 126 {
            (u16::from_be_bytes([f[2], f[3]]) as usize, &f[4..])
        } else {
            (f[1] as usize, &f[2..])
        };
        assert_eq!(len, payload.len());
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["channel"], "dashboard");
        assert_eq!(v["location_id"], "loc-1");
        assert_eq!(v["event_type"], "REVENUE_UPDATE");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["published_at"], 1764190000456u64);
        assert_eq!(v["data"]["commission"], 1250.5);
        assert!(
            f.len() <= frame_len_bound("loc-1".len(), "REVENUE_UPDATE".len(), data.get().len())
        );
    }

    #[test]
    fn the_bound_holds_for_the_longest_ids_and_numbers() {
        let data = RawValue::from_string("x".repeat(70_000).replace('x', "1")).unwrap();
        let loc = "l".repeat(128);
        let ty = "t".repeat(64);
        let f = encode_event(
            Channel::BusinessIntelligence,
            &loc,
            &ty,
            u64::MAX,
            u64::MAX,
            &data,
        );
        assert!(f.len() <= frame_len_bound(128, 64, 70_000));
        assert!(frame_len_bound(128, 64, 70_000) - f.len() < 200);
    }
}
