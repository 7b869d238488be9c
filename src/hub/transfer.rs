//! The memory engine's state as bytes, for a hand-over to a new process
//! (docs/protocol.md §11): every stream's epoch and `seq`, its history and
//! its last values. Sans-io: [`encode`] and [`decode`]; the publisher thread
//! builds a [`State`] (`Streams::export`) and the new process imports one
//! (`Streams::import`) before its loops accept anything.
//!
//! # Format (version 1), little-endian
//!
//! ```text
//! magic    8 bytes  "BSSTATE\0"
//! version  u16      1
//! flags    u16      0 (reserved)
//! body_len u64      bytes of the body
//! body
//!   streams  u32 n, then n × { channel u8 (index in Channel::ALL), location str16,
//!                              epoch str16, seq u64 }
//!   history  u64 n, then n × { stream u32, seq u64, event_type str8, frame bytes32 }
//!   last     u64 n, then n × { stream u32, key str8, seq u64, event_type str8, frame bytes32 }
//! checksum u64      FNV-1a (64-bit) over the body, 8 bytes at a time
//! ```
//!
//! `strN`/`bytesN` are a length of N bits followed by that many bytes. History
//! records and last values come in publish order across all streams (the order
//! the byte caps evict in); within a stream, history is contiguous in `seq`.
//! Everything is checked on the way in: a truncated, corrupt or inconsistent
//! state is refused whole with a [`StateError`] (the hand-over then fails and
//! the old process keeps serving), never half imported.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use crate::channel::{valid_event_type, valid_key, valid_location_id, Channel};
use crate::ws::frame::split_server_frame;

const MAGIC: &[u8; 8] = b"BSSTATE\0";
pub const VERSION: u16 = 1;
const HEADER_LEN: usize = 8 + 2 + 2 + 8;
const CHECKSUM_LEN: usize = 8;
/// The longest epoch accepted: ours are about 20 characters.
const MAX_EPOCH_LEN: usize = 255;

/// One stream's numbering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamState {
    pub channel: Channel,
    pub location: Arc<str>,
    pub epoch: Arc<str>,
    /// The last seq assigned (0: none yet).
    pub seq: u64,
}

/// One event kept in a stream's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRecord {
    /// Index into [`State::streams`].
    pub stream: u32,
    pub seq: u64,
    pub event_type: Arc<str>,
    pub frame: Bytes,
}

/// The last value of one key of a stream (docs/protocol.md §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastValueRecord {
    /// Index into [`State::streams`].
    pub stream: u32,
    pub key: Arc<str>,
    pub seq: u64,
    pub event_type: Arc<str>,
    pub frame: Bytes,
}

/// Everything the memory engine hands to its successor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub streams: Vec<StreamState>,
    /// In publish order across streams.
    pub history: Vec<HistoryRecord>,
    /// In publish order across streams.
    pub last_values: Vec<LastValueRecord>,
}

impl State {
    /// Does any stream's epoch start with `prefix-`, the form new streams of a
    /// process with that epoch prefix get? The new process picks a prefix for
    /// which this is false, so its new streams never reuse an imported epoch.
    pub fn uses_epoch_prefix(&self, prefix: &str) -> bool {
        self.streams.iter().any(|s| {
            s.epoch
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('-'))
        })
    }

    /// Bytes of frames carried (history and last values).
    pub fn frame_bytes(&self) -> usize {
        self.history.iter().map(|h| h.frame.len()).sum::<usize>()
            + self
                .last_values
                .iter()
                .map(|l| l.frame.len())
                .sum::<usize>()
    }
}

/// Why bytes are not a state this version can import.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("not a bistream state (bad magic)")]
    BadMagic,
    #[error("state format version {0}; this binary reads version {VERSION}")]
    Version(u16),
    #[error("state truncated: {0}")]
    Truncated(&'static str),
    #[error("state checksum does not match its body")]
    Checksum,
    #[error("state is corrupt: {0}")]
    Corrupt(&'static str),
}

// ---- encoding ----

struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    /// Lengths are bounded by the validation every field had on the way in
    /// (ids ≤ 128 bytes, frames ≤ the publish limit); a longer one is cut to
    /// what the field can say and the decoder then refuses the state.
    fn str8(&mut self, s: &str) {
        let n = s.len().min(u8::MAX as usize);
        self.u8(n as u8);
        self.out.extend_from_slice(&s.as_bytes()[..n]);
    }
    fn str16(&mut self, s: &str) {
        let n = s.len().min(u16::MAX as usize);
        self.u16(n as u16);
        self.out.extend_from_slice(&s.as_bytes()[..n]);
    }
    fn bytes32(&mut self, b: &[u8]) {
        let n = b.len().min(u32::MAX as usize);
        self.u32(n as u32);
        self.out.extend_from_slice(&b[..n]);
    }
}

