//! Publishing a batch as one check-and-set transaction, the way most batches
//! go: read every stream's epoch and counter under `WATCH`, number and build
//! the events here, and apply it all in one `MULTI`/`EXEC` that Redis refuses
//! (a nil reply, nothing applied) if any of those counters moved meanwhile.
//!
//! Why not the publish script alone: Redis's Lua makes a string of every
//! argument and of every string a script builds, hashing each byte, and that
//! was a third of Redis's time per event (docs/performance.md, "Redis
//! engine"). In a transaction the event bytes only pass through plain
//! commands. The one script left ([`scripts::TAIL`]) takes no event bytes.
//!
//! Two round trips instead of one; a batch that loses the race (another node
//! published to one of its streams between the read and the `EXEC`) goes
//! through the publish script, which cannot lose it (`engine::shard`).
//!
//! What Redis holds afterwards is exactly what [`scripts::PUBLISH`] leaves:
//! the same history, last values, counter, TTLs and message on the channel.

use std::collections::HashSet;
use std::ops::Range;

use redis::{Pipeline, RedisResult, Value};

use crate::engine::resp::Commands;

use crate::channel::Channel;
use crate::engine::scripts;
use crate::engine::wire::{self, StreamKeys, RECORD_SEPARATOR};
use crate::http::publish::PublishEvent;
use crate::hub::event::{write_event_json, EventParts};

/// Events of one stream in one published message (as the script's runs).
pub const MAX_RUN: usize = 256;

/// One event of a batch bound for a stream.
#[derive(Clone, Copy)]
pub struct Pending<'a> {
    /// The publish job it came from.
    pub job: usize,
    /// Wall-clock ms its request was accepted.
    pub published_at: u64,
    pub event: &'a PublishEvent,
}

/// The events of one stream in a batch, in the order they came.
pub struct StreamEvents<'a> {
    pub channel: Channel,
    pub location: &'a str,
    pub keys: StreamKeys,
    pub events: Vec<Pending<'a>>,
}

/// A stream's epoch and counter as Redis holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    /// `None`: the stream has no epoch (never published, expired, evicted).
    pub epoch: Option<String>,
    pub seq: u64,
}

/// What the stream limits of the publishing node are.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub history_size: usize,
    pub last_values: usize,
    pub ttl_ms: u64,
}

/// Round one: watch every stream's counter and read it. Adds
/// `1 + streams.len()` commands; [`counters`] reads their replies.
pub fn watch_and_read(pipe: &mut Pipeline, streams: &[StreamEvents<'_>]) {
    let watch = pipe.cmd("WATCH");
    for s in streams {
        watch.arg(&s.keys.meta);
    }
    for s in streams {
        pipe.cmd("HMGET").arg(&s.keys.meta).arg("epoch").arg("seq");
    }
}

/// The counters from the replies [`watch_and_read`] asked for; `None` when
/// any of them is an error or not what `HMGET` answers.
pub fn counters(replies: &[RedisResult<Value>]) -> Option<Vec<Counter>> {
    let (watch, reads) = replies.split_first()?;
    if !matches!(watch, Ok(Value::Okay)) {
        return None;
    }
    reads.iter().map(|r| counter(r.as_ref().ok()?)).collect()
}

fn counter(v: &Value) -> Option<Counter> {
    let Value::Array(fields) = v else {
        return None;
    };
    let [epoch, seq] = &fields[..] else {
        return None;
    };
    let epoch = match epoch {
        Value::Nil => None,
        Value::BulkString(b) => Some(String::from_utf8(b.clone()).ok()?),
        _ => return None,
    };
    let seq = match seq {
        // An epoch without a counter counts from 0, as `HINCRBY` would.
        Value::Nil => 0,
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok()?,
        _ => return None,
    };
    Some(Counter { epoch, seq })
}

/// Round two, as built by [`commit`]: where each stream's replies sit in
/// the `EXEC` reply.
pub struct Layout {
    /// Per stream, the range of its commands' replies inside `EXEC`'s array.
    streams: Vec<Range<usize>>,
    /// The index of `EXEC`'s own reply among the commands sent.
    exec_at: usize,
}

/// How round two went.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; per stream, whether every command of it succeeded.
    Committed(Vec<bool>),
    /// A watched counter moved: nothing was applied.
    Conflict,
}

