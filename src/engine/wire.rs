//! What the Redis engine keeps in Redis, under which names, and the text of
//! what it stores and publishes (`docs/protocol.md` §10, `docs/cluster.md`).
//! Pure: names in, bytes in, typed values out.
//!
//! Every key of a stream carries the stream in a hash tag, `{channel:location}`,
//! so that all of them live in one slot:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `bistream:{dashboard:loc-1}:meta` | hash | `epoch`, `seq` (the counter) |
//! | `bistream:{dashboard:loc-1}:hist` | list | the last `--history-size` events, oldest first |
//! | `bistream:{dashboard:loc-1}:last` | hash | key → its newest event |
//! | `bistream:{dashboard:loc-1}:order` | sorted set | key → seq of its newest event |
//! | `bistream:{dashboard:loc-1}:events` | channel | every event, as it is numbered |
//! | `bistream:{dashboard}:live` | sorted set | locations with subscribers on some node → until when |
//! | `bistream:probe:<node>` | channel | a node's own probe |
//!
//! A stored event is `seq \n event_type \n key \n json` (`key` empty when the
//! event was published without one); a published one adds the epoch after
//! the seq, so a node learns both without parsing JSON.

use std::sync::Arc;

use bytes::Bytes;

use crate::channel::Channel;

/// The names of one stream's keys and channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamKeys {
    pub meta: String,
    pub hist: String,
    pub last: String,
    pub order: String,
    pub events: String,
}

impl StreamKeys {
    pub fn new(channel: Channel, location: &str) -> StreamKeys {
        let base = format!("bistream:{{{}:{location}}}", channel.id());
        StreamKeys {
            meta: format!("{base}:meta"),
            hist: format!("{base}:hist"),
            last: format!("{base}:last"),
            order: format!("{base}:order"),
            events: format!("{base}:events"),
        }
    }

    /// The four keys, in the order the scripts take them.
    pub fn keys(&self) -> [&str; 4] {
        [&self.meta, &self.hist, &self.last, &self.order]
    }
}

/// The set of locations of `channel` that have subscribers somewhere.
pub fn live_key(channel: Channel) -> String {
    format!("bistream:{{{}}}:live", channel.id())
}

/// The channel a node publishes its probe on, and listens to.
pub fn probe_channel(node: &str) -> String {
    format!("bistream:probe:{node}")
}

/// The stream an events channel belongs to.
pub fn parse_events_channel(name: &[u8]) -> Option<(Channel, &str)> {
    let s = std::str::from_utf8(name).ok()?;
    let inner = s.strip_prefix("bistream:{")?.strip_suffix("}:events")?;
    let (channel, location) = inner.split_once(':')?;
    Some((Channel::from_id(channel)?, location))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("stored event has too few fields")]
    Fields,
    #[error("stored event has a bad seq")]
    Seq,
    #[error("stored event is not UTF-8 where text is expected")]
    Text,
}

/// One numbered event as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub event_type: Arc<str>,
    /// The key it was published with; `None`: its event type is its key.
    pub key: Option<Arc<str>>,
    /// The event message, `seq` and all: a view of the buffer it was read
    /// from, not a copy.
    pub json: Bytes,
}

impl Stored {
    /// The last-value key: the published key, or the event type.
    pub fn effective_key(&self) -> &Arc<str> {
        self.key.as_ref().unwrap_or(&self.event_type)
    }
}

/// A stored event with the epoch it was numbered in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub epoch: Arc<str>,
    pub event: Stored,
}

/// The event types and keys met while reading one buffer: a run of events
/// mostly repeats them, and each repeat shares the text read first instead
/// of allocating its own.
#[derive(Default)]
struct Names {
    event_type: Option<Arc<str>>,
    key: Option<Arc<str>>,
}

fn shared(last: &mut Option<Arc<str>>, b: &[u8]) -> Result<Arc<str>, WireError> {
    if let Some(l) = last {
        if l.as_bytes() == b {
            return Ok(l.clone());
        }
    }
    let t: Arc<str> = Arc::from(std::str::from_utf8(b).map_err(|_| WireError::Text)?);
    *last = Some(t.clone());
    Ok(t)
}

