//! A conflating connection (`conflate=1`, docs/protocol.md §9). The server may drop
//! an older unwritten event of a key when a newer one of the same key arrives, so the
//! connection's seqs ascend but may skip: there is no loss to count, only order. What
//! must hold is the end state: once publishing has stopped and everything is read, the
//! connection's last event of each key is the last one published with that key.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The last value published per key of one stream: `Some(v)` when known, `None` when
/// the publisher cannot tell (a request whose outcome is unknown came last).
pub type LastValues = BTreeMap<String, Option<u64>>;

/// The newest event of a key a connection received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub seq: u64,
    pub value: Option<u64>,
}

/// Per-connection state of a conflating subscriber.
#[derive(Debug, Clone)]
pub struct ConflateTracker {
    /// `last_seq` announced by `BI_CONNECTION_ESTABLISHED`.
    base: u64,
    /// Highest seq received (`base` before any).
    last: u64,
    /// Seqs that arrived at or below the highest one so far.
    pub order_violations: u64,
    /// Seqs passed over (conflated away, or lost: a conflating connection cannot tell).
    pub skipped: u64,
    held: HashMap<Box<str>, Held>,
}

/// The end state of conflating connections against the publisher's last values, in
/// (connection, key) pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflateTally {
    pub connections: u64,
    /// The connection's last value of the key is the last one published.
    pub matching: u64,
    /// It is another one, or the key never arrived (`missing`).
    pub mismatching: u64,
    /// Of `mismatching`: the key never arrived at all.
    pub missing: u64,
    /// The publisher does not know the key's last value.
    pub unknown: u64,
    pub skipped: u64,
    pub order_violations: u64,
}

impl ConflateTally {
    pub fn add(&mut self, o: &ConflateTally) {
        self.connections += o.connections;
        self.matching += o.matching;
        self.mismatching += o.mismatching;
        self.missing += o.missing;
        self.unknown += o.unknown;
        self.skipped += o.skipped;
        self.order_violations += o.order_violations;
    }
}

impl ConflateTracker {
    pub fn new(base: u64) -> Self {
        ConflateTracker {
            base,
            last: base,
            order_violations: 0,
            skipped: 0,
            held: HashMap::new(),
        }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn last(&self) -> u64 {
        self.last
    }

    /// A live event; `false` when it broke the ascending order (it is then not held).
    pub fn observe(&mut self, seq: u64, key: &str, value: Option<u64>) -> bool {
        if seq <= self.last {
            self.order_violations += 1;
            return false;
        }
        self.skipped += seq - self.last - 1;
        self.last = seq;
        self.hold(seq, key, value);
        true
    }

    /// A snapshot event (its seq is at or below the base): the key's value as of the
    /// connect, kept unless a newer one is already held.
    pub fn observe_snapshot(&mut self, seq: u64, key: &str, value: Option<u64>) {
        if self.held.get(key).is_none_or(|h| h.seq < seq) {
            self.hold(seq, key, value);
        }
    }

    fn hold(&mut self, seq: u64, key: &str, value: Option<u64>) {
        match self.held.get_mut(key) {
            Some(h) => *h = Held { seq, value },
            None => {
                self.held.insert(key.into(), Held { seq, value });
            }
        }
    }

    /// The newest event of `key` received.
    pub fn held(&self, key: &str) -> Option<Held> {
        self.held.get(key).copied()
    }

    /// Whether the stream's last event has arrived: the newest event of the stream is
    /// the newest of its key, which conflation never drops, so after it nothing more
    /// is owed.
    pub fn complete(&self, final_seq: u64) -> bool {
        self.last >= final_seq
    }

    /// Its end state against the publisher's last values of its stream.
    pub fn tally(&self, want: &LastValues) -> ConflateTally {
        let mut t = ConflateTally {
            connections: 1,
            skipped: self.skipped,
            order_violations: self.order_violations,
            ..Default::default()
        };
        for (key, value) in want {
            match (value, self.held(key)) {
                (None, _) => t.unknown += 1,
                (Some(v), Some(h)) if h.value == Some(*v) => t.matching += 1,
                (Some(_), Some(_)) => t.mismatching += 1,
                (Some(_), None) => {
                    t.mismatching += 1;
                    t.missing += 1;
                }
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(pairs: &[(&str, Option<u64>)]) -> LastValues {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn skips_are_not_losses_and_the_newest_value_is_held() {
        let mut c = ConflateTracker::new(10);
        assert!(c.observe(11, "a", Some(1)));
        assert!(c.observe(14, "b", Some(4))); // 12, 13 conflated away
        assert!(c.observe(15, "a", Some(5)));
        assert_eq!((c.skipped, c.order_violations, c.last()), (2, 0, 15));
        assert_eq!(
            c.held("a"),
            Some(Held {
                seq: 15,
                value: Some(5)
            })
        );
        assert!(c.complete(15) && !c.complete(16));
        let t = c.tally(&want(&[("a", Some(5)), ("b", Some(4))]));
        assert_eq!((t.matching, t.mismatching, t.missing), (2, 0, 0));
    }

    #[test]
    fn order_violations_are_counted_and_not_held() {
        let mut c = ConflateTracker::new(0);
        c.observe(5, "a", Some(5));
        assert!(!c.observe(3, "a", Some(3)));
        assert!(!c.observe(5, "a", Some(5)));
        assert_eq!(c.order_violations, 2);
        assert_eq!(c.held("a").unwrap().value, Some(5));
    }

    #[test]
    fn stale_missing_and_unknown_values() {
        let mut c = ConflateTracker::new(0);
        c.observe(1, "a", Some(1));
        c.observe(2, "b", Some(2));
        let t = c.tally(&want(&[
            ("a", Some(7)), // a newer value was published: stale
            ("b", Some(2)),
            ("c", Some(3)), // never arrived
            ("d", None),    // the publisher cannot tell
        ]));
        assert_eq!(
            t,
            ConflateTally {
                connections: 1,
                matching: 1,
                mismatching: 2,
                missing: 1,
                unknown: 1,
                skipped: 0,
                order_violations: 0,
            }
        );
    }

    #[test]
    fn snapshot_values_count_until_a_live_one_replaces_them() {
        let mut c = ConflateTracker::new(40);
        c.observe_snapshot(33, "a", Some(33));
        c.observe_snapshot(38, "b", Some(38));
        c.observe_snapshot(30, "b", Some(30)); // older than the one held
        assert_eq!(c.held("b").unwrap().value, Some(38));
        c.observe(41, "a", Some(41));
        assert_eq!(c.held("a").unwrap().value, Some(41));
        assert_eq!((c.skipped, c.order_violations), (0, 0));
    }
}
