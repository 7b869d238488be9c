//! The last value of each key of each stream (`docs/protocol.md` §9): the
//! newest event published with that key, kept as the frame it was published
//! as, for the snapshot a dashboard gets on connect.
//!
//! Bounded twice: at most `per_stream` keys per stream (the key published
//! longest ago is forgotten first) and `max_bytes` in all (the oldest last
//! values anywhere are forgotten first). Values live in one slab, threaded on
//! two intrusive lists in publish order, one per stream and one across all
//! streams, so recording, evicting and moving a key to the newest end are
//! O(1), a snapshot walks its stream's list already in `seq` order, and the
//! bookkeeping costs a fixed, small amount per value. Owned by the publisher
//! thread alone.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

use crate::hub::event::{snapshot_frame, StreamId};
use crate::hub::streams::HistEntry;

/// Bookkeeping counted per value on top of its frames and key: the slab node,
/// the map entry and allocator headers (`docs/last-values.md` states it).
pub const OVERHEAD_PER_VALUE: usize = 320;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub struct LastValue {
    pub seq: u64,
    pub event_type: Arc<str>,
    /// The frame as published (live subscribers got these very bytes).
    pub frame: Bytes,
    /// The same event with `"snapshot":true`, built when first needed.
    snapshot: Option<Bytes>,
}