fn seq(b: &[u8]) -> Result<u64, WireError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(WireError::Seq)
}

/// The next `\n`-terminated field of `b` from `at`, and where the one after
/// it starts.
fn field(b: &[u8], at: usize) -> Result<(&[u8], usize), WireError> {
    let rest = b.get(at..).ok_or(WireError::Fields)?;
    let nl = memchr::memchr(b'\n', rest).ok_or(WireError::Fields)?;
    Ok((&rest[..nl], at + nl + 1))
}

/// `seq \n event_type \n key \n json`: the stored event in `buf[range]`.
fn parse_stored_in(
    buf: &Bytes,
    range: std::ops::Range<usize>,
    names: &mut Names,
) -> Result<Stored, WireError> {
    let b = &buf[range.clone()];
    let (n, at) = field(b, 0)?;
    let (event_type, at) = field(b, at)?;
    let (key, at) = field(b, at)?;
    Ok(Stored {
        seq: seq(n)?,
        event_type: shared(&mut names.event_type, event_type)?,
        key: if key.is_empty() {
            None
        } else {
            Some(shared(&mut names.key, key)?)
        },
        json: buf.slice(range.start + at..range.end),
    })
}

/// `seq \n event_type \n key \n json`: one stored event, the whole of `b`.
pub fn parse_stored(b: &Bytes) -> Result<Stored, WireError> {
    parse_stored_in(b, 0..b.len(), &mut Names::default())
}

/// Stored events read from one reply: they share the event types and keys
/// they repeat. A value that does not parse is skipped rather than taken for
/// an event: it can only come from outside bistream.
pub fn parse_stored_list(values: impl IntoIterator<Item = Bytes>) -> Vec<Stored> {
    let mut names = Names::default();
    values
        .into_iter()
        .filter_map(|b| parse_stored_in(&b, 0..b.len(), &mut names).ok())
        .collect()
}

