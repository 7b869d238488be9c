//! A connection's bounded outbound queue of shared frames.
//!
//! Each entry is a reference-counted [`Bytes`]: an event frame is encoded once by
//! the publisher and every recipient's queue points at the same bytes. Whatever
//! waits on one socket goes out in one vectored write.
//!
//! Two kinds of bytes wait here (`docs/protocol.md` §6):
//! - *live* bytes (events as they are published, replies, control frames)
//!   count toward the slow-consumer bound; past it the caller closes with 1013;
//! - a *replay* (recovery, snapshot: frames history already holds) is fed into
//!   the write queue only as the socket drains, at most one bound's worth at a
//!   time, so a client that reads gets all of it however long it is, and a
//!   client that does not read is caught by the bound on what arrives live.
//!
//! Live bytes queued behind a replay wait in the backlog with it, in order.
//!
//! A conflating connection (`conflate=1`, docs/protocol.md §9) holds at most one unwritten
//! live event per key: pushing a newer one turns the older one into an empty
//! tombstone (unless its first byte already went out) and queues the newer
//! at the tail. Keys are found by absolute queue position in O(1); tombstones
//! are compacted away once they outnumber the chunks still waiting.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use bytes::Bytes;

/// Slices per `writev`; Linux takes up to 1024, but past a few dozen frames the
/// kernel's socket buffer, not the syscall count, is the limit.
const MAX_IOV: usize = 64;

/// Stamp of a replayed or snapshot event: delivered, but not a live delivery
/// (kept out of the latency histogram), and not counted toward the bound.
pub const REPLAY_STAMP: u64 = u64::MAX;

/// What a written chunk was, for the caller's accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// A live event accepted by the publisher at this monotonic ns stamp.
    Live(u64),
    /// A replayed or snapshot event.
    Replayed,
}

#[derive(Debug)]
struct Chunk {
    bytes: Bytes,
    /// Monotonic ns when the publisher accepted the event; 0 for anything that
    /// is not an event (handshake, replies, control frames); [`REPLAY_STAMP`].
    stamp: u64,
}

impl Chunk {
    fn is_live(&self) -> bool {
        self.stamp != REPLAY_STAMP
    }
}

/// The bound was passed: the caller applies the slow-consumer policy.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued is in the kernel.
    All,
    /// The socket would block; wait for writability.
    Blocked,
}

#[derive(Debug, Default)]
pub struct Outbound {
    /// What the next `writev` takes from.
    q: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    offset: usize,
    /// Live bytes held (in `q` and the backlog), beyond what the kernel accepted.
    live: usize,
    /// Bytes in `q`, beyond what the kernel accepted (bounds the replay window).
    in_q: usize,
    /// A replay not yet in `q`, and what arrived behind it. Boxed: most
    /// connections never have one, and an idle connection's size counts.
    #[allow(clippy::box_collection)]
    backlog: Option<Box<VecDeque<Chunk>>>,
    /// Per-key bookkeeping of a conflating connection; `None` for the others,
    /// which pay nothing for the feature.
    conflater: Option<Box<Conflater>>,
}

#[derive(Debug, Default)]
struct Conflater {
    /// Absolute position (chunks ever queued) of `q`'s front.
    base: u64,
    /// Key → absolute position of its unwritten live event.
    by_key: HashMap<Arc<str>, u64>,
    /// Absolute position → key, to forget a key once its event is written.
    by_pos: HashMap<u64, Arc<str>>,
    /// Empty chunks left by dropped events, still in the queues.
    tombstones: usize,
}

impl Outbound {
    /// Live bytes held: what the slow-consumer bound applies to.
    pub fn queued(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_empty() && self.backlog.is_none()
    }

    /// Makes this a conflating queue (`conflate=1`).
    pub fn conflate(&mut self) {
        self.conflater.get_or_insert_with(Default::default);
    }

    fn backlog_len(&self) -> usize {
        self.backlog.as_ref().map_or(0, |b| b.len())
    }

