//! The publisher's per-stream state: `seq`, history, and which loops have
//! subscribers. Owned by the publisher thread alone, so it needs no locks.
//!
//! Memory is bounded three ways: `history_size` frames per stream, a
//! process-wide `history_max_bytes` (oldest first, across streams), and a TTL
//! after which a stream with no subscribers and no events is forgotten. Last
//! values (docs/protocol.md §9) have bounds of their own (`hub::last_values`) and live as long
//! as their stream.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::channel::Channel;
use crate::hub::event::StreamId;
use crate::hub::last_values::{LastValue, LastValues};

/// Export and import of the whole state for a hand-over (docs/protocol.md §11).
mod transfer;
pub use transfer::Imported;

#[derive(Debug, Clone)]
pub struct HistEntry {
    pub seq: u64,
    pub event_type: Arc<str>,
    pub frame: Bytes,
}

#[derive(Debug)]
pub struct Stream {
    pub id: StreamId,
    pub channel: Channel,
    pub location: Arc<str>,
    /// What clients are told in `BI_CONNECTION_ESTABLISHED`: it names this
    /// numbering of the stream, and changes whenever the numbering restarts.
    pub epoch: Arc<str>,
    /// The last seq assigned; 0 before the first event.
    pub seq: u64,
    ring: VecDeque<HistEntry>,
    /// Subscribers per event loop, so an event is sent only to loops that need it.
    pub loop_refs: Vec<u32>,
    pub subscribers: u32,
    /// When the stream last had an event or lost its last subscriber.
    idle_since: Instant,
}

/// What a reconnecting client gets, decided in the publisher's thread so that
/// it lines up exactly with the live events that follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub entries: Vec<HistEntry>,
    pub complete: bool,
}

impl PartialEq for HistEntry {
    fn eq(&self, o: &Self) -> bool {
        self.seq == o.seq && self.event_type == o.event_type && self.frame == o.frame
    }
}

pub struct Streams {
    /// The prefix of new streams' epochs (the process epoch).
    epoch_prefix: Arc<str>,
    by_id: HashMap<StreamId, Stream>,
    /// Per channel, location → stream.
    by_key: [HashMap<Arc<str>, StreamId>; 6],
    /// Streams with at least one subscriber, per channel: the targets of `location_id: "*"`.
    live: [HashSet<StreamId>; 6],
    next_id: StreamId,
    loops: usize,
    history_size: usize,
    max_bytes: usize,
    bytes: usize,
    /// Every history entry in publish order, for the process-wide byte cap.
    /// Entries already evicted by the per-stream cap linger until compaction.
    fifo: VecDeque<(StreamId, u64, usize)>,
    entries: usize,
    /// The newest event of each key of each stream.
    pub last_values: LastValues,
}

/// The bounds of [`Streams`], from the configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub history_size: usize,
    pub history_max_bytes: usize,
    pub last_values: usize,
    pub last_values_max_bytes: usize,
}