/// The state as bytes (the format above).
pub fn encode(state: &State) -> Vec<u8> {
    let frames = state.frame_bytes();
    let meta = 64 * (state.streams.len() + state.history.len() + state.last_values.len());
    let mut w = Writer {
        out: Vec::with_capacity(HEADER_LEN + frames + meta + CHECKSUM_LEN),
    };
    w.out.extend_from_slice(MAGIC);
    w.u16(VERSION);
    w.u16(0);
    w.u64(0); // body length, filled in below
    w.u32(state.streams.len() as u32);
    for s in &state.streams {
        w.u8(s.channel.index() as u8);
        w.str16(&s.location);
        w.str16(&s.epoch);
        w.u64(s.seq);
    }
    w.u64(state.history.len() as u64);
    for h in &state.history {
        w.u32(h.stream);
        w.u64(h.seq);
        w.str8(&h.event_type);
        w.bytes32(&h.frame);
    }
    w.u64(state.last_values.len() as u64);
    for l in &state.last_values {
        w.u32(l.stream);
        w.str8(&l.key);
        w.u64(l.seq);
        w.str8(&l.event_type);
        w.bytes32(&l.frame);
    }
    let body_len = (w.out.len() - HEADER_LEN) as u64;
    w.out[12..20].copy_from_slice(&body_len.to_le_bytes());
    let sum = checksum(&w.out[HEADER_LEN..]);
    w.u64(sum);
    w.out
}

/// FNV-1a over 8-byte words (the tail zero-padded): a fast check against a
/// torn or damaged transfer, not against an adversary (the sender is this
/// server's own previous process, over a private socket pair).
fn checksum(body: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET ^ body.len() as u64;
    let mut chunks = body.chunks_exact(8);
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(PRIME);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(PRIME);
    }
    h
}

// ---- decoding ----

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(StateError::Corrupt(
                "a length runs past the end of the body",
            ))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, StateError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, StateError> {
        let mut b = [0u8; 2];
        b.copy_from_slice(self.take(2)?);
        Ok(u16::from_le_bytes(b))
    }
    fn u32(&mut self) -> Result<u32, StateError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, StateError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
    fn str(&mut self, n: usize) -> Result<&'a str, StateError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| StateError::Corrupt("a string is not UTF-8"))
    }
    fn str8(&mut self) -> Result<&'a str, StateError> {
        let n = self.u8()? as usize;
        self.str(n)
    }
    fn str16(&mut self) -> Result<&'a str, StateError> {
        let n = self.u16()? as usize;
        self.str(n)
    }
    fn bytes32(&mut self) -> Result<&'a [u8], StateError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// A record count, refused when the records could not fit in what is left
    /// (so a corrupt count never reserves memory for records that are not there).
    fn count(&mut self, n: u64, min_record: usize) -> Result<usize, StateError> {
        let fits = (self.remaining() / min_record) as u64;
        if n > fits {
            return Err(StateError::Corrupt(
                "a record count is larger than the body holds",
            ));
        }
        Ok(n as usize)
    }
}

/// Reads a state written by [`encode`], checking everything an import relies
/// on: the checksum, every id's syntax, every frame's shape, each stream's
/// history contiguous and not past its `seq`, one stream per (channel,
/// location) and one last value per key.
pub fn decode(buf: &[u8]) -> Result<State, StateError> {
    if buf.len() < HEADER_LEN {
        if !MAGIC.starts_with(&buf[..buf.len().min(MAGIC.len())]) {
            return Err(StateError::BadMagic);
        }
        return Err(StateError::Truncated("shorter than the header"));
    }
    if &buf[..8] != MAGIC {
        return Err(StateError::BadMagic);
    }
    let version = u16::from_le_bytes([buf[8], buf[9]]);
    if version != VERSION {
        return Err(StateError::Version(version));
    }
    if buf[10] != 0 || buf[11] != 0 {
        return Err(StateError::Corrupt("unknown flags"));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&buf[12..20]);
    let body_len = u64::from_le_bytes(len);
    let rest = (buf.len() - HEADER_LEN) as u64;
    if rest < CHECKSUM_LEN as u64 || body_len > rest - CHECKSUM_LEN as u64 {
        return Err(StateError::Truncated("the body is shorter than its length"));
    }
    if body_len < rest - CHECKSUM_LEN as u64 {
        return Err(StateError::Corrupt("bytes after the checksum"));
    }
    let body_len = body_len as usize;
    let body = &buf[HEADER_LEN..HEADER_LEN + body_len];
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&buf[HEADER_LEN + body_len..]);
    if checksum(body) != u64::from_le_bytes(sum) {
        return Err(StateError::Checksum);
    }
    let mut r = Reader { buf: body, pos: 0 };
    let state = read_body(&mut r)?;
    if r.remaining() != 0 {
        return Err(StateError::Corrupt("bytes after the last record"));
    }
    Ok(state)
}