/// Round two: `MULTI`, every stream's events numbered after its counter,
/// `EXEC`. `new_epoch` names the epoch of a stream that has none; `scratch`
/// is where each stream's messages are built (kept between batches).
pub fn commit(
    out: &mut Commands,
    scratch: &mut Vec<u8>,
    streams: &[StreamEvents<'_>],
    counters: &[Counter],
    limits: Limits,
    mut new_epoch: impl FnMut() -> String,
) -> Layout {
    let before = out.len();
    out.command(1).arg(b"MULTI");
    let mut ranges = Vec::with_capacity(streams.len());
    for (s, c) in streams.iter().zip(counters) {
        let first = out.len() - before - 1;
        let (epoch, fresh) = match &c.epoch {
            Some(e) => (e.clone(), false),
            None => (new_epoch(), true),
        };
        add_stream(out, scratch, s, &epoch, fresh, c.seq, limits);
        ranges.push(first..out.len() - before - 1);
    }
    out.command(1).arg(b"EXEC");
    Layout {
        streams: ranges,
        exec_at: out.len() - 1,
    }
}

/// One stream's commands inside the transaction.
fn add_stream(
    out: &mut Commands,
    scratch: &mut Vec<u8>,
    s: &StreamEvents<'_>,
    epoch: &str,
    fresh: bool,
    seq: u64,
    limits: Limits,
) {
    if fresh {
        // What is left of a lost epoch is not this one's (as in the script).
        out.command(4)
            .arg(b"DEL")
            .arg(s.keys.hist.as_bytes())
            .arg(s.keys.last.as_bytes())
            .arg(s.keys.order.as_bytes());
    }
    // Each run's message: the epoch, then each event's stored form after a
    // separator. `messages` and `stored` are where they lie in `scratch`.
    scratch.clear();
    let mut messages: Vec<Range<usize>> = Vec::with_capacity(s.events.len().div_ceil(MAX_RUN));
    let mut stored: Vec<Range<usize>> = Vec::with_capacity(s.events.len());
    for (i, p) in s.events.iter().enumerate() {
        if i % MAX_RUN == 0 {
            if let Some(m) = messages.last_mut() {
                m.end = scratch.len();
            }
            messages.push(scratch.len()..scratch.len());
            scratch.extend_from_slice(epoch.as_bytes());
        }
        scratch.push(RECORD_SEPARATOR);
        let start = scratch.len();
        let e = p.event;
        let n = seq + 1 + i as u64;
        wire::write_stored_head(scratch, n, &e.event_type, e.key.as_deref());
        write_event_json(
            &EventParts {
                channel: s.channel,
                location: s.location,
                event_type: &e.event_type,
                key: e.key.as_deref(),
                seq: n,
                published_at_ms: p.published_at,
                data: &e.data,
            },
            scratch,
        );
        stored.push(start..scratch.len());
    }
    if let Some(m) = messages.last_mut() {
        m.end = scratch.len();
    }
    let last_seq = seq + s.events.len() as u64;
    if limits.history_size > 0 {
        let from = stored.len().saturating_sub(limits.history_size);
        out.command(2 + stored.len() - from)
            .arg(b"RPUSH")
            .arg(s.keys.hist.as_bytes());
        for r in &stored[from..] {
            out.arg(&scratch[r.clone()]);
        }
    }
    if limits.last_values > 0 {
        // Only a key's newest event of the batch becomes its last value.
        let mut seen = HashSet::new();
        let mut newest: Vec<(usize, &str)> = Vec::new();
        for (i, p) in s.events.iter().enumerate().rev() {
            let key = p.event.key.as_deref().unwrap_or(&p.event.event_type);
            if seen.insert(key) {
                newest.push((i, key));
            }
        }
        out.command(2 + 2 * newest.len())
            .arg(b"HSET")
            .arg(s.keys.last.as_bytes());
        for (i, key) in &newest {
            out.arg(key.as_bytes()).arg(&scratch[stored[*i].clone()]);
        }
        out.command(2 + 2 * newest.len())
            .arg(b"ZADD")
            .arg(s.keys.order.as_bytes());
        for (i, key) in &newest {
            out.int(seq + 1 + *i as u64).arg(key.as_bytes());
        }
    }
    out.command(12)
        .arg(b"EVAL")
        .arg(scripts::TAIL.as_bytes())
        .int(4);
    for k in s.keys.keys() {
        out.arg(k.as_bytes());
    }
    out.arg(epoch.as_bytes())
        .int(last_seq)
        .int(limits.history_size as u64)
        .int(limits.last_values as u64)
        .int(limits.ttl_ms);
    for m in &messages {
        out.command(3)
            .arg(b"PUBLISH")
            .arg(s.keys.events.as_bytes())
            .arg(&scratch[m.clone()]);
    }
}

/// Reads round two's replies (`MULTI`, one `QUEUED` per command, `EXEC`).
/// `Err` when the transaction was refused as a whole (`EXECABORT`: a command
/// was rejected while queued, e.g. Redis is out of memory) or a reply is
/// missing: nothing was applied.
pub fn outcome(layout: &Layout, replies: &[Value]) -> Result<Outcome, String> {
    let exec = replies
        .get(layout.exec_at)
        .ok_or_else(|| "no reply to EXEC".to_string())?;
    match exec {
        Value::Nil => Ok(Outcome::Conflict),
        Value::Array(items) => Ok(Outcome::Committed(
            layout
                .streams
                .iter()
                .map(|r| {
                    items
                        .get(r.clone())
                        .is_some_and(|its| !its.iter().any(|v| matches!(v, Value::ServerError(_))))
                })
                .collect(),
        )),
        // Say why: the first command refused while queued (`OOM ...` when
        // Redis is full), not the `EXECABORT` that follows from it.
        Value::ServerError(e) => Err(replies[..layout.exec_at]
            .iter()
            .find_map(|v| match v {
                Value::ServerError(q) => Some(q.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| e.to_string())),
        other => Err(format!("unexpected reply to EXEC: {other:?}")),
    }
}