    /// The chunk at absolute position `pos`, if it is still queued.
    fn chunk_at(&mut self, base: u64, pos: u64) -> Option<&mut Chunk> {
        let i = usize::try_from(pos.checked_sub(base)?).ok()?;
        if i < self.q.len() {
            return self.q.get_mut(i);
        }
        self.backlog.as_mut()?.get_mut(i - self.q.len())
    }

    /// Queues a live event of `key` on a conflating connection: an older
    /// unwritten event of the same key is dropped first, then the bound is
    /// checked on what remains. Returns how many events were dropped (0 or 1).
    pub fn push_conflated(
        &mut self,
        bytes: Bytes,
        stamp: u64,
        key: &Arc<str>,
        limit: usize,
    ) -> Result<u64, Overflow> {
        let Some(mut c) = self.conflater.take() else {
            return self.push(bytes, stamp, limit).map(|()| 0);
        };
        let mut dropped = 0;
        if let Some(&pos) = c.by_key.get(key) {
            // A frame whose first byte went out is never cut.
            let torn = pos == c.base && self.offset > 0;
            if !torn {
                if let Some(old) = self.chunk_at(c.base, pos) {
                    let len = old.bytes.len();
                    old.bytes = Bytes::new();
                    old.stamp = 0;
                    self.live -= len;
                    if pos - c.base < self.q.len() as u64 {
                        self.in_q -= len;
                    }
                    c.tombstones += 1;
                    dropped = 1;
                }
            }
            c.by_key.remove(key);
            c.by_pos.remove(&pos);
        }
        let result = if self.live + bytes.len() > limit {
            Err(Overflow)
        } else {
            let pos = c.base + (self.q.len() + self.backlog_len()) as u64;
            self.push_unbounded(bytes, stamp);
            c.by_key.insert(key.clone(), pos);
            c.by_pos.insert(pos, key.clone());
            Ok(dropped)
        };
        if c.tombstones > 64 && c.tombstones > c.by_pos.len() {
            self.compact(&mut c);
        }
        self.conflater = Some(c);
        result
    }

    /// Removes tombstones and renumbers what is left.
    fn compact(&mut self, c: &mut Conflater) {
        let mut keys: Vec<Option<Arc<str>>> = Vec::new();
        let mut renumber = |chunks: &mut VecDeque<Chunk>, start: u64, keep_front: bool| {
            let old: Vec<Chunk> = chunks.drain(..).collect();
            for (i, chunk) in old.into_iter().enumerate() {
                let front = keep_front && i == 0;
                if chunk.bytes.is_empty() && !front {
                    continue;
                }
                keys.push(c.by_pos.remove(&(start + i as u64)));
                chunks.push_back(chunk);
            }
        };
        let base = c.base;
        let q_len = self.q.len() as u64;
        renumber(&mut self.q, base, self.offset > 0);
        if let Some(b) = &mut self.backlog {
            renumber(b, base + q_len, false);
        }
        c.by_pos.clear();
        c.by_key.clear();
        for (i, k) in keys.into_iter().enumerate() {
            if let Some(k) = k {
                let pos = base + i as u64;
                c.by_key.insert(k.clone(), pos);
                c.by_pos.insert(pos, k);
            }
        }
        c.tombstones = 0;
    }

    /// Queues live `bytes` unless that would hold more than `limit` live bytes.
    pub fn push(&mut self, bytes: Bytes, stamp: u64, limit: usize) -> Result<(), Overflow> {
        if self.live + bytes.len() > limit {
            return Err(Overflow);
        }
        self.push_unbounded(bytes, stamp);
        Ok(())
    }

    /// For the few small frames that must go out whatever the bound (a close
    /// frame, a ping, a refusal). In order behind anything already queued.
    pub fn push_unbounded(&mut self, bytes: Bytes, stamp: u64) {
        if bytes.is_empty() {
            return;
        }
        debug_assert!(stamp != REPLAY_STAMP);
        self.live += bytes.len();
        let chunk = Chunk { bytes, stamp };
        match &mut self.backlog {
            Some(b) => b.push_back(chunk),
            None => {
                self.in_q += chunk.bytes.len();
                self.q.push_back(chunk);
            }
        }
    }