fn read_body(r: &mut Reader<'_>) -> Result<State, StateError> {
    let n = r.u32()? as u64;
    let n = r.count(n, 1 + 2 + 2 + 8)?;
    let mut streams = Vec::with_capacity(n);
    let mut seen = HashSet::with_capacity(n);
    for _ in 0..n {
        let channel = *Channel::ALL
            .get(r.u8()? as usize)
            .ok_or(StateError::Corrupt("unknown channel"))?;
        let location = r.str16()?;
        if !valid_location_id(location) {
            return Err(StateError::Corrupt("a location id is not valid"));
        }
        let epoch = r.str16()?;
        if epoch.is_empty()
            || epoch.len() > MAX_EPOCH_LEN
            || !epoch.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(StateError::Corrupt("an epoch is not valid"));
        }
        let seq = r.u64()?;
        if !seen.insert((channel, location)) {
            return Err(StateError::Corrupt("a stream appears twice"));
        }
        streams.push(StreamState {
            channel,
            location: Arc::from(location),
            epoch: Arc::from(epoch),
            seq,
        });
    }

    let n = r.u64()?;
    let n = r.count(n, 4 + 8 + 1 + 4)?;
    let mut history = Vec::with_capacity(n);
    // The seq of each stream's newest history record so far.
    let mut last: Vec<Option<u64>> = vec![None; streams.len()];
    for _ in 0..n {
        let stream = r.u32()?;
        let s = streams
            .get(stream as usize)
            .ok_or(StateError::Corrupt("a history record names no stream"))?;
        let seq = r.u64()?;
        if seq == 0 || seq > s.seq {
            return Err(StateError::Corrupt(
                "a history record's seq is past its stream's",
            ));
        }
        let prev = &mut last[stream as usize];
        if prev.is_some_and(|p| seq != p + 1) {
            return Err(StateError::Corrupt("a stream's history is not contiguous"));
        }
        *prev = Some(seq);
        let event_type = event_type(r)?;
        let frame = frame(r)?;
        history.push(HistoryRecord {
            stream,
            seq,
            event_type,
            frame,
        });
    }

    let n = r.u64()?;
    let n = r.count(n, 4 + 1 + 8 + 1 + 4)?;
    let mut last_values = Vec::with_capacity(n);
    let mut keys = HashSet::with_capacity(n);
    for _ in 0..n {
        let stream = r.u32()?;
        let s = streams
            .get(stream as usize)
            .ok_or(StateError::Corrupt("a last value names no stream"))?;
        let key = r.str8()?;
        if !valid_key(key) {
            return Err(StateError::Corrupt("a last value's key is not valid"));
        }
        let seq = r.u64()?;
        if seq == 0 || seq > s.seq {
            return Err(StateError::Corrupt(
                "a last value's seq is past its stream's",
            ));
        }
        if !keys.insert((stream, key)) {
            return Err(StateError::Corrupt("a key has two last values"));
        }
        let key = Arc::from(key);
        let event_type = event_type(r)?;
        let frame = frame(r)?;
        last_values.push(LastValueRecord {
            stream,
            key,
            seq,
            event_type,
            frame,
        });
    }
    Ok(State {
        streams,
        history,
        last_values,
    })
}

fn event_type(r: &mut Reader<'_>) -> Result<Arc<str>, StateError> {
    let t = r.str8()?;
    if !valid_event_type(t) {
        return Err(StateError::Corrupt("an event type is not valid"));
    }
    Ok(Arc::from(t))
}