impl Streams {
    pub fn new(epoch_prefix: &str, loops: usize, limits: &Limits) -> Streams {
        Streams {
            epoch_prefix: Arc::from(epoch_prefix),
            by_id: HashMap::new(),
            by_key: Default::default(),
            live: Default::default(),
            next_id: 1,
            loops,
            history_size: limits.history_size,
            max_bytes: limits.history_max_bytes,
            bytes: 0,
            fifo: VecDeque::new(),
            entries: 0,
            last_values: LastValues::new(limits.last_values, limits.last_values_max_bytes),
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn history_bytes(&self) -> usize {
        self.bytes
    }

    pub fn get(&self, id: StreamId) -> Option<&Stream> {
        self.by_id.get(&id)
    }

    pub fn get_or_create(&mut self, channel: Channel, location: &str, now: Instant) -> StreamId {
        if let Some(id) = self.by_key[channel.index()].get(location) {
            return *id;
        }
        let id = self.next_id;
        self.next_id += 1;
        let location: Arc<str> = Arc::from(location);
        self.by_key[channel.index()].insert(location.clone(), id);
        // Ids are never reused, so a forgotten stream (TTL, or nothing left)
        // comes back with a new epoch, and a client's old `since` cannot be
        // mistaken for a seq of the new numbering (which starts again at 1).
        let epoch: Arc<str> = Arc::from(format!("{}-{id:x}", self.epoch_prefix));
        self.by_id.insert(
            id,
            Stream {
                id,
                channel,
                location,
                epoch,
                seq: 0,
                ring: VecDeque::new(),
                loop_refs: vec![0; self.loops],
                subscribers: 0,
                idle_since: now,
            },
        );
        id
    }

    /// The stream of `(channel, location)`, if it is known.
    pub fn find(&self, channel: Channel, location: &str) -> Option<StreamId> {
        self.by_key[channel.index()].get(location).copied()
    }

    /// Replaces a stream's state with what the Redis engine holds: epoch,
    /// counter, history (oldest first) and last values (oldest first).
    pub fn load(
        &mut self,
        id: StreamId,
        epoch: &str,
        seq: u64,
        history: Vec<(Arc<str>, HistEntry)>,
        last_values: Vec<(Arc<str>, HistEntry)>,
    ) {
        self.last_values.forget(id);
        let Some(s) = self.by_id.get_mut(&id) else {
            return;
        };
        s.epoch = Arc::from(epoch);
        s.seq = seq;
        for e in s.ring.drain(..) {
            self.bytes -= e.frame.len();
            self.entries -= 1;
        }
        for (key, e) in last_values {
            self.last_values.record(
                id,
                key,
                LastValue::new(e.seq, e.event_type.clone(), e.frame.clone()),
            );
        }
        let keep = history.len().saturating_sub(self.history_size);
        for (_, e) in history.into_iter().skip(keep) {
            self.push_history(id, e);
        }
        self.forget_emptied();
    }

    /// Records an event numbered elsewhere (by the Redis engine): the stream's
    /// seq becomes `entry.seq`. The caller checked it is the next one.
    pub fn record_numbered(&mut self, id: StreamId, key: Arc<str>, entry: HistEntry, now: Instant) {
        if let Some(s) = self.by_id.get_mut(&id) {
            s.seq = entry.seq;
            s.idle_since = now;
        }
        self.record(id, key, entry);
    }

    /// Drops a stream now (the Redis engine forgets what it no longer watches).
    pub fn drop_stream(&mut self, id: StreamId) {
        self.forget(id);
    }

    /// Streams of `channel` that have subscribers somewhere.
    pub fn live(&self, channel: Channel) -> Vec<StreamId> {
        self.live[channel.index()].iter().copied().collect()
    }

    /// Gives the stream its next seq. The caller encodes the frame with it and
    /// hands it back through [`Self::record`].
    pub fn next_seq(&mut self, id: StreamId, now: Instant) -> Option<(u64, &Stream)> {
        let s = self.by_id.get_mut(&id)?;
        s.seq += 1;
        s.idle_since = now;
        Some((s.seq, s))
    }

    /// Keeps the event just numbered: its frame in the stream's history, and
    /// as the last value of `key`.
    pub fn record(&mut self, id: StreamId, key: Arc<str>, entry: HistEntry) {
        self.last_values.record(
            id,
            key,
            LastValue::new(entry.seq, entry.event_type.clone(), entry.frame.clone()),
        );
        self.forget_emptied();
        if self.history_size == 0 {
            // No history to keep, so an unwatched stream holds nothing worth
            // its memory (see `forget`).
            if self.by_id.get(&id).is_some_and(|s| s.subscribers == 0) && !self.last_values.has(id)
            {
                self.forget(id);
            }
            return;
        }
        self.push_history(id, entry);
    }

    fn push_history(&mut self, id: StreamId, entry: HistEntry) {
        if self.history_size == 0 {
            return;
        }
        let Some(s) = self.by_id.get_mut(&id) else {
            return;
        };
        let len = entry.frame.len();
        self.fifo.push_back((id, entry.seq, len));
        s.ring.push_back(entry);
        self.bytes += len;
        self.entries += 1;
        if s.ring.len() > self.history_size {
            if let Some(old) = s.ring.pop_front() {
                self.bytes -= old.frame.len();
                self.entries -= 1;
            }
        }
        self.enforce_byte_cap();
    }

    /// The history entry of `seq`, if it is still held.
    pub fn entry(&self, id: StreamId, seq: u64) -> Option<&HistEntry> {
        let s = self.by_id.get(&id)?;
        let first = s.ring.front()?.seq;
        let e = s.ring.get(usize::try_from(seq.checked_sub(first)?).ok()?)?;
        (e.seq == seq).then_some(e)
    }

    fn enforce_byte_cap(&mut self) {
        while self.bytes > self.max_bytes {
            let Some((id, seq, _)) = self.fifo.pop_front() else {
                break;
            };
            let mut unneeded = false;
            if let Some(s) = self.by_id.get_mut(&id) {
                if s.ring.front().is_some_and(|e| e.seq == seq) {
                    if let Some(old) = s.ring.pop_front() {
                        self.bytes -= old.frame.len();
                        self.entries -= 1;
                    }
                    // A ring emptied by the cap gives its slots back: otherwise
                    // every stream that once held `history_size` entries keeps
                    // that capacity (~56 KiB at 1000) outside the byte count.
                    if s.ring.len() < s.ring.capacity() / 4 {
                        s.ring.shrink_to(s.ring.len() * 2);
                    }
                    unneeded = s.ring.is_empty() && s.subscribers == 0 && !self.last_values.has(id);
                }
            }
            if unneeded {
                self.forget(id);
            }
        }
        // Keep the FIFO proportional to what it tracks.
        if self.fifo.len() > 2 * self.entries + 1024 {
            let by_id = &self.by_id;
            self.fifo.retain(|(id, seq, _)| {
                by_id
                    .get(id)
                    .and_then(|s| s.ring.front())
                    .is_some_and(|front| front.seq <= *seq)
            });
        }
    }

    /// The last values for a snapshot (see [`LastValues::snapshot`]).
    pub fn snapshot(&mut self, id: StreamId, range: std::ops::Range<u64>) -> Vec<HistEntry> {
        let out = self.last_values.snapshot(id, range);
        self.forget_emptied();
        out
    }

    /// Streams whose last values the byte cap took: forgotten when nothing
    /// else (history, subscribers) keeps them, so the number of streams stays
    /// bounded by the two byte caps however many locations publishers invent.
    fn forget_emptied(&mut self) {
        for id in self.last_values.take_emptied() {
            if self
                .by_id
                .get(&id)
                .is_some_and(|s| s.subscribers == 0 && s.ring.is_empty())
            {
                self.forget(id);
            }
        }
    }

    pub fn subscribe(&mut self, id: StreamId, loop_id: usize) {
        if let Some(s) = self.by_id.get_mut(&id) {
            s.loop_refs[loop_id] += 1;
            s.subscribers += 1;
            if s.subscribers == 1 {
                self.live[s.channel.index()].insert(id);
            }
        }
    }

    pub fn unsubscribe(&mut self, id: StreamId, loop_id: usize, now: Instant) {
        if let Some(s) = self.by_id.get_mut(&id) {
            if s.loop_refs[loop_id] == 0 {
                return;
            }
            s.loop_refs[loop_id] -= 1;
            s.subscribers -= 1;
            if s.subscribers == 0 {
                self.live[s.channel.index()].remove(&id);
                s.idle_since = now;
            }
        }
    }

    /// The events after `since` still in history. `epoch_matches` false, or
    /// `since` ahead of the stream: nothing, incomplete.
    pub fn replay(&self, id: StreamId, since: u64, epoch_matches: bool) -> Replay {
        let none = |complete| Replay {
            entries: Vec::new(),
            complete,
        };
        let Some(s) = self.by_id.get(&id) else {
            return none(false);
        };
        if !epoch_matches || since > s.seq {
            return none(false);
        }
        if since == s.seq {
            return none(true);
        }
        let entries: Vec<HistEntry> = s.ring.iter().filter(|e| e.seq > since).cloned().collect();
        let complete = entries.first().is_some_and(|e| e.seq == since + 1);
        Replay { entries, complete }
    }

    /// Forgets streams with no subscribers and no events for `ttl`.
    pub fn sweep(&mut self, now: Instant, ttl: Duration) -> usize {
        let expired: Vec<StreamId> = self
            .by_id
            .values()
            .filter(|s| s.subscribers == 0 && now.duration_since(s.idle_since) >= ttl)
            .map(|s| s.id)
            .collect();
        for id in &expired {
            self.forget(*id);
        }
        expired.len()
    }

    /// Drops a stream and its history. Safe whenever it has no subscribers: a
    /// stream that comes back gets a new id, hence a new epoch (see
    /// `publisher::stream_epoch`), so no client takes the new numbering for the
    /// old one. Besides the TTL, a stream is forgotten as soon as it has no
    /// subscribers and no history left: it then holds nothing a client could
    /// recover, and the number of streams stays bounded by the byte cap however
    /// many locations publishers invent.
    fn forget(&mut self, id: StreamId) {
        self.last_values.forget(id);
        if let Some(s) = self.by_id.remove(&id) {
            self.by_key[s.channel.index()].remove(&s.location);
            for e in &s.ring {
                self.bytes -= e.frame.len();
                self.entries -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(loops: usize, history_size: usize, max_bytes: usize) -> Streams {
        Streams::new(
            "e",
            loops,
            &Limits {
                history_size,
                history_max_bytes: max_bytes,
                last_values: 0,
                last_values_max_bytes: 0,
            },
        )
    }

    fn publish(s: &mut Streams, id: StreamId, size: usize, now: Instant) -> u64 {
        let (seq, _) = s.next_seq(id, now).unwrap();
        s.record(
            id,
            Arc::from("E"),
            HistEntry {
                seq,
                event_type: Arc::from("E"),
                frame: Bytes::from(vec![0u8; size]),
            },
        );
        seq
    }

    #[test]
    fn seq_counts_from_one_and_replay_is_exact() {
        let now = Instant::now();
        let mut s = new(1, 1000, 1 << 20);
        let id = s.get_or_create(Channel::Dashboard, "loc-1", now);
        assert_eq!(s.get_or_create(Channel::Dashboard, "loc-1", now), id);
        for want in 1..=30 {
            assert_eq!(publish(&mut s, id, 10, now), want);
        }
        let r = s.replay(id, 15, true);
        assert!(r.complete);
        assert_eq!(
            r.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (16..=30).collect::<Vec<_>>()
        );
        assert_eq!(
            s.replay(id, 30, true),
            Replay {
                entries: vec![],
                complete: true
            }
        );
        assert!(!s.replay(id, 31, true).complete);
        assert!(s.replay(id, 31, true).entries.is_empty());
        assert!(!s.replay(id, 15, false).complete);
        assert!(s.replay(id, 15, false).entries.is_empty());
    }

    #[test]
    fn a_short_history_replays_what_it_has_and_says_incomplete() {
        let now = Instant::now();
        let mut s = new(1, 10, 1 << 20);
        let id = s.get_or_create(Channel::Dashboard, "loc-1", now);
        for _ in 0..50 {
            publish(&mut s, id, 10, now);
        }
        let r = s.replay(id, 5, true);
        assert!(!r.complete);
        assert_eq!(r.entries.first().map(|e| e.seq), Some(41));
        assert_eq!(r.entries.len(), 10);
        assert_eq!(s.history_bytes(), 100);
    }

    #[test]
    fn byte_cap_evicts_oldest_across_streams() {
        let now = Instant::now();
        let mut s = new(1, 1000, 1000);
        let a = s.get_or_create(Channel::Dashboard, "a", now);
        let b = s.get_or_create(Channel::Dashboard, "b", now);
        for _ in 0..10 {
            publish(&mut s, a, 100, now);
        }
        for _ in 0..5 {
            publish(&mut s, b, 100, now);
        }
        assert!(s.history_bytes() <= 1000);
        // a's five oldest went first.
        assert_eq!(s.replay(a, 0, true).entries.first().map(|e| e.seq), Some(6));
        assert_eq!(s.replay(b, 0, true).entries.len(), 5);
    }

    #[test]
    fn fifo_stays_bounded_under_per_stream_eviction() {
        let now = Instant::now();
        let mut s = new(1, 3, 1 << 30);
        let id = s.get_or_create(Channel::Dashboard, "a", now);
        for _ in 0..100_000 {
            publish(&mut s, id, 1, now);
        }
        assert!(s.fifo.len() <= 2 * 3 + 1024 + 1);
        assert_eq!(s.history_bytes(), 3);
    }

    #[test]
    fn zero_history_keeps_nothing() {
        let now = Instant::now();
        let mut s = new(1, 0, 1 << 20);
        let id = s.get_or_create(Channel::Dashboard, "a", now);
        publish(&mut s, id, 10, now);
        assert_eq!(s.history_bytes(), 0);
        assert!(!s.replay(id, 0, true).complete);
    }

    #[test]
    fn live_sets_and_ttl() {
        let t0 = Instant::now();
        let mut s = new(2, 10, 1 << 20);
        let a = s.get_or_create(Channel::Dashboard, "a", t0);
        let b = s.get_or_create(Channel::Dashboard, "b", t0);
        s.subscribe(a, 1);
        assert_eq!(s.live(Channel::Dashboard), vec![a]);
        assert!(s.live(Channel::AiConcierge).is_empty());
        publish(&mut s, b, 10, t0);
        let later = t0 + Duration::from_secs(700);
        assert_eq!(s.sweep(later, Duration::from_secs(600)), 1);
        assert!(s.get(b).is_none());
        assert!(s.get(a).is_some());
        assert_eq!(s.history_bytes(), 0);
        s.unsubscribe(a, 1, later);
        assert!(s.live(Channel::Dashboard).is_empty());
        // Unbalanced unsubscribes are ignored rather than underflowing.
        s.unsubscribe(a, 1, later);
        assert_eq!(s.get(a).map(|x| x.subscribers), Some(0));
        // A forgotten stream comes back fresh under a new id.
        let b2 = s.get_or_create(Channel::Dashboard, "b", later);
        assert_ne!(b2, b);
    }

    #[test]
    fn rings_emptied_by_the_byte_cap_give_their_capacity_back() {
        let now = Instant::now();
        let mut s = new(1, 1000, 100 * 1000);
        let a = s.get_or_create(Channel::Dashboard, "a", now);
        let b = s.get_or_create(Channel::Dashboard, "b", now);
        // Subscribed, so that emptying its history does not forget it.
        s.subscribe(a, 0);
        for _ in 0..1000 {
            publish(&mut s, a, 100, now);
        }
        assert!(s.by_id[&a].ring.capacity() >= 1000);
        for _ in 0..1000 {
            publish(&mut s, b, 100, now);
        }
        assert!(s.by_id[&a].ring.is_empty());
        let cap = s.by_id[&a].ring.capacity();
        assert!(cap < 16, "an empty ring kept {cap} slots");
        assert_eq!(s.replay(b, 0, true).entries.len(), 1000);
    }

    #[test]
    fn unwatched_streams_with_no_history_left_are_forgotten() {
        let now = Instant::now();
        let mut s = new(1, 1000, 10 * 100);
        let watched = s.get_or_create(Channel::Dashboard, "watched", now);
        s.subscribe(watched, 0);
        publish(&mut s, watched, 100, now);
        let first = s.get_or_create(Channel::Dashboard, "loc-0", now);
        for i in 0..100_000 {
            let id = s.get_or_create(Channel::Dashboard, &format!("loc-{i}"), now);
            publish(&mut s, id, 100, now);
        }
        // The cap holds ten entries: the ten newest streams are all that is left
        // of the invented ones; the watched stream stays, with its seq.
        assert_eq!(s.len(), 11);
        assert_eq!(s.history_bytes(), 1000);
        assert_eq!(s.get(watched).map(|w| w.seq), Some(1));
        assert!(s.fifo.len() <= 2 * s.entries + 1024 + 1);
        // A forgotten stream comes back under a new id, from seq 1.
        let again = s.get_or_create(Channel::Dashboard, "loc-0", now);
        assert_ne!(again, first);
        assert_eq!(publish(&mut s, again, 100, now), 1);

        // Without history an unwatched stream keeps nothing at all.
        let mut z = new(1, 0, 1 << 20);
        let id = z.get_or_create(Channel::Dashboard, "a", now);
        publish(&mut z, id, 10, now);
        assert!(z.is_empty());
        let w = z.get_or_create(Channel::Dashboard, "w", now);
        z.subscribe(w, 0);
        publish(&mut z, w, 10, now);
        assert_eq!(z.get(w).map(|w| w.seq), Some(1));
    }

    #[test]
    fn ten_thousand_streams_stay_within_the_byte_cap() {
        let now = Instant::now();
        let mut s = new(1, 1000, 64 * 1024);
        for i in 0..10_000 {
            let id = s.get_or_create(Channel::Dashboard, &format!("loc-{i}"), now);
            for _ in 0..5 {
                publish(&mut s, id, 100, now);
            }
        }
        assert!(s.history_bytes() <= 64 * 1024);
        assert!(s.fifo.len() <= 2 * s.entries + 1024);
    }
}