impl LastValue {
    pub fn new(seq: u64, event_type: Arc<str>, frame: Bytes) -> LastValue {
        LastValue {
            seq,
            event_type,
            frame,
            snapshot: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Links {
    prev: u32,
    next: u32,
}

const UNLINKED: Links = Links {
    prev: NIL,
    next: NIL,
};

#[derive(Debug)]
struct Node {
    stream: StreamId,
    key: Arc<str>,
    value: LastValue,
    /// Publish order across every stream (the byte cap's order).
    all: Links,
    /// Publish order within the stream (its key cap's order, and seq order).
    own: Links,
}

impl Node {
    fn bytes(&self) -> usize {
        self.value.frame.len()
            + self.value.snapshot.as_ref().map_or(0, Bytes::len)
            + self.key.len()
            + OVERHEAD_PER_VALUE
    }
}

/// A list's ends; `NIL` when empty.
#[derive(Debug, Clone, Copy)]
struct Ends {
    head: u32,
    tail: u32,
}

const EMPTY: Ends = Ends {
    head: NIL,
    tail: NIL,
};

#[derive(Debug)]
struct KeyValues {
    map: HashMap<Arc<str>, u32>,
    list: Ends,
}

/// Which of a node's two links a list operation uses.
#[derive(Clone, Copy)]
enum Which {
    All,
    Own,
}

#[derive(Debug)]
pub struct LastValues {
    per_stream: usize,
    max_bytes: usize,
    nodes: Slab<Node>,
    streams: HashMap<StreamId, KeyValues>,
    all: Ends,
    bytes: usize,
    /// Streams whose last value was evicted, for `Streams` to check whether
    /// they still hold anything worth keeping.
    emptied: Vec<StreamId>,
}

impl LastValues {
    /// `per_stream` 0 turns last values off.
    pub fn new(per_stream: usize, max_bytes: usize) -> LastValues {
        LastValues {
            per_stream,
            max_bytes,
            nodes: Slab::new(),
            streams: HashMap::new(),
            all: EMPTY,
            bytes: 0,
            emptied: Vec::new(),
        }
    }

    /// Streams that lost their last value since the previous call.
    pub fn take_emptied(&mut self) -> Vec<StreamId> {
        std::mem::take(&mut self.emptied)
    }

    pub fn enabled(&self) -> bool {
        self.per_stream > 0
    }

    /// Bytes held, frames and bookkeeping together.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    pub fn has(&self, stream: StreamId) -> bool {
        self.streams.contains_key(&stream)
    }

    fn links(&mut self, i: u32, w: Which) -> &mut Links {
        let n = &mut self.nodes[i as usize];
        match w {
            Which::All => &mut n.all,
            Which::Own => &mut n.own,
        }
    }

    fn ends(&mut self, stream: StreamId, w: Which) -> Option<&mut Ends> {
        match w {
            Which::All => Some(&mut self.all),
            Which::Own => self.streams.get_mut(&stream).map(|kv| &mut kv.list),
        }
    }

    fn unlink(&mut self, i: u32, w: Which) {
        let stream = self.nodes[i as usize].stream;
        let l = *self.links(i, w);
        if l.prev != NIL {
            self.links(l.prev, w).next = l.next;
        } else if let Some(e) = self.ends(stream, w) {
            e.head = l.next;
        }
        if l.next != NIL {
            self.links(l.next, w).prev = l.prev;
        } else if let Some(e) = self.ends(stream, w) {
            e.tail = l.prev;
        }
        *self.links(i, w) = UNLINKED;
    }

    fn push_tail(&mut self, i: u32, w: Which) {
        let stream = self.nodes[i as usize].stream;
        let Some(e) = self.ends(stream, w) else {
            return;
        };
        let old_tail = e.tail;
        e.tail = i;
        if old_tail == NIL {
            e.head = i;
        }
        if old_tail != NIL {
            self.links(old_tail, w).next = i;
        }
        *self.links(i, w) = Links {
            prev: old_tail,
            next: NIL,
        };
    }

    /// `key`'s newest event on `stream`, replacing the one before.
    pub fn record(&mut self, stream: StreamId, key: Arc<str>, v: LastValue) {
        if !self.enabled() {
            return;
        }
        let kv = self.streams.entry(stream).or_insert_with(|| KeyValues {
            map: HashMap::new(),
            list: EMPTY,
        });
        if let Some(&i) = kv.map.get(&key) {
            let before = self.nodes[i as usize].bytes();
            self.nodes[i as usize].value = v;
            self.bytes = self.bytes - before + self.nodes[i as usize].bytes();
            for w in [Which::All, Which::Own] {
                self.unlink(i, w);
                self.push_tail(i, w);
            }
        } else {
            let node = Node {
                stream,
                key: key.clone(),
                value: v,
                all: UNLINKED,
                own: UNLINKED,
            };
            self.bytes += node.bytes();
            let i = self.nodes.insert(node) as u32;
            kv.map.insert(key, i);
            self.push_tail(i, Which::All);
            self.push_tail(i, Which::Own);
            // The key published longest ago on this stream goes first.
            let over = self
                .streams
                .get(&stream)
                .is_some_and(|kv| kv.map.len() > self.per_stream);
            if over {
                if let Some(head) = self.streams.get(&stream).map(|kv| kv.list.head) {
                    self.evict(head);
                }
            }
        }
        while self.bytes > self.max_bytes && self.all.head != NIL {
            self.evict(self.all.head);
        }
    }

    fn evict(&mut self, i: u32) {
        if i == NIL || !self.nodes.contains(i as usize) {
            return;
        }
        self.unlink(i, Which::All);
        self.unlink(i, Which::Own);
        let node = self.nodes.remove(i as usize);
        self.bytes -= node.bytes();
        if let Some(kv) = self.streams.get_mut(&node.stream) {
            kv.map.remove(&node.key);
            if kv.map.is_empty() {
                self.streams.remove(&node.stream);
                self.emptied.push(node.stream);
            }
        }
    }

    /// The stream's last values with seq in `range`, in ascending seq, as
    /// snapshot frames (built and cached here on first use).
    pub fn snapshot(&mut self, stream: StreamId, range: std::ops::Range<u64>) -> Vec<HistEntry> {
        let mut out = Vec::new();
        let mut i = self.streams.get(&stream).map_or(NIL, |kv| kv.list.head);
        while i != NIL {
            let n = &mut self.nodes[i as usize];
            let next = n.own.next;
            if range.contains(&n.value.seq) {
                if n.value.snapshot.is_none() {
                    let before = n.bytes();
                    n.value.snapshot = snapshot_frame(&n.value.frame);
                    self.bytes = self.bytes - before + n.bytes();
                }
                if let Some(frame) = &n.value.snapshot {
                    out.push(HistEntry {
                        seq: n.value.seq,
                        event_type: n.value.event_type.clone(),
                        frame: frame.clone(),
                    });
                }
            }
            i = next;
        }
        // The snapshot frames may have pushed the total over: the oldest go.
        while self.bytes > self.max_bytes && self.all.head != NIL {
            self.evict(self.all.head);
        }
        out
    }

    /// Drops every last value of a stream that is forgotten.
    pub fn forget(&mut self, stream: StreamId) {
        while let Some(head) = self.streams.get(&stream).map(|kv| kv.list.head) {
            if head == NIL {
                self.streams.remove(&stream);
                break;
            }
            self.evict(head);
        }
        self.emptied.retain(|s| *s != stream);
    }

    /// Every last value of every stream, oldest first across streams (the
    /// order the byte cap forgets them in): what a state hand-over carries.
    pub fn all_entries(&self) -> Vec<(StreamId, Arc<str>, LastValue)> {
        let mut out = Vec::with_capacity(self.nodes.len());
        let mut i = self.all.head;
        while i != NIL {
            let n = &self.nodes[i as usize];
            out.push((n.stream, n.key.clone(), n.value.clone()));
            i = n.all.next;
        }
        out
    }

    /// Every last value of a stream, in ascending seq: for a state hand-over.
    pub fn entries(&self, stream: StreamId) -> Vec<(Arc<str>, LastValue)> {
        let mut out = Vec::new();
        let mut i = self.streams.get(&stream).map_or(NIL, |kv| kv.list.head);
        while i != NIL {
            let n = &self.nodes[i as usize];
            out.push((n.key.clone(), n.value.clone()));
            i = n.own.next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;
    use crate::hub::event::{encode_event, EventParts};
    use serde_json::value::RawValue;

    fn frame(seq: u64, key: &str, pad: usize) -> Bytes {
        let data = RawValue::from_string(format!("\"{}\"", "x".repeat(pad))).unwrap();
        encode_event(&EventParts {
            channel: Channel::Dashboard,
            location: "l",
            event_type: "E",
            key: Some(key),
            seq,
            published_at_ms: 1,
            data: &data,
        })
    }

    fn put(lv: &mut LastValues, stream: StreamId, seq: u64, key: &str, pad: usize) {
        lv.record(
            stream,
            Arc::from(key),
            LastValue::new(seq, Arc::from("E"), frame(seq, key, pad)),
        );
    }

    fn seqs(lv: &mut LastValues, stream: StreamId) -> Vec<u64> {
        lv.snapshot(stream, 0..u64::MAX)
            .iter()
            .map(|e| e.seq)
            .collect()
    }

    /// The lists agree with the map and the counters.
    fn consistent(lv: &LastValues) {
        let mut n = 0;
        let mut i = lv.all.head;
        let mut bytes = 0;
        while i != NIL {
            n += 1;
            bytes += lv.nodes[i as usize].bytes();
            i = lv.nodes[i as usize].all.next;
        }
        assert_eq!(n, lv.nodes.len());
        assert_eq!(bytes, lv.bytes);
        let per: usize = lv.streams.values().map(|kv| kv.map.len()).sum();
        assert_eq!(per, lv.nodes.len());
    }

    #[test]
    fn newest_per_key_in_seq_order() {
        let mut lv = LastValues::new(256, 1 << 20);
        put(&mut lv, 1, 1, "a", 1);
        put(&mut lv, 1, 2, "b", 1);
        put(&mut lv, 1, 3, "a", 1);
        put(&mut lv, 2, 1, "a", 1);
        assert_eq!(seqs(&mut lv, 1), vec![2, 3]);
        assert_eq!(seqs(&mut lv, 2), vec![1]);
        assert_eq!(lv.count(), 3);
        assert_eq!(
            lv.snapshot(1, 0..3)
                .iter()
                .map(|e| e.seq)
                .collect::<Vec<_>>(),
            vec![2]
        );
        let snap = &lv.snapshot(1, 3..4)[0];
        let (_, payload) = crate::ws::frame::split_server_frame(&snap.frame).unwrap();
        assert!(std::str::from_utf8(payload)
            .unwrap()
            .contains(r#""snapshot":true"#));
        consistent(&lv);
        lv.forget(1);
        assert_eq!(lv.count(), 1);
        assert!(seqs(&mut lv, 1).is_empty());
        assert!(!lv.has(1));
        consistent(&lv);
    }

    #[test]
    fn per_stream_cap_forgets_the_key_published_longest_ago() {
        let mut lv = LastValues::new(3, 1 << 20);
        for (seq, key) in ["a", "b", "c", "a", "d"].iter().enumerate() {
            put(&mut lv, 1, seq as u64 + 1, key, 1);
        }
        // b (seq 2) was published longest ago once a was republished.
        assert_eq!(seqs(&mut lv, 1), vec![3, 4, 5]);
        for seq in 6..10_000 {
            put(&mut lv, 1, seq, "hot", 1);
        }
        assert_eq!(lv.count(), 3);
        consistent(&lv);
    }

    #[test]
    fn byte_cap_forgets_the_oldest_anywhere() {
        let mut lv = LastValues::new(1_000_000, 64 * 1024);
        for seq in 1..=100_000u64 {
            put(&mut lv, seq % 7, seq, &format!("k{seq}"), 100);
            assert!(lv.bytes() <= 64 * 1024);
        }
        let kept = lv.count();
        assert!(kept > 50 && kept < 64 * 1024 / 100, "{kept}");
        consistent(&lv);
        // What is kept is the newest.
        let mut all: Vec<u64> = (0..7)
            .flat_map(|s| lv.entries(s).into_iter().map(|(_, v)| v.seq))
            .collect();
        all.sort_unstable();
        let n = all.len() as u64;
        assert_eq!(all, (100_000 - n + 1..=100_000).collect::<Vec<_>>());
        // Snapshot frames count too: building them pushes the oldest out.
        for s in 0..7 {
            seqs(&mut lv, s);
            assert!(lv.bytes() <= 64 * 1024);
        }
        consistent(&lv);
    }

    #[test]
    fn zero_turns_it_off() {
        let mut lv = LastValues::new(0, 1 << 20);
        put(&mut lv, 1, 1, "a", 1);
        assert_eq!(lv.count(), 0);
        assert!(seqs(&mut lv, 1).is_empty());
    }
}