    /// Queues replayed frames behind everything else; they enter the write
    /// queue as it drains (see [`Self::write_to`]).
    pub fn push_replay(&mut self, frames: impl IntoIterator<Item = Bytes>) {
        let mut frames = frames.into_iter().filter(|b| !b.is_empty()).peekable();
        if frames.peek().is_none() {
            return;
        }
        let b = self.backlog.get_or_insert_with(Default::default);
        b.extend(frames.map(|bytes| Chunk {
            bytes,
            stamp: REPLAY_STAMP,
        }));
    }

    /// Drops everything that has not started to go out; a half-written frame is
    /// kept, since cutting it would corrupt the stream. Returns the bytes dropped.
    pub fn drop_unstarted(&mut self) -> usize {
        let keep = usize::from(self.offset > 0).min(self.q.len());
        let mut dropped = 0;
        while self.q.len() > keep {
            if let Some(c) = self.q.pop_back() {
                dropped += c.bytes.len();
                self.in_q -= c.bytes.len();
                if c.is_live() {
                    self.live -= c.bytes.len();
                }
            }
        }
        if let Some(b) = self.backlog.take() {
            for c in b.iter() {
                dropped += c.bytes.len();
                if c.is_live() {
                    self.live -= c.bytes.len();
                }
            }
        }
        if let Some(c) = &mut self.conflater {
            c.by_key.clear();
            c.by_pos.clear();
            c.tombstones = 0;
        }
        dropped
    }

    /// Moves backlog chunks into the write queue: live ones as they come (they
    /// are counted already), replayed ones while the queue holds less than
    /// `window` bytes.
    #[cold]
    fn refill(&mut self, window: usize) {
        let Some(b) = &mut self.backlog else { return };
        while let Some(front) = b.front() {
            if !front.is_live() && !self.q.is_empty() && self.in_q + front.bytes.len() > window {
                return;
            }
            let Some(c) = b.pop_front() else { break };
            self.in_q += c.bytes.len();
            self.q.push_back(c);
        }
        self.backlog = None;
    }

    /// Writes as much as the socket takes, feeding the replay in as it goes
    /// (at most `window` bytes of it queued at a time). `written` is called for
    /// each event frame whose last byte went out.
    pub fn write_to<W: Write>(
        &mut self,
        w: &mut W,
        window: usize,
        mut written: impl FnMut(Written),
    ) -> io::Result<Flushed> {
        let mut live = false;
        let mut written = |w: Written| {
            live |= matches!(w, Written::Live(_));
            written(w);
        };
        loop {
            if self.backlog.is_some() {
                self.refill(window);
            }
            while self.q.front().is_some_and(|c| c.bytes.is_empty()) && self.offset == 0 {
                self.pop_front();
            }
            if self.q.is_empty() {
                break;
            }
            let result = match (self.q.len(), self.q.front()) {
                // One frame waiting (a dashboard between events): a plain
                // write, no vector to fill.
                (1, Some(c)) => w.write(&c.bytes[self.offset..]),
                _ => {
                    let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
                    let mut k = 0;
                    for (i, c) in self.q.iter().take(MAX_IOV).enumerate() {
                        let b = if i == 0 {
                            &c.bytes[self.offset..]
                        } else {
                            &c.bytes[..]
                        };
                        iov[k] = IoSlice::new(b);
                        k += 1;
                    }
                    w.write_vectored(&iov[..k])
                }
            };
            let n = match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flushed::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.advance(n, &mut written);
        }
        // Give back the ring's memory once everything is out, unless live
        // events are flowing: an idle connection (its last writes were the
        // handshake, replies or a heartbeat ping) holds none — 160 bytes each
        // otherwise — while a busy one does not pay an allocation per event
        // (measured with callgrind: +510 instructions a delivery;
        // docs/performance.md).
        if !live || self.q.capacity() > 16 {
            self.q = VecDeque::new();
        }
        Ok(Flushed::All)
    }