/// Appends the head of an event's stored form, `seq \n event_type \n key \n`
/// (as [`parse_stored`] reads it); the event's JSON follows it.
pub fn write_stored_head(out: &mut Vec<u8>, seq: u64, event_type: &str, key: Option<&str>) {
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(event_type.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(key.unwrap_or("").as_bytes());
    out.push(b'\n');
}

/// Separates the epoch and the events of a published message: a byte that
/// valid JSON never holds raw, nor event types, keys or epochs.
pub const RECORD_SEPARATOR: u8 = 0x1e;

/// The epoch, then each event's stored form (as [`parse_stored`] reads it),
/// separated by [`RECORD_SEPARATOR`]: the message published for a run of
/// events of one stream. The events are views of `b`.
pub fn parse_message(b: &Bytes) -> Result<Vec<Message>, WireError> {
    let mut parts = memchr::memchr_iter(RECORD_SEPARATOR, b)
        .chain(std::iter::once(b.len()))
        .scan(0, |from, to| {
            let part = &b[*from..to];
            *from = to + 1;
            Some(part)
        });
    let epoch_bytes = parts.next().ok_or(WireError::Fields)?;
    let epoch: Arc<str> = Arc::from(std::str::from_utf8(epoch_bytes).map_err(|_| WireError::Text)?);
    let mut at = epoch_bytes.len() + 1;
    let mut names = Names::default();
    let mut events = Vec::new();
    for one in parts {
        events.push(Message {
            epoch: epoch.clone(),
            event: parse_stored_in(b, at..at + one.len(), &mut names)?,
        });
        at += one.len() + 1;
    }
    if events.is_empty() {
        return Err(WireError::Fields);
    }
    Ok(events)
}

/// FNV-1a, 64 bits: a hash every node computes the same way whatever it was
/// built with (the standard library's hasher may change between releases).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so that ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// MurmurHash3's 64-bit finaliser: every input bit moves every output bit,
/// which FNV alone does not do for inputs that differ early.
fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The Redis instance a stream lives on: rendezvous hashing over the
/// instances' URLs, so every node picks the same one whatever order it was
/// given them in, and adding an instance moves only the streams it wins.
pub fn shard_of(channel: Channel, location: &str, shards: &[String]) -> usize {
    if shards.len() < 2 {
        return 0;
    }
    let stream = mix64(fnv1a(&[channel.id().as_bytes(), location.as_bytes()]));
    shards
        .iter()
        .enumerate()
        .max_by_key(|(_, url)| mix64(fnv1a(&[url.as_bytes()]) ^ stream))
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_stream_in_a_hash_tag() {
        let k = StreamKeys::new(Channel::RevenueIntelligence, "loc:1");
        assert_eq!(k.meta, "bistream:{revenue-intelligence:loc:1}:meta");
        assert_eq!(k.events, "bistream:{revenue-intelligence:loc:1}:events");
        for key in k.keys() {
            assert!(key.contains("{revenue-intelligence:loc:1}"));
        }
        assert_eq!(
            parse_events_channel(k.events.as_bytes()),
            Some((Channel::RevenueIntelligence, "loc:1"))
        );
        assert_eq!(parse_events_channel(b"bistream:{nope:x}:events"), None);
        assert_eq!(parse_events_channel(b"bistream:probe:n"), None);
        assert_eq!(live_key(Channel::Dashboard), "bistream:{dashboard}:live");
    }

    #[test]
    fn stored_and_published_events_round_trip() {
        let s = parse_stored(&Bytes::from_static(b"42\nREVENUE\n\n{\"a\":\"x\\ny\"}")).unwrap();
        assert_eq!(s.seq, 42);
        assert_eq!(&*s.event_type, "REVENUE");
        assert_eq!(s.key, None);
        assert_eq!(&**s.effective_key(), "REVENUE");
        assert_eq!(&s.json[..], b"{\"a\":\"x\\ny\"}");
        // Two events; the first's JSON holds a newline.
        let m =
            parse_message(&Bytes::from_static(b"ep-1\x1e7\nE\nk1\n{\n}\x1e8\nF\n\n{}")).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|m| &*m.epoch == "ep-1"));
        assert_eq!(m[0].event.seq, 7);
        assert_eq!(m[0].event.key.as_deref(), Some("k1"));
        assert_eq!(&m[0].event.json[..], b"{\n}");
        assert_eq!(m[1].event.seq, 8);
        assert_eq!(&**m[1].event.effective_key(), "F");
        assert_eq!(&m[1].event.json[..], b"{}");
        for bad in [&b""[..], b"x\nE\n\n{}", b"1\nE", b"1\n\xff\n\n{}"] {
            assert!(
                parse_stored(&Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
        for bad in [
            &b"ep"[..],
            b"ep\x1e",
            b"ep\x1e1\nE\n\n{}\x1e",
            b"ep\x1ex\nE\n\n{}",
            b"\xff\x1e1\nE\n\n{}",
        ] {
            assert!(
                parse_message(&Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn shards_are_stable_and_spread() {
        // URLs that differ only in the port spread as well as any.
        let ports: Vec<String> = (0..2)
            .map(|i| format!("redis://127.0.0.1:4{i}123"))
            .collect();
        let on_first = (0..1000)
            .filter(|i| shard_of(Channel::Dashboard, &format!("shard-{i}"), &ports) == 0)
            .count();
        assert!((400..600).contains(&on_first), "{on_first}");
        let urls: Vec<String> = (0..3).map(|i| format!("redis://10.0.0.{i}:6379")).collect();
        let mut rev = urls.clone();
        rev.reverse();
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let loc = format!("loc-{i}");
            let a = shard_of(Channel::Dashboard, &loc, &urls);
            let b = shard_of(Channel::Dashboard, &loc, &rev);
            assert_eq!(urls[a], rev[b], "order of the URLs must not matter");
            counts[a] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(shard_of(Channel::Dashboard, "x", &urls[..1]), 0);
        // The hash is fixed: a change here would move every stream.
        assert_eq!(fnv1a(&[b"a"]), 620_310_408_636_712_809);
    }
}