/// A complete server text frame, as `hub::event::encode_event` makes them.
fn frame(r: &mut Reader<'_>) -> Result<Bytes, StateError> {
    let f = r.bytes32()?;
    match split_server_frame(f) {
        Some((0x81, _)) => Ok(Bytes::copy_from_slice(f)),
        _ => Err(StateError::Corrupt("a frame is not a server text frame")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::frame;

    fn text(s: &str) -> Bytes {
        Bytes::from(frame::text(s.as_bytes()))
    }

    fn sample() -> State {
        State {
            streams: vec![
                StreamState {
                    channel: Channel::Dashboard,
                    location: Arc::from("loc-1"),
                    epoch: Arc::from("abc-1"),
                    seq: 3,
                },
                StreamState {
                    channel: Channel::AiConcierge,
                    location: Arc::from("loc:2"),
                    epoch: Arc::from("abc-2"),
                    seq: 70_000,
                },
                StreamState {
                    channel: Channel::Dashboard,
                    location: Arc::from("quiet"),
                    epoch: Arc::from("old-9"),
                    seq: 0,
                },
            ],
            history: vec![
                HistoryRecord {
                    stream: 0,
                    seq: 2,
                    event_type: Arc::from("A"),
                    frame: text("{\"seq\":2}"),
                },
                HistoryRecord {
                    stream: 1,
                    seq: 70_000,
                    event_type: Arc::from("B.x"),
                    frame: text(&"x".repeat(70_000)),
                },
                HistoryRecord {
                    stream: 0,
                    seq: 3,
                    event_type: Arc::from("A"),
                    frame: text("{\"seq\":3}"),
                },
            ],
            last_values: vec![
                LastValueRecord {
                    stream: 0,
                    key: Arc::from("A"),
                    seq: 3,
                    event_type: Arc::from("A"),
                    frame: text("{\"seq\":3}"),
                },
                LastValueRecord {
                    stream: 1,
                    key: Arc::from("k:1"),
                    seq: 69_999,
                    event_type: Arc::from("B.x"),
                    frame: text("{}"),
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let bytes = encode(&s);
        assert_eq!(decode(&bytes), Ok(s));
        let empty = State::default();
        assert_eq!(decode(&encode(&empty)), Ok(empty));
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encode(&sample());
        for cut in 0..bytes.len() {
            let e = decode(&bytes[..cut]).expect_err("a truncated state was accepted");
            assert!(
                matches!(e, StateError::Truncated(_) | StateError::BadMagic),
                "cut at {cut}: {e:?}"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let bytes = encode(&sample());
        // Every byte of a small state, each bit: nothing damaged gets through.
        let small = State {
            streams: sample().streams,
            history: sample().history[..1].to_vec(),
            last_values: sample().last_values[..1].to_vec(),
        };
        let small = encode(&small);
        for i in 0..small.len() {
            for bit in 0..8 {
                let mut b = small.clone();
                b[i] ^= 1 << bit;
                assert!(
                    decode(&b).is_err(),
                    "byte {i} bit {bit} flipped was accepted"
                );
            }
        }
        let mut tail = bytes.clone();
        tail.push(0);
        assert_eq!(
            decode(&tail),
            Err(StateError::Corrupt("bytes after the checksum"))
        );
        let mut v = bytes.clone();
        v[8] = 9;
        assert_eq!(decode(&v), Err(StateError::Version(9)));
        assert_eq!(decode(b"GET / HTTP/1.1\r\n\r\n"), Err(StateError::BadMagic));
    }

    /// A body that checks out but says something impossible: re-encoded with a
    /// valid checksum, so that only the consistency checks can refuse it.
    fn refused(mutate: impl FnOnce(&mut State), why: &str) {
        let mut s = sample();
        mutate(&mut s);
        match decode(&encode(&s)) {
            Err(StateError::Corrupt(m)) => assert!(m.contains(why), "{m} / {why}"),
            other => panic!("expected Corrupt({why}), got {other:?}"),
        }
    }

    #[test]
    fn inconsistent_states_are_refused() {
        refused(|s| s.history[0].stream = 7, "names no stream");
        refused(|s| s.history[2].seq = 5, "past its stream");
        refused(|s| s.history[2].seq = 2, "not contiguous");
        refused(|s| s.history[0].frame = Bytes::from_static(b"{}"), "frame");
        refused(
            |s| s.history[0].event_type = Arc::from("no spaces"),
            "event type",
        );
        refused(
            |s| {
                s.last_values[1].stream = 0;
                s.last_values[1].seq = 2;
                s.last_values[1].key = Arc::from("A");
            },
            "two last values",
        );
        refused(|s| s.last_values[0].seq = 4, "past its stream");
        refused(|s| s.streams[2].location = Arc::from("loc-1"), "twice");
        refused(|s| s.streams[1].location = Arc::from("a/b"), "location");
        refused(|s| s.streams[1].epoch = Arc::from(""), "epoch");
    }

    #[test]
    fn a_huge_count_reserves_nothing() {
        // A stream count of 2^32-1 over a tiny body, checksum made valid.
        let mut body = Vec::new();
        body.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&0u16.to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&checksum(&body).to_le_bytes());
        assert!(matches!(decode(&bytes), Err(StateError::Corrupt(_))));
    }

    #[test]
    fn epoch_prefixes() {
        let s = sample();
        assert!(s.uses_epoch_prefix("abc"));
        assert!(s.uses_epoch_prefix("old"));
        assert!(!s.uses_epoch_prefix("ab"));
        assert!(!s.uses_epoch_prefix("new"));
    }
}