    fn advance(&mut self, mut n: usize, written: &mut impl FnMut(Written)) {
        self.in_q -= n;
        while n > 0 {
            let Some(front) = self.q.front() else { break };
            let left = front.bytes.len() - self.offset;
            let step = n.min(left);
            if front.is_live() {
                self.live -= step;
            }
            n -= step;
            if step < left {
                self.offset += step;
                break;
            }
            self.offset = 0;
            if let Some(c) = self.pop_front() {
                match c.stamp {
                    0 => {}
                    REPLAY_STAMP => written(Written::Replayed),
                    s => written(Written::Live(s)),
                }
            }
        }
    }

    /// Takes the front chunk off `q` (written, or a tombstone). Inlined, with
    /// the conflating bookkeeping out of line: a connection that does not
    /// conflate pays one test for the feature (measured with callgrind,
    /// docs/performance.md).
    #[inline]
    fn pop_front(&mut self) -> Option<Chunk> {
        let chunk = self.q.pop_front()?;
        if self.conflater.is_some() {
            self.popped_conflated(chunk.bytes.is_empty());
        }
        Some(chunk)
    }

    #[cold]
    fn popped_conflated(&mut self, tombstone: bool) {
        let Some(c) = &mut self.conflater else {
            return;
        };
        if tombstone {
            c.tombstones = c.tombstones.saturating_sub(1);
        } else if let Some(k) = c.by_pos.remove(&c.base) {
            c.by_key.remove(&k);
        }
        c.base += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `cap` bytes per call and `budget` in all.
    struct Trickle {
        out: Vec<u8>,
        cap: usize,
        budget: usize,
        calls: usize,
    }

    impl Trickle {
        fn open() -> Trickle {
            Trickle {
                out: vec![],
                cap: usize::MAX,
                budget: usize::MAX,
                calls: 0,
            }
        }
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.cap - n).min(self.budget);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                self.budget -= take;
                if n == self.cap || self.budget == 0 {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn stamps(o: &mut Outbound, w: &mut Trickle, window: usize) -> (Flushed, Vec<Written>) {
        let mut got = vec![];
        let r = o.write_to(w, window, |s| got.push(s)).unwrap();
        (r, got)
    }

    #[test]
    fn one_vectored_write_for_many_frames() {
        let mut o = Outbound::default();
        for i in 0..10u8 {
            o.push(Bytes::from(vec![i; 10]), 1 + i as u64, 1 << 20)
                .unwrap();
        }
        let mut w = Trickle::open();
        let (r, got) = stamps(&mut o, &mut w, 1 << 20);
        assert_eq!(r, Flushed::All);
        assert_eq!(w.calls, 1);
        assert_eq!(w.out.len(), 100);
        assert_eq!(got, (1..=10).map(Written::Live).collect::<Vec<_>>());
        assert_eq!(o.queued(), 0);
    }

    #[test]
    fn partial_writes_resume_mid_frame() {
        let mut o = Outbound::default();
        o.push(Bytes::from_static(b"abcdef"), 7, 100).unwrap();
        o.push(Bytes::from_static(b"ghij"), 0, 100).unwrap();
        let mut w = Trickle {
            cap: 4,
            budget: 5,
            ..Trickle::open()
        };
        let (r, got) = stamps(&mut o, &mut w, 100);
        assert_eq!(r, Flushed::Blocked);
        assert_eq!(o.queued(), 5);
        assert!(got.is_empty());
        w.budget = 100;
        let (r, got) = stamps(&mut o, &mut w, 100);
        assert_eq!(r, Flushed::All);
        assert_eq!(w.out, b"abcdefghij");
        assert_eq!(got, vec![Written::Live(7)]);
    }

    #[test]
    fn bound_and_drop_unstarted_keeps_the_torn_frame() {
        let mut o = Outbound::default();
        o.push(Bytes::from_static(b"0123456789"), 1, 25).unwrap();
        o.push(Bytes::from_static(b"0123456789"), 2, 25).unwrap();
        assert_eq!(
            o.push(Bytes::from_static(b"0123456789"), 3, 25),
            Err(Overflow)
        );
        let mut w = Trickle {
            cap: 3,
            budget: 3,
            ..Trickle::open()
        };
        let _ = stamps(&mut o, &mut w, 25);
        assert_eq!(o.drop_unstarted(), 10);
        assert_eq!(o.queued(), 7);
        o.push_unbounded(Bytes::from_static(b"CLOSE"), 0);
        w.budget = 100;
        w.cap = 100;
        let _ = stamps(&mut o, &mut w, 25);
        assert_eq!(w.out, b"0123456789CLOSE");
    }

    #[test]
    fn drop_unstarted_with_nothing_started_drops_all() {
        let mut o = Outbound::default();
        o.push(Bytes::from_static(b"abc"), 1, 25).unwrap();
        o.push_replay([Bytes::from_static(b"replay")]);
        o.push(Bytes::from_static(b"live"), 2, 25).unwrap();
        assert_eq!(o.drop_unstarted(), 13);
        assert!(o.is_empty());
        assert_eq!(o.queued(), 0);
    }

    #[test]
    fn a_replay_longer_than_the_bound_is_fed_as_the_socket_drains() {
        let mut o = Outbound::default();
        o.push(Bytes::from_static(b"HELLO"), 0, 20).unwrap();
        o.push_replay((0..10u8).map(|i| Bytes::from(vec![b'a' + i; 10])));
        // Live bytes behind the replay wait for it, and are what the bound counts.
        o.push(Bytes::from_static(b"RECOVERED"), 0, 20).unwrap();
        o.push(Bytes::from_static(b"LIVE"), 9, 20).unwrap();
        assert_eq!(o.queued(), 5 + 9 + 4);
        assert_eq!(
            o.push(Bytes::from_static(b"TOO-MUCH"), 10, 20),
            Err(Overflow)
        );
        // A socket taking 12 bytes at a time: the queue never holds more than
        // the window of replay, and everything arrives in order.
        let mut w = Trickle {
            cap: 12,
            budget: 12,
            ..Trickle::open()
        };
        let mut all = vec![];
        loop {
            let (r, got) = stamps(&mut o, &mut w, 20);
            all.extend(got);
            assert!(o.in_q <= 20 + 10, "queue holds {}", o.in_q);
            if r == Flushed::All {
                break;
            }
            w.budget = 12;
        }
        let mut want = b"HELLO".to_vec();
        for i in 0..10u8 {
            want.extend(vec![b'a' + i; 10]);
        }
        want.extend_from_slice(b"RECOVEREDLIVE");
        assert_eq!(w.out, want);
        assert_eq!(all.len(), 11);
        assert_eq!(all[10], Written::Live(9));
        assert!(all[..10].iter().all(|s| *s == Written::Replayed));
        assert!(o.is_empty());
        assert_eq!(o.queued(), 0);
    }

    fn key(k: &str) -> Arc<str> {
        Arc::from(k)
    }

    #[test]
    fn conflation_keeps_one_unwritten_event_per_key_in_order() {
        let mut o = Outbound::default();
        o.conflate();
        let push = |o: &mut Outbound, b: &'static [u8], k: &str| {
            o.push_conflated(Bytes::from_static(b), 1, &key(k), 1 << 20)
        };
        assert_eq!(push(&mut o, b"a1", "a"), Ok(0));
        assert_eq!(push(&mut o, b"b1", "b"), Ok(0));
        assert_eq!(push(&mut o, b"a2", "a"), Ok(1));
        assert_eq!(push(&mut o, b"c1", "c"), Ok(0));
        assert_eq!(push(&mut o, b"b2", "b"), Ok(1));
        assert_eq!(o.queued(), 6);
        let mut w = Trickle::open();
        let (_, got) = stamps(&mut o, &mut w, 1 << 20);
        assert_eq!(w.out, b"a2c1b2");
        assert_eq!(got.len(), 3);
        // Written events are forgotten: the next one of a key is queued anew.
        assert_eq!(push(&mut o, b"a3", "a"), Ok(0));
        assert_eq!(o.queued(), 2);
    }

    #[test]
    fn a_torn_frame_is_never_cut_and_the_bound_counts_what_remains() {
        let mut o = Outbound::default();
        o.conflate();
        o.push_conflated(Bytes::from_static(b"AAAAAAAAAA"), 1, &key("a"), 25)
            .unwrap();
        let mut w = Trickle {
            cap: 4,
            budget: 4,
            ..Trickle::open()
        };
        let _ = stamps(&mut o, &mut w, 25);
        // "a" is half written: the newer one is queued behind it, not instead.
        assert_eq!(
            o.push_conflated(Bytes::from_static(b"aaaaaaaaaa"), 2, &key("a"), 25),
            Ok(0)
        );
        assert_eq!(o.queued(), 16);
        // A third "a" replaces the second (unwritten); the bound sees 6 + 10.
        assert_eq!(
            o.push_conflated(Bytes::from_static(b"xxxxxxxxxx"), 3, &key("a"), 16),
            Ok(1)
        );
        // Distinct keys alone exceed the bound: overflow.
        assert_eq!(
            o.push_conflated(Bytes::from_static(b"bbbbbbbbbb"), 4, &key("b"), 16),
            Err(Overflow)
        );
        w.budget = 100;
        w.cap = 100;
        let _ = stamps(&mut o, &mut w, 25);
        assert_eq!(w.out, b"AAAAAAAAAAxxxxxxxxxx");
    }

    #[test]
    fn conflation_behind_a_replay_and_through_compaction() {
        let mut o = Outbound::default();
        o.conflate();
        o.push_replay((0..3u8).map(|i| Bytes::from(vec![b'r'; 1 + i as usize])));
        let mut last = std::collections::HashMap::new();
        // Ten keys, thousands of events, a socket that takes a little now and then.
        let mut w = Trickle {
            cap: 7,
            budget: 0,
            ..Trickle::open()
        };
        let mut seq = 0u32;
        for round in 0..2000 {
            for k in 0..10 {
                seq += 1;
                let frame = format!("<{k}:{seq:06}>");
                last.insert(k, frame.clone());
                o.push_conflated(Bytes::from(frame), 1, &key(&k.to_string()), 1 << 20)
                    .unwrap();
            }
            if round % 50 == 0 {
                w.budget = 21;
                let _ = stamps(&mut o, &mut w, 64);
            }
            let c = o.conflater.as_ref().unwrap();
            assert!(
                o.q.len() + o.backlog_len() <= 10 + 3 + 2 * 64 + 20,
                "queue grew to {}",
                o.q.len() + o.backlog_len()
            );
            assert!(c.by_key.len() <= 10);
        }
        w.budget = usize::MAX;
        w.cap = usize::MAX;
        let _ = stamps(&mut o, &mut w, 64);
        let text = String::from_utf8(w.out.clone()).unwrap();
        assert!(text.starts_with("rrrrrr"));
        // Ascending seq, and every key ends with its last value.
        let mut prev = 0;
        let mut final_of = std::collections::HashMap::new();
        for item in text
            .trim_start_matches('r')
            .split('<')
            .filter(|s| !s.is_empty())
        {
            let (k, rest) = item.split_once(':').unwrap();
            let n: u32 = rest.trim_end_matches('>').parse().unwrap();
            assert!(n > prev, "seq went back: {n} after {prev}");
            prev = n;
            final_of.insert(k.parse::<i32>().unwrap(), format!("<{item}"));
        }
        assert_eq!(final_of, last);
        assert!(o.is_empty());
        assert_eq!(o.queued(), 0);
    }
}
